"""Hostile and broken inputs: each gets a clear error or a quarantine, and a failed run leaves the
published tables and the landing files exactly as they were."""
import hashlib

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.artifacts import layout
from pipelines.run import run_all
from pipelines.services.importers import ImportError_, import_events, land_frames
from pipelines.validation.gate import ValidationError
from tests.conftest import BASE_DS, events_frame

D0, D1 = BASE_DS, "2024-06-21"
PUBLISHED = ("user_recommendations", "similar_items", "model_runs")


def snapshot(cfg) -> dict:
    """Everything a reader of the published tables or the landing zone could see."""
    con = duckdb.connect(str(layout(cfg).duckdb_path), read_only=True)
    tables = {t: con.execute(f"SELECT * FROM {t} ORDER BY ALL").fetchall() for t in PUBLISHED}
    con.close()
    files = {str(p.relative_to(cfg.home)): hashlib.sha256(p.read_bytes()).hexdigest()
             for root in (layout(cfg).landing, layout(cfg).warehouse / "parquet") for p in sorted(root.rglob("*")) if p.is_file()}
    return {"tables": tables, "files": files}


def fails_and_changes_nothing(cfg, match: str):
    before = snapshot(cfg)
    with pytest.raises(ValidationError, match=match) as err:
        run_all(cfg, D1, "bad-run")
    assert snapshot(cfg) == before
    con = duckdb.connect(str(layout(cfg).duckdb_path), read_only=True)
    row = con.execute("SELECT success, message FROM validation_runs WHERE run_id = 'bad-run' AND dataset = 'events'"
                      ).fetchall()
    con.close()
    assert row and row[0][0] is False and row[0][1]
    return str(err.value)


def land_raw(cfg, table: pa.Table, name="batch-hostile.parquet") -> str:
    path = layout(cfg).landing / "events" / f"event_date={D1}" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return str(path)


def good_day(n=50) -> pd.DataFrame:
    return events_frame([(f"u{k:07d}", f"i{k % 60:06d}", "view", f"{D1} 10:{k % 60:02d}", 1, 2.0, None)
                         for k in range(n)])


# ---- files that cannot be taken at all: the import refuses them and lands nothing
def test_non_utf8_csv_is_refused_then_read_with_its_encoding(home, tmp_path):
    f = tmp_path / "latin1.csv"
    # 16 header bytes, then "Ren": the latin-1 é is byte 19 (0-based) on line 2.
    f.write_bytes("customer,sku,ts\nRen\xe9,i000001,2024-06-21T10:00:00Z\n".encode("latin-1"))
    kw = dict(user_col="customer", item_col="sku", time_col="ts", event_type="view")
    before = snapshot(home)
    with pytest.raises(ImportError_, match=r"latin1.csv: not valid utf-8 text at byte 19 \(line 2: invalid continuation byte\).*--encoding"):
        import_events(home, f, **kw)
    assert snapshot(home) == before
    import_events(home, f, encoding="latin-1", **kw)
    landed = pq.read_table(next((layout(home).landing / "events" / f"event_date={D1}").glob("*.parquet"))).to_pandas()
    assert landed["user_id"].tolist() == ["René"]


@pytest.mark.parametrize("content,match", [
    (b"", "the file is empty"),
    (b"customer,sku,ts\n", r"has a header \(\['customer', 'sku', 'ts'\]\) but no rows"),
])
def test_empty_and_header_only_csv_are_refused(home, tmp_path, content, match):
    f = tmp_path / "feed.csv"
    f.write_bytes(content)
    before = snapshot(home)
    with pytest.raises(ImportError_, match=match):
        import_events(home, f, user_col="customer", item_col="sku", time_col="ts", event_type="view")
    assert snapshot(home) == before


def test_truncated_parquet_is_refused_at_import(home, tmp_path):
    f = tmp_path / "feed.parquet"
    pq.write_table(pa.Table.from_pandas(good_day()), f)
    f.write_bytes(f.read_bytes()[:300])
    with pytest.raises(ImportError_, match="feed.parquet: cannot be read as Parquet"):
        import_events(home, f, user_col="user_id", item_col="item_id", time_col="event_time", event_type="view")


