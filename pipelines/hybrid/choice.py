"""Which lists the hybrid serves: per task, only where it beat every single generator on its window."""
from __future__ import annotations

import logging

from pipelines.artifacts import read_hybrid_summary
from pipelines.config import Config

log = logging.getLogger(__name__)


def hybrid_wins(ndcg_by_model: dict[str, float], min_gain: float) -> bool:
    """The hybrid serves a task when its NDCG beats every single list's on its window by ``min_gain``."""
    best_single = max((v for k, v in ndcg_by_model.items() if k != "hybrid"), default=0.0)
    return ndcg_by_model.get("hybrid", 0.0) > best_single * (1 + min_gain)


def hybrid_choice(cfg: Config, ds: str) -> dict[str, bool]:
    """Per task, whether the hybrid beat every single generator on its holdout by hybrid_min_gain."""
    summary = read_hybrid_summary(cfg, ds)
    if summary is None:
        return {"all": False, "new": False}
    out = {"all": False, "new": False}
    for task, why in summary.get("skipped", {}).items():
        log.info("ds=%s: %s lists from the champion (the hybrid was not trained: %s)", ds, task, why)
    for task, by_model in summary["ndcg"].items():
        if task in summary.get("skipped", {}) or "hybrid" not in by_model:
            continue
        best_single = max((v for k, v in by_model.items() if k != "hybrid"), default=0.0)
        out[task] = hybrid_wins(by_model, cfg.hybrid.hybrid_min_gain)
        log.info("ds=%s: %s lists from %s (hybrid ndcg %.4f, best single %.4f)", ds, task,
                 "the hybrid" if out[task] else "the champion", by_model.get("hybrid", 0.0), best_single)
    return out
