"""The deep models in the nightly (issue 16): LightGCN, the two-tower model and the sequence
transformer as candidates judged on the holdout, the sequence transformer as a hybrid generator, and
the users' event sequences the features step writes for it, checked against the planted events."""
from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from features.sequences import KINDS, build_sequences
from models import load_model
from models.registry import DEEP_MODELS, fit_model, items_for_fit, make_model
from pipelines.artifacts import hybrid_metrics_path, layout, read_eval_summary, read_features
from pipelines.run import run_all
from pipelines.services.importers import land_frames
from pipelines.session_artifacts import read_sequences
from tests.pipelines.test_session_surface import DS, HOLDOUT_START, catalog, planted

ENV = {"RECSYS_CANDIDATES": "popularity,als,itemknn," + ",".join(DEEP_MODELS),
       "RECSYS_HYBRID_GENERATORS": "buy_again,itemknn,sasrec",
       "RECSYS_COLD_ITEM_MODEL": "two_tower",
       "RECSYS_SEARCH_BUDGET_SECONDS": "0", "RECSYS_RANKER_WINDOW_DAYS": "6", "RECSYS_RANKER_WINDOWS": "1",
       # Stopped by epochs (not by time), so that the refit below is the same model on any machine.
       **{f"RECSYS_{m.upper()}_EPOCHS": "3" for m in DEEP_MODELS},
       **{f"RECSYS_{m.upper()}_DEVICE": "cpu" for m in DEEP_MODELS}}


@pytest.fixture(scope="module")
def night(tmp_path_factory):
    from pipelines.config import load_config

    cfg = load_config(environ=ENV, home=tmp_path_factory.mktemp("deep") / "var")
    events, _ = planted()
    # N: in the catalog only (nobody has seen it), described as C is.
    items = pd.concat([catalog(), catalog().iloc[[2]].assign(item_id="N")], ignore_index=True)
    land_frames(cfg, "planted", events, items, None)
    run_all(cfg, DS, "night-1")
    return cfg, events


def expected_sequences(events: pd.DataFrame, users: pd.DataFrame, items: pd.DataFrame, before=None):
    """Each user's events in time order, built here from the planted frame."""
    ev = events if before is None else events[events["event_time"] < before]
    u = pd.Index(users["user_id"].astype(str)).get_indexer(ev["user_id"])
    i = pd.Index(items["item_id"].astype(str)).get_indexer(ev["item_id"])
    return build_sequences(u, i, ev["event_type"].map(KINDS).to_numpy(),
                           ev["event_time"].dt.as_unit("s").astype("int64").to_numpy(), len(users), 200)


@pytest.mark.parametrize("part", ["train", "full"])
def test_the_features_step_writes_each_users_events_in_time_order(night, part):
    cfg, events = night
    f = read_features(cfg, DS)
    got = read_sequences(cfg, DS, part)
    want = expected_sequences(events, f.users, f.items, HOLDOUT_START.tz_localize("UTC") if part == "train" else None)
    assert got.indptr.tolist() == want.indptr.tolist()
    for name in ("items", "kinds", "times"):
        np.testing.assert_array_equal(getattr(got, name), getattr(want, name), err_msg=name)
    # Hand count: in the 20 days u00 views A, B, C and buys C on days 0, 3, ..., 18 (7 days), views D,
    # E and buys E on days 1, 4, ..., 19 (7 days): 7 x 4 + 7 x 3 = 49 events; before the holdout
    # (March 14: days 0-12) 5 x 4 + 4 x 3 = 32.
    u00 = int(np.flatnonzero(f.users["user_id"].astype(str) == "u00")[0])
    days = np.arange(20) if part == "full" else np.arange(13)
    assert got.lengths()[u00] == 4 * (days % 3 == 0).sum() + 3 * (days % 3 == 1).sum()


def test_each_deep_candidate_is_evaluated_on_the_holdout(night):
    cfg, _ = night
    metrics = read_eval_summary(cfg, DS)["metrics"]
    for name in DEEP_MODELS:
        assert 0.0 <= metrics[name]["ndcg_at_10"] <= 1.0, name


