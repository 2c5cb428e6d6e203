"""The night's MLflow record (select step): one parent run per night with params, metrics, input
counts and the gate's decision; a nested run per candidate (and per search trial), one for the
hybrid with its two rankers; the validation report and Data Docs as artifacts; the challenger
logged as a pyfunc model and registered with aliases (never the deprecated stages)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import models
from models.registry import make_model
from pipelines.artifacts import (
    Features,
    eval_metrics_path,
    eval_summary_path,
    features_file,
    hybrid_metrics_path,
    layout,
    read_hybrid_summary,
    read_validation_summary,
)
from pipelines.config import Config
from pipelines.hybrid.choice import hybrid_choice
from pipelines.infra import tracking

HYBRID_TASKS = ("all", "new")


@dataclass(frozen=True)
class Decision:
    """The gate's outcome for one night."""
    ds: str
    run_id: str
    airflow_run_id: str
    champion: str      # the model type serving tonight
    challenger: str    # tonight's best candidate
    promote: bool      # the ``champion`` alias moves to tonight's version (never in a backfill)
    reason: str
    fit_seconds: float
    backfill: bool = False  # an older ds than the aliases' one: logged and registered, no alias moves


def night_params(cfg: Config, d: Decision, f: Features) -> dict:
    return {
        "ds": d.ds, "candidates": ",".join(cfg.models.candidates), "champion": d.champion,
        "challenger": d.challenger, "top_n": cfg.ranking.top_n, "eval_k": cfg.evaluation.eval_k,
        "holdout_days": cfg.features.holdout_days, "history_days": cfg.features.history_days, "seed": cfg.seed,
        "gate_margin": cfg.gate.gate_margin, "als_factors": cfg.models.als_factors,
        "als_regularization": cfg.models.als_regularization, "als_alpha": cfg.models.als_alpha,
        "als_iterations": cfg.models.als_iterations, "itemknn_neighbours": cfg.models.itemknn_neighbours,
        "event_weights": ",".join(f"{k}={v}" for k, v in cfg.features.event_weights.items()),
        "input_window_end": f.meta["window_end"], "input_holdout_start": f.meta["holdout_start"],
    }


def night_metrics(cfg: Config, d: Decision, summary: dict, f: Features) -> dict:
    validation = read_validation_summary(cfg, d.ds)
    metrics = {f"{model}.{k}": v for model, m in summary["metrics"].items() for k, v in m.items()}
    metrics.update({f"input.{k}": f.meta[k] for k in ("events", "users", "items", "full_nnz", "holdout_pairs")})
    metrics.update({f"validation.{k}": validation[k] for k in ("rows_in", "rows_valid", "rows_quarantined")
                    if k in validation})
    metrics["champion.fit_seconds"] = d.fit_seconds
    return metrics


def log_candidates(mlflow, cfg: Config, d: Decision, summary: dict) -> None:
    """One nested run per candidate, with one nested run per search trial under it."""
    tuned = summary.get("params", {})
    tags = {"ds": d.ds, "run_id": d.run_id}
    for name, m in summary["metrics"].items():
        with mlflow.start_run(run_name=name, nested=True, tags={**tags, "candidate": name}):
            mlflow.log_params({k: str(v) for k, v in make_model(name, cfg, tuned.get(name)).get_params().items()})
            mlflow.log_metrics({k: float(v) for k, v in m.items()})
            for i, trial in enumerate(t for t in summary.get("search", []) if t["model"] == name):
                with mlflow.start_run(run_name=f"{name}-search-{i}", nested=True, tags={**tags, "search_trial": name}):
                    mlflow.log_params({k: str(v) for k, v in trial["params"].items()})
                    mlflow.log_metrics({f"ndcg_at_{cfg.evaluation.eval_k}": trial["ndcg"],
                                        "fit_seconds": trial["seconds"]})


