"""Each user's events in time order (issue 16: the sequence transformer, models/sasrec.py).

``UserSequences`` is CSR-like over the rows of the interaction matrix: the events of user ``u`` are
``[indptr[u], indptr[u + 1])`` of ``items`` (item_idx), ``kinds`` (KINDS: the event type) and
``times`` (seconds since 1970-01-01 UTC), oldest first. Only each user's newest ``max_events`` are
kept, so the arrays are bounded by users x max_events whatever the history (and far smaller than the
events in practice). The features step writes ``sequences_train.npz`` (events before the holdout
window) and ``sequences_full.npz`` (the whole window) beside the matrices; the hybrid builds them at
its cut-offs from the daily table (one event per user, item and day: ``from_daily``).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# Event type codes (the contract's event types, pipelines.constants); a model adds 1 to keep 0 for padding.
KINDS = {"view": 0, "add_to_cart": 1, "purchase": 2, "return": 3}
PURCHASE = KINDS["purchase"]
MAX_EVENTS = 200


@dataclass(frozen=True)
class UserSequences:
    indptr: np.ndarray  # int64, n_users + 1
    items: np.ndarray  # int32 item_idx
    kinds: np.ndarray  # int8 (KINDS)
    times: np.ndarray  # int64 seconds since the epoch, UTC

    @property
    def n_users(self) -> int:
        return len(self.indptr) - 1

    def lengths(self) -> np.ndarray:
        return np.diff(self.indptr)

    def owners(self) -> np.ndarray:
        """Per event, its user (int64)."""
        return np.repeat(np.arange(self.n_users, dtype=np.int64), self.lengths())

    def save(self, path: str | Path) -> Path:
        """Written whole, then renamed into place (npz, no pickle)."""
        path = Path(path)
        tmp = path.with_name(f".{path.stem}.tmp.npz")
        np.savez(tmp, indptr=self.indptr, items=self.items, kinds=self.kinds, times=self.times)
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> UserSequences:
        with np.load(path, allow_pickle=False) as z:
            return cls(z["indptr"], z["items"], z["kinds"], z["times"])


def user_time_order(u: np.ndarray, t: np.ndarray) -> np.ndarray:
    """The order by user, then time, ties in the given order: one stable sort of user x time span +
    time when that fits 62 bits (thirty million events: 4.7 s against lexsort's 11.2 s), else lexsort."""
    if not len(u):
        return np.zeros(0, np.int64)
    lo, span = int(t.min()), int(t.max()) - int(t.min()) + 1
    if (int(u.max()) + 1) * span < 2 ** 62 and int(u.min()) >= 0:
        return np.argsort(u * span + (t - lo), kind="stable")
    return np.lexsort((np.arange(len(u)), t, u))


def build_sequences(user_idx, item_idx, kinds, times, n_users: int, max_events: int = MAX_EVENTS) -> UserSequences:
    """Events (one entry each) -> ``UserSequences`` over ``n_users`` rows: sorted by user, then time
    (ties keep the given order), the newest ``max_events`` per user kept. Vectorised (one sort)."""
    u = np.asarray(user_idx, dtype=np.int64)
    order = user_time_order(u, np.asarray(times, dtype=np.int64))
    u = u[order]
    counts = np.bincount(u, minlength=n_users)
    ends = np.cumsum(counts)
    # Position from the user's newest event (0 = newest); keep those under max_events.
    from_end = ends[u] - 1 - np.arange(len(u))
    keep = order[from_end < max_events] if max_events > 0 else order
    kept_u = np.asarray(user_idx, dtype=np.int64)[keep]
    indptr = np.zeros(n_users + 1, np.int64)
    indptr[1:] = np.cumsum(np.bincount(kept_u, minlength=n_users))
    return UserSequences(indptr, np.asarray(item_idx, dtype=np.int32)[keep],
                         np.asarray(kinds, dtype=np.int8)[keep], np.asarray(times, dtype=np.int64)[keep])


def from_daily(user_idx, item_idx, day, purchases, n_users: int, max_events: int = MAX_EVENTS) -> UserSequences:
    """Sequences from the daily table (one row per user, item and day): a purchase where the day had
    one, else a view, at the day's start (the order within a day is the table's)."""
    kinds = np.where(np.asarray(purchases) > 0, PURCHASE, KINDS["view"]).astype(np.int8)
    return build_sequences(user_idx, item_idx, kinds, np.asarray(day, dtype=np.int64) * 86_400, n_users, max_events)
