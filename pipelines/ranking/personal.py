"""The personal lists of the score step: ``for_you``, ``new_for_you`` and ``buy_again`` per user.

* ``for_you`` (repeats allowed) and ``new_for_you`` (items the user never interacted with): the
  two-stage hybrid first where it beat every single model on its holdout (rank step), then the
  champion, then content matches to stated interests (users without history), then what shoppers
  of the user's country buy, then global popularity, without repeating an item; then the rules
  layer (pipelines/ranking/rules.py: availability, boosts, diversity, new items, discovery, pins,
  best-seller backfill up to min_items). Inactive items are never published.
* ``buy_again``: the user's own repeatable purchases.
* A/B experiments (docs/ab-testing.md): each variant's users get that variant's lists.

``PersonalLists`` holds the state of a night, computed once (models, rule inputs, backfill tables,
exclusions, vocabularies, key hashes); ``table(users)`` turns a chunk of users into Arrow rows
(pipelines/ranking/user_table.py). Candidate sources: pipelines/ranking/sources.py; merging:
pipelines/ranking/merge.py; source and reason codes: pipelines/ranking/reasons.py.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import pandas as pd
import pyarrow as pa
import scipy.sparse as sp

from models import load_model
from models.base import NO_ITEM, Recommender
from models.registry import items_for_fit, make_model
from models.rows import RowSet, compact
from pipelines import constants as C
from pipelines.artifacts import Features, layout
from pipelines.config import Config
from pipelines.hybrid.choice import hybrid_choice
from pipelines.infra.logs import Progress
from pipelines.ranking.history import UserHistory, item_categories
from pipelines.ranking.merge import merge_many
from pipelines.ranking.reasons import Source, SourceVocabulary
from pipelines.ranking.rules import (
    Candidates,
    Lists,
    Rules,
    RulesNight,
    SourceCodes,
    UserRows,
    item_flags,
    load_rules,
    rerank_lists,
)
from pipelines.ranking.sources import (
    best_sellers,
    content_lists,
    country_popularity,
    country_tops,
    factor_lists,
    fresh_candidates,
    hybrid_lists,
)
from pipelines.ranking.user_table import (
    TableEncoder,
    long_rows,
)

log = logging.getLogger(__name__)

# The two ranked surfaces and their task: "all" (for_you) never shows what the user returned in
# full; "new" (new_for_you) never shows anything the user interacted with.
SURFACE_TASKS = ((C.SURFACE_FOR_YOU, "all"), ("new_for_you", "new"))
BUY_AGAIN = "buy_again"


@dataclass(frozen=True)
class ListSource:
    """One kind of lists (an experiment's ``lists``): its model (None: best sellers only), the
    model's name (its rows' source) and whether the hybrid leads where it won."""
    model: Recommender | None
    name: str
    allow_hybrid: bool


class Shared(NamedTuple):
    """The candidate lists of one task that do not depend on the kind: (ids, scores) each."""
    interests: tuple[np.ndarray, np.ndarray]
    country: tuple[np.ndarray, np.ndarray]
    popularity: tuple[np.ndarray, np.ndarray]


@dataclass(frozen=True)
class Block:
    """One chunk of users: the rules' view of them, their exclusions per task, their new-item
    candidates and the lists every kind shares (per task)."""
    users: np.ndarray
    rows: UserRows
    never: dict[str, RowSet]
    fresh_ids: np.ndarray
    shared: dict[str, Shared]


class PersonalLists:
    """The personal lists of one night. The constructor computes what every chunk of users shares;
    ``table(users)`` is the Arrow table of a chunk. A user's rows do not depend on which other users
    are in the chunk."""

    def __init__(self, cfg: Config, ds: str, run_id: str, f: Features, selected: dict,
                 experiments: list | None = None) -> None:
        self.cfg, self.ds, self.f = cfg, ds, f
        self.n, self.width = cfg.ranking.top_n, 2 * cfg.ranking.top_n  # candidates before the rules drop some
        self.experiments = experiments or []
        self._init_rules(load_rules(cfg))
        self._init_models(selected)
        self._init_candidates()
        user_ids = f.users["user_id"].astype(str).to_numpy(dtype=object)
        self.encoder = TableEncoder.build(ds, run_id, self.vocab, user_ids, self.item_ids, self.best.country_codes,
                                          self.best.country_names, self.n)

    def _init_rules(self, rules: Rules) -> None:
        """Item flags and categories, the best sellers, the new-item pool and what each user may be shown."""
        cfg, ds, f = self.cfg, self.ds, self.f
        self.rules, self.flags, self.category = rules, item_flags(f.items, rules), item_categories(f.items)
        available = self.flags["available"].to_numpy()
        self.unavailable, self.available_items = np.flatnonzero(~available), np.flatnonzero(available)
        self.item_ids = f.items["item_id"].astype(str).to_numpy(dtype=object)
        self.item_index = {k: i for i, k in enumerate(self.item_ids)}
        self.history = UserHistory.build(cfg, ds, f, self.category)
        self.best = best_sellers(cfg, ds, f.users, self.item_index)
        self.fresh_items = fresh_candidates(cfg, ds, f.items, available)
        self.slots = min(cfg.ranking.new_item_slots, self.n) if len(self.fresh_items) else 0

    def _init_models(self, selected: dict) -> None:
        """The models, one ListSource per kind of lists the night needs ("current" always), the
        source vocabulary and the rules' per-night inputs."""
        cfg, ds, lay = self.cfg, self.ds, layout(self.cfg)
        champion, champion_name = load_model(lay.model(ds, "champion"), cfg), selected["champion"]
        challenger_name = selected.get("challenger", champion_name)
        self.popularity = load_model(lay.model(ds, "popularity"), cfg)
        self.content = load_model(lay.model(ds, "content"), cfg)
        self.vectors = self.content.item_vectors()
        # The two-tower item tower places the new items instead of the TF-IDF (cold_item_model).
        self.cold = load_model(lay.model(ds, "two_tower"), cfg) if cfg.ranking.cold_item_model == "two_tower" else None
        self.buy_again = make_model(BUY_AGAIN, cfg).fit(self.f.full, items_for_fit(self.f.items, "pop_full"))
        wanted = {v.lists for exp, _ in self.experiments for v in exp.variants} - {"current", "none"}
        self.kinds = {"current": ListSource(champion, champion_name, True)}
        for kind in sorted(wanted):
            if kind == "champion":
                self.kinds[kind] = ListSource(champion, champion_name, False)
            elif kind == "challenger":
                has = (lay.model(ds, "challenger") / "params.json").exists()
                self.kinds[kind] = ListSource(load_model(lay.model(ds, "challenger"), cfg) if has else champion,
                                              challenger_name, False)
            elif kind == "popularity":
                self.kinds[kind] = ListSource(None, "popularity", False)
            else:
                raise KeyError(kind)
        self.vocab = SourceVocabulary.of([champion_name, challenger_name, "popularity"])
        v = self.vocab
        codes = SourceCodes(v[Source.CONTENT_NEW_ITEM], v[Source.DISCOVERY], v[Source.PINNED])
        self.night = RulesNight(self.rules, self.flags, self.category, self.best.overall, self.item_index, self.n,
                                codes)

    def _init_candidates(self) -> None:
        """Per-night candidate tables: country tops per task and the hybrid's lists where it won."""
        f, width = self.f, self.width
        self.tops = {task: country_tops(f.users, f.full, width * 4 if task == "new" else width, self.unavailable)
                     for task in ("all", "new")}
        use_hybrid = hybrid_choice(self.cfg, self.ds)
        self.hybrid = {surface: hybrid_lists(self.cfg, self.ds, surface, f.full.shape[0])
                       for surface, task in SURFACE_TASKS if use_hybrid[task]}

    # ------------------------------------------------------------------ one chunk of users
    def table(self, users: np.ndarray) -> pa.Table:
        return self.encoder.table(self.rows(users))

    def rows(self, users: np.ndarray) -> pd.DataFrame:
        """Long rows of a chunk, ordered by surface, user, rank (experiment rows included)."""
        block = self._block(users)
        per_kind = {kind: self._kind_rows(block, kind) for kind in self.kinds}
        out = pd.concat([self._buy_again_rows(block), per_kind["current"]], ignore_index=True)
        out["experiment_id"], out["variant"] = None, None
        for exp, assigned in self.experiments:
            out = _experiment_rows(out, per_kind, exp, assigned)
        order = np.lexsort((out["rank"].to_numpy(), out["user_idx"].to_numpy(), out["surface"].cat.codes.to_numpy()))
        out = out.take(order).reset_index(drop=True)
        out["owned"] = block.rows.bought.has(out["item_idx"].to_numpy()[:, None], rows=out["row"].to_numpy())[:, 0]
        return out

    def _block(self, users: np.ndarray) -> Block:
        h, m = self.history, len(users)
        profiles = h.profiles(self.content, self.vectors, users)
        table, overall = self.best.table, self.best.overall[:self.n]
        back_ids = np.hstack([table[self.best.country_codes[users]], np.broadcast_to(overall, (m, len(overall)))])
        back_src = np.hstack([np.full((m, table.shape[1]), self.vocab[Source.POPULAR_IN_COUNTRY], np.int16),
                              np.full((m, len(overall)), self.vocab[Source.POPULARITY], np.int16)])
        rows = UserRows(RowSet(h.bought, users), RowSet(h.categories, users), back_ids, back_src)
        fresh_ids = np.full((m, 0), NO_ITEM, np.int64)
        if self.slots:
            fresh_ids = self._fresh(users, profiles)
        never = {task: RowSet(h.never[task], users) for task in {t for _, t in SURFACE_TASKS} | {"disliked"}}
        shared = {task: self._shared(users, profiles, task) for _, task in SURFACE_TASKS}
        return Block(users, rows, never, fresh_ids, shared)

    def _fresh(self, users: np.ndarray, profiles: sp.csr_matrix) -> np.ndarray:
        """The new-item slots' items: by content (TF-IDF profiles), or by the two-tower vectors for
        users with history (cold_item_model two_tower; the others, stated interests included, by content)."""
        full, block = self.history.full[users], self.cfg.scale.score_block_users
        if self.cold is None:
            return content_lists(profiles, self.vectors, self.fresh_items, self.slots, full, block)[0]
        ids = np.full((len(users), self.slots), NO_ITEM, np.int64)
        has = np.diff(full.indptr) > 0
        known, rest = np.flatnonzero(has), np.flatnonzero(~has)
        ids[known] = factor_lists(self.cold.user_vectors()[users[known]], self.cold.item_vectors(), self.fresh_items,
                                  self.slots, full[known], block)[0]
        if len(rest):
            ids[rest] = content_lists(profiles[rest], self.vectors, self.fresh_items, self.slots, full[rest], block)[0]
        return ids

    def _shared(self, users: np.ndarray, profiles: sp.csr_matrix, task: str) -> Shared:
        """Popularity, country and stated-interest lists of a task (new_for_you: without the user's items)."""
        full, m, width = self.history.full, len(users), self.width
        exclude = full if task == "new" else None
        popular = self.popularity.recommend(users, full, width, exclude=exclude, filter_items=self.unavailable)
        country = country_popularity(self.f.users, full, width, exclude, self.unavailable, rows=users,
                                     tops=self.tops[task])
        interest_ids, interest_scores = np.full((m, width), NO_ITEM), np.full((m, width), -np.inf)
        st = self.history.stated[users]
        if st.any():
            interest_ids[st], interest_scores[st] = content_lists(
                profiles[np.flatnonzero(st)], self.vectors, self.available_items, width, None,
                self.cfg.scale.score_block_users)
        return Shared((interest_ids, interest_scores), country, popular)

    def _kind_rows(self, block: Block, kind: str) -> pd.DataFrame:
        """One kind's for_you and new_for_you rows, through the rules."""
        source = self.kinds[kind]
        own = None
        if source.model is not None:  # both surfaces from one scoring pass (models.base.recommend_with_own)
            full = self.history.full
            own = source.model.recommend_with_own(block.users, full, self.width, full, filter_items=self.unavailable)
        frames = []
        for k, (surface, task) in enumerate(SURFACE_TASKS):
            cand = self._candidates(block, source, surface, task, None if own is None else own[k])
            lists = rerank_lists(self.night, block.rows, cand)
            self._warn_short(surface, lists)
            frames.append(long_rows(block.users, surface, lists))
        return pd.concat(frames, ignore_index=True)

    def _candidates(self, block: Block, source: ListSource, surface: str, task: str, own) -> Candidates:
        """The merged candidates of a surface: hybrid (where it leads), the kind's model, stated
        interests, the user's country, popularity."""
        m, width, users = len(block.users), self.width, block.users
        empty = (np.full((m, width), NO_ITEM), np.full((m, width), -np.inf))
        if own is not None:
            model_ids, model_scores = own
            model_ids[self.history.empty[users]] = NO_ITEM  # a factor model's guess for an empty row is noise
        else:  # the non-personalised kind: best sellers only
            model_ids, model_scores = empty
        shared = block.shared[task]
        lists = [(model_ids, model_scores), shared.interests if source.model is not None else empty,
                 shared.country, shared.popularity]
        names = [source.name, Source.CONTENT_INTERESTS.label, Source.POPULAR_IN_COUNTRY.label, Source.POPULARITY.label]
        if source.allow_hybrid and surface in self.hybrid:
            h_ids, h_scores = self.hybrid[surface]
            lists.insert(0, (h_ids[users], h_scores[users]))
            names.insert(0, Source.HYBRID.label)
        merged, origin, _ = merge_many(lists, width)
        cand_src = np.asarray([self.vocab.code[x] for x in names] + [-1], np.int16)[origin]
        fresh = block.fresh_ids if source.model is not None else block.fresh_ids[:, :0]
        return Candidates(surface, merged, cand_src, fresh, self.slots if source.model is not None else 0,
                          block.never[task])

    def _buy_again_rows(self, block: Block) -> pd.DataFrame:
        """The user's own repeatable purchases, by count (no backfill)."""
        ids, _ = self.buy_again.recommend(block.users, self.history.bought, self.n, filter_items=self.unavailable)
        ok = block.rows.bought.has(ids) & self.night.repeatable[np.maximum(ids, 0)] & ~block.never["disliked"].has(ids)
        ok, ids = compact(ok, ids)
        lists = Lists(np.where(ok, ids, NO_ITEM), np.full(ids.shape, self.vocab[Source.BUY_AGAIN], np.int16),
                      np.zeros(ids.shape))
        return long_rows(block.users, BUY_AGAIN, lists)

    def _warn_short(self, surface: str, lists: Lists) -> None:
        length = (lists.ids >= 0).sum(axis=1)
        short = int(((length > 0) & (length < min(self.rules.min_items, self.n))).sum())
        if short:
            log.warning("publish ds=%s: %d %s lists shorter than min_items %d (catalog too small)", self.ds,
                        short, surface, self.rules.min_items)


