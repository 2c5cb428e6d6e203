"""Privacy requests: consent changes and the right to be forgotten (docs/privacy.md).

The ledger they write (consent log, salted hashes of forgotten users) is pipelines/infra/consent.py,
which every step reads; ``forget`` also scrubs the user from every file, table and export already
written under the data root, and from the PostgreSQL serving copy.
"""
from __future__ import annotations

import csv
import json
import logging
import re
import uuid
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import scipy.sparse as sp

from pipelines.artifacts import layout
from pipelines.config import Config
from pipelines.infra import warehouse
from pipelines.infra.consent import consent_dir, user_hash
from pipelines.infra.postgres import forget_postgres

log = logging.getLogger(__name__)


def record_consent(cfg: Config, user_id: str, personalization: bool | None, email: bool | None) -> Path:
    if personalization is None and email is None:
        raise ValueError("consent: give --personalization and/or --email (on or off)")
    now = datetime.now(timezone.utc)
    row = {"user_id": [str(user_id)], "consent_personalization": [personalization], "consent_email": [email],
           "recorded_at": [now]}
    path = consent_dir(cfg) / f"consent-{now.strftime('%Y%m%dT%H%M%S%f')}-{uuid.uuid4().hex[:6]}.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    pq.write_table(pa.Table.from_pandas(pd.DataFrame(row), preserve_index=False), tmp)
    tmp.rename(path)
    return path


# ------------------------------------------------------------------ the right to be forgotten
BINARY_SUFFIXES = {".parquet", ".npz", ".npy", ".duckdb", ".db", ".wal", ".pkl", ".png", ".jpg", ".gz", ".zip",
                   ".sqlite", ".joblib", ".ubj", ".bin"}


def _rewrite_parquet(path: Path, user_id: str, aligned: dict) -> int:
    """Remove the user from one Parquet file; returns the rows removed (or blanked)."""
    schema = pq.read_schema(path)
    if "user_id" not in schema.names:
        return 0
    table = pq.read_table(path)
    col = table.column("user_id")
    hit = pc.fill_null(pc.equal(pc.cast(col, pa.string()), user_id), False)
    n = int(pc.sum(hit).as_py() or 0)
    if not n:
        return 0
    if "user_idx" in schema.names:
        # An index-aligned users table (features, MLflow model artifacts): blank the id, keep the row,
        # and remember the index so the matrices beside it lose the user's interactions.
        idx = np.asarray(table.column("user_idx").to_numpy())[np.asarray(hit.to_numpy(zero_copy_only=False), bool)]
        aligned.setdefault(path.parent, set()).update(int(i) for i in idx)
        new_col = pc.if_else(hit, pa.scalar(None, col.type), col)
        table = table.set_column(schema.get_field_index("user_id"), "user_id", new_col)
    else:
        table = table.filter(pc.invert(hit))
    tmp = path.with_name(f".{path.name}.forget")
    pq.write_table(table, tmp, compression="zstd")
    tmp.replace(path)
    return n


def _zero_rows(directory: Path, rows: set[int]) -> int:
    """Zero the user rows in every users x items matrix and drop them from index-keyed tables."""
    touched = 0
    for f in directory.glob("*.npz"):
        try:
            m = sp.load_npz(f).tocsr()
        except Exception:  # not a sparse matrix file (a model's arrays)
            continue
        if m.shape[0] <= max(rows):
            continue
        keep = np.ones(m.shape[0], np.float32)
        keep[list(rows)] = 0
        m = (sp.diags(keep) @ m).tocsr()
        m.eliminate_zeros()
        tmp = f.with_name(f".{f.stem}.forget.npz")
        sp.save_npz(tmp, m)
        tmp.replace(f)
        touched += 1
    for f in directory.glob("*.parquet"):
        schema = pq.read_schema(f)
        if "user_idx" in schema.names and "user_id" not in schema.names:
            t = pq.read_table(f)
            t = t.filter(pc.invert(pc.is_in(t.column("user_idx"), pa.array(sorted(rows), t.schema.field("user_idx").type))))
            tmp = f.with_name(f".{f.name}.forget")
            pq.write_table(t, tmp)
            tmp.replace(f)
            touched += 1
    return touched


def _scrub_duckdb(cfg: Config, user_id: str) -> int:
    """Delete the user's rows from every table with a user_id column, then rewrite the database file
    (COPY FROM DATABASE into a fresh file, swapped in) so no deleted bytes stay on disk."""
    db = layout(cfg).duckdb_path
    if not db.exists():
        return 0
    removed = 0
    con = warehouse.connect_warehouse(db)
    try:
        tables = [r[0] for r in con.execute(
            "SELECT table_name FROM information_schema.columns WHERE column_name = 'user_id' AND table_schema = 'main' "
            "AND table_name IN (SELECT table_name FROM information_schema.tables WHERE table_type = 'BASE TABLE')"
        ).fetchall()]
        con.execute("BEGIN TRANSACTION")
        for t in tables:
            removed += con.execute(f'SELECT count(*) FROM "{t}" WHERE CAST(user_id AS VARCHAR) = ?', [user_id]).fetchall()[0][0]
            con.execute(f'DELETE FROM "{t}" WHERE CAST(user_id AS VARCHAR) = ?', [user_id])
        con.execute("COMMIT")
        fresh = db.with_name(f".{db.name}.forget")
        fresh.unlink(missing_ok=True)
        con.execute(f"ATTACH '{fresh}' AS fresh")
        con.execute(f"COPY FROM DATABASE {con.execute('SELECT current_database()').fetchall()[0][0]} TO fresh")
        con.execute("DETACH fresh")
    finally:
        con.close()
    fresh.replace(db)
    Path(str(db) + ".wal").unlink(missing_ok=True)
    return removed


