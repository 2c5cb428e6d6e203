"""Two-tower retrieval (PyTorch, models/deep.py): an item tower over the item id and its content, a
user tower over the user's items, trained with an in-batch sampled softmax.

* Content: the item text of features.text.item_text (title, description, ``cat_`` category and
  ``bra_`` brand tokens, price band), as ``items['text']`` (computed from the catalog columns when
  only those are given), vectorised as the content model does (models.content: TF-IDF, sublinear
  tf, the same token pattern; ``min_df``, ``ngram_max``, ``max_features``).
* Item tower: ``h = id embedding + sum_t tfidf_t * term embedding_t``, then
  ``normalize(h + MLP(h))``. Id embeddings start at zero and, in training, each item's is dropped
  with probability ``id_dropout`` per batch, so the content alone places an item: an item nobody
  has bought (no id signal) is embedded from its content, for the new-item slots and its
  ``similar_items``. Without any item text the tower is the id embedding alone.
* User tower: ``normalize(h + MLP(h))``, ``h = m + country embedding + sum_t tfidf_t * term
  embedding_t`` over the user's stated interests (the item tower's vocabulary and term embeddings,
  so an interest "garden" means what the word means in item text), ``m`` the mean of the
  item-tower embeddings of the user's items weighted by the ``user_items`` weights (the summed
  event-type weights of the features step; they carry no recency). Country and interests come from
  ``fit(..., users=)`` (the features' users table, rows = the matrix's users; ``user_features``);
  without them (the hybrid's cut-offs) the user tower is over the items alone. The country
  embeddings start at zero (0 = unknown country).
* The month asked about (``query_month``, with ``fit(..., sequences=)``: the features' sequences,
  or the hybrid cut-off's days): the user tower also adds a learnt embedding of the month of the
  year, in training each pair's (the user's newest purchase of the item; 0 when the sequences do
  not hold it), served the month of the data's newest event (models.towers.pair_months). Retail
  is seasonal: on Online Retail (the holdout is November, the run-up to Christmas) task new's
  NDCG@10 0.0869 -> 0.1122 and task all's 0.2910 -> 0.3120 (docs/benchmarks.md).
* Training: (user, item) pairs of the user's items, the item left out of the user's own history;
  Adam. Up to ``full_softmax_items`` items the softmax runs over every item with interactions (one
  item-tower pass of the catalog per batch; the user's other items left out of the denominator),
  else over the batch's items (``temperature``; other pairs of the same item masked; logQ). With
  ``item_bias`` a learned bias per item is added to the logits: on Online Retail the full softmax
  with the bias took task new's NDCG@10 from 0.0805 to 0.0869 and halved the fit time.
  Early stopping on the validation score (``validation_metric``: AUC or DCG) of a random per-user share (``validation_fraction``), with
  ``patience``, at most ``epochs`` epochs and ``budget_seconds`` (models.deep.fit_loop); above
  ``max_interactions`` interactions it trains on a random sample of whole users (sample_users);
  every user's final embedding is then the user tower over all of the user's items.
* Serving: ``user_factors_`` and ``item_factors_`` (every item of the matrix, those without
  interactions from their content and the median bias; with ``item_bias`` the user vectors over the
  temperature with a ones column, the item vectors with a bias column) as numpy arrays, scored as
  every factor model (models.factors), no torch needed; ``content_vectors(texts)`` embeds items described by text
  only (after the fit) in numpy. Saved as npz (the tower weights through state_to_arrays).
"""
from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import scipy.sparse as sp

from features.text import item_text
from models.content import ContentRecommender
from models.deep import (fit_loop, holdout_split, import_torch, others_mask, pick_device, sample_users,
                         month_of, seed_everything, state_to_arrays, validation_auc)
from models.factors import FactorRecommender
from models.registry import register
from models.towers import Batches, build, pair_months

log = logging.getLogger(__name__)

TOWER = "tower."  # prefix of the tower weights among the saved arrays
# Settings a warm start may differ in: the optimiser's step, time, stopping and device (not the model).
WARM_FREE = frozenset({"learning_rate", "budget_seconds", "epochs", "patience", "warm_epochs", "validation_metric",
                       "device"})


