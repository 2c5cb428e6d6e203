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
import time
from datetime import date

import numpy as np
import pandas as pd
import pyarrow as pa
import scipy.sparse as sp

from models import load_model
from models.base import NO_ITEM, topk
from models.registry import items_for_fit, make_model
from models.rows import RowSet, compact, first_occurrence
from pipelines import constants as C
from pipelines.artifacts import Features, layout
from pipelines.config import Config
from pipelines.hybrid.choice import hybrid_choice
from pipelines.infra.hashing import (
    combine_key_hashes,
    key_hashes,
    recommendation_id_array,
)
from pipelines.ranking.rules import Lists, item_flags, load_rules, rerank_lists
from pipelines.ranking.surface_tables import load_surface

log = logging.getLogger(__name__)


def merge_many(lists: list[tuple[np.ndarray, np.ndarray]], n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row-wise: the first list's ids, then each next list's ids not already present, cut to n.

    ``lists`` holds (ids, scores) pairs of shape (rows, k_j) (a 1-d pair is shared by every row).
    Returns (ids, source, scores) of shape (rows, n): the index of the list each slot came from and
    that list's score; an empty slot has id -1 and source -1. Vectorised: no loop over rows.
    """
    rows = max(l[0].shape[0] for l in lists if l[0].ndim == 2) if any(l[0].ndim == 2 for l in lists) else 1
    first_ids, first_scores = lists[0]
    if first_ids.ndim == 2 and first_ids.shape[1] >= n:
        # Rows whose first list already fills n slots are that list (a list's ids are distinct in a
        # row, as every ranked list here is): only the other rows go through the merge.
        full_rows = (first_ids[:, :n] != NO_ITEM).all(axis=1)
        if full_rows.any():
            out_ids = np.array(first_ids[:, :n], dtype=np.int64)
            out_src = np.zeros((rows, n), dtype=np.int8)
            out_scores = np.array(first_scores[:, :n], dtype=np.float32)
            rest = np.flatnonzero(~full_rows)
            if len(rest):
                sub = [(i[rest], v[rest]) if i.ndim == 2 else (i, v) for i, v in lists]
                out_ids[rest], out_src[rest], out_scores[rest] = _merge_rows(sub, n, len(rest))
            return out_ids, out_src, out_scores
    return _merge_rows(lists, n, rows)


def _merge_rows(lists: list[tuple[np.ndarray, np.ndarray]], n: int, rows: int
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    ids_parts, score_parts, src_parts = [], [], []
    for k, (ids, scores) in enumerate(lists):
        if ids.ndim == 1:
            ids, scores = np.broadcast_to(ids, (rows, len(ids))), np.broadcast_to(scores, (rows, len(scores)))
        if ids.shape[1] > n:  # at most its first n listed ids can be reached
            _, ids, scores = compact(ids != NO_ITEM, ids, np.asarray(scores, dtype=np.float32), width=n)
        ids_parts.append(ids)
        score_parts.append(np.asarray(scores, dtype=np.float32))
        src_parts.append(np.full(ids.shape, k, dtype=np.int8))
    cand, cand_scores, src = np.hstack(ids_parts), np.hstack(score_parts), np.hstack(src_parts)
    ok, out_ids, out_src, out_scores = compact(first_occurrence(cand, cand != NO_ITEM), cand, src, cand_scores,
                                               width=n)
    out_ids = np.where(ok, out_ids, NO_ITEM)
    out_src = np.where(ok, out_src, -1).astype(np.int8)
    out_scores = np.where(ok, out_scores, np.nan).astype(np.float32)
    return out_ids, out_src, out_scores




def country_tops(users: pd.DataFrame, full, k: int, inactive: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per country, the k items most bought (distinct users) by its users, best first: one sparse
    product (countries x users) @ (users x items). Returns (country code per user, ids, scores per
    country, no-country mask per user)."""
    country = users["country"].astype("string").fillna("") if "country" in users else pd.Series([""] * len(users))
    codes, names = pd.factorize(country)
    n_users = len(users)
    member = sp.csr_matrix((np.ones(n_users), (codes, np.arange(n_users))), shape=(len(names), n_users))
    buyers = (member @ (full > 0).astype(np.float32)).toarray().astype(np.float32)
    if len(inactive):
        buyers[:, inactive] = -np.inf
    buyers[buyers <= 0] = -np.inf
    top, top_scores = topk(buyers, k)
    return codes, top, top_scores, (country == "").to_numpy()


def country_popularity(users: pd.DataFrame, full, n: int, exclude, inactive: np.ndarray,
                       rows: np.ndarray | None = None, tops=None) -> tuple[np.ndarray, np.ndarray]:
    """Per user, the items most bought (distinct users) by users of the same country, best first
    (``country_tops``; pass ``tops`` to reuse them across calls). Users without a country get no
    list here (the global popularity list follows in the merge). Returns (ids, scores) for the user
    indices ``rows`` (default all), one row each; with ``exclude``, the row's items are left out."""
    # Room for the user's own items to be removed (capped: global popularity backfills the rest).
    codes, top, top_scores, no_country = tops if tops is not None else \
        country_tops(users, full, n * 4 if exclude is not None else n, inactive)
    rows = np.arange(len(users)) if rows is None else np.asarray(rows, dtype=np.int64)
    ids, scores = top[codes[rows]], top_scores[codes[rows]]
    ids[no_country[rows]] = NO_ITEM
    if exclude is not None and exclude.nnz:
        ids[RowSet(exclude, rows, count="nonzero").has(ids)] = NO_ITEM
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
    vc = item_vectors[cand].tocsr().astype(np.float32)
    # Only the terms the candidates use can score: the profiles are cut to those columns first (a
    # small pool of new items uses a few hundred terms of a vocabulary of tens of thousands).
    terms = np.unique(vc.indices)
    vc = vc[:, terms].tocsr()
    profiles = profiles.tocsc()[:, terms].tocsr()
    # Dense profile blocks times the sparse candidate vectors (profiles share common terms with most
    # items: the scores are dense anyway); a block holds at most 16M floats.
    block = max(1, min(block, 16_777_216 // max(len(terms), len(cand), 1)))
    for start in range(0, rows, block):
        pt = np.ascontiguousarray(profiles[start:start + block].toarray(), dtype=np.float32).T
        s = np.asarray(vc @ np.ascontiguousarray(pt), dtype=np.float32).T.copy()
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
    since = pd.Timestamp(ds) - pd.Timedelta(days=cfg.ranking.new_item_days - 1)
    fresh = (first.isna() | (first >= since)).to_numpy(bool)
    return np.flatnonzero(fresh & items["active"].to_numpy(dtype=bool))


def fresh_pool(items: pd.DataFrame, fresh: np.ndarray, limit: int) -> np.ndarray:
    """At most ``limit`` of the new items compete for the new-item slots (each user's list is scored
    against all of them): catalog-only items never seen in an event first, then the most recently
    first seen, then the most bought (time-decayed); sorted by index."""
    if limit <= 0 or len(fresh) <= limit:
        return fresh
    first = pd.to_datetime(items["first_seen"]) if "first_seen" in items else pd.Series(pd.NaT, index=items.index)
    first = first.iloc[fresh]
    never = first.isna().to_numpy()
    seen_at = first.fillna(pd.Timestamp(0)).astype("int64").to_numpy()
    trend = items["trend_full"].to_numpy(float)[fresh] if "trend_full" in items else np.zeros(len(fresh))
    order = np.lexsort((fresh, -trend, -seen_at, ~never))
    return np.sort(fresh[order[:limit]])


def hybrid_lists(cfg: Config, ds: str, surface: str, n_users: int) -> tuple[np.ndarray, np.ndarray]:
    recs = pd.read_parquet(layout(cfg).models_dir(ds) / "hybrid" / "recommendations.parquet")
    recs = recs[recs["surface"] == surface]
    ids = np.full((n_users, cfg.ranking.top_n), NO_ITEM, dtype=np.int64)
    scores = np.full((n_users, cfg.ranking.top_n), np.nan, dtype=np.float32)
    ids[recs["user_idx"], recs["rank"] - 1] = recs["item_idx"]
    scores[recs["user_idx"], recs["rank"] - 1] = recs["score"]
    return ids, scores












def purchase_matrix(cfg: Config, ds: str, shape: tuple[int, int]) -> sp.csr_matrix:
    """Users x items: distinct days with a purchase, up to ds (from the features step's daily table)."""
    import pyarrow.parquet as pq

    d = pq.read_table(layout(cfg).features_dir(ds) / "daily.parquet", columns=["user_idx", "item_idx", "purchases"]).to_pandas()
    d = d[d["purchases"] > 0]
    m = sp.csr_matrix((np.ones(len(d), np.float32), (d["user_idx"], d["item_idx"])), shape=shape)
    m.sum_duplicates()
    return m


USER_RECS_SCHEMA = pa.schema([
    ("recommendation_id", pa.string()), ("ds", pa.date32()), ("run_id", pa.string()), ("surface", pa.string()),
    ("user_id", pa.string()), ("rank", pa.int32()), ("item_id", pa.string()), ("score", pa.float32()),
    ("model", pa.string()), ("reason", pa.string()), ("experiment_id", pa.string()), ("variant", pa.string())])


def user_recommendation_tables(cfg: Config, ds: str, run_id: str, f: Features, selected: dict,
                               experiments: list | None = None, users: np.ndarray | None = None):
    """``for_you``, ``new_for_you`` and ``buy_again`` for every user (or the user indices ``users``:
    one shard), through the rules layer, as one Arrow table per chunk of ``score_chunk_users``
    users (memory stays bounded whatever the shard size). ``selected``: the select step's decision
    (selected.json). A user's rows do not depend on which other users are in the call, so chunks and
    shards concatenate to exactly the single-call table."""

    rules = load_rules(cfg)
    champion_name = selected["champion"]
    full, items, users_df = f.full, f.items, f.users
    flags = item_flags(items, rules)
    unavailable = np.flatnonzero(~flags["available"].to_numpy())
    champion = load_model(layout(cfg).models_dir(ds) / "champion")
    popularity = load_model(layout(cfg).models_dir(ds) / "popularity")
    content = load_model(layout(cfg).models_dir(ds) / "content")
    n_users, n = full.shape[0], cfg.ranking.top_n
    width = 2 * n  # candidates per user before the rules drop and re-order some
    users = np.arange(n_users) if users is None else np.asarray(users, dtype=np.int64)
    empty_history = np.diff(full.indptr) == 0
    use_hybrid = hybrid_choice(cfg, ds)
    user_ids = users_df["user_id"].astype(str).to_numpy(dtype=object)
    item_ids = items["item_id"].astype(str).to_numpy(dtype=object)
    item_index = {k: i for i, k in enumerate(item_ids)}
    bought = purchase_matrix(cfg, ds, full.shape)
    cat_codes, _ = pd.factorize(items["category_key"].astype(str)) if "category_key" in items else \
        (np.zeros(len(items), np.int64), None)
    n_cats = int(cat_codes.max()) + 1 if len(cat_codes) else 1
    onehot = sp.csr_matrix((np.ones(len(cat_codes), np.float32), (np.arange(len(cat_codes)), cat_codes)),
                           shape=(len(cat_codes), n_cats))
    user_categories = (full @ onehot).tocsr()
    country = users_df["country"].astype("string").fillna("") if "country" in users_df else pd.Series([""] * n_users)
    vectors = content.item_vectors()
    interests = users_df["interests"] if "interests" in users_df else pd.Series([None] * n_users)
    personalized = users_df["personalized"].to_numpy(bool) if "personalized" in users_df else np.ones(n_users, bool)
    stated = empty_history & personalized & interests.fillna("").astype(str).str.strip().ne("").to_numpy()

    def profiles(rows: np.ndarray) -> sp.csr_matrix:
        """Content profiles: the TF-IDF of the items a user interacted with; a user without history
        but with stated interests (quiz answers, preferred categories) gets the TF-IDF of that text."""
        out = (full[rows] @ vectors).tocsr()
        st = np.flatnonzero(stated[rows])
        if len(st):  # their history rows are empty: add the text vectors in their places
            place = sp.csr_matrix((np.ones(len(st), np.float32), (st, np.arange(len(st)))), shape=(len(rows), len(st)))
            out = (out + place @ content.text_vectors(interests.iloc[rows[st]].tolist())).tocsr()
        return out

    fresh_items = new_items(cfg, ds, items)
    fresh_items = fresh_pool(items, fresh_items[flags["available"].to_numpy()[fresh_items]], cfg.ranking.new_item_pool)
    slots = min(cfg.ranking.new_item_slots, n) if len(fresh_items) else 0
    best = load_surface(cfg, ds, "best_sellers")
    best = best.assign(item_idx=best["item_id"].map(item_index)).dropna(subset=["item_idx"])
    best["item_idx"] = best["item_idx"].astype(np.int64)
    overall = best[best["country"] == "ALL"].sort_values("rank")["item_idx"].to_numpy()
    # Items a list must never show: for_you, what the user returned in full (bought, net weight 0);
    # new_for_you, everything the user interacted with or ever bought (returned purchases included).
    kept = bought.multiply(full > 0).tocsr()
    returned = (bought - kept).tocsr()
    returned.eliminate_zeros()
    touched = ((full > 0).astype(np.float32) + (bought > 0).astype(np.float32)).tocsr()
    never = {"all": returned, "new": touched}
    # One set of lists per kind an active experiment needs ("current" always): docs/ab-testing.md.
    experiments = experiments or []
    kinds = ["current"] + sorted({v.lists for exp, _ in experiments for v in exp.variants} - {"current", "none"})
    chall_dir = layout(cfg).models_dir(ds) / "challenger"
    sources = {"current": (champion, champion_name, True), "champion": (champion, champion_name, False),
               "challenger": (load_model(chall_dir) if (chall_dir / "params.json").exists() else champion,
                              selected.get("challenger", champion_name), False),
               "popularity": (None, "popularity", False)}
    tops = {task: country_tops(users_df, full, width * 4 if task == "new" else width, unavailable)
            for task in ("all", "new")}
    hybrid = {surface: hybrid_lists(cfg, ds, surface, n_users)
              for surface, task in ((C.SURFACE_FOR_YOU, "all"), ("new_for_you", "new")) if use_hybrid[task]}
    ba = make_model("buy_again", cfg).fit(full, items_for_fit(items, "pop_full"))
    available_items = np.flatnonzero(flags["available"].to_numpy())
    by_country = best[best["country"] != "ALL"][["country", "item_idx"]]

    # Sources and reasons as small vocabularies (int codes per row; Arrow dictionaries at the end).
    model_names = sorted({name for _, name, _ in sources.values()})
    names = ["hybrid", "content_interests", "popular_in_country", "popularity", "content_new_item", "discovery",
             "pinned", "buy_again"] + [k for k in model_names if k not in ("hybrid", "popularity")]
    code_of = {k: i for i, k in enumerate(names)}
    surfaces = sorted([C.SURFACE_FOR_YOU, "new_for_you", "buy_again"])
    # Backfill: best sellers of the user's country (a country x rank table), then overall. Every user
    # has a country code (a missing country is "").
    country_codes, country_names = pd.factorize(country)
    back_table = np.full((len(country_names), max(int(by_country.groupby("country").size().max()), 1)
                          if len(by_country) else 1), NO_ITEM, np.int64)
    if len(by_country):
        bc = by_country.assign(code=pd.Index(country_names).get_indexer(by_country["country"]))
        bc = bc[bc["code"] >= 0]
        back_table[bc["code"].to_numpy(), bc.groupby("code", sort=False).cumcount().to_numpy()] = bc["item_idx"]
    overall_n = overall[:n]
    reasons = ["picked for you", "you buy this regularly", "matches your interests", "best seller", "new arrival",
               "discovery: outside your usual categories", "featured"] + [f"popular in {c}" for c in country_names]
    reason_of_source = np.zeros(len(names), np.int32)
    for k, r in (("content_interests", 2), ("popularity", 3), ("content_new_item", 4), ("discovery", 5),
                 ("pinned", 6)):
        reason_of_source[code_of[k]] = r
    user_id_dict = pa.array(user_ids, pa.string())
    item_id_dict = pa.array(item_ids, pa.string())
    # recommendation_id: each key column's value hashes, computed once per distinct value.
    user_hash, item_hash, surface_hash = key_hashes(user_ids), key_hashes(item_ids), key_hashes(surfaces)
    rank_hash = key_hashes(range(n + 1))  # ranks 1..top_n

    def chunk(users: np.ndarray) -> pd.DataFrame:
        m = len(users)
        prof = profiles(users)
        sets = {"bought": RowSet(bought, users), "categories": RowSet(user_categories, users),
                "all": RowSet(never["all"], users), "new": RowSet(never["new"], users)}
        back_ids = np.hstack([back_table[country_codes[users]], np.broadcast_to(overall_n, (m, len(overall_n)))])
        back_src = np.hstack([np.full((m, back_table.shape[1]), code_of["popular_in_country"], np.int16),
                              np.full((m, len(overall_n)), code_of["popularity"], np.int16)])
        fresh_ids = np.full((m, 0), NO_ITEM, np.int64)
        if slots:
            fresh_ids, _ = content_lists(prof, vectors, fresh_items, slots, full[users], cfg.scale.score_block_users)
        per_kind = {}
        for kind in kinds:
            model, model_name, allow_hybrid = sources[kind]
            parts = []
            if model is not None:
                # for_you and new_for_you from one scoring pass (models.base.recommend_with_own).
                both = model.recommend_with_own(users, full, width, full, filter_items=unavailable)
            for k, (surface, task, exclude) in enumerate(((C.SURFACE_FOR_YOU, "all", None),
                                                          ("new_for_you", "new", full))):
                if model is not None:
                    champ_ids, champ_scores = both[k]
                    champ_ids[empty_history[users]] = NO_ITEM  # a factor model's guess for an empty row is noise
                else:  # the non-personalised arm: best sellers only
                    champ_ids, champ_scores = np.full((m, width), NO_ITEM), np.full((m, width), -np.inf)
                pop_ids, pop_scores = popularity.recommend(users, full, width, exclude=exclude, filter_items=unavailable)
                # Fallbacks: what shoppers of the user's country buy, then what everyone buys.
                country_ids, country_scores = country_popularity(users_df, full, width, exclude, unavailable,
                                                                 rows=users, tops=tops[task])
                interest_ids, interest_scores = np.full((m, width), NO_ITEM), np.full((m, width), -np.inf)
                st = stated[users]
                if st.any() and model is not None:
                    interest_ids[st], interest_scores[st] = content_lists(
                        prof[np.flatnonzero(st)], vectors, available_items, width, None, cfg.scale.score_block_users)
                lists = [(champ_ids, champ_scores), (interest_ids, interest_scores), (country_ids, country_scores),
                         (pop_ids, pop_scores)]
                list_names = [model_name, "content_interests", "popular_in_country", "popularity"]
                if allow_hybrid and surface in hybrid:
                    h_ids, h_scores = hybrid[surface]
                    lists.insert(0, (h_ids[users], h_scores[users]))
                    list_names.insert(0, "hybrid")
                merged, source, _ = merge_many(lists, width)
                cand_src = np.asarray([code_of[x] for x in list_names] + [-1], np.int16)[source]
                out = rerank_lists(
                    users, merged, cand_src, surface=surface, rules=rules, flags=flags, category=cat_codes,
                    bought=sets["bought"], user_categories=sets["categories"], top_n=n,
                    fresh_ids=fresh_ids if model is not None else fresh_ids[:, :0],
                    fresh_slots=slots if model is not None else 0, discovery_pool=overall, back_ids=back_ids,
                    back_src=back_src, item_index=item_index, exclude_owned=sets[task], codes=code_of)
                parts.append((surface, out))
            per_kind[kind] = _frame(users, parts)
        # buy_again: the user's own repeatable purchases, by count, recency-free repeatability (no backfill).
        ba_ids, _ = ba.recommend(users, bought, n, filter_items=unavailable)
        ok = sets["bought"].has(ba_ids) & flags["repeatable"].to_numpy(bool)[np.maximum(ba_ids, 0)]
        ok, ba_ids = compact(ok, ba_ids)
        ba_lists = Lists(np.where(ok, ba_ids, NO_ITEM), np.full(ba_ids.shape, code_of["buy_again"], np.int16),
                         np.zeros(ba_ids.shape))
        out = pd.concat([_frame(users, [("buy_again", ba_lists)]), per_kind["current"]], ignore_index=True)
        out["experiment_id"], out["variant"] = None, None
        for exp, assigned in experiments:
            # Users of each variant get that variant's lists on the experiment's surfaces.
            variant_of = assigned["variant"].to_numpy()
            on = out["surface"].isin(exp.surfaces).to_numpy()
            keep = ~on
            parts = [out[keep]]
            for v in exp.variants:
                members = variant_of == v.name
                if v.lists == "none":
                    continue
                src = out if v.lists == "current" else per_kind[v.lists].assign(experiment_id=None, variant=None)
                if v.lists != "current":
                    src = pd.concat([src, out[out["surface"] == "buy_again"]], ignore_index=True)
                rows = src[src["surface"].isin(exp.surfaces).to_numpy() & members[src["user_idx"].to_numpy()]]
                parts.append(rows.assign(experiment_id=exp.id, variant=v.name))
            out = pd.concat(parts, ignore_index=True)
        order = np.lexsort((out["rank"].to_numpy(), out["user_idx"].to_numpy(), out["surface"].cat.codes.to_numpy()))
        out = out.take(order).reset_index(drop=True)
        out["owned"] = sets["bought"].has(out["item_idx"].to_numpy()[:, None], rows=out["row"].to_numpy())[:, 0]
        return out

    def _frame(users: np.ndarray, parts: list) -> pd.DataFrame:
        """Rectangular lists per surface -> long rows (surface, row, user_idx, rank, item_idx, utility, source)."""
        frames = []
        for surface, lists in parts:
            keep = lists.ids >= 0
            r, c = np.nonzero(keep)
            frames.append(pd.DataFrame({
                "surface": pd.Categorical.from_codes(np.full(len(r), surfaces.index(surface), np.int8), surfaces),
                "row": r, "user_idx": users[r], "rank": (c + 1).astype(np.int32), "item_idx": lists.ids[keep],
                "utility": lists.utility[keep], "source": lists.src[keep]}))
            if surface != "buy_again":
                length = keep.sum(axis=1)
                short = int(((length > 0) & (length < min(rules.min_items, n))).sum())
                if short:
                    log.warning("publish ds=%s: %d %s lists shorter than min_items %d (catalog too small)", ds,
                                short, surface, rules.min_items)
        return pd.concat(frames, ignore_index=True)

    def to_table(out: pd.DataFrame) -> pa.Table:
        u, i = out["user_idx"].to_numpy(np.int64), out["item_idx"].to_numpy(np.int64)
        src = out["source"].to_numpy(np.int32)
        reason = reason_of_source[src]
        reason = np.where((reason == 0) & out["owned"].to_numpy(bool), 1, reason)
        in_country = src == code_of["popular_in_country"]
        reason[in_country] = 7 + country_codes[u[in_country]]
        surface_codes = out["surface"].cat.codes.to_numpy(np.int32)
        rank = out["rank"].to_numpy(np.int32)
        rows = len(out)
        ids = recommendation_id_array(ds, hashes=combine_key_hashes(
            [surface_hash[surface_codes], user_hash[u], rank_hash[rank], item_hash[i]]))

        def text(codes: np.ndarray, values: pa.Array) -> pa.Array:
            return pa.DictionaryArray.from_arrays(pa.array(codes.astype(np.int32)), values).cast(pa.string())

        return pa.table({
            "recommendation_id": ids, "ds": pa.repeat(pa.scalar(date.fromisoformat(ds), pa.date32()), rows),
            "run_id": pa.repeat(pa.scalar(run_id, pa.string()), rows),
            "surface": text(surface_codes, pa.array(surfaces, pa.string())), "user_id": text(u, user_id_dict),
            "rank": pa.array(rank), "item_id": text(i, item_id_dict),
            "score": pa.array(out["utility"].to_numpy(np.float32)), "model": text(src, pa.array(names, pa.string())),
            "reason": text(reason, pa.array(reasons, pa.string())),
            "experiment_id": pa.array(out["experiment_id"].to_numpy(object), pa.string(), from_pandas=True),
            "variant": pa.array(out["variant"].to_numpy(object), pa.string(), from_pandas=True)},
            schema=USER_RECS_SCHEMA)

    step = max(1, cfg.scale.score_chunk_users)
    t0 = time.perf_counter()
    for start in range(0, max(len(users), 1), step):
        yield to_table(chunk(users[start:start + step]))
        if len(users) > step:
            done = min(start + step, len(users))
            log.info("score ds=%s: %d of %d users (%.0f users/s)", ds, done, len(users),
                     done / max(time.perf_counter() - t0, 1e-9))


def user_recommendations(cfg: Config, ds: str, run_id: str, f: Features, selected: dict,
                         experiments: list | None = None, users: np.ndarray | None = None) -> pa.Table:
    """All of ``user_recommendation_tables`` as one table (tests, and publish without staged shards)."""
    return pa.concat_tables(list(user_recommendation_tables(cfg, ds, run_id, f, selected, experiments, users)))


















USER_RECS_ORDER = "surface, user_id, rank"






