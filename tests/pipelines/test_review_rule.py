"""The review rule (pipelines/ranking/review_rule.py, docs/rules.md) on lists worked out by hand."""

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from pipelines.config import load_config
from pipelines.ranking.review_rule import ReviewRule
from pipelines.ranking.rules import (
    Rules,
    RulesError,
    RulesNight,
    UserFrames,
    item_flags,
    load_rules,
    rerank_personal,
)

BASE = pd.DataFrame({"item_id": list("ABCDEF"), "active": True, "repeat_rate_full": 0.5})
CATEGORY = np.arange(6)  # one category per item: no diversity cap in the way
# D is the planted poorly reviewed item: 4 reviews, mean compound -0.8.
REVIEWS = {"review_count_full": [0, 5, 0, 4, 1, 2], "sentiment_full": [0.0, 0.9, 0.0, -0.8, -0.9, -0.95]}


def rules(reviews: ReviewRule = ReviewRule()) -> Rules:
    return Rules(drop_out_of_stock=True, repeatable_min_ratio=0.25, margin_weight=0.0, promotion_weight=0.0,
                 max_category_share=1.0, discovery_share=0.0, pinned=(), min_items=4, source="test", reviews=reviews)


def run(r: Rules, items: pd.DataFrame, cands: str, backfill: str = "") -> str:
    idx = {k: i for i, k in enumerate(items["item_id"])}
    frame = lambda ids, src: pd.DataFrame({"user_idx": 0, "item_idx": [idx[x] for x in ids], "source": src})
    night = RulesNight(rules=r, flags=item_flags(items, r), category=CATEGORY,
                       discovery_pool=np.array([], np.int64), item_index=idx, top_n=4)
    frames = UserFrames(cands=frame(cands, "model"), fresh=frame("", "content_new_item"),
                        backfill=frame(backfill, "popularity"), bought=sp.csr_matrix((1, 6)),
                        user_categories=sp.csr_matrix((1, 6)))
    out = rerank_personal(night, frames, surface="for_you", fresh_slots=0)
    return "".join(items["item_id"].to_numpy()[out["item_idx"]])


def test_a_planted_poorly_reviewed_item_is_demoted_when_on_and_untouched_otherwise():
    items = BASE.assign(**REVIEWS)
    # Utility 1/log2(pos + 1): positions 1..4 give 1, .631, .5, .431. D second: .631 x 0.5 = .315 < .431.
    # E (1 review) and F (2) are below min_reviews 3: untouched however negative.
    assert run(rules(), items, "ADEF") == "AEFD"
    assert run(rules(ReviewRule(demote_factor=1.0)), items, "ADEF") == "ADEF"  # factor 1: the rule is off
    assert run(rules(), BASE, "ADEF") == "ADEF"  # no review columns (features before issue 17)
    no_reviews = BASE.assign(review_count_full=0, sentiment_full=0.0)
    assert run(rules(), no_reviews, "ADEF") == "ADEF"
    np.testing.assert_array_equal(item_flags(no_reviews, rules()), item_flags(BASE, rules()).assign(review_factor=1.0))
    # Lower the bar to 2 reviews: F (-0.95) is demoted too (.431 x .5 = .216 < D's .315).
    assert run(rules(ReviewRule(min_reviews=2)), items, "ADEF") == "AEDF"


def test_factor_zero_drops_the_item_everywhere_availability_is_read():
    items = BASE.assign(**REVIEWS)
    r = rules(ReviewRule(demote_factor=0.0))
    flags = item_flags(items, r)
    assert flags["available"].tolist() == [True, True, True, False, True, True]
    assert run(r, items, "ADEF", backfill="DCB") == "AEFC"  # D neither listed nor backfilled


def test_rules_file_reviews_section_defaults_and_errors(tmp_path):
    cfg = load_config(environ={}, home=tmp_path / "var")
    assert load_rules(cfg).reviews == ReviewRule(min_reviews=3, demote_below=-0.5, demote_factor=0.5)
    f = tmp_path / "rules.yaml"
    f.write_text("reviews:\n  demote_factor: 0\n")
    assert load_rules(cfg.replace(rules_file=str(f))).reviews == ReviewRule(3, -0.5, 0.0)
    for bad, match in (("demote_factor: 1.5", "demote_factor must be within"),
                       ("demote_below: -2", "demote_below must be within"),
                       ("min_reviews: 0", "min_reviews must be"), ("min_reviews: many", "invalid value in reviews")):
        f.write_text(f"reviews:\n  {bad}\n")
        with pytest.raises(RulesError, match=match):
            load_rules(cfg.replace(rules_file=str(f)))


def test_the_warehouse_items_table_carries_the_full_window_review_columns():
    from pipelines.ranking.publish_tables import items_table

    t = items_table("2024-03-10", "r1", BASE.assign(**REVIEWS, review_count_train=9, sentiment_train=0.3)).to_pandas()
    assert t["review_count"].tolist() == REVIEWS["review_count_full"]
    assert t["review_sentiment"].tolist() == REVIEWS["sentiment_full"]
    old = items_table("2024-03-10", "r1", BASE).to_pandas()  # features from before issue 17: NULL
    assert old["review_count"].isna().all() and old["review_sentiment"].isna().all()
