"""The small nightly hyperparameter search: alternatives tried around the configured defaults on the
same holdout as the candidates, while the time budget lasts (config search_budget_seconds)."""
from __future__ import annotations

import logging
import time

from models.registry import fit_model, fit_share, items_for_fit, make_model, warm_source
from pipelines.artifacts import Features, layout
from pipelines.config import Config
from pipelines.evaluation.holdout import beyond_accuracy
from pipelines.evaluation.metrics import ranking_metrics
from pipelines.infra import storage
from pipelines.session_artifacts import read_sequences

log = logging.getLogger(__name__)

# Tried in this order per candidate. Generic ranges, not tuned to any one data set.
SEARCH_SPACE: dict[str, list[dict]] = {
    "itemknn": [{"neighbours": 20}, {"neighbours": 50}, {"neighbours": 300}],
    "ease": [{"regularization": 50.0}, {"regularization": 500.0}, {"regularization": 2000.0}],
    "als": [{"factors": 32, "regularization": 0.01}, {"factors": 128, "regularization": 0.1},
            {"factors": 64, "regularization": 1.0}],
    "lightgcn": [{"layers": 2}, {"factors": 128}, {"regularization": 1e-3}],
    "two_tower": [{"temperature": 0.05}, {"factors": 128}, {"id_dropout": 0.2}],
    "sasrec": [{"layers": 1}, {"max_len": 100}, {"dropout": 0.5}],
}


def expected_seconds(base: dict, alt: dict, fit_seconds: float | None) -> float:
    """A trial's expected fit time: its candidate's fit time in tonight's train step, times the ratio
    of the factors (or layers) when the trial changes them (a factor model's fit grows at least
    linearly with its factors). 0 when the candidate's fit time is unknown (the trial runs)."""
    if not fit_seconds:
        return 0.0
    ratio = 1.0
    for key in ("factors", "layers"):
        if key in alt and base.get(key):
            ratio *= max(1.0, float(alt[key]) / float(base[key]))
    return float(fit_seconds) * ratio


def search(cfg: Config, ds: str, f: Features, users, truth, inactive, n_catalog: int, summary: dict,
           candidates) -> tuple[list[dict], dict]:
    """Try SEARCH_SPACE alternatives on the same holdout until ``search_budget_seconds`` run out.

    A trial is only started when it is expected to end within the budget (``expected_seconds``, from
    the candidate's fit time in the train step): the budget bounds the search's time, not only its
    start (at ten million events a 128-factor ALS trial started at 54 s of 60 took another 57 s).

    Only candidates within ``search_min_share`` of the best candidate's NDCG are tuned (a candidate at a
    third of the best does not become the champion by a change of its settings). A trial that keeps
    the candidate's factors (or fewer, for ALS: its truncation) starts from its holdout fit where the
    model can (ALS's warm start).

    A trial that beats a candidate's current NDCG replaces its metrics and its saved holdout model;
    the winning overrides are returned per candidate (the select step refits with them).
    Returns (trials, overrides).
    """
    key = f"ndcg_at_{cfg.evaluation.eval_k}"
    items = items_for_fit(f.items, "pop_train")
    extra = beyond_accuracy(cfg, ds, f)
    trials, overrides = [], {}
    deadline = time.perf_counter() + cfg.evaluation.search_budget_seconds
    trained_path = layout(cfg).models_dir(ds) / "holdout" / "trained.json"
    trained = storage.read_json(trained_path) if trained_path.exists() else {}
    best = max((summary[c][key] for c in candidates if c in summary), default=0.0)
    for name in candidates:
        if SEARCH_SPACE.get(name) and summary.get(name, {}).get(key, 0.0) < cfg.evaluation.search_min_share * best:
            log.info("evaluate ds=%s: search skips %s: ndcg@%d %.4f is below search_min_share %.2f of the best %.4f",
                     ds, name, cfg.evaluation.eval_k, summary[name][key], cfg.evaluation.search_min_share, best)
            continue
        # The candidate's holdout fit, read before a winning trial replaces it (ALS's warm start).
        start = warm_source(make_model(name, cfg), layout(cfg).holdout_model(ds, name))
        for alt in SEARCH_SPACE.get(name, []):
            if time.perf_counter() >= deadline:
                log.info("evaluate ds=%s: search budget of %ss used up", ds, cfg.evaluation.search_budget_seconds)
                return trials, overrides
            t0 = time.perf_counter()
            model = make_model(name, cfg, alt)
            # A deep model's trial gets the training time its candidate had, or it is not run: a trial
            # cut short would compare an under-trained model with the candidate (and its first epoch,
            # which always runs, would overrun the search's budget).
            if float(model.get_params().get("budget_seconds", 0.0)) > deadline - t0:
                log.info("evaluate ds=%s: search skips %s: its budget_seconds %ss is more than the %.0fs left",
                         ds, name, model.budget_seconds, deadline - t0)
                break
            # A trial keeping the candidate's factors (or fewer) starts from its holdout fit where the model can
            # (ALS: models/als.py warm_start), so it costs a share of a cold fit.
            if start is not None and model.warm_start(start):
                log.info("evaluate ds=%s: search %s %s starts from the candidate's holdout fit", ds, name, alt)
            expected = fit_share(model) * expected_seconds(make_model(name, cfg).get_params(), alt,
                                                           trained.get(name, {}).get("fit_seconds"))
            if expected > deadline - t0:
                log.info("evaluate ds=%s: search skips %s %s: expected to fit in %.0fs, %.0fs left", ds, name, alt,
                         expected, deadline - t0)
                continue
            model = fit_model(model, f.train, items, lambda: read_sequences(cfg, ds, "train"), f.users)
            recs, _ = model.recommend(users, f.train, cfg.evaluation.eval_k, filter_items=inactive)
            m = {**ranking_metrics(recs, truth, cfg.evaluation.eval_k, n_catalog), **extra(recs, truth)}
            won = m[key] > summary[name][key]
            trials.append({"model": name, "params": alt, "ndcg": m[key], "seconds": round(time.perf_counter() - t0, 2),
                           "improved": bool(won)})
            log.info("evaluate ds=%s: search %s %s ndcg@%d=%.4f%s", ds, name, alt, cfg.evaluation.eval_k, m[key],
                     " (better)" if won else "")
            if won:
                summary[name] = m
                overrides[name] = alt
                model.save(layout(cfg).holdout_model(ds, name))
    return trials, overrides
