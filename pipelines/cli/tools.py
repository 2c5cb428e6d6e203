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


def dag_test_run_id(ds: str, started) -> str:
    """Run id of a `recsys airflow-test` run: the ds it builds, then when it started (UTC)."""
    return f"manual__ds_{ds}__{started.isoformat(timespec='seconds')}"


def dag_test(ds: str, dag_id: str = "recsys_nightly") -> None:
    """One run of ``dag_id`` for ``ds`` with ``dag.test()`` (no scheduler), shown in the UI as what it is:
    run id ``manual__ds_<ds>__<start>``, logical date and data interval the ds's UTC day (<ds> 00:00 ->
    +1 day), start date the real start (so its duration is the run's), note ``ds=<ds>``, conf
    ``{"ds": <ds>}``. ``dag.test()`` itself would name the run after the wall clock, give it the manual
    interval the timetable infers before <ds> 00:00, and date its start at 00:00 of <ds>. Prints
    ``RECSYS_DAG_TEST run_id=... state=...``. Run in a process with ``airflow_env``."""
    from datetime import date, datetime, timedelta, timezone

    import airflow.models.dagrun as dagrun_module
    from airflow.dag_processing.dagbag import DagBag

    day = datetime.combine(date.fromisoformat(ds), datetime.min.time(), tzinfo=timezone.utc)
    started = datetime.now(timezone.utc).replace(microsecond=0)
    run_id = dag_test_run_id(ds, started)
    created = []
    original = dagrun_module.get_or_create_dagrun

    def get_or_create_dagrun(**kwargs):
        kwargs.update(run_id=run_id, data_interval=(day, day + timedelta(days=1)), start_date=started)
        dr = original(**kwargs)
        dr.note = f"ds={ds} (recsys airflow-test)"
        kwargs["session"].commit()
        created.append(dr.run_id)
        return dr

    dag = DagBag(dag_folder=str(REPO / "dags")).dags[dag_id]
    dagrun_module.get_or_create_dagrun = get_or_create_dagrun
    try:
        dr = dag.test(logical_date=day, run_conf={"ds": ds})
    finally:
        dagrun_module.get_or_create_dagrun = original
    if created != [run_id]:  # dag.test() no longer creates its run through get_or_create_dagrun
        raise RuntimeError(f"dag.test() did not create the run {run_id}; created {created}")
    print(f"RECSYS_DAG_TEST run_id={dr.run_id} state={dr.state}", flush=True)


def cmd_airflow_test(args, cfg):
    """One recsys_nightly run for a ds through ``dag.test()`` (see ``dag_test``), with its log under the
    data root, short progress lines on the terminal, and an exit status that reflects the run's state."""
    env = airflow_env(cfg)
    env["RECSYS_TASK_RETRIES"] = "0"
    log_path = layout(cfg).airflow_test_log(args.ds)
    print(f"airflow dag.test recsys_nightly for ds={args.ds} (full log: {log_path})", flush=True)
    state = run_id = None
    with open(log_path, "w", encoding="utf-8") as logf:
        proc = subprocess.Popen([sys.executable, "-c", f"from pipelines.cli.tools import dag_test; dag_test({args.ds!r})"],
                                env=env, text=True, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        for line in proc.stdout:
            logf.write(line)
            if m := re.search(r"\[DAG TEST\] running task <TaskInstance: recsys_nightly\.(\w+)", line):
                print(f"  task {m.group(1)} ...", flush=True)
            if m := re.search(r"RECSYS_DAG_TEST run_id=(\S+) state=(\w+)", line):
                run_id, state = m.group(1), m.group(2)
        rc = proc.wait()
    print(f"DAG run {run_id} state: {state} (exit code {rc})")
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
