"""The rules layer on lists small enough to work out by hand."""

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from pipelines.config import load_config
from pipelines.ranking.rules import (
    Rules,
    RulesError,
    RulesNight,
    UserFrames,
    item_flags,
    load_rules,
    rerank_personal,
)


def rules(**kw) -> Rules:
    base = dict(drop_out_of_stock=True, repeatable_min_ratio=0.25, margin_weight=0.0, promotion_weight=0.0,
                max_category_share=1.0, discovery_share=0.0, pinned=(), min_items=4, source="test")
    return Rules(**{**base, **kw})


ITEMS = pd.DataFrame({
    "item_id": list("ABCDEFGH"), "active": [True] * 7 + [False], "in_stock": [True, True, False] + [True] * 5,
    "repeat_rate_full": [0.5, 0.01, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5],
    "margin": [0, 0, 0, 0, 0, 1.0, 0, 0], "promotion": [False] * 8,
})
CATEGORY = np.array([0, 0, 0, 1, 1, 2, 2, 2])


def run(r: Rules, cands: list[str], bought=(), top_n=4, backfill="", exclude=None, disc=""):
    idx = {k: i for i, k in enumerate(ITEMS["item_id"])}
    b = sp.csr_matrix((np.ones(len(bought)), (np.zeros(len(bought), int), [idx[x] for x in bought])), shape=(1, 8))
    uc = sp.csr_matrix(np.array([[1.0, 0, 0]]))
    frame = lambda ids, src: pd.DataFrame({"user_idx": 0, "item_idx": [idx[x] for x in ids], "source": src})
    night = RulesNight(rules=r, flags=item_flags(ITEMS, r), category=CATEGORY,
                       discovery_pool=np.array([idx[x] for x in disc], dtype=np.int64), item_index=idx, top_n=top_n)
    frames = UserFrames(cands=frame(cands, "model"), fresh=frame([], "content_new_item"),
                        backfill=frame(list(backfill), "popularity"), bought=b, user_categories=uc,
                        exclude_owned=exclude)
    out = rerank_personal(night, frames, surface="for_you", fresh_slots=0)
    return "".join(ITEMS["item_id"].to_numpy()[out["item_idx"]]), out


def test_unavailable_and_non_repeatable_bought_items_are_dropped_then_backfilled():
    # C is out of stock, H inactive, B bought and not repeatable (0.01 < 0.25 x mean rate 0.44).
    got, out = run(rules(), list("HCBAD"), bought="AB", backfill="GEF")
    assert got == "ADGE"  # A bought but repeatable; backfill G, E (min_items 4)
    assert out["source"].tolist() == ["model", "model", "popularity", "popularity"]


def test_margin_boost_moves_an_item_a_bounded_number_of_places():
    # Utility 1/log2(pos + 1): positions 1..4 give 1, .631, .5, .431. F (margin 1) is 4th: x1.5 = .646.
    got, _ = run(rules(margin_weight=0.5), list("ADEF"))
    assert got == "AFDE"
    got, _ = run(rules(margin_weight=0.1), list("ADEF"))
    assert got == "ADEF"  # .431 x 1.1 = .474 < .5: a small weight moves nothing here


def test_category_cap_and_discovery_and_pins():
    # Cap 0.5 x 4 = 2 per category: of A B D (cat 0, 0, 1) and G? -> A B then D E; the third cat-0 item waits.
    got, _ = run(rules(max_category_share=0.5), list("ABD") + ["E"], top_n=4)
    assert got == "ABDE"
    got, _ = run(rules(max_category_share=0.5, min_items=4), list("ABAD"), top_n=4, backfill="EG")
    assert got == "ABDE"
    # Discovery (share 0.25 of 4 = 1 slot): the first pool item from a category the user never touched
    # (the user only has category 0): D is category 1.
    got, out = run(rules(discovery_share=0.25), list("ABEF"), disc="AD")
    assert got == "ABED" and out["source"].iloc[-1] == "discovery"
    got, out = run(rules(pinned=({"item_id": "G", "position": 2},)), list("ABDE"))
    assert got == "AGBD" and out["source"].iloc[1] == "pinned"


def test_rules_file_overrides_and_errors(tmp_path):
    cfg = load_config(environ={}, home=tmp_path)
    assert load_rules(cfg).min_items == 20  # the built-in defaults
    f = tmp_path / "rules.yaml"
    f.write_text("boosts:\n  promotion_weight: 0.3\nmin_items: 5\n")
    r = load_rules(cfg.replace(rules_file=str(f)))
    assert (r.promotion_weight, r.margin_weight, r.min_items) == (0.3, 0.1, 5)
    f.write_text("boosts:\n  promotion_weight: 2\n")
    with pytest.raises(RulesError, match="promotion_weight must be within"):
        load_rules(cfg.replace(rules_file=str(f)))
    f.write_text("diversity:\n  max_per_brand: 2\n")
    with pytest.raises(RulesError, match="unknown rule diversity.'max_per_brand'"):
        load_rules(cfg.replace(rules_file=str(f)))


