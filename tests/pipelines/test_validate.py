"""Validation gate: row rules and quarantine, accounting, Great Expectations, Data Docs."""

import duckdb
import pandas as pd
import pyarrow.parquet as pq
import pytest

from features.interactions import build_features
from pipelines.artifacts import layout, read_features, read_validation_summary
from pipelines.services.importers import land_frames
from pipelines.validation.expectations import run_expectations
from pipelines.validation.gate import ValidationError, validate
from pipelines.validation.rules import row_rule_masks
from tests.conftest import events_frame

HOSTILE = "x'; DROP TABLE users; --\"semi;colon"


def dirty_events():
    return events_frame([
        ("u1", "i1", "purchase", "2024-03-01 10:00", 1, 2.0, "o1"),
        ("u1", "i1", "purchase", "2024-03-01 10:00", 1, 2.0, "o1"),    # duplicate of the row above
        ("", "i1", "view", "2024-03-01 11:00", 1, 2.0, None),           # empty user id
        ("u2", None, "view", "2024-03-01 11:00", 1, 2.0, None),         # null item id
        ("u2", "i2", "teleport", "2024-03-01 12:00", 1, 2.0, None),     # unknown event type
        ("u2", "i2", "purchase", "2024-03-01 12:00", 0, 2.0, "o2"),     # quantity 0
        ("u2", "i3", "purchase", "2024-03-01 12:00", 1, -4.0, "o3"),    # negative price
        (None, "i3", "purchase", "2024-03-01 13:00", 1, -4.0, "o4"),    # two rules at once
        (HOSTILE, "i3", "purchase", "2024-03-01 14:00", 1, 4.0, "o5"),  # hostile but valid
        ("u3" * 200, "i1", "view", "2024-03-01 15:00", 1, 2.0, None),   # 400-character id
    ])


@pytest.fixture
def lenient(cfg):
    return cfg.replace(max_quarantine_share=1.0)


def test_quarantine_names_rules_and_accounting_holds(lenient):
    cfg = lenient
    land_frames(cfg, "b1", dirty_events(), None, None)
    out = validate(cfg, "2024-03-01", "r1")
    assert (out["rows_in"], out["rows_valid"], out["rows_quarantined"]) == (10, 2, 8)
    q = pq.read_table(layout(cfg).quarantine / "events" / "event_date=2024-03-01" / "part.parquet").to_pandas()
    assert sorted(q["rule"]) == sorted([
        "duplicate_event", "null_user_id", "null_item_id", "unknown_event_type", "quantity_out_of_range",
        "negative_price", "null_user_id;negative_price", "id_too_long"])
    v = pq.read_table(layout(cfg).validated / "events" / "event_date=2024-03-01" / "part.parquet").to_pandas()
    assert sorted(v["user_id"]) == sorted(["u1", HOSTILE])
    con = duckdb.connect(str(layout(cfg).duckdb_path), read_only=True)
    run = con.execute("SELECT rows_in, rows_valid, rows_quarantined, success, rule_counts FROM validation_runs "
                      "WHERE dataset = 'events'").fetchall()
    stored = con.execute("SELECT user_id, rule FROM quarantined_events ORDER BY rule").fetchall()
    con.close()
    assert run[0][:4] == (10, 2, 8, True) and run[0][0] == run[0][1] + run[0][2]
    assert run[0][4]["negative_price"] == 2  # a MAP(VARCHAR, BIGINT): a dict in Python
    assert len(stored) == 8 and (None, "null_user_id;negative_price") in stored
    # Hostile ids travel through DuckDB as data.
    build_features(cfg, "2024-03-01", "r1")
    assert HOSTILE in read_features(cfg, "2024-03-01").users["user_id"].tolist()


def test_revalidating_a_partition_replaces_its_quarantined_rows(lenient):
    cfg = lenient
    land_frames(cfg, "b1", dirty_events(), None, None)
    validate(cfg, "2024-03-01", "r1")
    land_frames(cfg, "b2", dirty_events().head(2).assign(order_id="o9"), None, None)  # one more duplicate
    out = validate(cfg, "2024-03-01", "r2")
    assert out["partitions_validated"] == 1 and out["rows_in"] == 12
    con = duckdb.connect(str(layout(cfg).duckdb_path), read_only=True)
    assert con.execute("SELECT count(*), count(DISTINCT run_id) FROM quarantined_events").fetchall() == [(9, 1)]
    con.close()


