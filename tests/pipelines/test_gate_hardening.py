"""Issue 14: times in any ISO 8601 form or as epochs, implausible dates, values that would poison the
outputs (inf prices, 1.5 quantities, float ids, impossible dates) and files that must be refused."""
import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.artifacts import layout
from pipelines.cli import main
from pipelines.services.importers import (
    ImportError_,
    import_catalog,
    import_events,
    import_users,
)
from pipelines.validation.gate import validate
from pipelines.validation.rules import row_rule_masks
from tests.pipelines.test_importers import read_landed

KW = dict(user_col="customer", item_col="sku", time_col="ts", event_type="purchase")


def csv(tmp_path, text: str, name="feed.csv"):
    f = tmp_path / name
    f.write_text(text)
    return f


def quarantined(cfg) -> list[tuple]:
    con = duckdb.connect(str(layout(cfg).duckdb_path), read_only=True)
    rows = con.execute("SELECT user_id, rule, unparseable FROM quarantined_events ORDER BY user_id").fetchall()
    con.close()
    return rows


@pytest.mark.parametrize("fmt,values", [("epoch_s", ["1718964000", "1718935200", "1719014400"]),
                                        ("epoch_ms", ["1718964000123", "1718935200000", "1719014400999"])])
@pytest.mark.parametrize("given", [True, False])
def test_epoch_seconds_and_milliseconds_given_or_detected(cfg, tmp_path, fmt, values, given):
    # By hand: 2024-06-21 00:00 UTC is 19,895 days * 86,400 s = 1,718,928,000 s after 1970-01-01.
    # +36,000 s = 10:00; +7,200 s = 02:00; +86,400 s = 2024-06-22 00:00.
    f = csv(tmp_path, "customer,sku,ts\n" + "".join(f"u{k},i{k},{v}\n" for k, v in enumerate(values)))
    import_events(cfg, f, time_format=fmt if given else None, **KW)
    ev = read_landed(cfg).sort_values("user_id")
    ms = pd.Timedelta(milliseconds=123 if fmt == "epoch_ms" else 0)
    assert ev["event_time"].tolist() == [pd.Timestamp("2024-06-21 10:00", tz="UTC") + ms,
                                         pd.Timestamp("2024-06-21 02:00", tz="UTC"),
                                         pd.Timestamp("2024-06-22 00:00:00", tz="UTC")
                                         + pd.Timedelta(milliseconds=999 if fmt == "epoch_ms" else 0)]
    assert ev["_part"].tolist() == ["event_date=2024-06-21", "event_date=2024-06-21", "event_date=2024-06-22"]


def test_numbers_outside_one_epoch_range_are_not_taken_for_epochs(cfg, tmp_path):
    f = csv(tmp_path, "customer,sku,ts\nu1,i1,1718964000\nu2,i2,1718964000123\n")  # seconds and ms mixed
    import_events(cfg, f, **KW)
    ev = read_landed(cfg)
    assert ev["event_time"].isna().all() and sorted(ev["_unparseable"]) == ["ts='1718964000'", "ts='1718964000123'"]


def test_mixed_iso_forms_parse_per_row_and_only_the_bad_row_is_quarantined_with_its_text(cfg, tmp_path):
    f = csv(tmp_path, "customer,sku,ts\n"
            "u1,i1,2024-06-21T10:00:00Z\n"
            "u2,i1,2024-06-21T10:00:00+05:30\n"      # 04:30 UTC
            "u3,i1,2024-06-21 10:00\n"               # naive: UTC
            "u4,i1,2024-06-21\n"                     # midnight UTC
            "u5,i1,2024-06-21T10:00:00.250-02:00\n"  # 12:00:00.25 UTC
            "u6,i1,2024-06-21T23:30:00-01:00\n"      # 00:30 UTC the next day
            "u7,i1,the 21st at ten\n")
    import_events(cfg, f, **KW)
    ev = read_landed(cfg).set_index("user_id")["event_time"]
    assert ev.drop("u7").tolist() == [pd.Timestamp(t, tz="UTC") for t in (
        "2024-06-21 10:00", "2024-06-21 04:30", "2024-06-21 10:00", "2024-06-21 00:00", "2024-06-21 12:00:00.25",
        "2024-06-22 00:30")]
    out = validate(cfg.replace(max_quarantine_share=0.5), "2024-06-22", "r1")
    assert (out["rows_in"], out["rows_valid"], out["rows_quarantined"]) == (7, 6, 1)
    assert quarantined(cfg) == [("u7", "null_event_time;unparseable_value", "ts='the 21st at ten'")]


