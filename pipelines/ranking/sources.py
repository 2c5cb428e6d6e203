"""Candidate and backfill lists of the personal lists, besides the models' own: what shoppers of a
user's country buy, content similarity (to a profile, for new items and stated interests), the
night's new items, the hybrid's lists (rank step) and the best-seller backfill (surfaces step)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from models.base import NO_ITEM, topk
from models.rows import RowSet
from pipelines.artifacts import read_hybrid_lists, read_surface
from pipelines.config import Config


def user_countries(users: pd.DataFrame) -> pd.Series:
    """Country per user ("" where missing)."""
    return users["country"].astype("string").fillna("") if "country" in users else pd.Series([""] * len(users))


def country_tops(users: pd.DataFrame, full, k: int, inactive: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per country, the k items most bought (distinct users) by its users, best first: one sparse
    product (countries x users) @ (users x items). Returns (country code per user, ids, scores per
    country, no-country mask per user)."""
    country = user_countries(users)
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
        _positive_top(s, exclude, cand, n, start, ids, vals)
    return ids, vals


def _positive_top(s: np.ndarray, exclude: sp.csr_matrix | None, cand: np.ndarray, n: int, start: int,
                  ids: np.ndarray, vals: np.ndarray) -> None:
    """Rows ``start ..`` of ``ids`` / ``vals``: the top ``n`` positive scores of the block ``s`` (rows x
    ``cand``), the rows' own items in ``exclude`` left out."""
    s[s <= 0] = -np.inf
    if exclude is not None:
        own = exclude[start:start + len(s)][:, cand].tocoo()
        s[own.row, own.col] = -np.inf
    local, v = topk(s, n)
    ids[start:start + len(s)] = np.where(local >= 0, cand[np.maximum(local, 0)], NO_ITEM)
    vals[start:start + len(s)] = v


def factor_lists(user_vecs: np.ndarray, item_vecs: np.ndarray, cand: np.ndarray, n: int,
                 exclude: sp.csr_matrix | None, block: int) -> tuple[np.ndarray, np.ndarray]:
    """``content_lists`` for a factor model's vectors (the two-tower model, ``cold_item_model``):
    per row of ``user_vecs``, the n items of ``cand`` with the highest positive dot product,
    leaving out the row's items in ``exclude``; scored in row blocks."""
    rows = user_vecs.shape[0]
    ids = np.full((rows, n), NO_ITEM, dtype=np.int64)
    vals = np.full((rows, n), -np.inf, dtype=np.float32)
    if not len(cand) or not rows:
        return ids, vals
    vc = np.ascontiguousarray(item_vecs[cand], dtype=np.float32)
    block = max(1, min(block, 16_777_216 // max(len(cand), 1)))
    for start in range(0, rows, block):
        s = np.asarray(user_vecs[start:start + block] @ vc.T, dtype=np.float32)
        _positive_top(s, exclude, cand, n, start, ids, vals)
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
    """The hybrid's lists of one surface (rank step), as (users, top_n) ids and scores; -1 / NaN
    for users it did not rank."""
    recs = read_hybrid_lists(cfg, ds)
    recs = recs[recs["surface"] == surface]
    ids = np.full((n_users, cfg.ranking.top_n), NO_ITEM, dtype=np.int64)
    scores = np.full((n_users, cfg.ranking.top_n), np.nan, dtype=np.float32)
    ids[recs["user_idx"], recs["rank"] - 1] = recs["item_idx"]
    scores[recs["user_idx"], recs["rank"] - 1] = recs["score"]
    return ids, scores


def fresh_candidates(cfg: Config, ds: str, items: pd.DataFrame, available: np.ndarray) -> np.ndarray:
    """The pool of available new items that compete for the new-item slots (``fresh_pool``)."""
    fresh = new_items(cfg, ds, items)
    return fresh_pool(items, fresh[available[fresh]], cfg.ranking.new_item_pool)


@dataclass(frozen=True)
class BestSellers:
    """The best sellers (surfaces step) as backfill: ``overall`` (item indices, best first; also the
    discovery pool) and ``table`` (country code x rank -> item index, -1 past a country's list),
    with ``country_codes`` (per user; a missing country is "") and ``country_names``."""
    overall: np.ndarray
    table: np.ndarray
    country_codes: np.ndarray
    country_names: pd.Index


def best_sellers(cfg: Config, ds: str, users: pd.DataFrame, item_index: dict[str, int]) -> BestSellers:
    best = read_surface(cfg, ds, "best_sellers")
    best = best.assign(item_idx=best["item_id"].map(item_index)).dropna(subset=["item_idx"])
    best["item_idx"] = best["item_idx"].astype(np.int64)
    overall = best[best["country"] == "ALL"].sort_values("rank")["item_idx"].to_numpy()
    by_country = best[best["country"] != "ALL"][["country", "item_idx"]]
    country_codes, country_names = pd.factorize(user_countries(users))
    table = np.full((len(country_names), max(int(by_country.groupby("country").size().max()), 1)
                     if len(by_country) else 1), NO_ITEM, np.int64)
    if len(by_country):
        bc = by_country.assign(code=pd.Index(country_names).get_indexer(by_country["country"]))
        bc = bc[bc["code"] >= 0]
        table[bc["code"].to_numpy(), bc.groupby("code", sort=False).cumcount().to_numpy()] = bc["item_idx"]
    return BestSellers(overall, table, country_codes, country_names)
