"""MLflow: one run per nightly run, the chosen model registered with the alias ``champion``.

Tracking store: sqlite under the data root; artifacts under ``mlflow/artifacts``. Run names carry
``ds`` and the run id; tags carry ``ds``, ``run_id`` and the Airflow run id. Registry aliases only,
never the deprecated stages. The experiment, the registered model and each version carry a
description (pipelines/evaluation/night_log.py writes the texts); nightly metrics are logged at
step ``ds_step(ds)`` so MLflow's charts line the nights up.
"""
from __future__ import annotations

import json
import logging
import os
from datetime import date
from pathlib import Path

from pipelines.artifacts import layout, mlflow_uri
from pipelines.config import Config
from pipelines.infra import logs

log = logging.getLogger(__name__)


def ds_step(ds: str) -> int:
    """The step of every nightly metric: days from 1970-01-01 to ds, so that a chart over runs with
    "Step" on its x axis puts each night at its date (a rerun of a ds lands on the same step)."""
    return (date.fromisoformat(ds) - date(1970, 1, 1)).days


def setup(cfg: Config):
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("MLFLOW_TRACKING_INSECURE_TLS", "false")
    import mlflow

    quiet_mlflow()
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


def describe_experiment(mlflow, cfg: Config, description: str) -> None:
    """The experiment's description (MLflow's ``mlflow.note.content`` tag, shown on the experiment
    page), set where it differs."""
    exp = mlflow.get_experiment_by_name(cfg.gate.mlflow_experiment)
    if exp.tags.get("mlflow.note.content") != description:
        mlflow.MlflowClient().set_experiment_tag(exp.experiment_id, "mlflow.note.content", description)


def quiet_mlflow() -> None:
    """MLflow's loggers through ours: importing mlflow gives them their own stderr handler (which
    Airflow shows as ERROR, whatever the level, and which colours some lines); here they propagate to
    the process's handlers at WARNING, and no ANSI colour code reaches a log (logs.install)."""
    for name in ("mlflow", "alembic", "huey", "sqlalchemy.engine"):
        logger = logging.getLogger(name)
        logger.handlers = []
        logger.propagate = True
        logger.setLevel(logging.WARNING)
    logs.install()


def register_version(mlflow, name: str, info, description: str | None = None,
                     model_description: str | None = None) -> str:
    """A new version of the registered model ``name`` from a logged model (``info``: the ModelInfo of
    ``log_model``); returns the version. What ``log_model(registered_model_name=...)`` does, minus
    its stderr lines ("Registered model ... already exists", "Created version ..."), which Airflow
    shows as ERROR on every night but the first. ``description``: the version's;
    ``model_description``: the registered model's, set where it differs."""
    from mlflow.exceptions import MlflowException

    client = mlflow.MlflowClient()
    try:
        model = client.get_registered_model(name)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        client.create_registered_model(name, description=model_description)
        log.info("MLflow: registered model %r created", name)
    else:
        if model_description is not None and (model.description or "") != model_description:
            client.update_registered_model(name, description=model_description)
    mv = client.create_model_version(name, source=info.model_uri, run_id=info.run_id, model_id=info.model_id,
                                     description=description, await_creation_for=60)
    # The logged model's link to its versions, as MLflow's own registration writes it (the UI uses it).
    client.set_logged_model_tags(info.model_id, {"mlflow.modelVersions": json.dumps(
        [{"name": mv.name, "version": mv.version}])})
    log.info("MLflow: version %s of %r registered", mv.version, name)
    return str(mv.version)


def pip_requirements() -> list[str]:
    req = Path(__file__).resolve().parents[2] / "requirements.txt"
    if req.exists():
        return [l.strip() for l in req.read_text().splitlines() if l.strip() and not l.startswith("#")
                and l.split("==")[0].strip().lower() in {"implicit", "scikit-learn", "pandas", "pyarrow", "scipy",
                                                         "numpy", "threadpoolctl", "mlflow"}]
    return ["implicit", "scikit-learn", "pandas", "pyarrow", "threadpoolctl"]
