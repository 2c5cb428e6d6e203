"""The champion/challenger gate: does tonight's best candidate take the ``champion`` alias?

The challenger is the candidate with the highest NDCG@eval_k on tonight's temporal holdout
(evaluate step). ``gate`` promotes it only if it beats the model type holding the ``champion``
alias and the baselines by ``gate_margin`` without losing more than ``gate_coverage_tolerance`` of
coverage, all measured on the same holdout.
"""
from __future__ import annotations

import logging

from pipelines.config import Config

log = logging.getLogger(__name__)


BASELINES = ("popularity", "buy_again")


def gate(metrics: dict, challenger: str, current: str | None, cfg: Config, *, ds: str | None = None,
         champion_ds: str | None = None) -> tuple[bool, str]:
    """Champion/challenger decision on tonight's holdout. Returns (promote, reason).

    ``metrics``: candidate -> metric dict (evaluate step); ``current``: the model name of the version
    holding the ``champion`` alias, or None. ``ds`` / ``champion_ds``: tonight's ds and the ds tag of
    the champion's version, when known; they only word the same-model case (newer data, a rerun of
    the same ds, or older data).
    """
    key, cov, m = f"ndcg_at_{cfg.evaluation.eval_k}", f"coverage_at_{cfg.evaluation.eval_k}", cfg.gate.gate_margin
    ch = metrics[challenger]
    if current is None:
        if not ch.get("users", 1):
            return True, f"first champion: {challenger} (no evaluation tonight: no user with history bought in the " \
                         "holdout window; the first candidate in the config serves)"
        return True, f"first champion: {challenger} (NDCG {ch[key]:.4f})"
    if current == challenger:
        return True, f"{challenger} holds the alias already; {_refit_wording(ds, champion_ds)}"
    if current not in metrics:
        return True, f"the champion's model {current!r} is no longer a candidate"
    if not ch.get("users", 1):
        # No returning user bought in the holdout window (a quiet period, a ds after the last
        # event): every candidate scores 0 and nothing is learnt about which is better.
        return False, ("no evaluation tonight: no user with history bought in the holdout window; the champion "
                       f"{current} keeps the alias")
    for b in BASELINES:
        if b in metrics and b != challenger and ch[key] < metrics[b][key] * (1 + m):
            return False, (f"{challenger} NDCG {ch[key]:.4f} does not beat baseline {b} "
                           f"{metrics[b][key]:.4f} by {m:.0%}")
    cur = metrics[current]
    if ch[key] < cur[key] * (1 + m):
        return False, f"{challenger} NDCG {ch[key]:.4f} does not beat champion {current} {cur[key]:.4f} by {m:.0%}"
    if ch[cov] < cur[cov] * (1 - cfg.gate.gate_coverage_tolerance):
        return False, (f"{challenger} coverage {ch[cov]:.3f} is below champion {current} {cur[cov]:.3f} "
                       f"by more than {cfg.gate.gate_coverage_tolerance:.0%}")
    return True, f"{challenger} NDCG {ch[key]:.4f} beats champion {current} {cur[key]:.4f} by at least {m:.0%}"


def _refit_wording(ds: str | None, champion_ds: str | None) -> str:
    """"Newer data" only when tonight's ds really is after the champion's (ISO dates compare as text)."""
    if ds is None or champion_ds is None:
        return "it moves to the version refitted on newer data"  # callers without the ds tags (unit use)
    if ds > champion_ds:
        return f"it moves to the version refitted on newer data (ds {ds}; the alias was on ds {champion_ds})"
    if ds == champion_ds:
        return f"it moves to the version refitted again on the same data (a rerun of ds {ds})"
    return f"the version refitted on older data (ds {ds}, before the alias's ds {champion_ds}) is not newer"


def alias_ds(cfg: Config, mlflow) -> dict[str, tuple[str, str | None]]:
    """alias -> (version, its ``ds`` tag or None) for ``champion`` and ``challenger``, where set."""
    client = mlflow.MlflowClient()
    out = {}
    for alias in ("champion", "challenger"):
        try:
            mv = client.get_model_version_by_alias(cfg.gate.registered_model, alias)
        except mlflow.exceptions.MlflowException:
            continue
        out[alias] = (str(mv.version), mv.tags.get("ds"))
    return out


def newest_alias_ds(held: dict[str, tuple[str, str | None]]) -> str | None:
    """The newest ds any alias is on (None when no alias holder carries a ds tag)."""
    tagged = [d for _, d in held.values() if d]
    return max(tagged) if tagged else None


def current_champion(cfg: Config, mlflow) -> tuple[str | None, str | None]:
    """(model name, version) of the registered version holding the alias, if any."""
    try:
        mv = mlflow.MlflowClient().get_model_version_by_alias(cfg.gate.registered_model, "champion")
    except mlflow.exceptions.MlflowException:
        return None, None
    return mv.tags.get("model"), str(mv.version)
