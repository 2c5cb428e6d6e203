"""Train step: fit every candidate model on the data before the holdout window.

The fitted candidates are evaluated by the evaluate step; the select step refits the winner on
all data up to ``ds``. Models are saved without pickle (artifacts: ``Layout.holdout_model``)."""
from __future__ import annotations

import logging
import time

from models.registry import active_candidates, fit_model, items_for_fit, make_model
from pipelines.artifacts import layout, read_features, write_trained
from pipelines.config import Config
from pipelines.session_artifacts import read_sequences

log = logging.getLogger(__name__)


def run(cfg: Config, ds: str, run_id: str) -> dict:
    f = read_features(cfg, ds)
    items = items_for_fit(f.items, "pop_train")
    out = {}
    for name in active_candidates(cfg, f.train.shape[1]):
        t0 = time.perf_counter()
        model = fit_model(make_model(name, cfg), f.train, items, lambda: read_sequences(cfg, ds, "train"), f.users)
        path = model.save(layout(cfg).holdout_model(ds, name))
        out[name] = {"path": str(path), "fit_seconds": round(time.perf_counter() - t0, 3)}
        log.info("train ds=%s: %s fitted in %.2fs", ds, name, out[name]["fit_seconds"])
    write_trained(cfg, ds, out)
    return out