def _experiment_rows(out: pd.DataFrame, per_kind: dict[str, pd.DataFrame], exp, assigned: pd.DataFrame
                     ) -> pd.DataFrame:
    """Users of each variant of ``exp`` get that variant's lists on the experiment's surfaces
    (stamped with experiment and variant); the other surfaces' rows are kept as they are."""
    variant_of = assigned["variant"].to_numpy()
    parts = [out[~out["surface"].isin(exp.surfaces).to_numpy()]]
    for v in exp.variants:
        if v.lists == "none":
            continue
        members = variant_of == v.name
        src = out
        if v.lists != "current":
            src = pd.concat([per_kind[v.lists].assign(experiment_id=None, variant=None),
                             out[out["surface"] == BUY_AGAIN]], ignore_index=True)
        rows = src[src["surface"].isin(exp.surfaces).to_numpy() & members[src["user_idx"].to_numpy()]]
        parts.append(rows.assign(experiment_id=exp.id, variant=v.name))
    return pd.concat(parts, ignore_index=True)


def user_recommendation_tables(cfg: Config, ds: str, run_id: str, f: Features, selected: dict,
                               experiments: list | None = None, users: np.ndarray | None = None):
    """``for_you``, ``new_for_you`` and ``buy_again`` for every user (or the user indices ``users``:
    one shard), through the rules layer, as one Arrow table per chunk of ``score_chunk_users``
    users (memory stays bounded whatever the shard size). ``selected``: the select step's decision
    (selected.json). A user's rows do not depend on which other users are in the call, so chunks and
    shards concatenate to exactly the single-call table."""
    lists = PersonalLists(cfg, ds, run_id, f, selected, experiments)
    users = np.arange(f.full.shape[0]) if users is None else np.asarray(users, dtype=np.int64)
    step = max(1, cfg.scale.score_chunk_users)
    progress = Progress(log, f"score ds={ds}: personal lists", len(users))
    for start in range(0, max(len(users), 1), step):
        yield lists.table(users[start:start + step])
        progress.advance(len(users[start:start + step]))


def user_recommendations(cfg: Config, ds: str, run_id: str, f: Features, selected: dict,
                         experiments: list | None = None, users: np.ndarray | None = None) -> pa.Table:
    """All of ``user_recommendation_tables`` as one table (tests, and publish without staged shards)."""
    return pa.concat_tables(list(user_recommendation_tables(cfg, ds, run_id, f, selected, experiments, users)))
