"""Shared fixtures. Environment for Airflow is set before anything imports it: AIRFLOW_HOME is the
repository (committed airflow.cfg) and RECSYS_HOME a fresh directory, so tests never touch ./var."""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parent.parent
_SESSION_HOME = Path(tempfile.mkdtemp(prefix="recsys-test-"))
os.environ["AIRFLOW_HOME"] = str(REPO)
os.environ["RECSYS_HOME"] = str(_SESSION_HOME / "session-var")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
for key in [k for k in os.environ if k.startswith("RECSYS_") and k != "RECSYS_HOME"]:
    if key not in ("RECSYS_ONLINE_RETAIL",):
        del os.environ[key]

ONLINE_RETAIL = Path(os.environ.get("RECSYS_ONLINE_RETAIL", REPO.parent / "shared" / "data" / "online_retail.parquet"))
BIN = Path(sys.executable).parent


@pytest.fixture
def cfg(tmp_path):
    from pipelines.config import load_config

    return load_config(environ={}, home=tmp_path / "var")


def require_online_retail() -> Path:
    """The Online Retail file; CI fails without it, a developer's run skips with the reason."""
    if not ONLINE_RETAIL.exists():
        if os.environ.get("CI"):
            pytest.fail(f"CI must have the Online Retail file at {ONLINE_RETAIL}")
        pytest.skip(f"Online Retail file not found at {ONLINE_RETAIL} (set RECSYS_ONLINE_RETAIL)")
    return ONLINE_RETAIL


@pytest.fixture
def online_retail_path() -> Path:
    return require_online_retail()


def events_frame(rows: list[tuple]) -> pd.DataFrame:
    """rows: (user_id, item_id, event_type, 'YYYY-MM-DD HH:MM', quantity, price, order_id)."""
    df = pd.DataFrame(rows, columns=["user_id", "item_id", "event_type", "event_time", "quantity", "price", "order_id"])
    df["event_time"] = pd.to_datetime(df["event_time"]).dt.tz_localize("UTC")
    df["session_id"] = None
    return df


BASE_DS = "2024-06-20"


@pytest.fixture(scope="session")
def baseline(tmp_path_factory):
    """A data root with one good night published (BASE_DS: 150 demo users, 60 items, 20 days); copy it
    with the ``home`` fixture before changing anything."""
    from pipelines.config import load_config
    from pipelines.dev.demo_data import import_demo
    from pipelines.run import run_all

    cfg = load_config(environ={}, home=tmp_path_factory.mktemp("baseline") / "var")
    import_demo(cfg, seed=2, users=150, items=60, days=20, end_date=BASE_DS)
    run_all(cfg, BASE_DS, "baseline")
    return cfg


@pytest.fixture
def home(baseline, tmp_path):
    """A private copy of the ``baseline`` data root (its Config)."""
    target = tmp_path / "var"
    shutil.copytree(baseline.home, target)
    return baseline.replace(home=target)


@pytest.fixture(scope="session")
def postgres_url():
    """A real PostgreSQL server (Debian's package), started for the session."""
    from tests.pg_server import PostgresServer

    server = PostgresServer()
    try:
        yield server.url
    finally:
        server.stop()


# Modules that take minutes go first, so that with two workers (make test) the short ones fill the
# other worker instead of waiting behind them at the end.
_LONG_FIRST = ("test_online_retail.py", "test_dag_run.py", "test_ab.py", "test_surfaces.py", "test_cold_start.py")


def pytest_collection_modifyitems(config, items):
    def rank(item) -> int:
        name = Path(str(item.fspath)).name
        return _LONG_FIRST.index(name) if name in _LONG_FIRST else len(_LONG_FIRST)

    items.sort(key=rank)  # stable: the order inside each module is kept
