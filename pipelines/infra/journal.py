"""Crash-safe replacement of several files at once: the write lock, staged files, one journal.

A writer holds an inter-process lock (``flock`` on ``<db>.lock``) for the whole transaction. Each
file it changes is written to a staged name in the final file's directory
(``.<name>.staged-<txid>``), recorded first in ``<db>.pending``. The commit point is ONE file,
``<db>.journal``, written to a temporary name, fsynced and renamed into place: it lists every
operation (delete a file, move a staged file onto its final name). Then the operations run and the
journal is deleted.

Recovery (``recover``, run under the lock before every transaction and by an idle reader): a
journal means committed, so its operations run again (a staged file already moved is skipped);
no journal means not committed, so every staged file is deleted. Both stores a transaction covers
(the DuckDB file and the Parquet copies) therefore move together at a crash at any instant.
"""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import uuid
from contextlib import ExitStack, contextmanager
from pathlib import Path

from pipelines.infra import locks
from pipelines.infra.faults import fault_point

STAGED = ".staged-"
LOCK_TIMEOUT_S = 3600.0


class WarehouseBusy(RuntimeError):
    """Another writer held the warehouse lock for longer than the timeout."""


def lock_path(base: Path) -> Path:
    return base.with_name(base.name + ".lock")


def journal_path(base: Path) -> Path:
    return base.with_name(base.name + ".journal")


def pending_path(base: Path) -> Path:
    return base.with_name(base.name + ".pending")


def is_staged(path: Path) -> bool:
    return STAGED in path.name


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dirs(paths) -> None:
    for d in {p.parent for p in paths}:
        if d.exists():
            _fsync(d)


@contextmanager
def write_lock(base: Path, what: str, timeout_s: float = LOCK_TIMEOUT_S):
    """The inter-process write lock of the warehouse at ``base``: waits up to ``timeout_s`` for the
    holder, then raises WarehouseBusy naming it (pid, host, what it does, since when). ``what`` is a
    writer's name and ds, never a user id (it is written in the holder's note)."""
    path = lock_path(base)
    held = ExitStack()
    try:  # only the acquisition: a RunLocked from inside the block is not about this lock
        held.enter_context(locks.hold(path, f"the warehouse {base}", command=what, wait_s=timeout_s))
    except locks.RunLocked:
        raise WarehouseBusy(f"the warehouse {base} is being written by another process "
                            f"({locks.holders_text(path)}); waited {timeout_s:.0f} s for it to finish") from None
    with held:
        yield


def try_lock(base: Path) -> int | None:
    """The lock without waiting: an fd to close when done, or None when it is held (or cannot be
    taken, e.g. a read-only data root)."""
    try:
        fd = os.open(lock_path(base), os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return fd
    except OSError:
        os.close(fd)
        return None


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _apply(ops: list[list[str]], faults: str | None) -> None:
    moved = 0
    for op in ops:
        if op[0] == "delete":
            _remove(Path(op[1]))
        elif Path(op[1]).exists():  # ["replace", staged, final]; already moved on a second pass
            os.replace(op[1], op[2])
            moved += 1
            if faults and moved == 1:
                fault_point(f"{faults}.mid_replace")
    _fsync_dirs([Path(op[-1]) for op in ops])


def recover(base: Path, roots: tuple[Path, ...] = ()) -> dict:
    """Finish or discard what a killed transaction left (call it holding the lock). Returns
    {"rolled_forward": operations redone, "discarded": staged files deleted}."""
    out = {"rolled_forward": 0, "discarded": 0}
    journal = journal_path(base)
    if journal.exists():
        ops = json.loads(journal.read_text())["ops"]
        _apply(ops, None)
        out["rolled_forward"] = len(ops)
        journal.unlink()
        _fsync(journal.parent)
    pending = pending_path(base)
    if pending.exists():
        for line in pending.read_text().splitlines():
            p = Path(line.strip())
            if line.strip() and (p.exists() or p.is_symlink()):
                _remove(p)
                out["discarded"] += 1
        pending.unlink()
    journal.with_name(journal.name + ".tmp").unlink(missing_ok=True)
    # Leftovers of releases without a pending list (and DuckDB temp folders of staged copies).
    for root in (base.parent, *roots):
        if root.exists():
            for p in sorted(root.rglob(f"*{STAGED}*"), reverse=True):
                if p.exists():
                    _remove(p)
                    out["discarded"] += 1
    return out


def needs_recovery(base: Path) -> bool:
    return journal_path(base).exists() or pending_path(base).exists()


class Journal:
    """The files one transaction replaces or deletes; ``commit`` is all-or-nothing across a crash."""

    def __init__(self, base: Path, name: str):
        self.base, self.name, self.txid = base, name, uuid.uuid4().hex[:10]
        self.pairs: list[tuple[Path, Path]] = []
        self.deletes: list[Path] = []
        self.committed = False
        self.scratch: list[Path] = []

    @property
    def finals(self) -> set[Path]:
        return {f for _, f in self.pairs}

    def stage(self, final: Path, tag: str = "") -> Path:
        """A staged path beside ``final`` to write the new content to (moved onto ``final`` at commit)."""
        final.parent.mkdir(parents=True, exist_ok=True)
        staged = final.with_name(f".{final.name}{STAGED}{self.txid}{tag}")
        self._pend(staged)
        self.pairs.append((staged, final))
        return staged

    def note(self, path: Path) -> None:
        """Record a scratch path of this transaction (deleted at the end, committed or not)."""
        self._pend(path)
        self.scratch.append(path)

    def _pend(self, path: Path) -> None:
        with open(pending_path(self.base), "a") as fh:
            fh.write(f"{path}\n")
            fh.flush()
            os.fsync(fh.fileno())

    def unstage(self, staged: Path) -> None:
        self.pairs = [(s, f) for s, f in self.pairs if s != staged]
        _remove(staged)

    def delete(self, final: Path) -> None:
        """Delete ``final`` at commit."""
        self.deletes.append(final)

    def commit(self, last: Path | None = None) -> None:
        """Make every staged file durable, write the journal (the commit point), apply it, delete it.
        ``last``: the final path to move last (the DuckDB file)."""
        missing = [str(s) for s, _ in self.pairs if not s.exists()]
        if missing:
            raise RuntimeError(f"transaction {self.name}: staged files were never written: {missing[:3]}")
        for s, _ in self.pairs:
            if s.is_file():
                _fsync(s)
        _fsync_dirs([s for s, _ in self.pairs])
        pairs = sorted(self.pairs, key=lambda p: p[1] == last)
        ops = [["delete", str(p)] for p in self.deletes] + [["replace", str(s), str(f)] for s, f in pairs]
        journal = journal_path(self.base)
        tmp = journal.with_name(journal.name + ".tmp")
        with open(tmp, "w") as fh:
            json.dump({"txid": self.txid, "writer": self.name, "ops": ops}, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, journal)
        self.committed = True  # from here on, a failure is finished by recovery, never undone
        _fsync(journal.parent)
        fault_point(f"{self.name}.journal_written")
        _apply(ops, self.name)
        for p in self.scratch:
            _remove(p)
        fault_point(f"{self.name}.before_journal_delete")
        journal.unlink()
        pending_path(self.base).unlink(missing_ok=True)
        _fsync(journal.parent)

    def abort(self) -> None:
        if self.committed:
            return
        pending = pending_path(self.base)
        if pending.exists():
            for line in pending.read_text().splitlines():
                if line.strip():
                    _remove(Path(line.strip()))
            pending.unlink()
