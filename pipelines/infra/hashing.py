"""Stable hashes: user buckets (A/B arms, score shards), salted digests (forgotten users), and the
recommendation ids every published row carries.

All are pure functions of their inputs (no process hash seed, no clock), so a user lands in the
same bucket and a recommendation gets the same id on every machine and every night.
"""
from __future__ import annotations

import os
import threading

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa

_local = threading.local()


def _connection():
    """An in-memory DuckDB connection per thread and process (opening one per call cost more than
    hashing a few thousand ids); a forked child opens its own."""
    held = getattr(_local, "held", None)
    if held is None or held[0] != os.getpid():
        held = _local.held = (os.getpid(), duckdb.connect())
    return held[1]


def _sha256_sql(prefix: str, values, expr: str):
    con = _connection()
    con.register("_v", pd.DataFrame({"v": pd.Series(values, dtype="string").astype(str).to_numpy(object)}))
    try:
        return con.execute(f"SELECT {expr} AS h FROM (SELECT sha256(?::VARCHAR || v) AS d FROM _v)",
                           [prefix]).fetchnumpy()["h"]
    finally:
        con.unregister("_v")


def sha256_hex(prefix: str, values) -> np.ndarray:
    """hex sha256 of ``prefix + value`` for each value (the same digests as hashlib), in DuckDB:
    vectorised, no Python loop over the values."""
    return np.asarray(_sha256_sql(prefix, values, "d"), dtype=object)


def sha256_unit(prefix: str, values) -> np.ndarray:
    """The first 60 bits of sha256(prefix + value) as a number in [0, 1), per value."""
    return np.asarray(_sha256_sql(prefix, values, "('0x' || substr(d, 1, 15))::UBIGINT"),
                      dtype=np.float64) / 16.0 ** 15


def bucket(salt: str, user_ids) -> np.ndarray:
    """Uniform [0, 1) per user: the first 60 bits of sha256("<salt>:<user_id>"). Pure function of its
    inputs (no process hash seed, no clock), so identical on every machine and every night."""
    return sha256_unit(f"{salt}:", list(user_ids)) if len(user_ids) else np.empty(0, np.float64)


def recommendation_ids(ds: str, keys: pd.DataFrame) -> np.ndarray:
    """A stable id per published recommendation (ds + a 64-bit hash of surface, user, rank and item),
    carried by every table and export so outcome events can be attributed (docs/ab-testing.md)."""
    return recommendation_id_array(ds, keys).to_numpy(zero_copy_only=False).astype(object)


RECO_HASH_KEY = "recsys-reco-0001"


def key_hashes(values) -> np.ndarray:
    """The 64-bit hash of each value's text, as ``recommendation_id_array`` uses it per key column:
    hash a column's distinct values once and gather (a user's id hashes the same in every row)."""
    return pd.util.hash_array(np.asarray([str(v) for v in values], dtype=object), hash_key=RECO_HASH_KEY)


def combine_key_hashes(columns: list[np.ndarray]) -> np.ndarray:
    """The row hash of the key columns' value hashes, exactly as pandas' ``hash_pandas_object``
    combines a DataFrame's column hashes (pinned by a test against it)."""
    mult = np.uint64(1000003)
    out = np.zeros(len(columns[0]), np.uint64) + np.uint64(0x345678)
    for i, a in enumerate(columns):
        inverse_i = len(columns) - i
        out ^= a
        out *= mult
        mult += np.uint64(82520 + inverse_i + inverse_i)
    return out + np.uint64(97531)


def recommendation_id_array(ds: str, keys: pd.DataFrame | None = None, hashes: np.ndarray | None = None) -> pa.Array:
    """``recommendation_ids`` as an Arrow string array: "<yyyymmdd>-<16 hex digits>", the hex digits
    written with a lookup table over the hash's bytes (no per-row string formatting). ``keys``:
    surface, user id, rank, item id columns in that order; or ``hashes``, the row hashes already
    combined from per-value hashes (``combine_key_hashes``)."""
    h = pd.util.hash_pandas_object(keys.astype(str), index=False, hash_key=RECO_HASH_KEY).to_numpy() \
        if hashes is None else hashes
    prefix = np.frombuffer((ds.replace("-", "") + "-").encode(), np.uint8)
    raw = h.astype(">u8").view(np.uint8).reshape(-1, 8)
    digits = np.frombuffer(b"0123456789abcdef", np.uint8)
    out = np.empty((len(h), len(prefix) + 16), np.uint8)
    out[:, :len(prefix)] = prefix
    out[:, len(prefix)::2] = digits[raw >> 4]
    out[:, len(prefix) + 1::2] = digits[raw & 15]
    return pa.array(out.reshape(-1).view(f"S{out.shape[1]}")).cast(pa.string())


# ---------------------------------------------------------------- user shards (scale-out)
def shard_of(user_ids, n_shards: int) -> np.ndarray:
    """Shard index per user: the sha256 bucket of the user id (pipelines.services.ab.bucket), so a user stays
    in one shard for a given shard count, on every machine."""
    return np.minimum((bucket("recsys-shard", user_ids) * n_shards).astype(np.int64), n_shards - 1)
