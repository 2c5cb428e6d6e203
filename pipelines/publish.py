"""Publish step: per-user recommendations, similar items and the evaluation, as one atomic ds.

* ``user_recommendations``: surfaces ``for_you`` (repeats allowed) and ``new_for_you`` (items the
  user never interacted with), exactly ``top_n`` rows each for every user with a valid event up to
  ``ds``. The two-stage hybrid ranks first where it beat every single model on its holdout (rank
  step), then the champion, then what shoppers of the user's country buy, then global popularity,
  without repeating an item; users with no usable history (an empty row) start from their
  country's list. Inactive items are never published.
* ``similar_items``: content (TF-IDF) neighbours for every active item; items whose text matches
  nothing fall back to item-kNN neighbours.
* ``model_runs``: every candidate's holdout metrics (returning and new users), and the hybrid
  against its generators on the ranker's window.

Then the run report (pipelines/report.py) is written and attached to the night's MLflow run.

All three tables of a ds become visible in DuckDB in one transaction (storage.publish_tables).
"""
from __future__ import annotations

import logging
from datetime import date

import numpy as np
import pandas as pd
import pyarrow as pa

from features.interactions import load_features
from models import load_model
import scipy.sparse as sp

from models.base import NO_ITEM, topk
from pipelines import constants as C
from pipelines import storage
from pipelines.config import Config

log = logging.getLogger(__name__)


