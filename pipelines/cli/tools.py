"""``recsys airflow``, ``recsys airflow-test`` and ``recsys mlflow-ui``: the tools, run with this
project's configuration and everything they write under the data root."""
from __future__ import annotations

import base64
import json
import os
import re
import secrets
import subprocess
import sys
from pathlib import Path

from pipelines.artifacts import layout, mlflow_uri

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def airflow_env(cfg) -> dict[str, str]:
    """Environment for any airflow command: AIRFLOW_HOME is the repo (committed airflow.cfg),
    everything Airflow writes goes under $RECSYS_HOME/airflow."""
    env = dict(os.environ)
    env["AIRFLOW_HOME"] = str(REPO)
    env["RECSYS_HOME"] = str(cfg.home)
    env.setdefault("AIRFLOW_CONFIG", str(REPO / "airflow.cfg"))
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    layout(cfg).airflow_logs.mkdir(parents=True, exist_ok=True)
    # Every Airflow component (API server, scheduler, dag processor, task runners) must sign and check
    # tokens with the same keys; unset, each process invents its own and tasks die with
    # "Signature verification failed". Kept under the data root, never in the repository.
    for key, value in airflow_secrets(cfg).items():
        env.setdefault(key, value)
    return env


def airflow_secrets(cfg) -> dict[str, str]:
    """The keys every Airflow component shares, generated once (mode 600)."""
    path = layout(cfg).airflow_secrets
    if not path.exists():
        values = {"AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
                  "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(32),
                  "AIRFLOW__CORE__FERNET_KEY": base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()}
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(values))
        tmp.chmod(0o600)
        os.replace(tmp, path)
    return json.loads(path.read_text())


def cmd_airflow(args, cfg):
    env = airflow_env(cfg)
    exe = str(BIN / "airflow")
    os.execvpe(exe, [exe, *args.airflow_args], env)


def cmd_airflow_test(args, cfg):
    """`airflow dags test` for one ds, with its log under the data root, short progress lines on the
    terminal, and an exit status that reflects the DAG run's final state."""
    env = airflow_env(cfg)
    env["RECSYS_TASK_RETRIES"] = "0"
    exe = str(BIN / "airflow")
    log_path = layout(cfg).airflow_test_log(args.ds)
    print(f"airflow dags test recsys_nightly {args.ds} (full log: {log_path})", flush=True)
    state = None
    with open(log_path, "w", encoding="utf-8") as logf:
        proc = subprocess.Popen([exe, "dags", "test", "recsys_nightly", args.ds], env=env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        for line in proc.stdout:
            logf.write(line)
            if m := re.search(r"\[DAG TEST\] running task <TaskInstance: recsys_nightly\.(\w+)", line):
                print(f"  task {m.group(1)} ...", flush=True)
            if m := re.search(r"DagRun Finished: .*?state=(\w+)", line):
                state = m.group(1)
        rc = proc.wait()
    print(f"DAG run state: {state} (airflow exit code {rc})")
    if rc != 0 or state != "success":
        errors = [l.strip() for l in log_path.read_text(encoding="utf-8").splitlines()
                  if re.search(r"\b\w*(Error|Exception)\b: ", l)]
        for line in dict.fromkeys(errors[-5:]):
            print(f"  {line[:400]}", file=sys.stderr)
        raise RuntimeError(f"recsys_nightly for ds={args.ds} did not succeed (state {state}); see {log_path}")


def cmd_mlflow_ui(args, cfg):
    layout(cfg).mlflow_dir.mkdir(parents=True, exist_ok=True)
    exe = str(BIN / "mlflow")
    os.execvp(exe, [exe, "ui", "--backend-store-uri", mlflow_uri(cfg), "--default-artifact-root",
                    layout(cfg).mlflow_artifacts.as_uri(), "--host", "127.0.0.1", "--port", str(args.port)])
