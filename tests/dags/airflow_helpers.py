"""Start real Airflow processes for the DAG tests, each with its own data root."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

from pipelines.cli import airflow_env
from pipelines.config import load_config
from pipelines.dev.demo_data import import_demo

BIN = Path(sys.executable).parent
DS = "2024-06-30"


def demo_home(home: Path):
    cfg = load_config(environ={}, home=home)
    import_demo(cfg, seed=11, users=250, items=80, days=30, end_date=DS)
    env = airflow_env(cfg)
    env["RECSYS_TASK_RETRIES"] = "0"  # a failure should fail the test now, not after two 5-minute retries
    env.pop("AIRFLOW_CONFIG", None)
    subprocess.run([str(BIN / "airflow"), "db", "migrate"], env=env, check=True, capture_output=True, timeout=300)
    return cfg, env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop(proc: subprocess.Popen) -> None:
    """Stop a process started with start_new_session=True and everything it spawned."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=30)
            return
        except subprocess.TimeoutExpired:
            continue