def merge_many(lists: list[tuple[np.ndarray, np.ndarray]], n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row-wise: the first list's ids, then each next list's ids not already present, cut to n.

    ``lists`` holds (ids, scores) pairs of shape (rows, k_j) (a 1-d pair is shared by every row).
    Returns (ids, source, scores) of shape (rows, n): the index of the list each slot came from and
    that list's score; an empty slot has id -1 and source -1. Vectorised: no loop over rows.
    """
    rows = max(l[0].shape[0] for l in lists if l[0].ndim == 2) if any(l[0].ndim == 2 for l in lists) else 1
    ids_parts, score_parts, src_parts = [], [], []
    for k, (ids, scores) in enumerate(lists):
        if ids.ndim == 1:
            ids, scores = np.broadcast_to(ids, (rows, len(ids))), np.broadcast_to(scores, (rows, len(scores)))
        ids_parts.append(ids)
        score_parts.append(np.asarray(scores, dtype=np.float32))
        src_parts.append(np.full(ids.shape, k, dtype=np.int8))
    cand, cand_scores, src = np.hstack(ids_parts), np.hstack(score_parts), np.hstack(src_parts)
    order = np.argsort(cand, axis=1, kind="stable")
    sorted_ids = np.take_along_axis(cand, order, axis=1)
    dup_sorted = np.zeros_like(sorted_ids, dtype=bool)
    dup_sorted[:, 1:] = sorted_ids[:, 1:] == sorted_ids[:, :-1]
    dup = np.zeros_like(dup_sorted)
    np.put_along_axis(dup, order, dup_sorted, axis=1)  # stable sort: the first occurrence is kept
    invalid = dup | (cand == NO_ITEM)
    pick = np.argsort(invalid, axis=1, kind="stable")[:, :n]
    ok = ~np.take_along_axis(invalid, pick, axis=1)
    out_ids = np.where(ok, np.take_along_axis(cand, pick, axis=1), NO_ITEM)
    out_src = np.where(ok, np.take_along_axis(src, pick, axis=1), -1)
    out_scores = np.where(ok, np.take_along_axis(cand_scores, pick, axis=1), np.nan).astype(np.float32)
    return out_ids, out_src, out_scores


def hybrid_choice(cfg: Config, ds: str) -> dict[str, bool]:
    """Per task, whether the hybrid beat every single generator on its holdout by hybrid_min_gain."""
    path = cfg.eval_dir(ds) / "hybrid_summary.json"
    if not path.exists():
        return {"all": False, "new": False}
    ndcg = storage.read_json(path)["ndcg"]
    out = {}
    for task, by_model in ndcg.items():
        best_single = max(v for k, v in by_model.items() if k != "hybrid")
        out[task] = by_model.get("hybrid", 0.0) > best_single * (1 + cfg.hybrid_min_gain)
        log.info("publish ds=%s: %s lists from %s (hybrid ndcg %.4f, best single %.4f)", ds, task,
                 "the hybrid" if out[task] else "the champion", by_model.get("hybrid", 0.0), best_single)
    return out


def country_popularity(users: pd.DataFrame, full, n: int, exclude, inactive: np.ndarray
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Per user, the items most bought (distinct users) by users of the same country, best first.

    Computed as one sparse product (countries x users) @ (users x items); users without a country
    get no list here (the global popularity list follows in the merge). Returns (ids, scores).
    """
    country = users["country"].astype("string").fillna("") if "country" in users else pd.Series([""] * len(users))
    codes, names = pd.factorize(country)
    n_users = len(users)
    member = sp.csr_matrix((np.ones(n_users), (codes, np.arange(n_users))), shape=(len(names), n_users))
    buyers = (member @ (full > 0).astype(np.float32)).toarray().astype(np.float32)
    if len(inactive):
        buyers[:, inactive] = -np.inf
    buyers[buyers <= 0] = -np.inf
    # Each user's own country's list; excluded items (new_for_you) are removed per user afterwards.
    # Room for the user's own items to be removed (capped: global popularity backfills the rest).
    top, top_scores = topk(buyers, n * 4 if exclude is not None else n)
    ids, scores = top[codes], top_scores[codes]
    no_country = (country == "").to_numpy()
    ids[no_country] = NO_ITEM
    if exclude is not None and exclude.nnz:
        rows = np.repeat(np.arange(n_users), ids.shape[1])
        own = np.asarray(exclude[rows, np.where(ids.ravel() >= 0, ids.ravel(), 0)]).ravel().reshape(ids.shape) > 0
        ids[own] = NO_ITEM
    return ids, scores


def content_lists(profiles: sp.csr_matrix, item_vectors: sp.csr_matrix, cand: np.ndarray, n: int,
                  exclude: sp.csr_matrix | None, block: int) -> tuple[np.ndarray, np.ndarray]:
    """Per profile row, the n items of ``cand`` with the highest positive cosine to the profile
    (TF-IDF space of the content model), leaving out the row's items in ``exclude``. Returns global
    item ids and scores, (rows, n); -1 where fewer items match. Scored in row blocks."""
    rows = profiles.shape[0]
    ids = np.full((rows, n), NO_ITEM, dtype=np.int64)
    vals = np.full((rows, n), -np.inf, dtype=np.float32)
    if not len(cand) or not rows:
        return ids, vals
    vt = item_vectors[cand].T.tocsc()
    for start in range(0, rows, block):
        p = profiles[start:start + block]
        s = np.asarray((p @ vt).toarray(), dtype=np.float32)
        s[s <= 0] = -np.inf
        if exclude is not None:
            own = exclude[start:start + block][:, cand].tocoo()
            s[own.row, own.col] = -np.inf
        local, v = topk(s, n)
        ids[start:start + block] = np.where(local >= 0, cand[np.maximum(local, 0)], NO_ITEM)
        vals[start:start + block] = v
    return ids, vals


def new_items(cfg: Config, ds: str, items: pd.DataFrame) -> np.ndarray:
    """Active items first seen within ``new_item_days`` up to ds, or never seen in any event."""
    first = pd.to_datetime(items["first_seen"]) if "first_seen" in items else pd.Series(pd.NaT, index=items.index)
    since = pd.Timestamp(ds) - pd.Timedelta(days=cfg.new_item_days - 1)
    fresh = (first.isna() | (first >= since)).to_numpy(bool)
    return np.flatnonzero(fresh & items["active"].to_numpy(dtype=bool))


def hybrid_lists(cfg: Config, ds: str, surface: str, n_users: int) -> tuple[np.ndarray, np.ndarray]:
    recs = pd.read_parquet(cfg.models_dir(ds) / "hybrid" / "recommendations.parquet")
    recs = recs[recs["surface"] == surface]
    ids = np.full((n_users, cfg.top_n), NO_ITEM, dtype=np.int64)
    scores = np.full((n_users, cfg.top_n), np.nan, dtype=np.float32)
    ids[recs["user_idx"], recs["rank"] - 1] = recs["item_idx"]
    scores[recs["user_idx"], recs["rank"] - 1] = recs["score"]
    return ids, scores


def user_recommendations(cfg: Config, ds: str, run_id: str, f: dict, champion_name: str) -> pa.Table:
    """``for_you`` (repeats allowed) and ``new_for_you`` (never-bought items only) for every user."""
    full, items = f["full"], f["items"]
    inactive = np.flatnonzero(~items["active"].to_numpy(dtype=bool))
    champion = load_model(cfg.models_dir(ds) / "champion")
    popularity = load_model(cfg.models_dir(ds) / "popularity")
    content = load_model(cfg.models_dir(ds) / "content")
    n_users, n = full.shape[0], cfg.top_n
    users = np.arange(n_users)
    empty_history = np.diff(full.indptr) == 0
    use_hybrid = hybrid_choice(cfg, ds)
    user_ids = f["users"]["user_id"].to_numpy()
    item_ids = items["item_id"].to_numpy()
    vectors = content.item_vectors()
    # Content profiles: the TF-IDF of the items a user interacted with; a user without history but
    # with stated interests (quiz answers, preferred categories) gets the TF-IDF of that text.
    profiles = (full @ vectors).tocsr()
    interests = f["users"]["interests"] if "interests" in f["users"] else pd.Series([None] * n_users)
    stated = empty_history & interests.fillna("").astype(str).str.strip().ne("").to_numpy()
    if stated.any():
        profiles = sp.vstack([profiles[~stated], content.text_vectors(interests[stated].tolist())]).tocsr()
        order = np.concatenate([np.flatnonzero(~stated), np.flatnonzero(stated)])
        profiles = profiles[np.argsort(order, kind="stable")]
    fresh = new_items(cfg, ds, items)
    slots = min(cfg.new_item_slots, n)
    frames = []
    for surface, task, exclude in ((C.SURFACE_FOR_YOU, "all", None), ("new_for_you", "new", full)):
        champ_ids, champ_scores = champion.recommend(users, full, n, exclude=exclude, filter_items=inactive)
        champ_ids[empty_history] = NO_ITEM  # a factor model's guess for an empty row is noise; use popularity
        pop_ids, pop_scores = popularity.recommend(users, full, n, exclude=exclude, filter_items=inactive)
        # Fallbacks: what shoppers of the user's country buy, then what everyone buys.
        country_ids, country_scores = country_popularity(f["users"], full, n, exclude, inactive)
        interest_ids, interest_scores = np.full((n_users, n), NO_ITEM), np.full((n_users, n), -np.inf)
        if stated.any():
            active = np.flatnonzero(items["active"].to_numpy(dtype=bool))
            interest_ids[stated], interest_scores[stated] = content_lists(
                profiles[stated], vectors, active, n, None, cfg.score_block_users)
        lists = [(champ_ids, champ_scores), (interest_ids, interest_scores), (country_ids, country_scores),
                 (pop_ids, pop_scores)]
        names = [champion_name, "content_interests", "popular_in_country", "popularity"]
        if use_hybrid[task]:
            lists.insert(0, hybrid_lists(cfg, ds, surface, n_users))
            names.insert(0, "hybrid")
        if slots and len(fresh):
            # Brand-new items take the last `slots` positions, when similar enough to the profile
            # (no collaborative model can place an item nobody has bought yet).
            head, head_src, head_score = merge_many(lists, n - slots)
            new_ids, new_scores = content_lists(profiles, vectors, fresh, slots, full, cfg.score_block_users)
            merged, source, score = merge_many([(head, head_score), (new_ids, new_scores)] + lists, n)
            # Slot j taken from list 0 is head slot j (merge_many compacts its output to the front).
            from_head = np.pad(head_src, ((0, 0), (0, slots)), constant_values=-1)
            source = np.where(source == 0, from_head, np.where(source == 1, len(names), source - 2))
            source[merged < 0] = -1
            names = names + ["content_new_item"]
        else:
            merged, source, score = merge_many(lists, n)
        keep = merged.ravel() >= 0
        short = int((merged < 0).any(axis=1).sum())
        if short:
            log.warning("publish ds=%s: %d users get fewer than %d %s items (catalog too small)", ds, short, n, surface)
        frames.append(pd.DataFrame({
            "ds": date.fromisoformat(ds), "run_id": run_id, "surface": surface,
            "user_id": np.repeat(user_ids, n)[keep],
            "rank": np.tile(np.arange(1, n + 1, dtype=np.int32), n_users)[keep],
            "item_id": item_ids[merged.ravel()[keep]],
            "score": score.ravel()[keep],
            "model": np.asarray(names + [""])[source.ravel()[keep]],
        }))
    return pa.Table.from_pandas(pd.concat(frames, ignore_index=True), preserve_index=False)


def similar_items(cfg: Config, ds: str, run_id: str, f: dict) -> pa.Table:
    items = f["items"]
    active = np.flatnonzero(items["active"].to_numpy(dtype=bool))
    inactive = np.flatnonzero(~items["active"].to_numpy(dtype=bool))
    n = cfg.similar_items_n
    content = load_model(cfg.models_dir(ds) / "content")
    knn = load_model(cfg.models_dir(ds) / "itemknn")
    c_ids, c_scores = content.similar_items(active, n, filter_items=inactive)
    k_ids, k_scores = knn.similar_items(active, n, filter_items=inactive)
    merged, source, score = merge_many([(c_ids, c_scores), (k_ids, k_scores)], n)
    keep = merged.ravel() >= 0
    item_ids = items["item_id"].to_numpy()
    table = pd.DataFrame({
        "ds": date.fromisoformat(ds),
        "run_id": run_id,
        "item_id": np.repeat(item_ids[active], n)[keep],
        "rank": np.tile(np.arange(1, n + 1, dtype=np.int32), len(active))[keep],
        "similar_item_id": item_ids[merged.ravel()[keep]],
        "score": score.ravel()[keep].astype(np.float32),
        "model": np.where(source.ravel() == 0, "content", "itemknn")[keep],
    })
    return pa.Table.from_pandas(table, preserve_index=False)


def model_runs(cfg: Config, ds: str, run_id: str) -> pa.Table:
    m = pd.read_parquet(cfg.eval_dir(ds) / "metrics.parquet")
    m.insert(0, "run_id", run_id)
    m.insert(0, "ds", date.fromisoformat(ds))
    if "segment" not in m:
        m["segment"] = "returning"
    m["task"], m["protocol"] = "all", "holdout"
    hybrid_path = cfg.eval_dir(ds) / "hybrid_metrics.parquet"
    if hybrid_path.exists():
        # The rank step's own protocol (window of ranker_window_days): hybrid vs its generators.
        h = pd.read_parquet(hybrid_path)
        h = h.assign(ds=date.fromisoformat(ds), run_id=run_id, segment="returning", protocol="ranker_window")
        m = pd.concat([m, h], ignore_index=True)
    cols = ["ds", "run_id", "protocol", "model", "segment", "task", "metric", "value"]
    return pa.Table.from_pandas(m[cols], preserve_index=False)


def publish(cfg: Config, ds: str, run_id: str) -> dict:
    selected = storage.read_json(cfg.models_dir(ds) / "selected.json")
    f = load_features(cfg, ds)
    tables = {
        C.T_USER_RECS: user_recommendations(cfg, ds, run_id, f, selected["champion"]),
        C.T_SIMILAR: similar_items(cfg, ds, run_id, f),
        C.T_MODEL_RUNS: model_runs(cfg, ds, run_id),
    }
    counts = storage.publish_tables(cfg.duckdb_path, cfg.warehouse / "parquet", ds, tables)
    log.info("publish ds=%s: %s -> %s", ds, counts, cfg.duckdb_path)
    from pipelines.report import build_report

    report = build_report(cfg, ds, run_id, f, tables[C.T_USER_RECS].select(["surface", "item_id", "model"]).to_pandas())
    try:
        from pipelines import tracking

        mlflow = tracking.setup(cfg)
        with mlflow.start_run(run_id=selected["mlflow_run_id"]) as run:
            mlflow.log_metrics({f"published.{k}": v for k, v in counts.items()})
            mlflow.log_artifact(str(report), "report")
            mlflow.set_tag("report", f"{run.info.artifact_uri}/report/report.html")
            mlflow.set_tag("published", "true")
    except Exception as exc:  # the tables are already published; a tracking hiccup must not undo that
        log.warning("publish ds=%s: could not log counts to MLflow: %s", ds, exc)
    return {"ds": ds, "run_id": run_id, "rows": counts, "duckdb": str(cfg.duckdb_path), "report": str(report)}
