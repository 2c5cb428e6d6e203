"""The night's MLflow record (select step): one parent run per night with params, the serving
model's headline metrics under stable names (``serving.*``, at step ``tracking.ds_step(ds)``), input
and validation counts, the training data as a dataset input and the gate's decision; a nested run
per candidate with all its holdout metrics (and one per search trial), one for the hybrid with its
two rankers; the validation report and Data Docs as artifacts; the challenger logged as a pyfunc
model with a signature and an input example, registered with aliases (never the deprecated stages);
the experiment, the registered model, each version and each parent run carry a description."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

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
# The serving model's metrics on tonight's holdout copied to the parent run as ``serving.<metric>_at_<K>``:
# the same names every night, so the experiment's charts follow them from night to night.
HEADLINE = ("ndcg", "precision", "recall", "map", "hit_rate", "coverage")


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
    """The parent run's metrics, under the same names every night; each candidate's own metrics are on
    its nested run. ``serving.*``: the model serving tonight (the champion's model type) on tonight's
    holdout; ``challenger.ndcg_at_K``: tonight's best candidate."""
    validation = read_validation_summary(cfg, d.ds)
    k = cfg.evaluation.eval_k
    serving = summary["metrics"].get(d.champion, {})
    metrics = {f"serving.{m}_at_{k}": serving[f"{m}_at_{k}"] for m in HEADLINE if f"{m}_at_{k}" in serving}
    if "users" in serving:
        metrics["serving.eval_users"] = serving["users"]
    metrics[f"challenger.ndcg_at_{k}"] = summary["metrics"][d.challenger][f"ndcg_at_{k}"]
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
            mlflow.log_metrics({k: float(v) for k, v in m.items()}, step=tracking.ds_step(d.ds))
            for i, trial in enumerate(t for t in summary.get("search", []) if t["model"] == name):
                with mlflow.start_run(run_name=f"{name}-search-{i}", nested=True, tags={**tags, "search_trial": name}):
                    mlflow.log_params({k: str(v) for k, v in trial["params"].items()})
                    mlflow.log_metrics({f"ndcg_at_{cfg.evaluation.eval_k}": trial["ndcg"],
                                        "fit_seconds": trial["seconds"]}, step=tracking.ds_step(d.ds))


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
                            for task, by in hybrid["ndcg"].items() for model, v in by.items()},
                           step=tracking.ds_step(d.ds))
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


def training_dataset(mlflow, cfg: Config, ds: str, f: Features):
    """The training data of tonight's models (the users x items weights up to the end of ds, what the
    serving model is refitted on) as an MLflow dataset: one row per non-zero (user_idx, item_idx,
    weight), no user id; source the features file, digest its SHA-256 (first 32 hex digits)."""
    path = features_file(cfg, ds, "full.npz")
    coo = f.full.tocoo()
    frame = pd.DataFrame({"user_idx": coo.row.astype("int64"), "item_idx": coo.col.astype("int64"),
                          "weight": coo.data.astype("float64")})
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:32]
    return mlflow.data.from_pandas(frame, source=str(path), name=f"interactions_{ds}", digest=digest)


def log_training_data(mlflow, cfg: Config, ds: str, f: Features) -> None:
    """The dataset input of the parent run (context ``training``), with its ds and counts as tags."""
    mlflow.log_input(training_dataset(mlflow, cfg, ds, f), context="training", tags={
        "ds": ds, "users": str(f.full.shape[0]), "items": str(f.full.shape[1]),
        "interactions": str(f.full.nnz), "events": str(f.meta["events"])})


def input_example(f: Features, n: int = 3) -> pd.DataFrame:
    """A few users of tonight's features with a history (so the example recommends something):
    the registered model's input example."""
    users = f.users.sort_values("user_idx")
    has_history = f.full.getnnz(axis=1)[users["user_idx"].to_numpy()] > 0
    usable = users[has_history & (users["user_id"].astype(str) != "")]
    return pd.DataFrame({"user_id": usable["user_id"].astype(str).head(n).tolist()})


