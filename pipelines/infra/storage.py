"""Files and tables under the data root: immutable landing, atomic writes, the DuckDB warehouse.

Every write goes to a temporary name in the target directory and is swapped in with one
``os.replace`` (atomic on POSIX), so a reader sees the old file or the new one, never half.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import uuid
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Mapping

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipelines import constants as C

log = logging.getLogger(__name__)


def atomic_write_parquet(table: pa.Table, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        pq.write_table(table, tmp, compression="zstd")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def atomic_write_parquet_batches(tables, schema: pa.Schema, path: Path) -> tuple[Path, int]:
    """Write an iterable of Arrow tables (one schema) as one Parquet file, swapped in by rename when
    complete: a reader never sees a half-written file. Returns (path, rows)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    rows = 0
    try:
        with pq.ParquetWriter(tmp, schema, compression="zstd") as writer:
            for t in tables:
                writer.write_table(t)
                rows += t.num_rows
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path, rows


def atomic_write_text(text: str, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


def write_json(obj: Mapping, path: Path) -> Path:
    return atomic_write_text(json.dumps(obj, indent=2, sort_keys=True, default=str), path)


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def replace_dir(staging: Path, final: Path) -> None:
    """Swap a fully written staging directory in place of `final` (two renames, no copy)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    old = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:8]}")
    if final.exists():
        os.replace(final, old)
    os.replace(staging, final)
    shutil.rmtree(old, ignore_errors=True)


def staging_dir(final: Path) -> Path:
    final.parent.mkdir(parents=True, exist_ok=True)
    path = final.with_name(f".{final.name}.staging-{uuid.uuid4().hex[:8]}")
    path.mkdir()
    return path


def file_digest(path: Path, extra: str = "") -> str:
    h = hashlib.sha256(extra.encode())
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


# ---------------------------------------------------------------- landing zone
def landing_batch_exists(landing: Path, dataset: str, batch_id: str) -> bool:
    return any((landing / dataset).rglob(f"*{batch_id}*.parquet")) if (landing / dataset).exists() else False


def write_landing_events(landing: Path, events: pa.Table, batch_id: str) -> list[Path]:
    """Write events partitioned by UTC event date as new files; existing files are never touched.

    Rows without a parseable event time land in ``event_date=unknown`` so that nothing is lost;
    validation quarantines them.
    """
    times = events.column(C.EVENT_TIME)
    dates = pc.strftime(times, format="%Y-%m-%d")
    dates = pc.fill_null(dates, "unknown")
    events = events.append_column("_date", dates)
    written = []
    for date in sorted(pc.unique(dates).to_pylist()):
        part = events.filter(pc.equal(events.column("_date"), date)).drop_columns(["_date"])
        path = landing / "events" / f"{C.EVENT_DATE}={date}" / f"batch-{batch_id}.parquet"
        if path.exists():
            raise FileExistsError(f"landing file {path} already exists; landing files are immutable")
        written.append(atomic_write_parquet(part, path))
    return written


def write_landing_table(landing: Path, dataset: str, table: pa.Table, batch_id: str) -> Path:
    """Catalog and users batches: named ``batch-<UTC time>-<batch id>.parquet`` so that a later
    batch (a catalog update) sorts after an earlier one and wins (``in_import_order``)."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%f")
    path = landing / dataset / f"batch-{stamp}-{batch_id}.parquet"
    if path.exists():
        raise FileExistsError(f"landing file {path} already exists; landing files are immutable")
    return atomic_write_parquet(table, path)


_STAMPED = re.compile(r"^batch-\d{8}T\d{12}-")


def in_import_order(files) -> list[Path]:
    """Reference batches oldest first: time-stamped names in time order, after the batches of
    releases that did not stamp their names (which are older)."""
    return sorted(files, key=lambda f: (bool(_STAMPED.match(Path(f).name)), Path(f).name))


def landing_files(landing: Path, dataset: str) -> list[Path]:
    """The batches of one landing dataset (events aside: those are partitioned by date), oldest first."""
    return in_import_order((landing / dataset).glob("batch-*.parquet")) if (landing / dataset).exists() else []


SPILL_PREFIX = ".duckdb-spill-"


@contextmanager
def scratch_duckdb(memory_limit: str, spill_parent: Path):
    """An in-memory DuckDB connection whose joins and sorts spill to a temporary directory under
    ``spill_parent`` beyond ``memory_limit`` (config duckdb_memory_limit) instead of growing with the
    data; the connection is closed and the directory removed at the end. A killed step cannot remove
    its directory: the next one removes those of this host whose process is gone (the name carries
    the host and the process id; another host's or a live process's are left alone)."""
    import duckdb

    spill_parent.mkdir(parents=True, exist_ok=True)
    host = re.sub(r"[^A-Za-z0-9.]", "_", os.uname().nodename)
    for old in spill_parent.glob(f"{SPILL_PREFIX}{host}-*"):
        pid = old.name[len(f"{SPILL_PREFIX}{host}-"):].split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(old, ignore_errors=True)
    spill = Path(tempfile.mkdtemp(prefix=f"{SPILL_PREFIX}{host}-{os.getpid()}-", dir=spill_parent))
    con = duckdb.connect(config={"memory_limit": memory_limit, "temp_directory": str(spill)})
    try:
        yield con
    finally:
        con.close()
        shutil.rmtree(spill, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True