def _scrub_text(path: Path, user_id: str) -> int:
    try:
        text = path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError):
        return 0
    if user_id not in text:
        return 0
    pattern = re.compile(rf"(?<![\w-]){re.escape(user_id)}(?![\w-])")
    new, n = pattern.subn("[forgotten]", text)
    if n:
        tmp = path.with_name(f".{path.name}.forget")
        tmp.write_text(new, encoding="utf-8")
        tmp.replace(path)
    return n


def _scrub_csv_export(path: Path, user_id: str) -> int:
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    if not rows or "user_id" not in rows[0]:
        return _scrub_text(path, user_id)
    k = rows[0].index("user_id")
    kept = [rows[0]] + [r for r in rows[1:] if len(r) <= k or r[k] != user_id]
    if len(kept) == len(rows):
        return 0
    tmp = path.with_name(f".{path.name}.forget")
    with open(tmp, "w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows(kept)
    tmp.replace(path)
    return len(rows) - len(kept)


def forget(cfg: Config, user_id: str) -> dict:
    """Remove a user from everything the pipeline keeps under the data root and from the exports it
    wrote (``exports/manifest.jsonl``), record a salted hash so no later import brings them back,
    and record the request, without the user id, in the ``privacy_requests`` table."""
    user_id = str(user_id).strip()
    if not user_id:
        raise ValueError("forget: give a user id")
    started = datetime.now(timezone.utc)
    # 1. The suppression list first: a run starting meanwhile already drops the user.
    _suppress(cfg, user_id)
    # 2. Every Parquet file, then the matrices beside index-aligned users tables.
    files, rows, matrices = _scrub_parquet_files(cfg, user_id)
    # 3. The warehouse.
    db_rows = _scrub_duckdb(cfg, user_id)
    # 4. Exports the pipeline wrote (listed in the manifest), inside or outside the data root.
    exports = _scrub_exports(cfg, user_id)
    # 5. Text files (reports, validation examples, Data Docs, logs): the id replaced by "[forgotten]".
    texts = _scrub_text_files(cfg, user_id)
    # 6. The PostgreSQL serving copy, when configured.
    serving = forget_postgres(cfg.serving.serving_url, user_id) if cfg.serving.serving_url else 0
    done = datetime.now(timezone.utc)
    audit = {"request_id": uuid.uuid4().hex, "kind": "forget", "requested_at": started, "completed_at": done,
             "parquet_files_rewritten": files, "parquet_rows_removed": rows, "matrices_rewritten": matrices,
             "warehouse_rows_removed": db_rows, "exports_rewritten": exports, "text_files_scrubbed": texts,
             "serving_rows_removed": serving}
    _record_request(cfg, audit)
    log.info("forget: %s", {k: v for k, v in audit.items() if k not in ("requested_at", "completed_at")})
    return audit


def _suppress(cfg: Config, user_id: str) -> None:
    """Add the user's salted hash to the forgotten list (the imports drop those users)."""
    path = layout(cfg).forgotten_path
    known = pd.read_parquet(path) if path.exists() else pd.DataFrame({"user_hash": pd.Series(dtype=str)})
    h = user_hash(cfg, user_id)
    if h not in set(known["user_hash"]):
        known = pd.concat([known, pd.DataFrame({"user_hash": [h]})], ignore_index=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        pq.write_table(pa.Table.from_pandas(known, preserve_index=False), tmp)
        tmp.replace(path)


def _scrub_parquet_files(cfg: Config, user_id: str) -> tuple[int, int, int]:
    """(files rewritten, rows removed, matrices rewritten) over every Parquet file under the data
    root (landing, validated, quarantine, features, surfaces, warehouse copies, consent log, MLflow
    artifacts) and the users x items matrices beside index-aligned users tables."""
    aligned: dict[Path, set[int]] = {}
    files = rows = 0
    for f in sorted(layout(cfg).home.rglob("*.parquet")):
        if f.name.startswith("."):
            continue
        n = _rewrite_parquet(f, user_id, aligned)
        files += bool(n)
        rows += n
    matrices = sum(_zero_rows(d, idx) for d, idx in aligned.items())
    return files, rows, matrices


def _scrub_exports(cfg: Config, user_id: str) -> int:
    exports = 0
    manifest = layout(cfg).exports_manifest
    if manifest.exists():
        for line in manifest.read_text().splitlines():
            p = Path(json.loads(line)["path"])
            if p.exists():
                exports += bool(_scrub_csv_export(p, user_id))
    return exports


def _scrub_text_files(cfg: Config, user_id: str) -> int:
    """Text files under the data root (the exports manifest aside) with the id replaced."""
    manifest = layout(cfg).exports_manifest
    texts = 0
    for f in sorted(layout(cfg).home.rglob("*")):
        if f.is_file() and f.suffix.lower() not in BINARY_SUFFIXES and f != manifest and f.stat().st_size < 200_000_000:
            texts += bool(_scrub_text(f, user_id))
    return texts


def _record_request(cfg: Config, audit: dict) -> None:
    con = warehouse.connect_warehouse(layout(cfg).duckdb_path)
    try:
        con.execute("""CREATE TABLE IF NOT EXISTS privacy_requests (request_id VARCHAR, kind VARCHAR,
            requested_at TIMESTAMPTZ, completed_at TIMESTAMPTZ, parquet_files_rewritten BIGINT,
            parquet_rows_removed BIGINT, matrices_rewritten BIGINT, warehouse_rows_removed BIGINT,
            exports_rewritten BIGINT, text_files_scrubbed BIGINT, serving_rows_removed BIGINT)""")
        con.execute(f"INSERT INTO privacy_requests ({', '.join(audit)}) VALUES ({', '.join('?' * len(audit))})",
                    list(audit.values()))
    finally:
        con.close()
