"""Logs (issue 15): progress lines on long loops, no ANSI colour codes, no harmless ERROR lines from
MLflow when a new version of an existing model is registered."""
from __future__ import annotations

import logging
import warnings

import pytest

from pipelines.infra.logs import Progress, StripAnsi, install, laps, strip_ansi

LOG = logging.getLogger("tests.progress")


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOG.name]


def test_progress_logs_at_most_every_30_s_and_once_at_the_end(caplog):
    clock = Clock()
    with caplog.at_level(logging.INFO, logger=LOG.name):
        p = Progress(LOG, "rank task all: scoring candidates", 50_000, clock=clock)
        clock.t += 10
        p.advance(4_000)                   # 10 s: too soon
        assert lines(caplog) == []
        clock.t += 31
        p.advance(8_000)                   # 41 s: 12,000 done; 41 * 38,000 / 12,000 = 129.8 s left
        clock.t += 20
        p.advance(8_000)                   # 61 s: 20 s after the last line: quiet
        clock.t += 10
        p.advance(10_000)                  # 71 s: 30 s after: 30,000 done, 71 * 20,000 / 30,000 = 47.3 s left
        clock.t += 300
        p.advance(20_000)                  # 371 s: the end, logged once (seconds below 10 minutes)
        p.advance(0)
        clock.t += 60
        p.advance(0)
    assert lines(caplog) == [
        "rank task all: scoring candidates: 12,000/50,000 users (24%), 41 s elapsed, about 130 s left",
        "rank task all: scoring candidates: 30,000/50,000 users (60%), 71 s elapsed, about 47 s left",
        "rank task all: scoring candidates: 50,000/50,000 users (100%), 371 s elapsed, done",
    ]


def test_a_short_loop_logs_only_its_end(caplog):
    clock = Clock()
    with caplog.at_level(logging.INFO, logger=LOG.name):
        p = Progress(LOG, "rank task new: training windows up to day 20000", 3, unit="windows", clock=clock)
        for _ in range(3):
            clock.t += 2
            p.advance()
    assert lines(caplog) == ["rank task new: training windows up to day 20000: 3/3 windows (100%), 6 s elapsed, done"]


def test_laps_log_each_phase_since_the_previous_one(caplog, monkeypatch):
    clock = iter([100.0, 103.5, 110.0])
    monkeypatch.setattr("pipelines.infra.logs.time.perf_counter", lambda: next(clock))
    log = logging.getLogger("test.laps")
    with caplog.at_level(logging.INFO, logger="test.laps"):
        lap = laps(log, "features ds=x")
        lap("events loaded")
        lap("sessions")
    assert [r.getMessage() for r in caplog.records] == ["features ds=x: events loaded in 3.5s",
                                                        "features ds=x: sessions in 6.5s"]


def test_ansi_colour_codes_never_reach_a_log(caplog):
    assert strip_ansi("\x1b[33mHint: use a signature\x1b[0m") == "Hint: use a signature"
    record = logging.LogRecord("mlflow.pyfunc", logging.WARNING, __file__, 1, "%s: %s", ("\x1b[1;31mbold", "x\x1b[0m"),
                               None)
    assert StripAnsi().filter(record) and record.getMessage() == "bold: x"
    # A warning as MLflow's color_warning emits it comes out through logging, without the codes.
    # (pytest records warnings itself: route them to logging inside a catch_warnings of our own.)
    with warnings.catch_warnings(), caplog.at_level(logging.WARNING, logger="py.warnings"):
        warnings.simplefilter("always")
        logging.captureWarnings(False)
        install()
        try:
            warnings.warn("\x1b[33mAdd type hints to the `predict` method\x1b[0m", UserWarning, stacklevel=1)
        finally:
            logging.captureWarnings(False)
    messages = [r.getMessage() for r in caplog.records if r.name == "py.warnings"]
    assert messages and "Add type hints" in messages[-1] and not any("\x1b" in m for m in messages)


def test_a_second_version_of_a_registered_model_logs_no_error(cfg, caplog, capsys):
    pytest.importorskip("mlflow")
    import mlflow.pyfunc

    from pipelines.infra import tracking

    class Model(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input, params=None):
            return model_input

    name, versions = cfg.gate.registered_model, []
    try:
        with caplog.at_level(logging.INFO):
            tracking.setup(cfg)
            for night in range(2):
                with mlflow.start_run(run_name=f"night-{night}"):
                    info = mlflow.pyfunc.log_model(name="recommender", python_model=Model(), pip_requirements=[])
                    versions.append(tracking.register_version(mlflow, name, info))
    finally:
        logging.captureWarnings(False)  # tracking.setup routes warnings to logging: not for later tests
    assert versions == ["1", "2"]
    client = mlflow.MlflowClient()
    assert client.get_model_version(name, "2").run_id == info.run_id
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    err = capsys.readouterr().err
    assert "already exists" not in err and "\x1b[" not in err