def content_text(items) -> np.ndarray | None:
    """The items' text (``items['text']``, else features.text.item_text of the catalog columns), or
    None when there is none."""
    if items is None:
        return None
    if "text" in items:
        return items["text"].fillna("").astype(str).to_numpy()
    if any(c in items for c in ("title", "description", "category", "brand", "price")):
        return item_text(pd.DataFrame(items)).to_numpy()
    return None


@register
class TwoTower(FactorRecommender):
    name = "two_tower"
    uses_users = True
    uses_sequences = True  # optional: the month of each purchase (query_month)
    # The select step's refit on all data starts cold: a warm refit (tonight's holdout fit plus
    # warm epochs over the newest week) is not measured for this model, unlike ALS's.
    warm_refit = False

    def __init__(self, factors: int = 64, learning_rate: float = 0.005, epochs: int = 30, batch_size: int = 1024,
                 temperature: float = 0.1, id_dropout: float = 0.5, budget_seconds: float = 600.0,
                 patience: int = 3, validation_fraction: float = 0.1, max_interactions: int = 2_000_000,
                 min_df: int = 1, ngram_max: int = 1, max_features: int = 20_000, logq: bool = True,
                 user_features: bool = True, full_softmax_items: int = 20_000, item_bias: bool = True,
                 warm_epochs: int = 1, validation_metric: str = "auc", query_month: bool = True,
                 device: str = "auto", random_state: int = 42) -> None:
        self.query_month = query_month
        self.warm_epochs = warm_epochs
        self.validation_metric = validation_metric
        self.factors = factors
        self.learning_rate = learning_rate
        self.epochs = epochs
        self.batch_size = batch_size
        self.temperature = temperature
        self.id_dropout = id_dropout
        self.budget_seconds = budget_seconds
        self.patience = patience
        self.validation_fraction = validation_fraction
        self.max_interactions = max_interactions
        self.min_df = min_df
        self.ngram_max = ngram_max
        self.max_features = max_features
        self.logq = logq
        self.user_features = user_features
        self.full_softmax_items = full_softmax_items
        self.item_bias = item_bias
        self.device = device
        self.random_state = random_state

    # -- content
    def _vectorizer(self) -> ContentRecommender:
        return ContentRecommender(min_df=self.min_df, ngram_max=self.ngram_max, max_features=self.max_features)

    def _content(self, items, n_items: int) -> sp.csr_matrix:
        """TF-IDF rows (items x terms) as the content model computes them; sets ``terms_``, ``idf_``."""
        text = content_text(items)
        self.terms_, self.idf_ = np.array([], dtype=str), np.array([], dtype=np.float32)
        if text is None:
            return sp.csr_matrix((n_items, 0), dtype=np.float32)
        if len(text) != n_items:
            raise ValueError(f"two_tower: items has {len(text)} rows, user_items {n_items} columns")
        content = self._vectorizer().fit(None, pd.DataFrame({"text": text}))
        if getattr(content, "terms_", None) is None:  # no token in any text
            return sp.csr_matrix((n_items, 0), dtype=np.float32)
        self.terms_, self.idf_ = content.terms_, content.idf_
        return content.item_vectors_.astype(np.float32).tocsr()

    def content_vectors(self, texts) -> np.ndarray:
        """Item-tower embeddings (unit rows) of items known by their text only (no interactions),
        computed in numpy from the saved weights: what ``fit`` gives an item without interactions
        whose ``items['text']`` is the text."""
        w = self.tower_
        if len(self.terms_):
            vec = self._vectorizer()
            vec.item_vectors_ = sp.csr_matrix((0, len(self.terms_)), dtype=np.float32)
            vec.terms_, vec.idf_ = self.terms_, self.idf_
            h = np.asarray(vec.text_vectors(texts) @ w["terms.weight"], dtype=np.float32)
        else:
            h = np.zeros((len(list(texts)), self.factors), np.float32)
        hid = np.maximum(h @ w["item_mlp.0.weight"].T + w["item_mlp.0.bias"], 0)
        out = h + hid @ w["item_mlp.2.weight"].T + w["item_mlp.2.bias"]
        return (out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)).astype(np.float32)

    # -- fit
    def _user_inputs(self, users, n_users: int, n_terms: int) -> tuple[np.ndarray, sp.csr_matrix]:
        """(country code per user, 0 = unknown; the TF-IDF of the stated interests in the item
        tower's vocabulary) from ``users`` (rows = the matrix's users), or zeros without them."""
        codes = np.zeros(n_users, np.int64)
        interests = sp.csr_matrix((n_users, n_terms), dtype=np.float32)
        self.countries_ = np.array([], dtype=str)
        if users is None or not self.user_features:
            return codes, interests
        if len(users) != n_users:
            raise ValueError(f"two_tower: users has {len(users)} rows, user_items {n_users}")
        if "country" in users:
            country = pd.Series(users["country"]).astype("string").fillna("").str.strip().str.upper().to_numpy()
            self.countries_ = np.unique(country[country != ""]).astype(str)
            codes = np.where(country != "", np.searchsorted(self.countries_, country) + 1, 0).astype(np.int64)
        if "interests" in users and n_terms:
            vec = self._vectorizer()
            vec.item_vectors_ = sp.csr_matrix((0, n_terms), dtype=np.float32)
            vec.terms_, vec.idf_ = self.terms_, self.idf_
            interests = vec.text_vectors(pd.Series(users["interests"]).astype("string").fillna("").tolist())
        return codes, interests

    def fit(self, user_items: sp.csr_matrix, items=None, users=None, sequences=None) -> TwoTower:
        torch = import_torch()
        device = pick_device(self.device)
        rng = seed_everything(self.random_state, self.num_threads, device)
        x = user_items.tocsr().astype(np.float32)
        x.eliminate_zeros()
        n_users, n_items = x.shape
        content = self._content(items, n_items)
        sample, kept = sample_users(x, self.max_interactions, self.random_state)
        if len(kept) < n_users:
            log.info("two_tower: %d interactions > max_interactions %d: trained on %d of %d users (a random "
                     "sample of whole users)", x.nnz, self.max_interactions, len(kept), n_users)
        train, valid = holdout_split(sample, self.validation_fraction, self.random_state)
        codes, interests = self._user_inputs(users, n_users, content.shape[1])
        months = bool(self.query_month) and sequences is not None and len(sequences.items) > 0
        net = build(torch, n_items, content.shape[1], int(self.factors), len(self.countries_),
                    bool(self.item_bias), months).to(device)
        warm = self._warm(torch, net)
        ctx = Batches(torch, net, content, train, device, codes, interests)
        pair_month = None
        if months:  # each training pair's month; the lists are asked for in the month of the newest event
            pair_month = pair_months(train, sequences).data
            ctx.now = int(month_of(np.array([sequences.times.max()]))[0])
        self.fit_summary_ = {**self._train(torch, net, ctx, valid, rng, warm, pair_month),
                             "users_trained": int(len(kept)),
                             "warm": warm}
        net.eval()
        with torch.no_grad():
            seen = np.diff(x.tocsc().indptr) > 0  # items with interactions keep their id embedding
            self.item_factors_ = ctx.all_items(seen)
            self.user_factors_, self.item_factors_ = self._serving(ctx.users(x, self.item_factors_),
                                                                  self.item_factors_, net, ctx.bias_trained)
        self.tower_ = state_to_arrays(net)
        return self

    def warm_start(self, previous) -> bool:
        """Start the next ``fit`` from ``previous``'s tower weights, for at most ``warm_epochs`` epochs
        with a patience of 1: only when ``previous`` is a fitted two-tower model with the same
        settings (all but ``WARM_FREE``'s: the learning rate, time, stopping and device) and
        ``warm_epochs`` > 0; the weights' shapes, vocabulary and countries are checked at the fit
        (others: a cold fit). It
        continues the same model on more data: the hybrid's cut-offs (the same catalog, a month more
        each). A search trial (other settings) starts cold: one epoch from the candidate's weights
        would judge the candidate, not the trial's settings; so does the select step's refit
        (``warm_refit``). True when the next fit will be warm."""
        mine = {k: v for k, v in self.get_params().items() if k not in WARM_FREE}
        ok = (int(self.warm_epochs) > 0 and isinstance(previous, TwoTower) and getattr(previous, "tower_", None) is not None
              and {k: v for k, v in previous.get_params().items() if k not in WARM_FREE} == mine)
        self.warm_ = (dict(previous.tower_), previous.terms_, previous.countries_) if ok else None
        return ok

    def fit_share(self) -> float:
        """The next fit's epochs as a share of a cold fit's (the search's expected trial time)."""
        return int(self.warm_epochs) / max(int(self.epochs), 1) if getattr(self, "warm_", None) is not None else 1.0

    def _warm(self, torch, net) -> bool:
        """Loads the ``warm_start`` weights into ``net`` when every shape matches; True if it did."""
        warm, self.warm_ = getattr(self, "warm_", None), None
        if warm is None:
            return False
        warm, terms, countries = warm
        state = net.state_dict()
        if set(state) != set(warm) or any(tuple(state[k].shape) != warm[k].shape for k in state) \
                or not np.array_equal(terms, self.terms_) or not np.array_equal(countries, self.countries_):
            log.info("two_tower: no warm start: the previous fit had another catalog, vocabulary or countries")
            return False
        net.load_state_dict({k: torch.from_numpy(np.array(warm[k])) for k in state})
        return True

    def _train(self, torch, net, ctx: Batches, valid: sp.csr_matrix, rng: np.random.Generator,
               warm: bool = False, pair_month: np.ndarray | None = None) -> dict:
        """In-batch softmax epochs under models.deep.fit_loop; ``net`` ends at its best epoch (a warm
        start: ``warm_epochs`` at most, patience 1)."""
        train = ctx.train
        n_u = np.diff(train.indptr)
        rows = np.repeat(np.arange(train.shape[0], dtype=np.int64), n_u)
        ok = n_u[rows] >= 2  # a pair needs the user's other items as history
        pos_u, pos_i = rows[ok], train.indices[ok].astype(np.int64)
        pos_m = pair_month[ok] if pair_month is not None else None
        seen = np.diff(train.tocsc().indptr) > 0
        opt = torch.optim.Adam(net.parameters(), lr=self.learning_rate)
        batch = max(2, int(self.batch_size))
        temp = float(self.temperature)
        # logQ correction (Yi et al., 2019): in-batch negatives are drawn in proportion to each item's
        # share of the pairs, so popular items would be pushed down; the log of that share is
        # subtracted from each column's logits.
        freq = np.bincount(pos_i, minlength=train.shape[1]).astype(np.float64)
        logq = np.log(np.maximum(freq, 1) / max(len(pos_i), 1)).astype(np.float32)
        # Without content an item is its id alone: nothing to drop it for.
        id_dropout = float(self.id_dropout) if ctx.content.shape[1] else 0.0
        full = 0 < train.shape[1] <= int(self.full_softmax_items)
        unseen = torch.from_numpy(~seen).to(ctx.device)[None, :]
        bias = net["item_bias"].weight[:, 0] if "item_bias" in net else None
        # The items whose bias training moves: every item with training pairs under the full softmax,
        # the items that are targets in-batch; the others are served the median bias (_serving).
        ctx.bias_trained = seen if full else freq > 0

        def epoch_fn(epoch: int, time_up) -> float | None:
            if not len(pos_u):
                return None
            net.train()
            order = rng.permutation(len(pos_u))
            total, count = 0.0, 0
            for s in range(0, len(order), batch):
                if count and time_up():
                    break
                b = order[s:s + batch]
                users, targets = ctx.batch(pos_u[b], pos_i[b], rng, id_dropout, full,
                                           pos_m[b] if pos_m is not None else None)
                logits = users @ targets.T / temp
                if full:  # every item: the target's column, the user's other items and unseen items left out
                    logits = (logits + bias[None, :]) if bias is not None else logits
                    others = torch.from_numpy(others_mask(train, pos_u[b], pos_i[b])).to(ctx.device)
                    logits = logits.masked_fill(others | unseen, float("-inf"))
                    label = torch.from_numpy(pos_i[b]).to(ctx.device)
                else:  # the batch's items: other pairs of the same item masked, logQ
                    if bias is not None:
                        logits = logits + bias[torch.from_numpy(pos_i[b]).to(ctx.device)][None, :]
                    if self.logq:
                        logits = logits - torch.from_numpy(logq[pos_i[b]]).to(ctx.device)[None, :]
                    same = torch.from_numpy(pos_i[b][:, None] == pos_i[b][None, :]).to(ctx.device)
                    logits = logits.masked_fill(same & ~torch.eye(len(b), dtype=torch.bool, device=ctx.device),
                                                float("-inf"))
                    label = torch.arange(len(b), device=ctx.device)
                loss = torch.nn.functional.cross_entropy(logits, label)
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += float(loss.detach()) * len(b)
                count += len(b)
            return total / max(count, 1)

        def validate() -> float:
            net.eval()
            with torch.no_grad():
                item_vecs = ctx.all_items(seen)
                users, items = self._serving(ctx.users(train, item_vecs), item_vecs, net, ctx.bias_trained)
                return validation_auc(users, items, train, valid, metric=self.validation_metric)

        def snapshot():
            return {k: v.detach().clone() for k, v in net.state_dict().items()}

        epochs, patience = (int(self.warm_epochs), min(int(self.patience), 1)) if warm else \
            (int(self.epochs), int(self.patience))
        return fit_loop(self.name, epoch_fn, validate if valid.nnz else None, epochs,
                        float(self.budget_seconds), patience, log, snapshot=snapshot,
                        restore=net.load_state_dict)

    def _serving(self, users: np.ndarray, items: np.ndarray, net, trained: np.ndarray):
        """The factors served: the towers' unit vectors, or with ``item_bias`` the user vectors over
        the temperature plus a column of ones and the item vectors plus a column of biases (the
        logits of training); items whose bias was never trained (``trained`` False: never bought,
        or bought only in the validation share or by users outside the sample) get the median bias
        of the trained ones."""
        if "item_bias" not in net:
            return users, items
        b = net["item_bias"].weight.detach().cpu().numpy()[:, 0].astype(np.float32)
        b[~trained] = np.median(b[trained]) if trained.any() else 0.0
        ones = np.ones((len(users), 1), np.float32)
        return (np.ascontiguousarray(np.hstack([users / np.float32(self.temperature), ones]), dtype=np.float32),
                np.ascontiguousarray(np.hstack([items, b[:, None]]), dtype=np.float32))

    def item_vectors(self):
        """The item tower's unit vectors (the bias column left out): similar items, new-item slots."""
        return self.item_factors_[:, :int(self.factors)]

    def user_vectors(self):
        """The user tower's vectors (over the temperature with ``item_bias``; the ones column left
        out): matched against ``item_vectors`` for the new-item slots, where no item has a bias."""
        return self.user_factors_[:, :int(self.factors)]

    # -- persistence
    def _arrays(self):
        return {**super()._arrays(), "terms_": np.asarray(self.terms_, dtype=str),
                "countries_": np.asarray(self.countries_, dtype=str),
                "idf_": np.asarray(self.idf_, dtype=np.float32),
                **{TOWER + k: v for k, v in self.tower_.items()}}

    def _set_arrays(self, arrays):
        super()._set_arrays(arrays)
        self.terms_, self.idf_ = arrays["terms_"], arrays["idf_"]
        self.countries_ = arrays.get("countries_", np.array([], dtype=str))
        self.tower_ = {k[len(TOWER):]: v for k, v in arrays.items() if k.startswith(TOWER)}
