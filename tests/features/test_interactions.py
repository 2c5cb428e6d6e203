"""Interaction matrices, holdout truth and popularity on a frame whose answers are worked out by hand."""

import numpy as np
import pandas as pd
import pytest

from features.interactions import FeatureError, build_features
from pipelines.artifacts import read_features
from pipelines.services.importers import land_frames
from pipelines.validation.gate import validate
from tests.conftest import events_frame

DS = "2024-03-10"


@pytest.fixture
def landed(cfg):
    # holdout_days=2: the holdout window is [2024-03-09, 2024-03-11).
    # Two of ten rows are bad on purpose: lift the share limit for this tiny frame.
    cfg = cfg.replace(holdout_days=2, popularity_days=30, max_quarantine_share=1.0)
    events = events_frame([
        ("u1", "i1", "view", "2024-03-01 10:00", 1, 2.0, None),       # weight 1
        ("u1", "i1", "purchase", "2024-03-02 10:00", 1, 2.0, "o1"),   # weight 8 -> (u1,i1) = 9
        ("u1", "i2", "add_to_cart", "2024-03-03 10:00", 1, 3.0, None),  # 3
        ("u1", "i2", "purchase", "2024-03-09 10:00", 1, 3.0, "o2"),   # holdout: full (u1,i2) = 11
        ("u2", "i1", "purchase", "2024-03-05 10:00", 1, 2.0, "o3"),   # 8
        ("u2", "i1", "return", "2024-03-06 10:00", 1, 2.0, "o4"),     # -8 -> cell dropped
        ("u2", "i3", "view", "2024-03-10 10:00", 1, 5.0, None),       # full only: 1
        ("u3", "i3", "purchase", "2024-03-10 11:00", 1, 5.0, "o5"),   # holdout: full 8, train empty
        (None, "i1", "purchase", "2024-03-04 10:00", 1, 2.0, "o6"),   # quarantined: null user
        ("u1", "i3", "click", "2024-03-04 10:00", 1, 5.0, None),      # quarantined: unknown type
        ("u9", "i9", "purchase", "2024-03-12 10:00", 1, 5.0, "o7"),   # after ds: never read
    ])
    items = pd.DataFrame({"item_id": ["i1", "i2", "i3", "i4"], "title": ["Red mug", "Blue mug", "Tea", "Jam"],
                          "category": ["kitchen", "kitchen", "grocery", "grocery"], "price": [2.0, 3.0, 5.0, 4.0],
                          "active": [True, True, True, False]})
    land_frames(cfg, "t1", events, items, None)
    return cfg


def test_matrices_truth_and_popularity_match_hand_computed(landed):
    counts = validate(landed, DS, "r1")
    assert counts["rows_in"] == 10  # the 2024-03-12 row is after ds
    assert counts["rows_quarantined"] == 2
    meta = build_features(landed, DS, "r1")
    assert meta["users"] == 3 and meta["items"] == 4
    f = read_features(landed, DS)
    assert f.users["user_id"].tolist() == ["u1", "u2", "u3"]
    assert f.items["item_id"].tolist() == ["i1", "i2", "i3", "i4"]
    train = f.train.toarray()
    full = f.full.toarray()
    expected_train = np.zeros((3, 4)); expected_train[0, 0] = 9; expected_train[0, 1] = 3
    expected_full = expected_train.copy(); expected_full[0, 1] = 11; expected_full[1, 2] = 1; expected_full[2, 2] = 8
    np.testing.assert_allclose(train, expected_train)
    np.testing.assert_allclose(full, expected_full)
    assert f.train.nnz == 2 and f.full.nnz == 4  # the bought-then-returned cell is dropped
    assert sorted(map(tuple, f.holdout[["user_idx", "item_idx"]].to_numpy().tolist())) == [(0, 1), (2, 2)]
    assert f.items["pop_train"].tolist() == [2, 0, 0, 0]  # u1 and u2 bought i1 before 03-09
    assert f.items["pop_full"].tolist() == [2, 1, 1, 0]
    assert f.items["active"].tolist() == [True, True, True, False]
    assert "cat_kitchen" in f.items["text"][0] and "red mug" in f.items["text"][0]
    # Trending, half-life 7 days: each purchase weighs 0.5 ** (age in days / 7) at the cut-off.
    # Train cut-off 2024-03-09 00:00: i1 bought 03-02 10:00 (6.5833 days) and 03-05 10:00 (3.5833 days).
    hl = 7.0
    age = lambda cut, t: (pd.Timestamp(cut) - pd.Timestamp(t)).total_seconds() / 86400
    i1_train = 0.5 ** (age("2024-03-09", "2024-03-02 10:00") / hl) + 0.5 ** (age("2024-03-09", "2024-03-05 10:00") / hl)
    np.testing.assert_allclose(f.items["trend_train"], [i1_train, 0, 0, 0], rtol=1e-9)
    # Full cut-off 2024-03-11 00:00: also i2 (03-09 10:00) and i3 (03-10 11:00).
    i1_full = sum(0.5 ** (age("2024-03-11", t) / hl) for t in ("2024-03-02 10:00", "2024-03-05 10:00"))
    np.testing.assert_allclose(f.items["trend_full"], [i1_full, 0.5 ** (age("2024-03-11", "2024-03-09 10:00") / hl),
                                                          0.5 ** (age("2024-03-11", "2024-03-10 11:00") / hl), 0],
                               rtol=1e-9)
    assert [str(d) if pd.notna(d) else None for d in f.items["first_seen"]] == \
        ["2024-03-01", "2024-03-03", "2024-03-10", None]  # i4 is catalog-only


def test_features_without_validated_events_fail_clearly(cfg):
    with pytest.raises(FeatureError, match="no validated events up to ds=2024-03-10"):
        build_features(cfg, DS, "r1")


def test_rerun_gives_identical_features(landed):
    validate(landed, DS, "r1")
    build_features(landed, DS, "r1")
    first = read_features(landed, DS)
    assert validate(landed, DS, "r2")["partitions_validated"] == 0  # nothing new landed
    build_features(landed, DS, "r2")
    second = read_features(landed, DS)
    assert (first.full != second.full).nnz == 0
    pd.testing.assert_frame_equal(first.items, second.items)
