"""The files of anonymous sessions and user sequences (issue 16), beside pipelines.artifacts (which holds the paths):
the features step's session arrays, the surfaces step's session model and its metrics.

=================================  ==========  ==========================================
file                               written by  read by
=================================  ==========  ==========================================
``features/ds=/sessions_*.npz``    features    surfaces (session models)
``features/ds=/sequences_*.npz``   features    train, evaluate, select (sequence models)
``models/ds=/session/``            surfaces    ``recsys session-recs``
``eval/ds=/session_metrics``, ...  surfaces    publish (model_runs)
=================================  ==========  ==========================================
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from features.sequences import UserSequences
from pipelines.artifacts import ArtifactMissing, layout
from pipelines.config import Config
from pipelines.infra import storage

SESSION_PARTS = ("train", "holdout")  # sessions before the holdout window, and inside it
SESSION_ROLE = "session"  # layout(cfg).model(ds, SESSION_ROLE): models/ds=<ds>/session/


def write_sessions(cfg: Config, ds: str, sessions: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
    """Per part of SESSION_PARTS, ``(indptr, items)`` into the features of ds (each file written whole
    and renamed into place, after write_features swapped the folder in)."""
    d = layout(cfg).features_dir(ds)
    for part, (indptr, items) in sessions.items():
        tmp = d / f".sessions_{part}.tmp.npz"
        np.savez(tmp, indptr=np.asarray(indptr, np.int64), items=np.asarray(items, np.int64))
        os.replace(tmp, d / f"sessions_{part}.npz")


def read_sessions(cfg: Config, ds: str, part: str) -> tuple[np.ndarray, np.ndarray]:
    """``(indptr, items)`` of the sessions of one part of SESSION_PARTS (features.sessions: the items of
    session s are ``items[indptr[s]:indptr[s + 1]]``, as features item_idx, in time order); no
    sessions when the features predate them."""
    path = layout(cfg).features_dir(ds) / f"sessions_{part}.npz"
    if not path.exists():
        return np.zeros(1, np.int64), np.empty(0, np.int64)
    with np.load(path, allow_pickle=False) as z:
        return z["indptr"], z["items"]


SEQUENCE_PARTS = ("train", "full")  # each user's events before the holdout window, and up to the end of ds


def write_sequences(cfg: Config, ds: str, sequences: dict[str, UserSequences]) -> None:
    """Per part of SEQUENCE_PARTS, the users' event sequences into the features of ds (each file
    written whole and renamed into place, after write_features swapped the folder in)."""
    d = layout(cfg).features_dir(ds)
    for part, seq in sequences.items():
        seq.save(d / f"sequences_{part}.npz")


def read_sequences(cfg: Config, ds: str, part: str) -> UserSequences:
    """The users' event sequences of one part of SEQUENCE_PARTS (features.sequences.UserSequences)."""
    path = layout(cfg).features_dir(ds) / f"sequences_{part}.npz"
    if not path.exists():
        raise ArtifactMissing(f"no user sequences for ds={ds} at {path}: the features predate the sequence "
                              "models; run the features step again")
    return UserSequences.load(path)


# ---------------------------------------------------------------- sessions (surfaces step)
def session_metrics_path(cfg: Config, ds: str) -> Path:
    """Long table: model, metric (hr_at_20, mrr_at_20, sessions), value: every session model on the
    leave-last-out split of the holdout window's sessions."""
    return layout(cfg).eval_dir(ds) / "session_metrics.parquet"


def write_session_metrics(cfg: Config, ds: str, table: pd.DataFrame, summary: dict) -> Path:
    """The metrics, then the summary (chosen model, its metrics, session counts) as the marker."""
    storage.atomic_write_parquet(pa.Table.from_pandas(table, preserve_index=False), session_metrics_path(cfg, ds))
    return storage.write_json(summary, layout(cfg).eval_dir(ds) / "session_summary.json")


def read_session_metrics(cfg: Config, ds: str) -> pd.DataFrame | None:
    """The session models' metrics of ds, or None when the surfaces step did not write them."""
    path = session_metrics_path(cfg, ds)
    return pd.read_parquet(path) if path.exists() else None


def read_session_summary(cfg: Config, ds: str) -> dict | None:
    path = layout(cfg).eval_dir(ds) / "session_summary.json"
    return storage.read_json(path) if path.exists() else None


def write_session_model(cfg: Config, ds: str, model, item_ids: np.ndarray) -> Path:
    """The chosen session model (its own save: params.json + model.npz) and the item ids its indexes
    stand for (``item_ids.parquet``), so that serving needs no features."""
    final = layout(cfg).model(ds, SESSION_ROLE)
    stage = storage.staging_dir(final)
    model.save(stage)
    pq.write_table(pa.table({"item_id": pa.array(item_ids.astype(str), pa.string())}), stage / "item_ids.parquet")
    storage.replace_dir(stage, final)
    return final


def session_model_files(cfg: Config, ds: str) -> tuple[Path, Path]:
    """(the model's folder, its item ids file) for ``SessionModel.load`` and the item index."""
    d = layout(cfg).model(ds, SESSION_ROLE)
    if not (d / "item_ids.parquet").exists():
        raise ArtifactMissing(f"no session model for ds={ds} at {d}; run the surfaces step first")
    return d, d / "item_ids.parquet"
