"""Every path under the data root, and every file one step writes and another reads.

Steps never spell a path or a file name: they ask ``layout(cfg)`` for a place, and read or write the
files that pass between steps through the typed functions below (Dagster's IO managers are the model).

The data flow of one ``ds`` (docs/architecture.md):

=============================  ====================  ===============================================
file                           written by            read by
=============================  ====================  ===============================================
``validated/``, ``quarantine/``  validate              features, surfaces
``validation/ds=/summary.json``  validate              select (MLflow), ``recsys show``
``features/ds=/`` (Features)     features              every later step
``models/ds=/holdout/<m>/``      train                 evaluate
``eval/ds=/summary.json``        evaluate              select
``eval/ds=/metrics.parquet``     evaluate              select, publish (model_runs), report
``eval/ds=/hybrid_*``            rank                  select, score, publish
``models/ds=/hybrid/``           rank                  select (MLflow), score
``models/ds=/champion`` ...      select                score, publish
``models/ds=/selected.json``     select                score, publish, report
``surfaces/ds=/<table>.parquet`` surfaces              score, publish
``models/ds=/shards/``           score                 publish
sessions: pipelines/session_artifacts.py (features/ds=/sessions_*.npz, models/ds=/session/ ...)
``warehouse/``                   publish, validate     users (SQL), serving commands, privacy
=============================  ====================  ===============================================
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import scipy.sparse as sp

from pipelines.config import Config
from pipelines.constants import EVENT_DATE
from pipelines.infra import storage


class ArtifactMissing(FileNotFoundError):
    """A step's input is not there: the step that writes it has not run for this ds."""