def log_hybrid(mlflow, cfg: Config, d: Decision) -> None:
    """The hybrid's nested run: its window metrics, its two rankers, which lists it serves."""
    hybrid = read_hybrid_summary(cfg, d.ds)
    if hybrid is None:
        return
    with mlflow.start_run(run_name="hybrid", nested=True, tags={"ds": d.ds, "run_id": d.run_id, "candidate": "hybrid"}):
        mlflow.log_params({"ranker_window_days": cfg.hybrid.ranker_window_days,
                           "ranker_windows": cfg.hybrid.ranker_windows,
                           "ranker_candidates": cfg.hybrid.ranker_candidates})
        mlflow.log_metrics({f"{task}.{model}.ndcg_at_{cfg.evaluation.eval_k}": v
                            for task, by in hybrid["ndcg"].items() for model, v in by.items()})
        mlflow.log_artifact(str(hybrid_metrics_path(cfg, d.ds)), "evaluation")
        # The two learned rankers (scikit-learn models, one per task) behind for_you / new_for_you.
        for task in HYBRID_TASKS:
            rdir = layout(cfg).ranker_dir(d.ds, task)
            if (rdir / "MLmodel").exists():
                mlflow.log_artifacts(str(rdir), f"ranker_{task}")
        for task, used in hybrid_choice(cfg, d.ds).items():
            mlflow.set_tag(f"serves_{task}", "hybrid" if used else "champion")
        for task, why in hybrid.get("skipped", {}).items():
            mlflow.set_tag(f"skipped_{task}", why)


def log_inputs(mlflow, run, cfg: Config, ds: str) -> None:
    """Evaluation, features meta and the validation report (with Data Docs) as run artifacts."""
    mlflow.log_artifact(str(eval_summary_path(cfg, ds)), "evaluation")
    mlflow.log_artifact(str(eval_metrics_path(cfg, ds)), "evaluation")
    mlflow.log_artifact(str(features_file(cfg, ds, "meta.json")), "features")
    if layout(cfg).validation_report(ds).exists():
        # summary.json, the validation report and the Great Expectations Data Docs of this ds,
        # browsable from the run's Artifacts tab; the tag links straight to the report.
        mlflow.log_artifacts(str(layout(cfg).validation_dir(ds)), "validation")
        mlflow.set_tag("data_docs", f"{run.info.artifact_uri}/validation/report.html")


def register(mlflow, cfg: Config, d: Decision, model_dir: Path) -> str:
    """Log the challenger as a pyfunc model, register it, move the aliases (not in a backfill);
    returns the version."""
    name = cfg.gate.registered_model
    info = mlflow.pyfunc.log_model(
        name="recommender", python_model=str(Path(models.__file__).parent / "pyfunc_entry.py"),
        model_config={"n": cfg.ranking.top_n},
        artifacts={"model": str(model_dir), "users": str(features_file(cfg, d.ds, "users.parquet")),
                   "items": str(features_file(cfg, d.ds, "items.parquet")),
                   "user_items": str(features_file(cfg, d.ds, "full.npz"))},
        pip_requirements=tracking.pip_requirements(),
    )
    version = tracking.register_version(mlflow, name, info)
    client = mlflow.MlflowClient()
    client.set_model_version_tag(name, version, "ds", d.ds)
    client.set_model_version_tag(name, version, "model", d.challenger)
    client.set_model_version_tag(name, version, "gate_reason", d.reason[:5000])
    if d.backfill:
        # The aliases follow the newest ds only: a backfill never moves one onto older data.
        client.set_model_version_tag(name, version, "backfill", "true")
        client.set_model_version_tag(name, version, "backfill_reason", d.reason[:5000])
        return version
    client.set_registered_model_alias(name, "challenger", version)
    if d.promote:
        client.set_registered_model_alias(name, "champion", version)
    return version


def log_night(mlflow, cfg: Config, d: Decision, summary: dict, f: Features, challenger_dir: Path) -> tuple[str, str]:
    """The whole record; returns (MLflow run id, registered version of the challenger)."""
    decision = "backfill" if d.backfill else "promote" if d.promote else "keep"
    tags = {"ds": d.ds, "run_id": d.run_id, "airflow_run_id": d.airflow_run_id, "champion_model": d.champion,
            "challenger_model": d.challenger, "gate_decision": decision, "gate_reason": d.reason[:5000],
            "backfill": "true" if d.backfill else "false"}
    with mlflow.start_run(run_name=f"nightly-{d.ds}-{d.run_id}"[:250], tags=tags) as run:
        mlflow.log_params(night_params(cfg, d, f))
        mlflow.log_metrics(night_metrics(cfg, d, summary, f))
        log_candidates(mlflow, cfg, d, summary)
        log_hybrid(mlflow, cfg, d)
        log_inputs(mlflow, run, cfg, d.ds)
        version = register(mlflow, cfg, d, challenger_dir)
        return run.info.run_id, version