def test_events_before_the_earliest_date_are_quarantined_by_their_rule(cfg, tmp_path):
    f = csv(tmp_path, "customer,sku,ts\nu1,i1,2025-06-01T10:00:00Z\nu2,i1,1969-07-20T20:17:00Z\n"
            "u3,i1,1900-01-01\nu4,i1,0001-01-01T00:00:00Z\nu5,i1,1989-12-31T23:59:59Z\n")
    import_events(cfg, f, **KW)
    assert sorted(read_landed(cfg)["_part"]) == ["event_date=0001-01-01", "event_date=1900-01-01",
                                                 "event_date=1969-07-20", "event_date=1989-12-31",
                                                 "event_date=2025-06-01"]
    out = validate(cfg.replace(max_quarantine_share=1.0), "2026-11-29", "r1")
    assert (out["rows_in"], out["rows_valid"], out["rule_counts"]["event_time_before_earliest"]) == (5, 1, 4)
    assert [(u, r) for u, r, _ in quarantined(cfg)] == [(u, "event_time_before_earliest") for u in ("u2", "u3", "u4", "u5")]
    assert pq.read_table(layout(cfg).validated_partition("2025-06-01") / "part.parquet").num_rows == 1
    # The limit is a setting: with 2025-06-02 the 2025-06-01 purchase is too old as well.
    ev = read_landed(cfg)
    masks = row_rule_masks(ev, ev["_part"].str.removeprefix("event_date="), "2026-11-29",
                           earliest_event_date="2025-06-02")
    assert masks["event_time_before_earliest"].sum() == 5


def test_infinite_absurd_prices_and_fractional_quantities_are_quarantined_never_rounded(cfg, tmp_path):
    f = csv(tmp_path, "customer,sku,ts,qty,amount\n"
            "u1,i1,2024-06-21T10:00:00Z,1,inf\n"
            "u2,i1,2024-06-21T10:00:00Z,1,1e400\n"
            "u3,i1,2024-06-21T10:00:00Z,1,2000000\n"
            "u4,i1,2024-06-21T10:00:00Z,1.5,2.0\n"
            "u5,i1,2024-06-21T10:00:00Z,2.0,2.0\n")  # a whole number written with a fraction: 2
    import_events(cfg, f, quantity_col="qty", price_col="amount", **KW)
    landed = read_landed(cfg).set_index("user_id")
    assert pd.isna(landed.loc["u4", "quantity"]) and landed.loc["u4", "_unparseable"] == "qty='1.5'"
    assert landed.loc["u5", "quantity"] == 2
    out = validate(cfg.replace(max_quarantine_share=1.0), "2024-06-21", "r1")
    assert out["rule_counts"]["price_out_of_range"] == 3 and out["rows_valid"] == 1
    assert quarantined(cfg) == [("u1", "price_out_of_range", None), ("u2", "price_out_of_range", None),
                                ("u3", "price_out_of_range", None), ("u4", "unparseable_value", "qty='1.5'")]


