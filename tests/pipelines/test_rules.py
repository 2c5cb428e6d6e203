"""The rules layer on lists small enough to work out by hand."""
import dataclasses

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from pipelines.config import load_config
from pipelines.rules import Rules, RulesError, item_flags, load_rules, rerank_personal


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
    out = rerank_personal(frame(cands, "model"), surface="for_you", rules=r, flags=item_flags(ITEMS, r),
                          category=CATEGORY, bought=b, user_categories=uc, top_n=top_n,
                          fresh=frame([], "content_new_item"), fresh_slots=0,
                          discovery_pool=np.array([idx[x] for x in disc], dtype=np.int64),
                          backfill=frame(list(backfill), "popularity"), item_index=idx, exclude_owned=exclude)
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
    r = load_rules(dataclasses.replace(cfg, rules_file=str(f)))
    assert (r.promotion_weight, r.margin_weight, r.min_items) == (0.3, 0.1, 5)
    f.write_text("boosts:\n  promotion_weight: 2\n")
    with pytest.raises(RulesError, match="promotion_weight must be within"):
        load_rules(dataclasses.replace(cfg, rules_file=str(f)))
    f.write_text("diversity:\n  max_per_brand: 2\n")
    with pytest.raises(RulesError, match="unknown rule diversity.'max_per_brand'"):
        load_rules(dataclasses.replace(cfg, rules_file=str(f)))
