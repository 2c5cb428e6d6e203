"""Rank step: the two-stage hybrid. Candidates from several generators, re-ranked by a learned model.

Stage 1: buy-again, item-kNN (BM25), EASE and ALS each propose their top ``ranker_candidates`` items
per user. Stage 2: a gradient-boosted classifier (scikit-learn ``HistGradientBoostingClassifier``)
scores every (user, candidate) pair from features: each generator's score and rank, the user's
weight, purchase days and days since the last interaction with the item, the user's activity and
recency (and, for task all, the share of the user's items bought again), the item's popularity (7 and 30 days, all time), trend, time-decayed purchases and repeat rate,
its review count and sentiment, and with ``ranker_context_features`` the hour-of-day and weekday match
and last year's season (pipelines/hybrid/signals.py).

Windows (``H = ranker_window_days``, days counted in UTC, ``T3`` = the day after ``ds``):

* evaluation: the ranker learns from windows ending at ``T2 = T3 - H`` (features before ``T2 - kH``,
  labels in the following ``H`` days, ``k = 1..ranker_windows``), then ranks at ``T2`` and is scored
  on the purchases of ``[T2, T3)``, beside its generators and popularity on the same protocol;
  nothing of the evaluation window is seen in training;
* publishing: the same, shifted by ``H``: it learns from windows ending at ``T3`` and ranks at ``T3``.

Two tasks: ``all`` (every item bought next, repeats included: the ``for_you`` surface) and ``new``
(items the user never interacted with: ``new_for_you``), each with its own ranker. Scoring runs in
user blocks; memory is ``block x n_items`` floats, whatever the number of users.
"""
from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from features.sequences import UserSequences, from_daily
from models.buy_again import smoothed_repeat_rate
from models.registry import REGISTRY, fit_model, make_model
from pipelines.config import Config, HybridSettings
from pipelines.evaluation.metrics import sample_users
from pipelines.hybrid.signals import CutoffSignals, cutoff_signals, pair_signals
from pipelines.infra import tracking
from pipelines.infra.logs import Progress
from pipelines.signal_artifacts import RankerSignals

log = logging.getLogger(__name__)

GENERATORS = HybridSettings.hybrid_generators  # the default stage-1 models (config hybrid_generators)
TASKS = ("all", "new")


@dataclass
class Cutoff:
    """What is known strictly before day ``day``."""

    day: int
    x: sp.csr_matrix          # summed interaction weights, clipped at 0
    buy_days: sp.csr_matrix   # distinct purchase days per user and item
    since: sp.csr_matrix      # days since the last interaction (1 = the day before the cut-off)
    items: pd.DataFrame       # item_idx, text, popularity (30 days), repeat_rate, pop7, popall, trending
    user_last: np.ndarray     # days since the user's last interaction
    user_days: np.ndarray     # distinct active days of the user
    daily: pd.DataFrame | None = None  # the whole daily table (shared, not copied; for ``sequences``)
    signals: CutoffSignals | None = None  # review and context features (pipelines/hybrid/signals.py)
    user_repeat: np.ndarray | None = None  # share of the user's bought items bought on 2+ days

    def sequences(self) -> UserSequences:
        """Each user's (item, day) rows before the cut-off in day order, for a sequence generator
        (features.sequences.from_daily: a purchase where the day had one, else a view)."""
        d = self.daily[self.daily["day"] < self.day]
        return from_daily(d["user_idx"], d["item_idx"], d["day"], d["purchases"], self.x.shape[0])