def test_landing_files_are_never_modified(lenient):
    land_frames(lenient, "b1", dirty_events(), None, None)
    files = sorted(layout(lenient).landing.rglob("*.parquet"))
    before = [(f, f.read_bytes()) for f in files]
    validate(lenient, "2024-03-01", "r1")
    assert [(f, f.read_bytes()) for f in sorted(layout(lenient).landing.rglob("*.parquet"))] == before


def test_share_limit_fails_naming_file_column_rule_counts_and_examples(cfg):
    land_frames(cfg, "b1", dirty_events(), None, None)
    with pytest.raises(ValidationError) as err:
        validate(cfg, "2024-03-01", "r1")
    msg = str(err.value)
    assert "rule quarantine_share" in msg and "limit of 10%" in msg
    assert "event_date=2024-03-01/batch-b1.parquet" in msg
    assert "negative_price (column price): 2 rows" in msg and "'price': -4.0" in msg
    assert not (layout(cfg).validated / "events").exists()  # nothing goes on from a failed run
    con = duckdb.connect(str(layout(cfg).duckdb_path), read_only=True)
    assert con.execute("SELECT success, message LIKE '%quarantine_share%' FROM validation_runs "
                       "WHERE dataset = 'events'").fetchall() == [(False, True)]
    con.close()


def test_guest_rows_do_not_count_towards_the_share_limit(cfg):
    ev = events_frame([(None if k % 2 else f"u{k}", "i1", "purchase", "2024-03-01 10:00", 1, 2.0, f"o{k}")
                       for k in range(10)])
    land_frames(cfg, "b1", ev, None, None)
    out = validate(cfg, "2024-03-01", "r1")
    assert out["rows_quarantined"] == 5 and out["rule_counts"]["null_user_id"] == 5


def test_great_expectations_counts_agree_with_row_masks():
    df = dirty_events()
    masks = row_rule_masks(df, pd.Series(["2024-03-01"] * len(df)), "2024-03-01")
    ge = {(r["expectation"], r["column"]): r for r in run_expectations(df)["expectations"]}
    # GX counts nulls only; the empty-string id is the one extra the row rule catches.
    assert ge[("expect_column_values_to_not_be_null", "user_id")]["unexpected_count"] == masks["null_user_id"].sum() - 1
    assert ge[("expect_column_values_to_not_be_null", "item_id")]["unexpected_count"] == masks["null_item_id"].sum()
    assert ge[("expect_column_values_to_be_in_set", "event_type")]["unexpected_count"] == masks["unknown_event_type"].sum()
    assert ge[("expect_column_values_to_be_between", "price")]["unexpected_count"] == masks["negative_price"].sum() == 2
    assert ge[("expect_column_values_to_be_between", "quantity")]["unexpected_count"] == masks["quantity_out_of_range"].sum() == 1
    assert ge[("expect_column_value_lengths_to_be_between", "user_id")]["unexpected_count"] == masks["id_too_long"].sum() == 1


def test_time_rules_use_the_partition_and_ds_not_the_clock():
    df = events_frame([("u1", "i1", "view", "2024-03-02 00:30", 1, 1.0, None),
                       ("u1", "i1", "view", "2024-03-01 23:59", 1, 1.0, None)])
    masks = row_rule_masks(df, pd.Series(["2024-03-01", "2024-03-01"]), "2024-03-01")
    assert masks["event_time_outside_partition"].tolist() == [True, False]
    assert masks["event_time_after_ds"].tolist() == [True, False]


def test_events_for_items_missing_from_the_catalog_are_quarantined(lenient):
    items = pd.DataFrame({"item_id": ["i1"], "title": ["Mug"]})
    land_frames(lenient, "b1", events_frame([("u1", "i1", "view", "2024-03-01 10:00", 1, 1.0, None),
                                             ("u1", "i9", "view", "2024-03-01 10:00", 1, 1.0, None)]), items, None)
    out = validate(lenient, "2024-03-01", "r1")
    assert out["rule_counts"]["unknown_item"] == 1 and out["rows_valid"] == 1


