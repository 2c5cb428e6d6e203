"""The window's visits as integer arrays, from the features step's DuckDB table ``ev`` (indexed by
features.interactions.index_events): anonymous-style sessions (features.sessions) and each user's
event sequence (features.sequences), before the holdout start and in the whole window."""
from __future__ import annotations

import duckdb
import numpy as np

from features.sequences import KINDS, UserSequences, build_sequences
from features.sessions import compact_sessions, session_starts
from pipelines import constants as C
from pipelines.config import Config


def window_sessions(con: duckdb.DuckDBPyConnection, cfg: Config, hs: str) -> dict:
    """The window's sessions (features.sessions: by session_id, else by an inactivity gap of
    ``session_gap_minutes``) of views, cart additions and purchases (a return is not browsing), as
    item_idx: ``train`` from the events before the holdout start, ``holdout`` from those inside it (a
    session crossing the cut-off is cut there, so no holdout event reaches the train part).

    Sorted and encoded in DuckDB (user, time, then the feed's order; session ids as 63-bit hashes, -1
    unknown: only equality of adjacent ids matters, and a hash needs no sort of the id strings, which a
    dense rank did), so only integer arrays reach Python: at ten million events a frame of id strings
    held more than a gigabyte. Equal to ``features.sessions.sessionize`` on each part."""
    a = con.execute(f"""
        SELECT e.user_idx, e.item_idx, floor(epoch(e.event_time))::BIGINT AS t,
               CASE WHEN coalesce(e.session_id, '') = '' THEN -1
                    ELSE (hash(e.session_id) >> 1)::BIGINT END AS sid,
               e.event_time < {hs} AS train
        FROM ev e
        WHERE e.event_type IN ('{C.VIEW}', '{C.ADD_TO_CART}', '{C.PURCHASE}')
        ORDER BY e.user_idx, e.event_time, e.feed_row""").fetchnumpy()
    gap = cfg.features.session_gap_minutes
    train = np.asarray(a["train"], bool)
    out = {}
    for part, m in (("train", train), ("holdout", ~train)):
        users, times = np.asarray(a["user_idx"])[m], np.asarray(a["t"])[m]
        start = session_starts(users, times, np.asarray(a["sid"], np.int64)[m], gap)
        out[part] = compact_sessions(np.cumsum(start) - 1, np.asarray(a["item_idx"], np.float64)[m], min_length=2)
    return out


def window_sequences(con: duckdb.DuckDBPyConnection, cfg: Config, hs: str, n_users: int) -> dict[str, UserSequences]:
    """Each user's newest ``sequence_max_events`` events in time order (features.sequences), before
    the holdout start (``train``) and in the whole window (``full``). One pass over the events
    (events at the same time keep the feed's order: ``feed_row``); the cap and the split are
    NumPy's (one sort each), which at ten million events costs a few seconds where a DuckDB window
    per part cost more than a minute."""
    kind = "CASE event_type " + " ".join(f"WHEN '{k}' THEN {v}" for k, v in KINDS.items()) + " END"
    cap = int(cfg.features.sequence_max_events)
    a = con.execute(f"""SELECT user_idx, item_idx, {kind}::TINYINT AS kind, floor(epoch(event_time))::BIGINT AS t,
                               (event_time < {hs}) AS train, feed_row AS r
                        FROM ev
                        WHERE event_type IN ({", ".join(f"'{k}'" for k in KINDS)})""").fetchnumpy()
    order = np.argsort(np.asarray(a.pop("r")), kind="stable")
    a = {k: np.asarray(v)[order] for k, v in a.items()}
    out = {"full": build_sequences(a["user_idx"], a["item_idx"], a["kind"], a["t"], n_users, cap)}
    tr = a["train"].astype(bool)
    out["train"] = build_sequences(a["user_idx"][tr], a["item_idx"][tr], a["kind"][tr], a["t"][tr], n_users, cap)
    return out
