"""The consent and forget ledger: who opted out of what, and who asked to be forgotten
(docs/privacy.md). Read by every step that touches users; written by ``recsys consent`` and
``recsys forget`` (pipelines/services/privacy.py).

Consent comes from two places, the later one winning per user and flag:

* the users file (columns ``consent_personalization``, ``consent_email``), landed and validated
  with the other user attributes;
* ``recsys consent USER --personalization off|on --email off|on``, appended to
  ``$RECSYS_HOME/privacy/consent/`` (one small Parquet file per change, timestamped).

A missing flag means consent (the retailer collects consent before sending data). Forgotten users
are kept only as salted sha256 hashes of their ids.
"""
from __future__ import annotations

import secrets
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from pipelines.artifacts import layout
from pipelines.config import Config
from pipelines.infra.hashing import sha256_hex
from pipelines.infra.parsing import parse_bool
from pipelines.infra.storage import in_import_order

FLAGS = ("consent_personalization", "consent_email")


def consent_dir(cfg: Config) -> Path:
    return layout(cfg).consent_dir


def consent_flags(cfg: Config) -> pd.DataFrame:
    """Per user who ever stated a flag: ``consent_personalization`` and ``consent_email`` (booleans,
    True where never stated). Users files first (in landing order), then the CLI log (in time order)."""
    frames = []
    users_dir = layout(cfg).validated_dataset("users")
    for f in in_import_order(users_dir.glob("batch-*.parquet")) if users_dir.exists() else []:
        cols = [c for c in FLAGS if c in pq.read_schema(f).names]
        if cols:
            frames.append(pd.read_parquet(f, columns=["user_id", *cols]))
    for f in sorted(consent_dir(cfg).glob("consent-*.parquet")) if consent_dir(cfg).exists() else []:
        frames.append(pd.read_parquet(f, columns=["user_id", *FLAGS]))
    if not frames:
        return pd.DataFrame({"user_id": pd.Series(dtype=str), **{k: pd.Series(dtype=bool) for k in FLAGS}})
    stated = []
    for order, df in enumerate(frames):
        df = df.dropna(subset=["user_id"])
        for flag in FLAGS:
            if flag in df:
                stated.append(pd.DataFrame({"user_id": df["user_id"].astype(str).to_numpy(), "flag": flag,
                                            "value": parse_bool(df[flag])[0].to_numpy(), "order": order,
                                            "row": range(len(df))}))
    long = pd.concat(stated, ignore_index=True).dropna(subset=["value"]) if stated else pd.DataFrame(
        columns=["user_id", "flag", "value", "order", "row"])
    # The last statement per user and flag wins: files in order, rows in file order.
    last = long.sort_values(["order", "row"], kind="stable").drop_duplicates(["user_id", "flag"], keep="last")
    wide = last.pivot(index="user_id", columns="flag", values="value").reindex(columns=list(FLAGS))
    wide = wide.astype("boolean").fillna(True).astype(bool).reset_index()
    wide.columns.name = None
    return wide.astype({"user_id": str})


def opted_out(cfg: Config, flag: str) -> set[str]:
    flags = consent_flags(cfg)
    return set(flags.loc[~flags[flag], "user_id"])


def salt(cfg: Config) -> str:
    """The data root's secret salt for user hashes (created once, owner-readable only)."""
    path = layout(cfg).salt_path
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(secrets.token_hex(16))
        tmp.chmod(0o600)
        tmp.replace(path)
    return path.read_text().strip()


def user_hash(cfg: Config, user_id: str) -> str:
    return str(sha256_hex(salt(cfg), [str(user_id)])[0])


def forgotten_hashes(cfg: Config) -> set[str]:
    path = layout(cfg).forgotten_path
    return set(pd.read_parquet(path)["user_hash"]) if path.exists() else set()


def is_forgotten(cfg: Config, user_id: str) -> bool:
    """Whether ``recsys forget`` was run for this id (its salted hash is in the forgotten list)."""
    hashes = forgotten_hashes(cfg)
    return bool(hashes) and user_hash(cfg, str(user_id).strip()) in hashes


def drop_forgotten(cfg: Config, df: pd.DataFrame, column: str = "user_id") -> pd.DataFrame:
    """Rows of forgotten users removed (imports call this, so a re-sent feed cannot bring them back)."""
    hashes = forgotten_hashes(cfg)
    if not hashes or column not in df or df.empty:
        return df
    ids = df[column].astype("string")
    uniq = ids.dropna().unique()
    gone = uniq[np.isin(sha256_hex(salt(cfg), uniq), list(hashes))] if len(uniq) else uniq
    return df[~ids.isin(gone).fillna(False).to_numpy(bool)] if len(gone) else df