# ---- broken files in the landing zone: the run fails, names file, column and rule, publishes nothing
def test_truncated_landing_file_fails_the_run(home):
    path = land_raw(home, pa.Table.from_pandas(good_day(), preserve_index=False))
    data = open(path, "rb").read()
    open(path, "wb").write(data[: len(data) // 2])
    msg = fails_and_changes_nothing(home, "rule unreadable_file")
    assert path in msg


def test_renamed_column_fails_with_a_hint(home):
    land_raw(home, pa.Table.from_pandas(good_day().rename(columns={"user_id": "userid"}), preserve_index=False))
    msg = fails_and_changes_nothing(home, r"rule missing_column: required column\(s\) 'user_id' \(renamed to 'userid'\?\)")
    assert f"event_date={D1}/batch-hostile.parquet" in msg


def test_wrong_column_type_fails_naming_the_column(home):
    t = pa.Table.from_pandas(good_day().assign(quantity="two"), preserve_index=False)
    land_raw(home, t)
    fails_and_changes_nothing(home, r"rule wrong_type: column 'quantity' is (large_)?string; expected .*quantity int64")


def test_header_only_landing_file_fails_the_run(home):
    land_raw(home, pa.Table.from_pandas(good_day().head(0), preserve_index=False))
    fails_and_changes_nothing(home, "rule empty_file")


def test_a_million_duplicated_rows_are_quarantined_and_fail_the_share_limit(home):
    one = good_day(1)
    million = pd.DataFrame({c: np.repeat(one[c].to_numpy(), 1_000_000) for c in one.columns})
    land_frames(home, "dup", million, None, None)
    msg = fails_and_changes_nothing(home, "rule quarantine_share: 999999 of 1000000 rows")
    assert "duplicate_event (column user_id, item_id, event_type, event_time, order_id): 999999 rows" in msg


# ---- bad rows in a good file: quarantined, the run goes on
def test_bad_rows_are_quarantined_and_the_rest_publishes(home, tmp_path):
    f = tmp_path / "mixed.csv"
    hostile = "o'brien; DELETE FROM user_recommendations; --"
    long_id = "x" * 5000
    lines = ["customer,sku,ts,qty,amount"]
    lines += [f"u{k:07d},i{k % 60:06d},2024-06-21T{10 + k % 10:02d}:00:00+05:30,1,2.5" for k in range(60)]
    lines += [
        "u0000001,i000001,2024-06-21T12:00:00-07:00,1,-3.0",   # negative price
        "u0000002,i000002,2024-06-21T09:00:00Z,abc,2.0",       # unparseable quantity
        f"{long_id},i000003,2024-06-21T09:00:00Z,1,2.0",        # very long id
        f"\"{hostile}\",i000004,2024-06-21T09:30:00Z,1,2.0",   # SQL fragment in an id: valid data
    ]
    f.write_text("\n".join(lines) + "\n")
    import_events(home, f, user_col="customer", item_col="sku", time_col="ts", event_type="purchase",
                  quantity_col="qty", price_col="amount")
    landing_before = snapshot(home)["files"]
    result = run_all(home, D1, "good-run")
    assert result["validate"]["rule_counts"]["negative_price"] == 1
    assert result["validate"]["rule_counts"]["unparseable_value"] == 1
    assert result["validate"]["rule_counts"]["id_too_long"] == 1
    con = duckdb.connect(str(layout(home).duckdb_path), read_only=True)
    q = con.execute("SELECT rule, unparseable FROM quarantined_events WHERE event_date = ? ORDER BY rule", [D1]).fetchall()
    recs = con.execute("SELECT count(*) FROM user_recommendations WHERE ds = ?::DATE AND user_id = ? "
                       "AND surface = 'for_you'",
                       [D1, hostile]).fetchall()[0][0]
    tables = [r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()]
    con.close()
    assert ("unparseable_value", "qty='abc'") in q and ("negative_price", None) in q
    assert recs == 20 and "user_recommendations" in tables  # the SQL fragment stayed data
    # Times in other zones were converted: +05:30 morning hours land on the same UTC day.
    assert {k: v for k, v in snapshot(home)["files"].items() if k.startswith("landing")} == \
        {k: v for k, v in landing_before.items() if k.startswith("landing")}


def test_extra_columns_are_ignored(home):
    land_raw(home, pa.Table.from_pandas(good_day().assign(campaign="x", referrer="y"), preserve_index=False))
    out = run_all(home, D1, "extra")["validate"]
    assert out["rows_in"] == 50 and out["rows_quarantined"] == 0
