"""Run locks: one run per data root at a time, and one Airflow task per (ds, step, shard).

``recsys run`` (and the other commands that rewrite the data root: ``forget``, ``rebuild-warehouse``)
take the data root's lock exclusively. Airflow tasks take it shared, so that the mapped score tasks
of one night run side by side, plus an exclusive lock on their own (ds, step, shard): a second
``recsys run`` while Airflow works (or the other way round), or the same task of the same ds twice,
is refused at once with who holds the lock.

``hold`` is also the warehouse's write lock (pipelines/infra/journal.py), which waits for the
holder instead of refusing at once.

The locks are ``fcntl.flock`` locks on files under ``<data root>/locks``: the kernel releases them
when the holding process exits, even on SIGKILL, so a crash never leaves a stale lock. Each holder
writes a small JSON note (pid, host, command, since) beside the lock; the error message reads it.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import sys
import time
from datetime import datetime, timezone
from pathlib import Path


class RunLocked(RuntimeError):
    """Another process holds the lock; the message names it and says what to do."""


def _holders(lock: Path, clean: bool = False) -> list[dict]:
    """The notes of the live holders; ``clean`` deletes the notes of dead ones (a SIGKILLed run
    cannot remove its own note, but the kernel has already released its lock)."""
    notes = []
    for note in sorted(lock.parent.glob(lock.name + ".holder-*")):
        try:
            info = json.loads(note.read_text(encoding="utf-8"))
            os.kill(int(info["pid"]), 0)
        except ProcessLookupError:
            if clean:
                note.unlink(missing_ok=True)
            continue
        except (OSError, ValueError, KeyError):
            continue
        notes.append(info)
    return notes


def _command_line() -> str:
    name = Path(sys.argv[0]).name
    if name == "__main__.py":  # python -m pipelines.cli
        name = "recsys"
    return " ".join([name, *sys.argv[1:]])[:200]


def _describe(lock: Path, what: str) -> str:
    return (f"{what} is busy: held by {holders_text(lock)}. Wait for it to finish, or stop it (the lock goes with the "
            f"process; lock file {lock})")


def holders_text(lock: Path) -> str:
    """Who holds ``lock``, from the live holders' notes (for an error message)."""
    held = _holders(lock)
    if not held:
        return "another process (it left no note)"
    return "; ".join(f"pid {h['pid']} on {h['host']}, `{h['command']}` since {h['since']}" for h in held)


@contextlib.contextmanager
def hold(lock: Path, what: str, shared: bool = False, command: str | None = None, wait_s: float = 0.0):
    """Hold ``lock`` (exclusive, or shared) for the block; raise ``RunLocked`` if it is still taken
    after ``wait_s`` seconds (0: at once)."""
    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise RunLocked(_describe(lock, what)) from None
                time.sleep(0.2)
        _holders(lock, clean=True)
        note = lock.with_name(f"{lock.name}.holder-{os.getpid()}")
        note.write_text(json.dumps({
            "pid": os.getpid(), "host": socket.gethostname(),
            "command": command or _command_line(),
            "since": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")}), encoding="utf-8")
        try:
            yield
        finally:
            note.unlink(missing_ok=True)
    finally:
        os.close(fd)  # closing the descriptor releases the flock


def root_lock(home: Path, shared: bool = False, command: str | None = None):
    """The data root's run lock (exclusive for a whole run, shared for Airflow tasks)."""
    return hold(Path(home) / "locks" / "run.lock", f"the data root {home}", shared=shared, command=command)


@contextlib.contextmanager
def task_lock(home: Path, ds: str, step: str, shard: int | None = None, command: str | None = None):
    """What an Airflow task holds: the root lock shared, and its own (ds, step, shard) exclusively."""
    name = f"task-{ds}-{step}" + ("" if shard is None else f"-{shard}")
    with root_lock(home, shared=True, command=command):
        with hold(Path(home) / "locks" / f"{name}.lock", f"task {step} of ds={ds}"
                  + ("" if shard is None else f" shard {shard}"), command=command):
            yield