def signature():
    """What ``models/pyfunc.py`` takes and returns: user ids in, one row per (user, rank) out."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    return ModelSignature(
        inputs=Schema([ColSpec("string", "user_id")]),
        outputs=Schema([ColSpec("string", "user_id"), ColSpec("long", "rank"), ColSpec("string", "item_id"),
                        ColSpec("float", "score")]))


def experiment_description(cfg: Config) -> str:
    k = cfg.evaluation.eval_k
    return (
        "Nightly batch recommender (select step of the recsys pipeline, docs/pipeline.md).\n\n"
        "* One parent run per night, named `nightly-<ds>-<run_id>`, tags `ds`, `run_id`, `gate_decision`, "
        "`gate_reason`; its description says what serves tonight and why.\n"
        f"* Parent-run metrics keep the same names every night and are logged at step = days since 1970-01-01 "
        f"of ds: `serving.ndcg_at_{k}`, `serving.precision_at_{k}`, `serving.recall_at_{k}`, "
        f"`serving.coverage_at_{k}` ... (the model serving tonight, on tonight's temporal holdout), "
        f"`challenger.ndcg_at_{k}`, `input.*`, `validation.*`; chart them with Step on the x axis "
        "(`published.*`: the publish step's row counts).\n"
        "* Nested runs: one per candidate model with all its holdout metrics and parameters (and one per "
        "search trial), one for the hybrid ranker.\n"
        "* The training data (users x items weights up to ds) is the run's dataset input (context `training`).\n"
        f"* Tonight's best candidate is registered as `{cfg.gate.registered_model}`; the alias `champion` "
        "is the version that serves.")


def model_description(cfg: Config) -> str:
    return (
        "Batch recommender of the nightly pipeline: one version per night, tonight's best candidate on "
        f"NDCG@{cfg.evaluation.eval_k} refitted on all data up to its ds. Aliases: `champion` (the version whose "
        "model type serves; moved by the champion/challenger gate) and `challenger` (the newest night's "
        "best). Version tags: `ds`, `model`, `gate_reason`, `backfill`.\n\n"
        f"Load: `mlflow.pyfunc.load_model('models:/{cfg.gate.registered_model}@champion')`; "
        "`predict(pd.DataFrame({'user_id': [...]}))` returns one row per (user_id, rank) with item_id and "
        f"score, {cfg.ranking.top_n} per known user (unknown users get no rows).")


def decision_text(cfg: Config, d: Decision, summary: dict) -> str:
    """What the version (tonight's challenger) is and what the gate did with it."""
    ndcg = summary["metrics"][d.challenger].get(f"ndcg_at_{cfg.evaluation.eval_k}")
    best = f" (NDCG@{cfg.evaluation.eval_k} {ndcg:.4f})" if ndcg is not None else ""
    if d.backfill:
        gate = f"backfill, no alias moved: {d.reason}"
    elif d.promote:
        gate = f"promoted: {d.reason}"
    else:
        gate = f"kept champion {d.champion}: {d.reason}"
    return f"ds {d.ds}, candidate {d.challenger}{best}, run {d.run_id}; gate: {gate}"[:5000]


def register(mlflow, cfg: Config, d: Decision, model_dir: Path, summary: dict, f: Features) -> str:
    """Log the challenger as a pyfunc model (with its signature and an input example), register it
    with descriptions, move the aliases (not in a backfill); returns the version."""
    name = cfg.gate.registered_model
    example = input_example(f)
    info = mlflow.pyfunc.log_model(
        name="recommender", python_model=str(Path(models.__file__).parent / "pyfunc_entry.py"),
        model_config={"n": cfg.ranking.top_n},
        artifacts={"model": str(model_dir), "users": str(features_file(cfg, d.ds, "users.parquet")),
                   "items": str(features_file(cfg, d.ds, "items.parquet")),
                   "user_items": str(features_file(cfg, d.ds, "full.npz"))},
        signature=signature(), input_example=example if len(example) else None,
        pip_requirements=tracking.pip_requirements(),
    )
    version = tracking.register_version(mlflow, name, info, description=decision_text(cfg, d, summary),
                                        model_description=model_description(cfg))
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
    tags["mlflow.note.content"] = f"Serving {d.champion}; " + decision_text(cfg, d, summary)
    tracking.describe_experiment(mlflow, cfg, experiment_description(cfg))
    with mlflow.start_run(run_name=f"nightly-{d.ds}-{d.run_id}"[:250], tags=tags) as run:
        mlflow.log_params(night_params(cfg, d, f))
        mlflow.log_metrics(night_metrics(cfg, d, summary, f), step=tracking.ds_step(d.ds))
        log_training_data(mlflow, cfg, d.ds, f)
        log_candidates(mlflow, cfg, d, summary)
        log_hybrid(mlflow, cfg, d)
        log_inputs(mlflow, run, cfg, d.ds)
        version = register(mlflow, cfg, d, challenger_dir, summary, f)
        return run.info.run_id, version