@dataclass(frozen=True)
class Layout:
    """The places under one data root. Partitioned folders take the logical date ``ds``."""

    home: Path

    # ---- landing zone and the validation gate
    @property
    def landing(self) -> Path:
        return self.home / "landing"

    @property
    def validated(self) -> Path:
        return self.home / "validated"

    @property
    def quarantine(self) -> Path:
        return self.home / "quarantine"

    def validated_dataset(self, dataset: str) -> Path:
        """``validated/<dataset>``: events (partitioned), items and users batches."""
        return self.validated / dataset

    def quarantine_dataset(self, dataset: str) -> Path:
        return self.quarantine / dataset

    @property
    def landing_events(self) -> Path:
        return self.landing / "events"

    def landing_partition(self, date_: str) -> Path:
        """The landed events of one event date (``landing/events/event_date=<date>``)."""
        return self.landing_events / f"{EVENT_DATE}={date_}"

    def validated_partition(self, date_: str) -> Path:
        return self.validated_dataset("events") / f"{EVENT_DATE}={date_}"

    def quarantine_partition(self, date_: str) -> Path:
        return self.quarantine_dataset("events") / f"{EVENT_DATE}={date_}"

    def partition_manifest(self, date_: str) -> Path:
        """What the gate validated of one landing partition (its files' fingerprints, counts)."""
        return self.validated_partition(date_) / "_manifest.json"

    def validation_dir(self, ds: str) -> Path:
        return self.home / "validation" / f"ds={ds}"

    def validation_summary(self, ds: str) -> Path:
        return self.validation_dir(ds) / "summary.json"

    def validation_report(self, ds: str) -> Path:
        return self.validation_dir(ds) / "report.html"

    def data_docs(self, ds: str) -> Path:
        return self.validation_dir(ds) / "data_docs"

    @property
    def batch_ledger(self) -> Path:  # import batches: judgements, withdrawals (validation/batches.py)
        return self.home / "validation" / "batches.json"

    # ---- per-ds step outputs
    def features_dir(self, ds: str) -> Path:
        return self.home / "features" / f"ds={ds}"

    def models_dir(self, ds: str) -> Path:
        return self.home / "models" / f"ds={ds}"

    def holdout_model(self, ds: str, name: str) -> Path:
        """A candidate fitted on the data before the holdout window (train step)."""
        return self.models_dir(ds) / "holdout" / name

    def model(self, ds: str, role: str) -> Path:
        """A model refitted on all data by the select step: ``champion``, ``challenger``, or one of
        the helper models the lists need (``content``, ``popularity``, ``itemknn``)."""
        return self.models_dir(ds) / role

    def hybrid_dir(self, ds: str) -> Path:
        return self.models_dir(ds) / "hybrid"

    def ranker_dir(self, ds: str, task: str) -> Path:
        return self.hybrid_dir(ds) / f"ranker_{task}"

    def shard_path(self, ds: str, shard: int, n_shards: int) -> Path:
        return self.models_dir(ds) / "shards" / f"user_recommendations-{shard:03d}-of-{n_shards:03d}.parquet"

    def eval_dir(self, ds: str) -> Path:
        return self.home / "eval" / f"ds={ds}"

    def surfaces_dir(self, ds: str) -> Path:
        return self.home / "surfaces" / f"ds={ds}"

    def report(self, ds: str) -> Path:
        return self.home / "reports" / f"ds={ds}" / "report.html"

    def ab_report(self, ds: str) -> Path:
        return self.home / "reports" / "ab" / f"ds={ds}" / "report.html"

    # ---- privacy and exports
    @property
    def privacy_dir(self) -> Path:
        return self.home / "privacy"

    @property
    def consent_dir(self) -> Path:
        return self.privacy_dir / "consent"

    @property
    def salt_path(self) -> Path:
        return self.privacy_dir / "salt"

    @property
    def forgotten_path(self) -> Path:
        return self.privacy_dir / "forgotten.parquet"

    @property
    def exports_manifest(self) -> Path:
        return self.home / "exports" / "manifest.jsonl"

    # ---- warehouse, tracking, Airflow
    @property
    def warehouse(self) -> Path:
        return self.home / "warehouse"

    @property
    def duckdb_path(self) -> Path:
        return self.warehouse / "recsys.duckdb"

    @property
    def parquet_root(self) -> Path:
        return self.warehouse / "parquet"

    def table_file(self, table: str, ds: str) -> Path:
        """The Parquet copy of one warehouse table's partition (docs/tables.md)."""
        return table_file(self.parquet_root, table, ds)

    @property
    def mlflow_dir(self) -> Path:
        return self.home / "mlflow"

    @property
    def mlflow_artifacts(self) -> Path:
        return self.mlflow_dir / "artifacts"

    @property
    def airflow_dir(self) -> Path:
        return self.home / "airflow"

    @property
    def airflow_logs(self) -> Path:
        return self.airflow_dir / "logs"

    @property
    def airflow_secrets(self) -> Path:
        return self.airflow_dir / "secrets.json"

    def airflow_test_log(self, ds: str) -> Path:
        """The log of ``recsys airflow-test --ds <ds>`` (one DAG run through ``dag.test()``)."""
        return self.airflow_dir / f"dags-test-{ds}.log"


def table_file(parquet_root: Path, table: str, ds: str) -> Path:
    """``<parquet_root>/<table>/ds=<ds>/part-0.parquet``: the warehouse's Parquet copies."""
    return parquet_root / table / f"ds={ds}" / "part-0.parquet"


def layout(cfg: Config) -> Layout:
    return Layout(cfg.home)


def mlflow_uri(cfg: Config) -> str:
    """The tracking (and registry) URI: the configured server, or the SQLite store under the root."""
    return cfg.gate.mlflow_tracking_uri or f"sqlite:///{layout(cfg).mlflow_dir / 'mlflow.db'}"


# ---------------------------------------------------------------- features (features step)
@dataclass(frozen=True)
class Features:
    """What the features step wrote for one ds (features/interactions.py documents each column).

    users: user_idx, user_id, country, interests, personalized; items: item_idx, item_id, catalog
    columns, text, active, popularity, trending, first_seen, repeat rates, category_key; train and
    full: users x items weights (CSR, float32) before the holdout window and up to the end of ds;
    holdout: user_idx, item_idx purchased in the holdout window; meta: counts and window bounds;
    disliked: users x items, 1 where the user's latest rating is at or below ``dislike_max_rating``."""
    users: pd.DataFrame
    items: pd.DataFrame
    train: sp.csr_matrix
    full: sp.csr_matrix
    holdout: pd.DataFrame
    meta: dict
    disliked: sp.csr_matrix | None = None