def cutoff(daily: pd.DataFrame, day: int, shape: tuple[int, int], text: np.ndarray,
           trending_half_life: float = 7.0, signals: RankerSignals | None = None, horizon: int = 28,
           context: bool = False) -> Cutoff:
    d = daily[daily["day"] < day]
    u, i = d["user_idx"].to_numpy(), d["item_idx"].to_numpy()
    x = sp.csr_matrix((d["w"].to_numpy(np.float32), (u, i)), shape=shape)
    x.sum_duplicates()
    x.data = np.clip(x.data, 0, None)
    x.eliminate_zeros()
    bought = d[d["purchases"] > 0]
    buy_days = sp.csr_matrix((np.ones(len(bought), np.float32), (bought["user_idx"], bought["item_idx"])), shape=shape)
    buy_days.sum_duplicates()
    last = d.groupby(["user_idx", "item_idx"], sort=False)["day"].max()
    since = sp.csr_matrix(((day - last.to_numpy()).astype(np.float32),
                           (last.index.get_level_values(0), last.index.get_level_values(1))), shape=shape)

    def buyers(days: int | None) -> np.ndarray:
        b = bought if days is None else bought[bought["day"] >= day - days]
        return np.bincount(b.drop_duplicates(["user_idx", "item_idx"])["item_idx"], minlength=shape[1]).astype(float)

    hl = float(trending_half_life)
    decayed = np.bincount(bought["item_idx"], weights=bought["purchases"].to_numpy(float)
                          * 0.5 ** ((day - 1 - bought["day"].to_numpy(float)) / hl), minlength=shape[1])
    per_pair = buy_days.tocoo()
    n_buyers = np.bincount(per_pair.col, minlength=shape[1]).astype(float)
    repeat = np.bincount(per_pair.col, weights=(per_pair.data >= 2).astype(float), minlength=shape[1])
    items = pd.DataFrame({"item_idx": np.arange(shape[1]), "text": text, "popularity": buyers(30),
                          "repeat_rate": smoothed_repeat_rate(repeat, n_buyers), "pop7": buyers(7),
                          "popall": n_buyers, "trending": decayed})
    sig = cutoff_signals(daily, signals, day, shape, horizon, context)
    items["review_count"], items["sentiment"] = sig.review_count, sig.sentiment  # the content prior's inputs
    ulast = d.groupby("user_idx")["day"].max()
    user_last = np.full(shape[0], 9999.0)
    user_last[ulast.index.to_numpy()] = day - ulast.to_numpy()
    user_days = np.bincount(d.drop_duplicates(["user_idx", "day"])["user_idx"], minlength=shape[0]).astype(float)
    # The user's habit of buying the same item again (task all's ranker only: task new's candidates
    # are never the user's own items): on Online Retail for_you 0.3765 -> 0.3793 (docs/benchmarks.md).
    user_repeat = np.bincount(per_pair.row, weights=(per_pair.data >= 2).astype(float), minlength=shape[0]) \
        / np.maximum(np.bincount(per_pair.row, minlength=shape[0]), 1)
    return Cutoff(day, x, buy_days, since, items, user_last, user_days, daily, sig, user_repeat)


def truth_matrix(daily: pd.DataFrame, start: int, end: int, shape, new_only: bool, c: Cutoff) -> sp.csr_matrix:
    b = daily[(daily["day"] >= start) & (daily["day"] < end) & (daily["purchases"] > 0)]
    t = sp.csr_matrix((np.ones(len(b), np.float32), (b["user_idx"], b["item_idx"])), shape=shape)
    t.sum_duplicates()
    t.data[:] = 1
    if new_only:
        t = t - t.multiply(c.x > 0)
        t.eliminate_zeros()
    return t.tocsr()


# Generators whose fit at a cut-off starts from their fit at the previous (earlier) cut-off
# (``warm_start``): the two-tower model, whose cold fit is bound by its time budget; with 30 s a fit
# on Online Retail, a night with it took 206.5 s cold against about 70 s without (docs/benchmarks.md). ALS keeps cold
# fits here: its lists are part of the default hybrid, whose figures are pinned.
WARM_GENERATORS = ("two_tower",)


