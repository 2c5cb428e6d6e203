"""Sessions: a shopper's visit as an ordered list of items (issue 16, anonymous next-item lists).

A session is the events of one user in time order that share a ``session_id`` when the feed has one,
or, when it has none, that follow each other with at most ``gap_minutes`` (30, the web analytics
convention) of inactivity. Everything is vectorised over sorted arrays (no Python loop per event):
the result is a CSR-like pair ``(indptr, items)``: the items of session ``s`` in time order are
``items[indptr[s]:indptr[s + 1]]``.

Online Retail has no sessions (no clickstream, only invoices): there, each invoice's lines in file
order are one session (``sessions_from_orders``), which is what the benchmark says it does.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

GAP_MINUTES = 30


def session_starts(users: np.ndarray, times_s: np.ndarray, session_ids: np.ndarray | None = None,
                   gap_minutes: float = GAP_MINUTES) -> np.ndarray:
    """A boolean per event (already sorted by user, then time): True where a new session starts: the
    first event of a user, a change of ``session_id`` (where both ids are known), or, where the id is
    unknown, more than ``gap_minutes`` since the user's previous event. ``session_ids``: strings
    (null or "" unknown), or integer codes (-1 unknown)."""
    n = len(users)
    start = np.ones(n, dtype=bool)
    if n <= 1:
        return start
    same_user = users[1:] == users[:-1]
    gap = np.diff(times_s.astype(np.float64)) > gap_minutes * 60.0
    new = gap
    if session_ids is not None and np.issubdtype(np.asarray(session_ids).dtype, np.integer):
        codes = np.asarray(session_ids)
        known = codes >= 0
    elif session_ids is not None:
        sid = pd.Series(session_ids, dtype="string").fillna("")
        known = (sid != "").to_numpy()
        codes = sid.to_numpy(dtype=object)
    if session_ids is not None:
        both = known[1:] & known[:-1]
        changed = codes[1:] != codes[:-1]
        # Both ids known: the id decides; otherwise the inactivity gap does.
        new = np.where(both, changed, gap)
    start[1:] = ~same_user | new
    return start


def sessionize(events: pd.DataFrame, item_index: pd.Series, gap_minutes: float = GAP_MINUTES,
               min_length: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """``events`` (user_id, item_id, event_time UTC, optional session_id) -> ``(indptr, items)`` of the
    sessions with at least ``min_length`` events, items as indexes of ``item_index`` (item_id ->
    idx); events of unknown items are dropped. Consecutive repeats of one item (a view, then its
    add-to-cart) count once: the next item is what follows."""
    if events.empty:
        return np.zeros(1, np.int64), np.empty(0, np.int64)
    df = events.assign(_t=pd.to_datetime(events["event_time"], utc=True))
    df = df.sort_values(["user_id", "_t"], kind="stable")
    users = pd.factorize(df["user_id"])[0]
    times = df["_t"].dt.as_unit("s").astype("int64").to_numpy()  # seconds, whatever the resolution
    sids = df["session_id"].to_numpy(dtype=object) if "session_id" in df else None
    start = session_starts(users, times, sids, gap_minutes)
    items = df["item_id"].astype(str).map(item_index).to_numpy(dtype=float)
    return compact_sessions(np.cumsum(start) - 1, items, min_length)


def sessions_from_orders(orders: np.ndarray, items: np.ndarray, min_length: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Each order's items in the given (file) order as one session: ``orders`` groups consecutive rows."""
    orders = np.asarray(orders)
    start = np.ones(len(orders), dtype=bool)
    start[1:] = orders[1:] != orders[:-1]
    return compact_sessions(np.cumsum(start) - 1, np.asarray(items, dtype=float), min_length)


def compact_sessions(session: np.ndarray, items: np.ndarray, min_length: int) -> tuple[np.ndarray, np.ndarray]:
    """Drop unknown items (NaN) and consecutive repeats inside a session, then sessions shorter than
    ``min_length``; renumber."""
    keep = ~np.isnan(items)
    session, items = session[keep], items[keep].astype(np.int64)
    if len(items):
        dup = np.zeros(len(items), dtype=bool)
        dup[1:] = (session[1:] == session[:-1]) & (items[1:] == items[:-1])
        session, items = session[~dup], items[~dup]
    if not len(items):
        return np.zeros(1, np.int64), np.empty(0, np.int64)
    # ``session`` is non-decreasing (a running count), so each session is one contiguous run.
    _, counts = np.unique(session, return_counts=True)
    long_enough = counts >= min_length
    items = items[np.repeat(long_enough, counts)]
    counts = counts[long_enough]
    indptr = np.zeros(len(counts) + 1, np.int64)
    np.cumsum(counts, out=indptr[1:])
    return indptr, items


def leave_last_out(indptr: np.ndarray, items: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The evaluation split of sessions of length >= 2: ``(query_indptr, query_items, targets)``, each
    session's items but the last as the query and its last item as the target."""
    lengths = np.diff(indptr)
    ok = np.flatnonzero(lengths >= 2)
    last = indptr[ok + 1] - 1
    keep = np.repeat(lengths >= 2, lengths)  # single-item sessions go whole
    keep[last] = False
    q_len = lengths[ok] - 1
    q_indptr = np.zeros(len(ok) + 1, np.int64)
    np.cumsum(q_len, out=q_indptr[1:])
    return q_indptr, items[keep], items[last]


def take_sessions(indptr: np.ndarray, items: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The sessions ``idx`` (in that order) of ``(indptr, items)`` as a new ``(indptr, items)``."""
    idx = np.asarray(idx, dtype=np.int64)
    lengths = np.diff(indptr)[idx]
    out = np.zeros(len(idx) + 1, np.int64)
    np.cumsum(lengths, out=out[1:])
    src = np.repeat(indptr[idx] - out[:-1], lengths) + np.arange(out[-1])
    return out, items[src]