def test_catalog_and_users_are_validated(lenient):
    items = pd.DataFrame({"item_id": ["i1", "i1", None, "i2"], "title": ["a", "b", "c", "d"], "price": [1.0, 2.0, 1.0, -1.0]})
    users = pd.DataFrame({"user_id": ["u1", "u1", "u2"], "country": ["FR", "DE", "GB"]})
    land_frames(lenient, "b1", events_frame([("u1", "i1", "view", "2024-03-01 10:00", 1, 1.0, None)]), items, users)
    validate(lenient, "2024-03-01", "r1")
    vi = pq.read_table(next((layout(lenient).validated / "items").glob("batch-*-b1.parquet"))).to_pandas()
    qi = pq.read_table(next((layout(lenient).quarantine / "items").glob("batch-*-b1.parquet"))).to_pandas()
    assert vi[["item_id", "title"]].values.tolist() == [["i1", "b"]]  # the later duplicate row wins
    assert sorted(qi["rule"]) == ["duplicate_item_id", "negative_price", "null_item_id"]
    vu = pq.read_table(next((layout(lenient).validated / "users").glob("batch-*-b1.parquet"))).to_pandas()
    assert vu.values.tolist() == [["u1", "DE"], ["u2", "GB"]]


def test_volume_and_freshness_warn_by_default_and_fail_when_configured(cfg):
    rows = [(f"u{d}{k}", "i1", "view", f"2024-03-{d:02d} 10:00", 1, 1.0, None) for d in range(1, 9) for k in range(20)]
    rows += [("u9", "i1", "view", "2024-03-09 10:00", 1, 1.0, None)]  # 1 event after a week of 20 a day
    land_frames(cfg, "b1", events_frame(rows), None, None)
    out = validate(cfg, "2024-03-09", "r1")
    assert any("rule volume_anomaly: 1 events on 2024-03-09 against a trailing 7-day median of 20" in w
               for w in out["warnings"])
    assert any("rule stale_feed" in w for w in validate(cfg, "2024-03-10", "r2")["warnings"])
    strict = cfg.replace(volume_rule="fail", freshness_rule="fail")
    with pytest.raises(ValidationError, match="rule stale_feed: no events landed for ds=2024-03-10"):
        validate(strict, "2024-03-10", "r3")
    # A new feed has no trailing median: days 1..7 have no seven days before them.
    assert not validate(strict, "2024-03-05", "r4")["warnings"]


def test_data_docs_are_rendered_per_run(lenient):
    land_frames(lenient, "b1", dirty_events(), None, None)
    out = validate(lenient, "2024-03-01", "r1")
    report = layout(lenient).validation_report("2024-03-01")
    assert out["data_docs"] == str(report)
    html = report.read_text()
    assert "passed" in html and "<td>events</td><td>10</td><td>2</td><td>8</td>" in html
    assert "negative_price: 2" in html
    assert HOSTILE not in html  # values are escaped, never injected into the page
    pages = list(report.parent.glob("data_docs/validations/**/*.html"))
    assert pages and all(p.relative_to(report.parent).as_posix() in html for p in pages)
    events_page = next(p for p in pages if "events_suite" in p.parts)
    assert "r1" in events_page.parts and events_page.parent.name == "20240301T000000.000000Z"
    assert "expect_column_values_to_not_be_null" in events_page.read_text() or "never be null" in events_page.read_text()


def test_failed_validation_has_a_report_with_the_message(cfg):
    land_frames(cfg, "b1", dirty_events(), None, None)
    with pytest.raises(ValidationError):
        validate(cfg, "2024-03-01", "r1")
    html = layout(cfg).validation_report("2024-03-01").read_text()
    assert "FAILED" in html and "rule quarantine_share" in html


def test_each_dataset_gets_its_own_suite(lenient):
    items = pd.DataFrame({"item_id": ["i1", "i1"], "title": ["a", "b"], "price": [1.0, -2.0]})
    users = pd.DataFrame({"user_id": ["u1", None]})
    land_frames(lenient, "b1", events_frame([("u1", "i1", "view", "2024-03-01 10:00", 1, 1.0, None)]), items, users)
    validate(lenient, "2024-03-01", "r1")
    ge = read_validation_summary(lenient, "2024-03-01")["great_expectations"]
    by = {(d, r["expectation"], r["column"]): r for d, rs in ge.items() for r in rs}
    assert {r["column"] for d, rs in ge.items() if d == "items" for r in rs} == {"item_id", "price"}
    assert by[("items", "expect_column_values_to_be_unique", "item_id")]["unexpected_count"] == 2
    assert by[("items", "expect_column_values_to_be_between", "price")]["unexpected_count"] == 1
    assert by[("users", "expect_column_values_to_not_be_null", "user_id")]["unexpected_count"] == 1