class Generators:
    """The stage-1 models fitted at one cut-off; ``previous``: those of an earlier cut-off, which the
    ``WARM_GENERATORS`` start from (never a later one: it has seen this cut-off's label window)."""

    def __init__(self, cfg: Config, c: Cutoff, previous: Generators | None = None) -> None:
        gens = cfg.hybrid.hybrid_generators
        unknown = sorted(set(gens) - set(REGISTRY))
        if unknown:
            raise ValueError(f"hybrid_generators: unknown model(s) {unknown}; known: {sorted(REGISTRY)}")
        names = [g for g in gens if not (g == "ease" and c.x.shape[1] > cfg.models.ease_max_items)]
        self.models = {}
        for g in names:
            model = make_model(g, cfg)
            if g in WARM_GENERATORS and previous is not None and g in previous.models:
                model.warm_start(previous.models[g])
            self.models[g] = fit_model(model, c.x, c.items, c.sequences)


def candidate_blocks(cfg: Config, c: Cutoff, gens: Generators, users: np.ndarray, new_only: bool,
                     inactive: np.ndarray, progress: Progress | None = None):
    """Candidate pairs (user, item) and their features, one user block at a time: yields
    (user_idx, item_idx, features). Each generator proposes its top ``ranker_candidates`` through its
    own bounded-memory ``recommend`` (sparse or fused top-K, never a dense row of all items), and
    scores the union's pairs with ``score_pairs``. ``progress`` advances by each block's users once
    the consumer is done with it (its scoring included)."""
    n = cfg.hybrid.ranker_candidates
    n_items = c.x.shape[1]
    own_items = (c.x > 0).astype(np.float32).tocsr() if new_only else None
    pop30, pop7 = c.items["popularity"].to_numpy(), c.items["pop7"].to_numpy()
    popall, repeat, trending = (c.items[k].to_numpy() for k in ("popall", "repeat_rate", "trending"))
    item_counts = np.diff(c.x.indptr)
    for start in range(0, len(users), cfg.scale.score_block_users):
        b = users[start:start + cfg.scale.score_block_users]
        tops = {g: model.recommend(b, c.x, n, exclude=own_items,
                                   filter_items=inactive)[0] for g, model in gens.models.items()}
        cand = np.hstack(list(tops.values()))
        rows = np.repeat(np.arange(len(b)), cand.shape[1]).astype(np.int64)
        flat = cand.ravel()
        # The union of the generators' lists (none holds an inactive item, nor in ``new`` an own one).
        keys = np.unique(rows[flat >= 0] * n_items + flat[flat >= 0])
        r, i = keys // n_items, keys % n_items
        uu = b[r]
        feats: dict[str, np.ndarray] = {}
        for g, ids in tops.items():
            v = gens.models[g].score_pairs(uu, i, c.x)
            feats[f"score_{g}"] = np.where(np.isfinite(v), v, -1e3).astype(np.float32)
            # Position in this generator's list; n + 1 = not proposed by it.
            listed = ids.ravel() >= 0
            gen_keys = np.repeat(np.arange(len(b)), n).astype(np.int64)[listed] * n_items + ids.ravel()[listed]
            pos = np.full(len(keys), n + 1, dtype=np.float32)
            pos[np.searchsorted(keys, gen_keys)] = np.tile(np.arange(1, n + 1), len(b))[listed]
            feats[f"rank_{g}"] = pos
        feats["weight"] = np.asarray(c.x[uu, i]).ravel()
        feats["buy_days"] = np.asarray(c.buy_days[uu, i]).ravel()
        since = np.asarray(c.since[uu, i]).ravel()
        feats["days_since"] = np.where(since > 0, since, 9999.0)
        feats["user_last"] = c.user_last[uu]
        feats["user_days"] = c.user_days[uu]
        feats["user_items"] = item_counts[uu].astype(float)
        if not new_only and c.user_repeat is not None:
            feats["user_repeat"] = c.user_repeat[uu]
        feats["pop30"], feats["pop7"], feats["popall"] = pop30[i], pop7[i], popall[i]
        feats["trend"] = (pop7[i] + 1.0) / (pop30[i] / 4.0 + 1.0)
        feats["repeat_rate"] = repeat[i]
        feats["trending"] = trending[i]
        if c.signals is not None:
            feats.update(pair_signals(c.signals, uu, i))
        yield uu, i, pd.DataFrame({k: np.asarray(v, dtype=np.float32) for k, v in feats.items()})
        if progress is not None:
            progress.advance(len(b))