def test_float_typed_integer_ids_land_as_their_integer_text(cfg, tmp_path):
    f = tmp_path / "ev.parquet"
    pq.write_table(pa.table({"customer": [12347.0, None], "sku": [85123.0, 22423.0],
                             "ts": ["2024-06-21T10:00:00Z"] * 2}), f)
    import_events(cfg, f, **KW)
    ev = read_landed(cfg)
    assert ev["user_id"].iloc[0] == "12347" and pd.isna(ev["user_id"].iloc[1])
    assert ev["item_id"].tolist() == ["85123", "22423"]
    cat, users = tmp_path / "cat.parquet", tmp_path / "users.parquet"
    pq.write_table(pa.table({"item_id": [85123.0, 7.0], "title": ["a", "c"]}), cat)
    pq.write_table(pa.table({"user_id": [12347.0, 5.0, None], "country": ["FR", "DE", "GB"]}), users)
    import_catalog(cfg, cat)
    import_users(cfg, users)
    assert read_landed(cfg, "items")["item_id"].tolist() == ["85123", "7"]
    assert read_landed(cfg, "users")["user_id"].fillna("-").tolist() == ["12347", "5", "-"]


def test_an_impossible_signup_date_refuses_the_users_file(cfg, tmp_path):
    f = csv(tmp_path, "user_id,signup_date\nu1,2024-02-29\nu2,2026-13-45\n", "users.csv")
    with pytest.raises(ImportError_, match=r"users.csv: column 'signup_date': rule invalid_date.*'2026-13-45'.*\[3\]"):
        import_users(cfg, f)
    assert not layout(cfg).landing.exists()
    f.write_text("user_id,signup_date\nu1,2024-02-29\nu2,\n")
    import_users(cfg, f)
    assert [str(d) if d is not None else None for d in read_landed(cfg, "users")["signup_date"]] == ["2024-02-29", None]


@pytest.mark.parametrize("command,header", [("import-catalog", "item_id,title"), ("import-users", "user_id,country"),
                                            ("import-outcomes", "user_id,event_type,event_time")])
def test_header_only_reference_and_outcome_files_are_refused(cfg, tmp_path, capsys, command, header):
    f = csv(tmp_path, header + "\n", "empty.csv")
    assert main(["--home", str(cfg.home), "-q", command, str(f)]) == 2
    err = capsys.readouterr().err
    assert f"{f}: the file has a header" in err and "but no rows; nothing written" in err
    assert not layout(cfg).landing.exists()


def test_import_outcomes_says_landed_the_first_time_and_imported_before_the_second(cfg, tmp_path, capsys):
    f = csv(tmp_path, "user_id,event_type,event_time\nu1,click,2024-06-21T10:00:00Z\n", "out.csv")
    assert main(["--home", str(cfg.home), "-q", "import-outcomes", str(f)]) == 0
    assert capsys.readouterr().out == "landed 1 outcome events\n"
    assert main(["--home", str(cfg.home), "-q", "import-outcomes", str(f)]) == 0
    assert capsys.readouterr().out == "this file was imported before; nothing written\n"


def test_import_events_on_a_directory_is_one_clear_line(cfg, tmp_path, capsys):
    assert main(["--home", str(cfg.home), "-q", "import-events", str(tmp_path), "--user-col", "u", "--item-col", "i",
                 "--time-col", "t", "--event-type", "view"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{tmp_path}: is a directory; give one file" in err and "Traceback" not in err


def test_import_catalog_and_users_take_an_encoding(cfg, tmp_path, capsys):
    f = tmp_path / "cat.csv"
    f.write_bytes("item_id,title\ni1,Caf\xe9 cup\n".encode("latin-1"))
    assert main(["--home", str(cfg.home), "-q", "import-catalog", str(f)]) == 2
    assert "not valid utf-8 text at byte 20 (line 2" in capsys.readouterr().err
    assert main(["--home", str(cfg.home), "-q", "import-catalog", str(f), "--encoding", "latin-1"]) == 0
    assert read_landed(cfg, "items")["title"].tolist() == ["Café cup"]
    u = tmp_path / "users.csv"
    u.write_bytes("user_id,country\nRen\xe9,FR\n".encode("latin-1"))
    assert main(["--home", str(cfg.home), "-q", "import-users", str(u), "--encoding", "latin-1"]) == 0
    assert read_landed(cfg, "users")["user_id"].tolist() == ["René"]