def test_the_saved_sequence_model_is_the_fit_of_the_planted_sequences(night):
    """The train step's sasrec equals one fitted here on sequences built from the events alone."""
    cfg, events = night
    f = read_features(cfg, DS)
    seq = expected_sequences(events, f.users, f.items, HOLDOUT_START.tz_localize("UTC"))
    mine = fit_model(make_model("sasrec", cfg), f.train, items_for_fit(f.items, "pop_train"), seq)
    saved = load_model(layout(cfg).holdout_model(DS, "sasrec"))
    np.testing.assert_allclose(saved.user_factors_, mine.user_factors_, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(saved.item_factors_, mine.item_factors_, rtol=1e-4, atol=1e-5)


def test_the_sequence_model_is_a_generator_of_the_hybrid(night):
    """The rank step judged the hybrid against exactly the configured generators (and the two
    baselines) on its window: sasrec among them, fitted on the daily table's sequences."""
    cfg, _ = night
    m = pd.read_parquet(hybrid_metrics_path(cfg, DS))
    assert set(m["model"]) == {"hybrid", "buy_again", "itemknn", "sasrec", "popularity", "trending"}
    ndcg = m[(m["metric"] == "ndcg_at_10") & (m["model"] == "sasrec")]["value"]
    # Task "all" (the planted shoppers re-buy; "new" has no truth): sasrec scored like every list.
    assert set(m["task"]) == {"all"} and len(ndcg) == 1 and ndcg.between(0, 1).all()


def test_the_two_tower_item_tower_places_never_bought_items_on_product_pages(night):
    """cold_item_model two_tower: the content leg of similar_items is the cosine of the two-tower
    item vectors (recomputed here from the saved model), and the never-bought N, described as C is
    (the titles' one-letter codes are not tokens: C and D read alike), has C and D as its nearest."""
    cfg, _ = night
    f = read_features(cfg, DS)
    tt = load_model(layout(cfg).model(DS, "two_tower"))
    v = tt.item_vectors() / np.linalg.norm(tt.item_vectors(), axis=1, keepdims=True)
    idx = {k: i for i, k in enumerate(f.items["item_id"].astype(str))}
    sim = pd.read_parquet(layout(cfg).table_file("similar_items", DS))
    both = sim[sim["content_score"] > 0]
    assert len(both)
    want = [v[idx[a]] @ v[idx[b]] for a, b in zip(both["item_id"], both["similar_item_id"])]
    np.testing.assert_allclose(both["content_score"].to_numpy(), want, rtol=1e-4, atol=1e-5)
    cos_n = v @ v[idx["N"]]
    cos_n[idx["N"]] = -np.inf
    assert set(np.argsort(-cos_n)[:2].tolist()) == {idx["C"], idx["D"]}


def test_the_search_runs_a_deep_trial_only_with_its_candidates_whole_budget(night, tmp_path, caplog):
    """A deep model's search trial gets its own budget_seconds, and is skipped when less search time
    is left: two_tower (5 s) is tried, lightgcn and sasrec (1,000 s each, more than the 120 s
    search) are not."""
    import shutil

    from pipelines.run import run_step

    cfg, _ = night
    shutil.copytree(cfg.home, tmp_path / "var")
    trial_cfg = cfg.replace(home=tmp_path / "var", search_budget_seconds=120.0, lightgcn_budget_seconds=1000.0,
                            sasrec_budget_seconds=1000.0, two_tower_budget_seconds=5.0)
    with caplog.at_level(logging.INFO, logger="pipelines.evaluation.search"):
        run_step("evaluate", trial_cfg, DS, "search-trials")
    tried = {t["model"] for t in read_eval_summary(trial_cfg, DS)["search"]}
    assert "two_tower" in tried and not tried & {"lightgcn", "sasrec"}
    skipped = [r.getMessage() for r in caplog.records if "search skips" in r.getMessage()]
    assert len(skipped) == 2 and all("budget_seconds 1000.0s is more than the" in m for m in skipped)
