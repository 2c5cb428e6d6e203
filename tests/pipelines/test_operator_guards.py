"""What an operator can get wrong at the command line: every mistake is one clear line and a
non-zero exit code, a future ds is refused, and two runs on one data root never run at once."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from pipelines.infra.locks import RunLocked, root_lock, task_lock
from pipelines.run import FutureDs, check_ds, run_step
from tests.conftest import BASE_DS

PY = sys.executable


def recsys(home, *args, user: int | None = None, timeout=120) -> subprocess.CompletedProcess:
    env = {**os.environ, "RECSYS_HOME": str(home)}
    cmd = [PY, "-m", "pipelines.cli", *args]
    if user is not None:  # as an unprivileged user: root ignores file modes
        cmd = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", *cmd]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout,
                          cwd=Path(__file__).resolve().parents[2])


def one_line_error(res: subprocess.CompletedProcess) -> str:
    assert res.returncode != 0, res.stdout
    lines = [l for l in res.stderr.splitlines() if l.strip() and " INFO " not in l and " WARNING " not in l]
    assert len(lines) == 1, res.stderr
    assert "Traceback" not in res.stderr
    return lines[0]


@pytest.mark.parametrize("args, says", [
    (["cart-recs", "i000001", "-n", "-5"], "must be 1 or more, got -5"),
    (["cart-recs", "i000001", "-n", "ten"], "not a whole number: 'ten'"),
    (["export", "email", "--ds", "2026-13-45", "--out", "x.csv"], "not a date YYYY-MM-DD: '2026-13-45'"),
    (["run", "--ds", "June 20"], "not a date YYYY-MM-DD"),
    (["run", "--ds", BASE_DS, "--shard", "1"], "--shard goes with --step score"),
    (["demo-data", "--users", "0"], "must be 1 or more, got 0"),
    (["export", "email", "--ds", BASE_DS, "--out", "{tmp}"], "is a directory; give the path of the CSV file"),
    (["import-events", "{tmp}/missing.csv", "--user-col", "u", "--item-col", "i", "--time-col", "t",
      "--event-type", "view"], "missing.csv"),
])
def test_mistakes_get_one_line_and_a_nonzero_exit(tmp_path, args, says):
    res = recsys(tmp_path / "var", *[a.replace("{tmp}", str(tmp_path)) for a in args])
    line = one_line_error(res)
    assert line.startswith("recsys") and ": error: " in line
    assert says in line


def test_a_future_ds_is_refused_unless_allowed(tmp_path):
    today = datetime.now(timezone.utc).date()
    tomorrow = (today + timedelta(days=1)).isoformat()
    assert check_ds(today.isoformat()) == today.isoformat()
    assert check_ds(tomorrow, allow_future=True) == tomorrow
    with pytest.raises(FutureDs, match=f"after today \\({today}, UTC\\).*--allow-future"):
        check_ds(tomorrow)
    with pytest.raises(FutureDs):  # every way in checks it, the Airflow glue and single steps too
        run_step("validate", None, tomorrow, "r")
    line = one_line_error(recsys(tmp_path / "var", "run", "--ds", "2999-01-01"))
    assert "ds 2999-01-01 is after today" in line and "--allow-future" in line
    assert not (tmp_path / "var" / "warehouse").exists()  # refused before anything was written


def test_root_and_task_locks_exclude_what_they_must(tmp_path):
    home = tmp_path / "var"
    with root_lock(home, command="recsys run --ds X"):
        with pytest.raises(RunLocked, match=r"pid %d .*`recsys run --ds X`" % os.getpid()):
            with root_lock(home):
                pass
        with pytest.raises(RunLocked):  # Airflow's tasks wait for no CLI run
            with task_lock(home, BASE_DS, "score", 0):
                pass
    # The mapped score tasks of one night hold the root together; the same task twice is refused.
    with task_lock(home, BASE_DS, "score", 0), task_lock(home, BASE_DS, "score", 1):
        with pytest.raises(RunLocked, match=f"task score of ds={BASE_DS} shard 1"):
            with task_lock(home, BASE_DS, "score", 1):
                pass
        with pytest.raises(RunLocked, match="the data root"):
            with root_lock(home):
                pass
    with root_lock(home):  # all released
        pass
    assert not list((home / "locks").glob("*.holder-*"))


def test_the_score_shards_of_the_command_line_run_at_once_as_airflow_tasks(tmp_path):
    """`recsys run --step score --shard K` holds what a mapped Airflow task holds: another shard of
    the night runs beside it, the same shard twice is refused, and a whole run excludes them."""
    home = tmp_path / "var"
    shard = ["run", "--ds", BASE_DS, "--step", "score", "--run-id", "s"]
    with task_lock(home, BASE_DS, "score", 0):
        line = one_line_error(recsys(home, *shard, "--shard", "0"))
        assert f"task score of ds={BASE_DS} shard 0" in line and "is busy" in line
        other = recsys(home, *shard, "--shard", "1")  # not refused by the lock: it fails later, on no data
        assert other.returncode != 0 and "busy" not in other.stderr
    with root_lock(home, command="recsys run --ds X"):
        line = one_line_error(recsys(home, *shard, "--shard", "1"))
        assert "the data root" in line and "is busy" in line


def test_two_real_runs_on_one_root_the_second_is_refused_naming_the_first(home):
    first = subprocess.Popen([PY, "-m", "pipelines.cli", "run", "--ds", BASE_DS, "--step", "validate",
                              "--run-id", "first"], env={**os.environ, "RECSYS_HOME": str(home.home)},
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    notes = home.home / "locks"
    deadline = time.time() + 60
    while not list(notes.glob("run.lock.holder-*")) and time.time() < deadline and first.poll() is None:
        time.sleep(0.05)
    assert list(notes.glob("run.lock.holder-*")), "the first run never took the lock"
    second = recsys(home.home, "run", "--ds", BASE_DS, "--step", "features", "--run-id", "second")
    line = one_line_error(second)
    assert second.returncode == 2
    assert f"pid {first.pid} " in line and "run --ds 2024-06-20 --step validate" in line
    out, err = first.communicate(timeout=120)
    assert first.returncode == 0, err
    # The refused run wrote nothing: no validation row of its own, and the first run's rows are there.
    import duckdb

    from pipelines.artifacts import layout
    con = duckdb.connect(str(layout(home).duckdb_path), read_only=True)
    runs = {r[0] for r in con.execute("SELECT DISTINCT run_id FROM validation_runs").fetchall()}
    con.close()
    assert "first" in runs and "second" not in runs


@pytest.mark.parametrize("zone, args", [
    ("landing", ["import-events", "{csv}", "--user-col", "u", "--item-col", "i", "--time-col", "t",
                 "--event-type", "view"]),
    ("warehouse", ["run", "--ds", BASE_DS, "--step", "publish", "--run-id", "ro"]),
])
def test_a_read_only_zone_is_one_line_and_changes_nothing(baseline, zone, args):
    """A zone nobody may write: the command names the path and what to check; nothing changed."""
    root = Path(tempfile.mkdtemp(prefix="recsys-ro-", dir="/tmp"))
    try:
        os.chmod(root, 0o755)
        shutil.copytree(baseline.home, root / "var")
        csv = root / "events.csv"
        csv.write_text("u,i,t\nu1,i000001,2024-06-20T10:00:00Z\n", encoding="utf-8")
        user = None
        if os.geteuid() == 0:
            user = 65534
            for p in [root, *root.rglob("*")]:
                os.chown(p, user, user, follow_symlinks=False)
        zone_dir = root / "var" / zone
        before = {p: p.read_bytes() for p in zone_dir.rglob("*") if p.is_file()}
        for d in [zone_dir, *zone_dir.rglob("*")]:
            if d.is_dir():
                d.chmod(0o555)
        res = recsys(root / "var", *[a.replace("{csv}", str(csv)) for a in args], user=user)
        line = one_line_error(res)
        assert "permission denied" in line and f"/{zone}" in line
        assert {p: p.read_bytes() for p in zone_dir.rglob("*") if p.is_file()} == before
    finally:
        for d in [root, *root.rglob("*")]:
            if d.is_dir():
                d.chmod(0o755)
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.parametrize("args", [["withdraw", "b1", "--reason", "x"], ["restore", "b1"], ["rebuild-warehouse"],
                                  ["forget", "u1"], ["run", "--ds", BASE_DS]])
def test_commands_that_rewrite_the_root_wait_for_no_running_night(tmp_path, capsys, args):
    from pipelines.cli import main

    home = tmp_path / "var"
    with root_lock(home, command="recsys run --ds 2024-06-20"):
        assert main(["--home", str(home), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is busy: held by pid" in err[0] and "`recsys run --ds 2024-06-20`" in err[0]
