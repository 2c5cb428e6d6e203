"""Features step: validated events of the window up to ``ds`` -> interaction matrices, the item and
user tables, the holdout truth and the daily table (features/interactions.py; artifacts.Features)."""
from __future__ import annotations

from features.interactions import build_features
from pipelines.config import Config


def run(cfg: Config, ds: str, run_id: str) -> dict:
    return build_features(cfg, ds, run_id)
