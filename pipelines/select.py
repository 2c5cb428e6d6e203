"""Select step: refit the best candidate on all data up to ``ds``, log the run, register the champion.

The winner is the candidate with the highest NDCG@eval_k on the temporal holdout (evaluate step).
It is refitted on the full window and saved under ``models/ds=<ds>/champion/``; the content model
(used for similar items) is refitted under ``models/ds=<ds>/content/``. One MLflow run records the
params, every candidate's metrics, the input row counts and artifacts; the champion is logged as an
MLflow pyfunc model, registered, and given the alias ``champion``.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

from features.interactions import load_features
from pipelines import storage, tracking
from pipelines.config import Config
from pipelines.train import items_for_fit, make_model

log = logging.getLogger(__name__)


def select(cfg: Config, ds: str, run_id: str, airflow_run_id: str | None = None) -> dict:
    summary = storage.read_json(cfg.eval_dir(ds) / "summary.json")
    best = summary["best_model"]
    f = load_features(cfg, ds)
    items = items_for_fit(f["items"], "pop_full")
    t0 = time.perf_counter()
    champion = make_model(best, cfg).fit(f["full"], items)
    champ_dir = champion.save(cfg.models_dir(ds) / "champion")
    fit_seconds = time.perf_counter() - t0
    make_model("content", cfg).fit(f["full"], items).save(cfg.models_dir(ds) / "content")
    make_model("popularity", cfg).fit(f["full"], items).save(cfg.models_dir(ds) / "popularity")
    make_model("itemknn", cfg).fit(f["full"], items).save(cfg.models_dir(ds) / "itemknn")
    log.info("select ds=%s: champion %s (ndcg@%d %.4f) refitted on full data in %.2fs",
             ds, best, cfg.eval_k, summary["best_ndcg"], fit_seconds)

    mlflow = tracking.setup(cfg)
    validation = storage.read_json(cfg.home / "validation" / f"ds={ds}" / "summary.json") \
        if (cfg.home / "validation" / f"ds={ds}" / "summary.json").exists() else {}
    tags = {"ds": ds, "run_id": run_id, "airflow_run_id": airflow_run_id or "", "champion_model": best}
    with mlflow.start_run(run_name=f"nightly-{ds}-{run_id}"[:250], tags=tags) as run:
        mlflow.log_params({
            "ds": ds, "candidates": ",".join(cfg.candidates), "champion": best, "top_n": cfg.top_n,
            "eval_k": cfg.eval_k, "holdout_days": cfg.holdout_days, "history_days": cfg.history_days,
            "seed": cfg.seed, "als_factors": cfg.als_factors, "als_regularization": cfg.als_regularization,
            "als_alpha": cfg.als_alpha, "als_iterations": cfg.als_iterations,
            "itemknn_neighbours": cfg.itemknn_neighbours,
            "event_weights": ",".join(f"{k}={v}" for k, v in cfg.event_weights.items()),
            "input_window_end": f["meta"]["window_end"], "input_holdout_start": f["meta"]["holdout_start"],
        })
        metrics = {f"{model}.{k}": v for model, m in summary["metrics"].items() for k, v in m.items()}
        metrics.update({f"input.{k}": f["meta"][k] for k in ("events", "users", "items", "full_nnz", "holdout_pairs")})
        metrics.update({f"validation.{k}": validation[k] for k in ("rows_in", "rows_valid", "rows_quarantined")
                        if k in validation})
        metrics["champion.fit_seconds"] = fit_seconds
        mlflow.log_metrics(metrics)
        mlflow.log_artifact(str(cfg.eval_dir(ds) / "summary.json"), "evaluation")
        mlflow.log_artifact(str(cfg.eval_dir(ds) / "metrics.parquet"), "evaluation")
        mlflow.log_artifact(str(cfg.features_dir(ds) / "meta.json"), "features")
        vdir = cfg.home / "validation" / f"ds={ds}"
        if (vdir / "report.html").exists():
            # summary.json, the validation report and the Great Expectations Data Docs of this ds,
            # browsable from the run's Artifacts tab; the tag links straight to the report.
            mlflow.log_artifacts(str(vdir), "validation")
            mlflow.set_tag("data_docs", f"{run.info.artifact_uri}/validation/report.html")
        import models

        info = mlflow.pyfunc.log_model(
            name="recommender", python_model=str(Path(models.__file__).parent / "pyfunc_entry.py"),
            model_config={"n": cfg.top_n},
            artifacts={"model": str(champ_dir), "users": str(cfg.features_dir(ds) / "users.parquet"),
                       "items": str(cfg.features_dir(ds) / "items.parquet"),
                       "user_items": str(cfg.features_dir(ds) / "full.npz")},
            pip_requirements=tracking.pip_requirements(), registered_model_name=cfg.registered_model,
            await_registration_for=60,
        )
        version = str(info.registered_model_version)
        client = mlflow.MlflowClient()
        client.set_registered_model_alias(cfg.registered_model, "champion", version)
        client.set_model_version_tag(cfg.registered_model, version, "ds", ds)
        client.set_model_version_tag(cfg.registered_model, version, "model", best)
        mlflow_run_id = run.info.run_id
    log.info("select ds=%s: MLflow run %s, %s version %s has alias 'champion'", ds, mlflow_run_id,
             cfg.registered_model, version)
    out = {"ds": ds, "champion": best, "mlflow_run_id": mlflow_run_id, "model_version": version}
    storage.write_json(out, cfg.models_dir(ds) / "selected.json")
    return out
