"""MLflow: one run per nightly run, the chosen model registered with the alias ``champion``.

Tracking store: sqlite under the data root; artifacts under ``mlflow/artifacts``. Run names carry
``ds`` and the run id; tags carry ``ds``, ``run_id`` and the Airflow run id. Registry aliases only,
never the deprecated stages.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

from pipelines.artifacts import layout, mlflow_uri
from pipelines.config import Config

log = logging.getLogger(__name__)


def setup(cfg: Config):
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("MLFLOW_TRACKING_INSECURE_TLS", "false")
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    import mlflow

    layout(cfg).mlflow_dir.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(mlflow_uri(cfg))
    mlflow.set_registry_uri(mlflow_uri(cfg))
    exp = mlflow.get_experiment_by_name(cfg.gate.mlflow_experiment)
    if exp is None:
        # Local store: artifacts beside it under the data root; a tracking server keeps its own.
        local = not cfg.gate.mlflow_tracking_uri
        mlflow.create_experiment(cfg.gate.mlflow_experiment,
                                 artifact_location=layout(cfg).mlflow_artifacts.as_uri() if local else None)
    mlflow.set_experiment(cfg.gate.mlflow_experiment)
    return mlflow


def pip_requirements() -> list[str]:
    req = Path(__file__).resolve().parents[2] / "requirements.txt"
    if req.exists():
        return [l.strip() for l in req.read_text().splitlines() if l.strip() and not l.startswith("#")
                and l.split("==")[0].strip().lower() in {"implicit", "scikit-learn", "pandas", "pyarrow", "scipy",
                                                         "numpy", "threadpoolctl", "mlflow"}]
    return ["implicit", "scikit-learn", "pandas", "pyarrow", "threadpoolctl"]