def write_features(cfg: Config, ds: str, f: Features, daily: pa.Table) -> Path:
    """Write the features of ds to a staging folder and swap it in whole (readers see the old or the
    new set, never a mix)."""
    final = layout(cfg).features_dir(ds)
    stage = storage.staging_dir(final)
    for name in ("train", "full", "disliked"):
        if getattr(f, name) is not None:
            sp.save_npz(stage / f"{name}.npz", getattr(f, name), compressed=False)  # zlib: 7 s at 10M events
    for name in ("users", "items", "holdout"):
        pq.write_table(pa.Table.from_pandas(getattr(f, name), preserve_index=False), stage / f"{name}.parquet")
    pq.write_table(daily, stage / "daily.parquet")
    storage.write_json(f.meta, stage / "meta.json")
    storage.replace_dir(stage, final)
    return final


def read_features(cfg: Config, ds: str) -> Features:
    d = layout(cfg).features_dir(ds)
    if not (d / "meta.json").exists():
        raise ArtifactMissing(f"no features for ds={ds} at {d}; run the features step first")
    full = sp.load_npz(d / "full.npz").tocsr()  # below: features of an older release have no ratings
    return Features(
        users=pq.read_table(d / "users.parquet").to_pandas(), items=pq.read_table(d / "items.parquet").to_pandas(),
        train=sp.load_npz(d / "train.npz").tocsr(), full=full,
        holdout=pq.read_table(d / "holdout.parquet").to_pandas(), meta=storage.read_json(d / "meta.json"),
        disliked=sp.load_npz(d / "disliked.npz").tocsr() if (d / "disliked.npz").exists()
        else sp.csr_matrix(full.shape, dtype="float32"))


def read_daily(cfg: Config, ds: str, columns: list[str] | None = None) -> pd.DataFrame:
    """user_idx, item_idx, day (days since 1970-01-01, UTC), w (summed weight), purchases."""
    return pq.read_table(layout(cfg).features_dir(ds) / "daily.parquet", columns=columns).to_pandas()


def features_file(cfg: Config, ds: str, name: str) -> Path:
    """One file of the features of ds (``users.parquet``, ``full.npz``, ``meta.json`` ...), for
    attaching to MLflow runs."""
    return layout(cfg).features_dir(ds) / name


def latest_items(cfg: Config, columns: list[str]) -> pd.DataFrame | None:
    """Columns of the newest features' item table (any ds), or None before the first run: what the
    serving commands and the A/B report use to map items to their categories."""
    files = sorted(cfg.home.glob("features/ds=*/items.parquet"))
    return pd.read_parquet(files[-1], columns=columns) if files else None


# ---------------------------------------------------------------- train and evaluate
def write_trained(cfg: Config, ds: str, trained: dict) -> Path:
    return storage.write_json(trained, layout(cfg).models_dir(ds) / "holdout" / "trained.json")


def write_eval_summary(cfg: Config, ds: str, summary: dict) -> Path:
    """best_model, best_ndcg, metrics (per candidate), params (search winners), search (trials),
    new_users (cold-start metrics), eval_users."""
    return storage.write_json(summary, eval_summary_path(cfg, ds))


def read_eval_summary(cfg: Config, ds: str) -> dict:
    path = eval_summary_path(cfg, ds)
    if not path.exists():
        raise ArtifactMissing(f"no evaluation for ds={ds} at {path}; run the evaluate step first")
    return storage.read_json(path)


def eval_summary_path(cfg: Config, ds: str) -> Path:
    return layout(cfg).eval_dir(ds) / "summary.json"


def eval_metrics_path(cfg: Config, ds: str) -> Path:
    """Long table: model, segment, metric, value (every candidate on the holdout)."""
    return layout(cfg).eval_dir(ds) / "metrics.parquet"


def write_eval_metrics(cfg: Config, ds: str, table: pd.DataFrame) -> Path:
    return storage.atomic_write_parquet(pa.Table.from_pandas(table, preserve_index=False), eval_metrics_path(cfg, ds))