def candidate_frame(cfg: Config, c: Cutoff, gens: Generators, users: np.ndarray, new_only: bool,
                    inactive: np.ndarray, what: str = "rank: candidates"
                    ) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    """All of ``candidate_blocks`` at once (training and evaluation: bounded user samples);
    ``what`` names the stage in the progress lines."""
    progress = Progress(log, what, len(users))
    parts = list(candidate_blocks(cfg, c, gens, users, new_only, inactive, progress))
    if not parts:
        return np.empty(0, np.int64), np.empty(0, np.int64), pd.DataFrame()
    return (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]),
            pd.concat([p[2] for p in parts], ignore_index=True))


def top_n(uu: np.ndarray, ii: np.ndarray, score: np.ndarray, n_users: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Per user, the n best candidates by score: (n_users, n) ids (-1 where fewer) and scores."""
    order = np.lexsort((ii, -score, uu))
    uu, ii, score = uu[order], ii[order], score[order]
    first = np.searchsorted(uu, uu, side="left")
    pos = np.arange(len(uu)) - first
    keep = pos < n
    ids = np.full((n_users, n), -1, dtype=np.int64)
    vals = np.full((n_users, n), -np.inf, dtype=np.float32)
    ids[uu[keep], pos[keep]] = ii[keep]
    vals[uu[keep], pos[keep]] = score[keep]
    return ids, vals


PAIRS_PER_THREAD = 500_000


def fit_threads(pairs: int, threads: int) -> int:
    """OpenMP threads for fitting the ranker on ``pairs`` rows: one per ``PAIRS_PER_THREAD``, at most ``threads``.

    The gradient boosting meets a barrier at every histogram of every node; with OpenMP's waiters
    asleep (``OMP_WAIT_POLICY=PASSIVE``, pipelines/__init__.py) each barrier costs a wake-up, which
    on small fits outweighs the work it splits. Measured on 2 cores, 30 features, 300 trees:
    200,000 pairs 6.6 s on one thread against 13.0 s on two; 2,000,000 pairs 64 s against 43 s.
    """
    return max(1, min(threads, pairs // PAIRS_PER_THREAD))


class Ranker:
    def __init__(self, cfg: Config) -> None:
        from sklearn.ensemble import HistGradientBoostingClassifier

        self.model = HistGradientBoostingClassifier(max_iter=300, learning_rate=0.05, max_leaf_nodes=31,
                                                    early_stopping=False, random_state=cfg.seed)
        self.threads = cfg.scale.thread_count()
        self.fitted = False

    def fit(self, x: pd.DataFrame, y: np.ndarray) -> "Ranker":
        from threadpoolctl import threadpool_limits

        y = np.asarray(y, dtype=bool)
        if len(x) and bool(y.any()) and not bool(y.all()):
            with threadpool_limits(limits=fit_threads(len(x), self.threads), user_api="openmp"):
                self.model.fit(x, y)
            self.fitted = True
        return self

    def save(self, path) -> None:
        """An MLflow scikit-learn model directory (the select step logs it with the night's run)."""

        import mlflow.sklearn

        if path.exists():
            shutil.rmtree(path)
        if self.fitted:
            # The ranker is our own object, loaded only by this project: cloudpickle is fine here, and
            # MLflow's general warning about pickles would only add noise to every night's log.
            tracking.quiet_mlflow()
            logging.getLogger("mlflow.sklearn").setLevel(logging.ERROR)
            mlflow.sklearn.save_model(self.model, str(path), serialization_format="cloudpickle",
                                      pip_requirements=[])

    def score(self, x: pd.DataFrame) -> np.ndarray:
        if not len(x):
            return np.empty(0, np.float32)
        if not self.fitted:  # no training signal: fall back to the first generator's order
            return -x.iloc[:, 1].to_numpy(np.float32)
        return self.model.predict_proba(x)[:, 1].astype(np.float32)


class HybridRun:
    """Cut-offs and fitted generators, cached by day: the evaluation and publishing windows share them."""

    def __init__(self, cfg: Config, daily: pd.DataFrame, shape, text, inactive,
                 signals: RankerSignals | None = None) -> None:
        self.cfg, self.daily, self.shape, self.text, self.inactive = cfg, daily, shape, text, inactive
        self.signals = signals
        self._cut: dict[int, tuple[Cutoff, Generators]] = {}

    def at(self, day: int) -> tuple[Cutoff, Generators]:
        if day not in self._cut:
            log.info("rank: features and generators (%s) at day %d", ", ".join(self.cfg.hybrid.hybrid_generators), day)
            c = cutoff(self.daily, day, self.shape, self.text, self.cfg.features.trending_half_life_days,
                       self.signals, self.cfg.hybrid.ranker_window_days, self.cfg.hybrid.ranker_context_features)
            earlier = [d for d in self._cut if d < day]
            self._cut[day] = (c, Generators(self.cfg, c, self._cut[max(earlier)][1] if earlier else None))
        return self._cut[day]

    def train(self, end: int, new_only: bool) -> Ranker:
        h = self.cfg.hybrid.ranker_window_days
        task, xs, ys = "new" if new_only else "all", [], []
        windows = Progress(log, f"rank task {task}: training windows up to day {end}", self.cfg.hybrid.ranker_windows,
                           "windows")
        first = None if self.daily.empty else int(self.daily["day"].min())
        # Windows with history before them (the next ones, further back, have none either).
        starts = [s for s in (end - h * (k + 1) for k in range(self.cfg.hybrid.ranker_windows))
                  if first is not None and s > first]
        for start in reversed(starts):  # the generators fitted oldest first: warm starts
            self.at(start)
        for k, start in enumerate(starts):
            c, gens = self.at(start)
            truth = truth_matrix(self.daily, start, start + h, self.shape, new_only, c)
            users = np.flatnonzero((np.diff(c.x.indptr) > 0) & (np.diff(truth.indptr) > 0))
            users = sample_users(users, self.cfg.evaluation.eval_max_users, self.cfg.seed + k)
            uu, ii, x = candidate_frame(self.cfg, c, gens, users, new_only, self.inactive,
                                        f"rank task {task}: training window {k + 1} candidates")
            windows.advance()
            if not len(uu):
                # No user with history bought in this window (a quiet period, or one old event far
                # before the rest): nothing to learn from here.
                log.info("rank: training window %d..%d (task %s) has no eligible users; skipped", start,
                         start + h, task)
                continue
            xs.append(x)
            ys.append(pair_labels(truth, uu, ii))
        if not xs:
            return Ranker(self.cfg)
        log.info("rank task %s: fitting the ranker on %d pairs from %d windows", task, sum(map(len, xs)), len(xs))
        return Ranker(self.cfg).fit(pd.concat(xs, ignore_index=True), np.concatenate(ys))


def pair_labels(truth: sp.csr_matrix, uu: np.ndarray, ii: np.ndarray) -> np.ndarray:
    """Whether each (uu[j], ii[j]) pair is in ``truth`` (boolean, one per pair; empty for no pairs:
    scipy's fancy indexing does not take empty index arrays)."""
    if not len(uu):
        return np.zeros(0, bool)
    return np.asarray(truth[uu, ii]).ravel() > 0


def publish_users(c: Cutoff, limit: int) -> np.ndarray:
    """Users with history at the cut-off; above ``limit``, the most active ones (distinct active
    days, then interactions, then index), sorted by index."""
    users = np.flatnonzero(np.diff(c.x.indptr) > 0)
    if limit <= 0 or len(users) <= limit:
        return users
    items = np.diff(c.x.indptr)[users]
    order = np.lexsort((users, -items, -c.user_days[users]))
    log.info("rank: the hybrid lists %d of %d users with history (hybrid_max_users); the others get "
             "the champion's", limit, len(users))
    return np.sort(users[order[:limit]])
