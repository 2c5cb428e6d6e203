"""Validation gate: quarantine with rules, accounting, GX agreement, hostile ids, unreadable files."""
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from features.interactions import build_features, load_features
from pipelines.importers import land_frames
from pipelines.validate import ValidationError, row_rule_masks, run_expectations, validate
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
    ])


def test_quarantine_names_rules_and_accounting_holds(cfg):
    land_frames(cfg, "b1", dirty_events(), None, None)
    out = validate(cfg, "2024-03-01", "r1")
    assert (out["rows_in"], out["rows_valid"], out["rows_quarantined"]) == (9, 2, 7)
    q = pq.read_table(cfg.quarantine / "events" / "event_date=2024-03-01" / "part.parquet").to_pandas()
    assert sorted(q["rule"]) == sorted(["duplicate_event", "null_user_id", "null_item_id", "unknown_event_type",
                                        "quantity_out_of_range", "negative_price", "null_user_id;negative_price"])
    v = pq.read_table(cfg.validated / "events" / "event_date=2024-03-01" / "part.parquet").to_pandas()
    assert sorted(v["user_id"]) == sorted(["u1", HOSTILE])
    # Hostile ids travel through DuckDB as data.
    build_features(cfg, "2024-03-01", "r1")
    assert HOSTILE in load_features(cfg, "2024-03-01")["users"]["user_id"].tolist()


def test_landing_files_are_never_modified(cfg):
    land_frames(cfg, "b1", dirty_events(), None, None)
    files = sorted(cfg.landing.rglob("*.parquet"))
    before = [(f, f.read_bytes()) for f in files]
    validate(cfg, "2024-03-01", "r1")
    assert [(f, f.read_bytes()) for f in sorted(cfg.landing.rglob("*.parquet"))] == before


def test_great_expectations_counts_agree_with_row_masks(cfg):
    df = dirty_events()
    masks = row_rule_masks(df, pd.Series(["2024-03-01"] * len(df)))
    ge = {(r["expectation"], r["column"]): r for r in run_expectations(df)["expectations"]}
    # GX counts nulls only; the empty-string id is the one extra the row rule catches.
    assert ge[("expect_column_values_to_not_be_null", "user_id")]["unexpected_count"] == masks["null_user_id"].sum() - 1
    assert ge[("expect_column_values_to_not_be_null", "item_id")]["unexpected_count"] == masks["null_item_id"].sum()
    assert ge[("expect_column_values_to_be_in_set", "event_type")]["unexpected_count"] == masks["unknown_event_type"].sum()
    assert ge[("expect_column_values_to_be_between", "price")]["unexpected_count"] == masks["negative_price"].sum() == 2
    assert ge[("expect_column_values_to_be_between", "quantity")]["unexpected_count"] == masks["quantity_out_of_range"].sum() == 1


def test_event_outside_its_partition_is_quarantined():
    df = events_frame([("u1", "i1", "view", "2024-03-02 00:30", 1, 1.0, None)])
    masks = row_rule_masks(df, pd.Series(["2024-03-01"]))
    assert masks["event_time_outside_partition"].tolist() == [True]


def test_truncated_parquet_fails_naming_the_file_and_publishes_nothing(cfg):
    land_frames(cfg, "b1", dirty_events(), None, None)
    f = next(cfg.landing.rglob("*.parquet"))
    data = f.read_bytes()
    f.chmod(0o644)
    f.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValidationError, match=f"{f}: cannot be read as Parquet"):
        validate(cfg, "2024-03-01", "r1")
    assert not (cfg.validated / "events").exists()


def test_missing_required_column_fails_naming_it(cfg):
    import pyarrow as pa

    path = cfg.landing / "events" / "event_date=2024-03-01" / "batch-x.parquet"
    path.parent.mkdir(parents=True)
    pq.write_table(pa.table({"user": ["u1"], "item_id": ["i1"], "event_type": ["view"],
                             "event_time": pa.array([pd.Timestamp("2024-03-01", tz="UTC")])}), path)
    with pytest.raises(ValidationError, match=r"required column\(s\) \['user_id'\] missing"):
        validate(cfg, "2024-03-01", "r1")