def read_eval_metrics(cfg: Config, ds: str) -> pd.DataFrame:
    return pd.read_parquet(eval_metrics_path(cfg, ds))


# ---------------------------------------------------------------- the hybrid (rank step)
def hybrid_metrics_path(cfg: Config, ds: str) -> Path:
    """Long table: model, task, metric, value (the hybrid against its generators on its window)."""
    return layout(cfg).eval_dir(ds) / "hybrid_metrics.parquet"


def hybrid_summary_path(cfg: Config, ds: str) -> Path:
    return layout(cfg).eval_dir(ds) / "hybrid_summary.json"


def hybrid_lists_path(cfg: Config, ds: str) -> Path:
    """surface, user_idx, rank, item_idx, score: the hybrid's lists (empty when it lost)."""
    return layout(cfg).hybrid_dir(ds) / "recommendations.parquet"


def write_hybrid(cfg: Config, ds: str, metrics: pd.DataFrame, lists: pd.DataFrame, summary: dict) -> None:
    """The rank step's outputs; the summary (ndcg per task and model) last, as the marker."""
    storage.atomic_write_parquet(pa.Table.from_pandas(metrics, preserve_index=False), hybrid_metrics_path(cfg, ds))
    storage.atomic_write_parquet(pa.Table.from_pandas(lists, preserve_index=False), hybrid_lists_path(cfg, ds))
    storage.write_json(summary, hybrid_summary_path(cfg, ds))


def read_hybrid_summary(cfg: Config, ds: str) -> dict | None:
    """{"ndcg": {task: {model: value}}, ...}, or None when the rank step did not run for ds."""
    path = hybrid_summary_path(cfg, ds)
    return storage.read_json(path) if path.exists() else None


def read_hybrid_metrics(cfg: Config, ds: str) -> pd.DataFrame | None:
    path = hybrid_metrics_path(cfg, ds)
    return pd.read_parquet(path) if path.exists() else None


def read_hybrid_lists(cfg: Config, ds: str) -> pd.DataFrame:
    return pd.read_parquet(hybrid_lists_path(cfg, ds))


# ---------------------------------------------------------------- selection (select step)
def selection_path(cfg: Config, ds: str) -> Path:
    return layout(cfg).models_dir(ds) / "selected.json"


def write_selection(cfg: Config, ds: str, selection: dict) -> Path:
    """champion, challenger, promoted, reason, mlflow_run_id, model_version, champion_version."""
    return storage.write_json(selection, selection_path(cfg, ds))


def read_selection(cfg: Config, ds: str) -> dict:
    path = selection_path(cfg, ds)
    if not path.exists():
        raise ArtifactMissing(f"no model selection for ds={ds} at {path}; run the select step first")
    return storage.read_json(path)


# ---------------------------------------------------------------- surfaces (surfaces step)
def write_surfaces(cfg: Config, ds: str, tables: dict[str, pd.DataFrame]) -> Path:
    final = layout(cfg).surfaces_dir(ds)
    stage = storage.staging_dir(final)
    for name, df in tables.items():
        pq.write_table(pa.Table.from_pandas(df, preserve_index=False), stage / f"{name}.parquet")
    storage.replace_dir(stage, final)
    return final


def read_surface(cfg: Config, ds: str, name: str) -> pd.DataFrame:
    path = layout(cfg).surfaces_dir(ds) / f"{name}.parquet"
    if not path.exists():
        raise ArtifactMissing(f"no surface table {name} for ds={ds} at {path}; run the surfaces step first")
    return pq.read_table(path).to_pandas()


# ---------------------------------------------------------------- validation summary
def write_validation_summary(cfg: Config, ds: str, summary: dict) -> Path:
    return storage.write_json(summary, layout(cfg).validation_summary(ds))


def read_validation_summary(cfg: Config, ds: str) -> dict:
    """The validate step's counts for ds, or {} when it did not run for ds."""
    path = layout(cfg).validation_summary(ds)
    return storage.read_json(path) if path.exists() else {}