@pytest.mark.parametrize("seed,kw", [
    (0, {}),
    (1, dict(margin_weight=0.5, promotion_weight=0.3, max_category_share=0.25, discovery_share=0.2, min_items=6)),
    (2, dict(max_category_share=0.1, discovery_share=0.3, min_items=8,
             pinned=({"item_id": "i3", "position": 1}, {"item_id": "i7", "position": 4, "surfaces": ["for_you"]},
                     {"item_id": "missing", "position": 2}, {"item_id": "i0", "position": 30}))),
    (3, dict(drop_out_of_stock=False, repeatable_min_ratio=2.0, min_items=3, discovery_share=0.0)),
])
def test_rectangular_rules_equal_the_pandas_oracle_on_random_lists(seed, kw):
    """rerank_personal (rectangular arrays) against the rules written as pandas group operations
    (tests/pipelines/rules_oracle.py): random users, candidates with repeats and gaps, fresh items,
    backfill, pins, exclusions; every row equal."""
    from tests.pipelines.rules_oracle import rerank_personal_pandas

    rng = np.random.default_rng(seed)
    n_users, n_items, n_cats, top_n = 60, 80, 6, 8
    items = pd.DataFrame({
        "item_id": [f"i{k}" for k in range(n_items)], "active": rng.random(n_items) > 0.05,
        "in_stock": rng.random(n_items) > 0.1, "repeat_rate_full": rng.random(n_items),
        "margin": rng.random(n_items), "promotion": rng.random(n_items) > 0.8})
    reviews = np.random.default_rng(seed + 100)  # its own draws: the other inputs stay as they were
    items["review_count_full"] = reviews.integers(0, 6, n_items)
    items["sentiment_full"] = reviews.uniform(-1, 1, n_items)  # about 1 in 8 demoted (3+ reviews, < -0.5)
    r = rules(**{**dict(margin_weight=0.1, promotion_weight=0.1, max_category_share=0.5, discovery_share=0.1,
                        min_items=top_n), **kw})
    flags = item_flags(items, r)
    category = rng.integers(0, n_cats, n_items)
    full = sp.random(n_users, n_items, density=0.08, random_state=seed, format="csr", dtype=np.float64)
    full.data = np.where(rng.random(full.nnz) < 0.1, 0.0, full.data)  # stored zeros count as history
    bought = sp.random(n_users, n_items, density=0.05, random_state=seed + 1, format="csr")
    onehot = sp.csr_matrix((np.ones(n_items), (np.arange(n_items), category)), shape=(n_items, n_cats))
    user_categories = (full @ onehot).tocsr()
    users = np.sort(rng.choice(n_users, 50, replace=False))

    def long(width, source, p_empty):
        rows = np.repeat(users, width)
        ids = rng.integers(0, n_items, len(rows))
        keep = rng.random(len(rows)) > p_empty
        src = rng.choice(source, len(rows)) if isinstance(source, list) else source
        return pd.DataFrame({"user_idx": rows, "item_idx": ids, "source": src})[keep].reset_index(drop=True)

    cands = long(2 * top_n, ["als", "popularity", "popular_in_country"], 0.2)
    fresh = long(3, "content_new_item", 0.5)
    backfill = long(12, ["popular_in_country", "popularity"], 0.1)
    pool = rng.choice(n_items, 10, replace=False)
    index = {k: i for i, k in enumerate(items["item_id"])}
    for surface, exclude in (("for_you", None), ("new_for_you", full)):
        args = dict(surface=surface, rules=r, flags=flags, category=category, bought=bought,
                    user_categories=user_categories, top_n=top_n, fresh=fresh, fresh_slots=2,
                    discovery_pool=pool, backfill=backfill, item_index=index, exclude_owned=exclude)
        night = RulesNight(rules=r, flags=flags, category=category, discovery_pool=pool, item_index=index, top_n=top_n)
        frames = UserFrames(cands=cands, fresh=fresh, backfill=backfill, bought=bought,
                            user_categories=user_categories, exclude_owned=exclude)
        got = rerank_personal(night, frames, surface=surface, fresh_slots=2)
        want = rerank_personal_pandas(cands, **args)
        assert len(want) > 0.5 * len(users) * top_n  # lists are mostly full: the comparison means something
        pd.testing.assert_frame_equal(got.reset_index(drop=True), want.reset_index(drop=True), check_dtype=False)
