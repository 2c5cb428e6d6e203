"""The threads setting (issue 14, problem 11): every step's thread pools are sized to it (threadpoolctl
around run_step), and implicit's own loops get it as num_threads."""
from __future__ import annotations

import logging
import os

import numpy as np
import scipy.sparse as sp
from threadpoolctl import threadpool_info

from models import load_model, make_model
from pipelines.config import load_config
from pipelines.run import run_step
from tests.pipelines.test_empty_windows import LAST, base_rows, edge_config


class PoolsDuringStep(logging.Handler):
    """Records the thread pools (threadpoolctl) each time the train step logs a fitted model."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.seen: list[list[dict]] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.name == "pipelines.steps.train":
            self.seen.append(threadpool_info())


def test_the_threads_setting_reaches_every_pool_inside_a_step(tmp_path, caplog):
    cfg = edge_config(tmp_path, base_rows(6, 8)).replace(threads=1)
    for name in ("validate", "features"):
        run_step(name, cfg, LAST, "threads")
    before = {p["filepath"]: p["num_threads"] for p in threadpool_info()}
    handler = PoolsDuringStep()
    logger = logging.getLogger("pipelines.steps.train")
    logger.addHandler(handler)
    try:
        with caplog.at_level(logging.INFO, logger="pipelines.steps.train"):
            out = run_step("train", cfg, LAST, "threads")
    finally:
        logger.removeHandler(handler)
    assert "als" in out and handler.seen
    for pools in handler.seen:
        # implicit and scikit-learn load OpenMP; numpy its BLAS: all held to one thread in the step.
        assert {p["internal_api"] for p in pools} >= {"openmp"}
        assert all(p["num_threads"] == 1 for p in pools), pools
    # The limits end with the step.
    after = {p["filepath"]: p["num_threads"] for p in threadpool_info()}
    assert {k: v for k, v in after.items() if k in before} == before


def test_implicit_gets_the_threads_setting(tmp_path):
    ui = sp.random(30, 20, density=0.3, format="csr", random_state=0, dtype=np.float32)
    cfg = load_config(environ={"RECSYS_THREADS": "3"}, home=tmp_path)
    assert cfg.scale.threads == 3
    for name in ("als", "bpr"):
        model = make_model(name, cfg.replace(**{f"{name}_iterations": 2}))
        assert model.num_threads == 3
        model.fit(ui)
        assert model.fit_threads_ == 3  # what implicit's model was built with
        loaded = load_model(model.save(tmp_path / name), cfg.replace(threads=2))
        assert loaded.num_threads == 2
    # Unset (0): the CPUs this process may use.
    default = load_config(environ={}, home=tmp_path)
    assert default.scale.threads == 0
    assert make_model("als", default).num_threads == len(os.sched_getaffinity(0))


def test_the_ranker_fits_on_one_openmp_thread_per_half_million_pairs(tmp_path):
    """Small ranker fits run on one thread (a sleeping waiter's wake-up at each of the gradient
    boosting's barriers costs more than the work it splits); one thread per 500,000 pairs above."""
    from pipelines.hybrid.ranker import Ranker, fit_threads

    assert [fit_threads(n, 2) for n in (0, 499_999, 500_000, 999_999, 1_000_000, 9_000_000)] == [1, 1, 1, 1, 2, 2]
    assert fit_threads(3_000_000, 8) == 6
    cfg = load_config(environ={"RECSYS_THREADS": "2"}, home=tmp_path)
    ranker = Ranker(cfg)
    seen: list[int] = []
    fit = ranker.model.fit

    def recording_fit(x, y):
        seen.extend(p["num_threads"] for p in threadpool_info() if p["internal_api"] == "openmp")
        return fit(x, y)

    ranker.model.fit = recording_fit
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2_000, 3))
    before = [p["num_threads"] for p in threadpool_info() if p["internal_api"] == "openmp"]
    ranker.fit(x, x[:, 0] > 0.5)
    assert ranker.fitted and seen and set(seen) == {1}
    assert [p["num_threads"] for p in threadpool_info() if p["internal_api"] == "openmp"] == before
