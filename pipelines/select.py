"""Select step: the champion/challenger gate, the night's MLflow runs and the model registry.

The challenger is the candidate with the highest NDCG@eval_k on tonight's temporal holdout
(evaluate step). The gate (``gate``) promotes it only if it beats the model type holding the
``champion`` alias and the baselines by ``gate_margin`` without losing more than
``gate_coverage_tolerance`` of coverage, all measured on the same holdout; otherwise the alias stays
and tonight's lists come from the champion's model type, refitted on the newest data. The serving
model is saved under ``models/ds=<ds>/champion/``; content, item-kNN and popularity models (similar
items and fallbacks) are refitted beside it. One parent MLflow run per night records params,
metrics, input counts, the validation report and the decision (tags ``gate_decision``,
``gate_reason``), with a nested run per candidate and one for the hybrid; the challenger is logged as
an MLflow pyfunc model and registered with the alias ``challenger``, and with ``champion`` when
promoted. Aliases only, never the deprecated stages.
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


BASELINES = ("popularity", "buy_again")


def gate(metrics: dict, challenger: str, current: str | None, cfg: Config) -> tuple[bool, str]:
    """Champion/challenger decision on tonight's holdout. Returns (promote, reason).

    ``metrics``: candidate -> metric dict (evaluate step); ``current``: the model name of the version
    holding the ``champion`` alias, or None.
    """
    key, cov, m = f"ndcg_at_{cfg.eval_k}", f"coverage_at_{cfg.eval_k}", cfg.gate_margin
    ch = metrics[challenger]
    if current is None:
        return True, f"first champion: {challenger} (NDCG {ch[key]:.4f})"
    if current == challenger:
        return True, f"{challenger} holds the alias already; it moves to the version refitted on newer data"
    if current not in metrics:
        return True, f"the champion's model {current!r} is no longer a candidate"
    for b in BASELINES:
        if b in metrics and b != challenger and ch[key] < metrics[b][key] * (1 + m):
            return False, (f"{challenger} NDCG {ch[key]:.4f} does not beat baseline {b} "
                           f"{metrics[b][key]:.4f} by {m:.0%}")
    cur = metrics[current]
    if ch[key] < cur[key] * (1 + m):
        return False, f"{challenger} NDCG {ch[key]:.4f} does not beat champion {current} {cur[key]:.4f} by {m:.0%}"
    if ch[cov] < cur[cov] * (1 - cfg.gate_coverage_tolerance):
        return False, (f"{challenger} coverage {ch[cov]:.3f} is below champion {current} {cur[cov]:.3f} "
                       f"by more than {cfg.gate_coverage_tolerance:.0%}")
    return True, f"{challenger} NDCG {ch[key]:.4f} beats champion {current} {cur[key]:.4f} by at least {m:.0%}"


def current_champion(cfg: Config, mlflow) -> tuple[str | None, str | None]:
    """(model name, version) of the registered version holding the alias, if any."""
    try:
        mv = mlflow.MlflowClient().get_model_version_by_alias(cfg.registered_model, "champion")
    except mlflow.exceptions.MlflowException:
        return None, None
    return mv.tags.get("model"), str(mv.version)


def select(cfg: Config, ds: str, run_id: str, airflow_run_id: str | None = None) -> dict:
    summary = storage.read_json(cfg.eval_dir(ds) / "summary.json")
    challenger = summary["best_model"]
    mlflow = tracking.setup(cfg)
    current, current_version = current_champion(cfg, mlflow)
    promote, reason = gate(summary["metrics"], challenger, current, cfg)
    serving = challenger if promote else current
    log.info("select ds=%s: gate %s: %s", ds, "PROMOTES" if promote else "KEEPS the champion", reason)
    f = load_features(cfg, ds)
    items = items_for_fit(f["items"], "pop_full")
    t0 = time.perf_counter()
    tuned = summary.get("params", {})
    champion = make_model(serving, cfg, tuned.get(serving)).fit(f["full"], items)
    champ_dir = champion.save(cfg.models_dir(ds) / "champion")
    fit_seconds = time.perf_counter() - t0
    chall_dir = champ_dir if serving == challenger else \
        make_model(challenger, cfg, tuned.get(challenger)).fit(f["full"], items).save(cfg.models_dir(ds) / "challenger")
    make_model("content", cfg).fit(f["full"], items).save(cfg.models_dir(ds) / "content")
    make_model("popularity", cfg).fit(f["full"], items).save(cfg.models_dir(ds) / "popularity")
    make_model("itemknn", cfg).fit(f["full"], items).save(cfg.models_dir(ds) / "itemknn")
    log.info("select ds=%s: serving %s, refitted on full data in %.2fs", ds, serving, fit_seconds)
    best = serving

    validation = storage.read_json(cfg.home / "validation" / f"ds={ds}" / "summary.json") \
        if (cfg.home / "validation" / f"ds={ds}" / "summary.json").exists() else {}
    tags = {"ds": ds, "run_id": run_id, "airflow_run_id": airflow_run_id or "", "champion_model": best,
            "challenger_model": challenger, "gate_decision": "promote" if promote else "keep",
            "gate_reason": reason[:5000]}
    with mlflow.start_run(run_name=f"nightly-{ds}-{run_id}"[:250], tags=tags) as run:
        mlflow.log_params({
            "ds": ds, "candidates": ",".join(cfg.candidates), "champion": best, "challenger": challenger,
            "top_n": cfg.top_n,
            "eval_k": cfg.eval_k, "holdout_days": cfg.holdout_days, "history_days": cfg.history_days,
            "seed": cfg.seed, "gate_margin": cfg.gate_margin, "als_factors": cfg.als_factors, "als_regularization": cfg.als_regularization,
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
        # One nested run per candidate, and one for the hybrid, under the night's parent run.
        for name, m in summary["metrics"].items():
            with mlflow.start_run(run_name=name, nested=True, tags={"ds": ds, "run_id": run_id, "candidate": name}):
                mlflow.log_params({k: str(v) for k, v in make_model(name, cfg, tuned.get(name)).get_params().items()})
                mlflow.log_metrics({k: float(v) for k, v in m.items()})
                # The search's trials for this candidate, one nested run each.
                for i, trial in enumerate(t for t in summary.get("search", []) if t["model"] == name):
                    with mlflow.start_run(run_name=f"{name}-search-{i}", nested=True,
                                          tags={"ds": ds, "run_id": run_id, "search_trial": name}):
                        mlflow.log_params({k: str(v) for k, v in trial["params"].items()})
                        mlflow.log_metrics({f"ndcg_at_{cfg.eval_k}": trial["ndcg"], "fit_seconds": trial["seconds"]})
        hybrid_path = cfg.eval_dir(ds) / "hybrid_summary.json"
        if hybrid_path.exists():
            hybrid = storage.read_json(hybrid_path)
            with mlflow.start_run(run_name="hybrid", nested=True, tags={"ds": ds, "run_id": run_id, "candidate": "hybrid"}):
                mlflow.log_params({"ranker_window_days": cfg.ranker_window_days, "ranker_windows": cfg.ranker_windows,
                                   "ranker_candidates": cfg.ranker_candidates})
                mlflow.log_metrics({f"{task}.{model}.ndcg_at_{cfg.eval_k}": v
                                    for task, by in hybrid["ndcg"].items() for model, v in by.items()})
                mlflow.log_artifact(str(cfg.eval_dir(ds) / "hybrid_metrics.parquet"), "evaluation")
                # The two learned rankers (scikit-learn models, one per task) behind for_you / new_for_you.
                for task in ("all", "new"):
                    rdir = cfg.models_dir(ds) / "hybrid" / f"ranker_{task}"
                    if (rdir / "MLmodel").exists():
                        mlflow.log_artifacts(str(rdir), f"ranker_{task}")
                from pipelines.publish import hybrid_choice

                for task, used in hybrid_choice(cfg, ds).items():
                    mlflow.set_tag(f"serves_{task}", "hybrid" if used else "champion")
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
            artifacts={"model": str(chall_dir), "users": str(cfg.features_dir(ds) / "users.parquet"),
                       "items": str(cfg.features_dir(ds) / "items.parquet"),
                       "user_items": str(cfg.features_dir(ds) / "full.npz")},
            pip_requirements=tracking.pip_requirements(), registered_model_name=cfg.registered_model,
            await_registration_for=60,
        )
        version = str(info.registered_model_version)
        client = mlflow.MlflowClient()
        client.set_model_version_tag(cfg.registered_model, version, "ds", ds)
        client.set_model_version_tag(cfg.registered_model, version, "model", challenger)
        client.set_model_version_tag(cfg.registered_model, version, "gate_reason", reason[:5000])
        client.set_registered_model_alias(cfg.registered_model, "challenger", version)
        if promote:
            client.set_registered_model_alias(cfg.registered_model, "champion", version)
        mlflow_run_id = run.info.run_id
    champion_version = version if promote else current_version
    log.info("select ds=%s: MLflow run %s; %s version %s is the challenger, version %s the champion", ds,
             mlflow_run_id, cfg.registered_model, version, champion_version)
    out = {"ds": ds, "champion": best, "challenger": challenger, "promoted": promote, "reason": reason,
           "mlflow_run_id": mlflow_run_id, "model_version": version, "champion_version": champion_version}
    storage.write_json(out, cfg.models_dir(ds) / "selected.json")
    return out
