"""Privacy requests: consent changes and the right to be forgotten (docs/privacy.md).

The ledger they write (consent log, salted hashes of forgotten users) is pipelines/infra/consent.py,
which every step reads; ``forget`` also scrubs the user from every file, table and export already
written under the data root, and from the PostgreSQL serving copy.
"""
from __future__ import annotations

import csv
import hashlib
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
from pipelines.infra import journal, storage, warehouse
from pipelines.infra.consent import consent_dir, is_forgotten, user_hash
from pipelines.infra.faults import fault_point
from pipelines.infra.postgres import forget_postgres

log = logging.getLogger(__name__)


def record_consent(cfg: Config, user_id: str, personalization: bool | None, email: bool | None) -> Path:
    if personalization is None and email is None:
        raise ValueError("consent: give --personalization and/or --email (on or off)")
    if is_forgotten(cfg, user_id):
        raise ValueError(f"consent: user {user_id} was forgotten (recsys forget); a forgotten user's consent is "
                         "not recorded, so nothing was written")
    now = datetime.now(timezone.utc)
    row = {"user_id": [str(user_id)], "consent_personalization": [personalization], "consent_email": [email],
           "recorded_at": [now]}
    path = consent_dir(cfg) / f"consent-{now.strftime('%Y%m%dT%H%M%S%f')}-{uuid.uuid4().hex[:6]}.parquet"
    return storage.atomic_write_parquet(pa.Table.from_pandas(pd.DataFrame(row), preserve_index=False), path)


# ------------------------------------------------------------------ the right to be forgotten
BINARY_SUFFIXES = {".parquet", ".npz", ".npy", ".duckdb", ".db", ".wal", ".pkl", ".png", ".jpg", ".gz", ".zip",
                   ".sqlite", ".joblib", ".ubj", ".bin"}


def _rewrite_parquet(path: Path, user_id: str, aligned: dict, stage) -> int:
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
    pq.write_table(table, stage(path), compression="zstd")
    return n


def _zero_rows(directory: Path, rows: set[int], stage) -> int:
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
        with open(stage(f), "wb") as fh:  # a file object: save_npz would add ".npz" to a name
            sp.save_npz(fh, m)
        touched += 1
    for f in directory.glob("*.parquet"):
        schema = pq.read_schema(f)
        if "user_idx" in schema.names and "user_id" not in schema.names:
            t = pq.read_table(f)
            t = t.filter(pc.invert(pc.is_in(t.column("user_idx"), pa.array(sorted(rows), t.schema.field("user_idx").type))))
            pq.write_table(t, stage(f))
            touched += 1
    return touched


def _scrub_duckdb(con, user_id: str) -> int:
    """Delete the user's rows from every table with a user_id column (in the transaction's copy of
    the database; ``forget`` then rewrites it into a fresh file, so no deleted bytes stay on disk)."""
    removed = 0
    tables = [r[0] for r in con.execute(
        "SELECT table_name FROM information_schema.columns WHERE column_name = 'user_id' AND table_schema = 'main' "
        "AND table_name IN (SELECT table_name FROM information_schema.tables WHERE table_type = 'BASE TABLE')"
    ).fetchall()]
    for t in tables:
        removed += con.execute(f'SELECT count(*) FROM "{t}" WHERE CAST(user_id AS VARCHAR) = ?', [user_id]).fetchall()[0][0]
        con.execute(f'DELETE FROM "{t}" WHERE CAST(user_id AS VARCHAR) = ?', [user_id])
    return removed


def _scrub_text(path: Path, user_id: str, stage) -> int:
    try:
        text = path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError):
        return 0
    if user_id not in text:
        return 0
    pattern = re.compile(rf"(?<![\w-]){re.escape(user_id)}(?![\w-])")
    new, n = pattern.subn("[forgotten]", text)
    if n:
        stage(path).write_text(new, encoding="utf-8")
    return n


def _scrub_csv_export(path: Path, user_id: str, stage) -> int:
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    if not rows or "user_id" not in rows[0]:
        return _scrub_text(path, user_id, stage)
    k = rows[0].index("user_id")
    kept = [rows[0]] + [r for r in rows[1:] if len(r) <= k or r[k] != user_id]
    if len(kept) == len(rows):
        return 0
    with open(stage(path), "w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows(kept)
    return len(rows) - len(kept)


def forget(cfg: Config, user_id: str) -> dict:
    """Remove a user from everything the pipeline keeps under the data root and from the exports it
    wrote (``exports/manifest.jsonl``), record a salted hash so no later import brings them back,
    and record the request, without the user id, in the ``privacy_requests`` table.

    All-or-nothing: every rewritten file, the DuckDB scrub and the request row are one warehouse
    transaction (a crash or an error changes nothing but the salted hash; rerun the command). A
    damaged DuckDB file stops it before anything is rewritten (WarehouseDamaged names the way out).
    ``found`` in the result: whether the id was anywhere; ``already_forgotten``: whether it was
    forgotten before."""
    user_id = str(user_id).strip()
    if not user_id:
        raise ValueError("forget: give a user id")
    lay = layout(cfg)
    started = datetime.now(timezone.utc)
    already = is_forgotten(cfg, user_id)
    # 1. The suppression list first: a run starting meanwhile already drops the user.
    _suppress(cfg, user_id)
    fault_point("forget.suppressed")
    with warehouse.transaction(lay.duckdb_path, lay.parquet_root, "forget", what="forget") as tx:
        # 2. The warehouse (its staged copy; a damaged file fails here, before anything is staged).
        db_rows = _scrub_duckdb(tx.connection(), user_id)
        # 3. Every Parquet file, then the matrices beside index-aligned users tables.
        files, rows, matrices = _scrub_parquet_files(cfg, user_id, tx.stage)
        # 4. Exports the pipeline wrote (listed in the manifest), inside or outside the data root.
        exports = _scrub_exports(cfg, user_id, tx.stage)
        # 5. Text files (reports, validation examples, Data Docs, logs): the id replaced by "[forgotten]".
        texts = _scrub_text_files(cfg, user_id, tx)
        # Copies of a damaged warehouse kept by rebuild-warehouse cannot be scrubbed: they go.
        for kept in lay.warehouse.glob(f"{lay.duckdb_path.name}.damaged-*"):
            tx.delete(kept)
        fault_point("forget.files_staged")
        # 6. The PostgreSQL serving copy, when configured (idempotent: a rerun after a failure redoes it).
        serving = forget_postgres(cfg.serving.serving_url, user_id) if cfg.serving.serving_url else 0
        audit = {"request_id": uuid.uuid4().hex, "kind": "forget", "requested_at": started,
                 "completed_at": datetime.now(timezone.utc), "parquet_files_rewritten": files,
                 "parquet_rows_removed": rows, "matrices_rewritten": matrices, "warehouse_rows_removed": db_rows,
                 "exports_rewritten": exports, "text_files_scrubbed": texts, "serving_rows_removed": serving}
        _record_request(tx, audit)
        tx.compact()
    audit["found"] = bool(rows or db_rows or matrices or exports or texts or serving)
    audit["already_forgotten"] = already
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


def _in_transaction(path: Path) -> bool:
    """A scratch file of a warehouse transaction (staged files, DuckDB's spill folder, lock, journal)."""
    return any(journal.STAGED in part for part in path.parts) or path.suffix in (".lock", ".journal", ".pending")


def _scrub_parquet_files(cfg: Config, user_id: str, stage) -> tuple[int, int, int]:
    """(files rewritten, rows removed, matrices rewritten) over every Parquet file under the data
    root (landing, validated, quarantine, features, surfaces, warehouse copies, consent log, MLflow
    artifacts) and the users x items matrices beside index-aligned users tables."""
    aligned: dict[Path, set[int]] = {}
    files = rows = 0
    for f in sorted(layout(cfg).home.rglob("*.parquet")):
        if f.name.startswith(".") or _in_transaction(f):
            continue
        n = _rewrite_parquet(f, user_id, aligned, stage)
        files += bool(n)
        rows += n
    matrices = sum(_zero_rows(d, idx, stage) for d, idx in aligned.items())
    return files, rows, matrices


def _export_paths(cfg: Config) -> list[Path]:
    """Every export file: those listed in exports/manifest.jsonl (``recsys export``, the export step),
    then every day's file in the drop folder (``export_dir``), listed or not."""
    manifest = layout(cfg).exports_manifest
    paths = [Path(json.loads(line)["path"]) for line in manifest.read_text().splitlines()
             if line.strip()] if manifest.exists() else []
    if cfg.serving.export_dir:
        paths += sorted(Path(cfg.serving.export_dir).expanduser().glob("email/ds=*/post_purchase_email.*"))
    return list(dict.fromkeys(p.resolve() for p in paths))


def _scrub_json_export(path: Path, user_id: str, stage) -> int:
    """A JSON export: a Braze body (``{"attributes": [...]}`` keyed by external_id) or JSON Lines
    (one recipient per line: ``user_id``, or a Klaviyo profile's ``attributes.external_id``)."""
    text = path.read_text(encoding="utf-8")
    if text.lstrip().startswith("{") and "\n{" not in text.strip():
        doc = json.loads(text)
        if isinstance(doc, dict) and isinstance(doc.get("attributes"), list):
            kept = [a for a in doc["attributes"] if str(a.get("external_id")) != user_id]
            removed = len(doc["attributes"]) - len(kept)
            if removed:
                stage(path).write_text(json.dumps({**doc, "attributes": kept}, ensure_ascii=False, indent=1),
                                       encoding="utf-8")
            return removed
    lines = [line for line in text.splitlines() if line.strip()]

    def owner(line: str) -> str:
        obj = json.loads(line)
        return str(obj.get("user_id", (obj.get("attributes") or {}).get("external_id")))

    kept = [line for line in lines if owner(line) != user_id]
    if len(kept) != len(lines):
        stage(path).write_text("".join(line + "\n" for line in kept), encoding="utf-8")
    return len(lines) - len(kept)


def _restate_drop_manifest(path: Path, removed: int, stage) -> None:
    """A drop folder's manifest.json after its file lost rows: rows and sha256 of the staged file."""
    manifest = path.parent / "manifest.json"
    if not manifest.exists():
        return
    m = json.loads(manifest.read_text(encoding="utf-8"))
    if m.get("file") != path.name:
        return
    digest = hashlib.sha256(stage(path).read_bytes()).hexdigest()
    m.update(rows=max(int(m.get("rows", 0)) - removed, 0), sha256=digest)
    stage(manifest).write_text(json.dumps(m, indent=2, sort_keys=True, default=str), encoding="utf-8")


def _scrub_exports(cfg: Config, user_id: str, stage) -> int:
    staged: dict[Path, Path] = {}

    def stage_once(final: Path) -> Path:  # the manifest rewrite reads the file's staged copy
        if final not in staged:
            staged[final] = stage(final)
        return staged[final]

    n = 0
    for p in _export_paths(cfg):
        if not p.exists():
            continue
        scrub = _scrub_json_export if p.suffix in (".json", ".jsonl") else _scrub_csv_export
        removed = scrub(p, user_id, stage_once)
        if removed and p.parent.name.startswith("ds="):
            _restate_drop_manifest(p, removed, stage_once)
        n += bool(removed)
    return n


def _scrub_text_files(cfg: Config, user_id: str, tx) -> int:
    """Text files under the data root (the exports manifest and files already rewritten aside)
    with the id replaced."""
    manifest = layout(cfg).exports_manifest
    texts = 0
    for f in sorted(layout(cfg).home.rglob("*")):
        if (f.is_file() and f.suffix.lower() not in BINARY_SUFFIXES and f != manifest and not _in_transaction(f)
                and f not in tx.staged_finals and f.stat().st_size < 200_000_000):
            texts += bool(_scrub_text(f, user_id, tx.stage))
    return texts


PRIVACY_REQUESTS_DDL = """CREATE TABLE IF NOT EXISTS privacy_requests (request_id VARCHAR, kind VARCHAR,
    requested_at TIMESTAMPTZ, completed_at TIMESTAMPTZ, parquet_files_rewritten BIGINT,
    parquet_rows_removed BIGINT, matrices_rewritten BIGINT, warehouse_rows_removed BIGINT,
    exports_rewritten BIGINT, text_files_scrubbed BIGINT, serving_rows_removed BIGINT, ds DATE)"""


def _record_request(tx, audit: dict) -> None:
    """The request's row (never the id) and the Parquet copy of its ds, in the forget transaction."""
    con = tx.connection()
    con.execute(PRIVACY_REQUESTS_DDL)
    con.execute("ALTER TABLE privacy_requests ADD COLUMN IF NOT EXISTS ds DATE")  # tables of older releases
    row = {**audit, "ds": audit["requested_at"].date()}
    con.execute(f"INSERT INTO privacy_requests ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
                list(row.values()))
    warehouse.copy_partition(tx, "privacy_requests", row["ds"].isoformat())


# ------------------------------------------------------------------ where an id still is
def _id_regex(user_id: str) -> str:
    """The id as a whole token (what ``forget`` replaces in text), as an RE2/Python pattern."""
    return rf"(^|[^\w-]){re.escape(user_id)}($|[^\w-])"


def _parquet_hits(path: Path, user_id: str) -> list[str]:
    """Columns of a Parquet file with the id in a decoded value (compressed pages hide it from grep)."""
    try:
        table = pq.read_table(path)
    except Exception as exc:  # an unreadable file is reported, not skipped
        return [f"{path}: unreadable Parquet ({exc})"]
    hits = []
    for name in table.column_names:
        col = table.column(name)
        while pa.types.is_list(col.type) or pa.types.is_large_list(col.type):
            col = pc.list_flatten(col)
        if pa.types.is_dictionary(col.type):
            col = col.cast(col.type.value_type)
        if (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)) and \
                pc.any(pc.fill_null(pc.match_substring_regex(col, _id_regex(user_id)), False)).as_py():
            hits.append(f"{path}: column {name}")
    return hits


def _duckdb_hits(cfg: Config, user_id: str) -> list[str]:
    """Table columns of the warehouse with the id in a value (text, or a list of text)."""
    con = warehouse.connect_readonly(cfg)
    try:
        cols = con.execute("SELECT table_name, column_name, data_type FROM information_schema.columns WHERE "
                           "table_schema = 'main' AND table_name IN (SELECT table_name FROM information_schema.tables "
                           "WHERE table_type = 'BASE TABLE') AND (data_type = 'VARCHAR' OR data_type = 'VARCHAR[]')"
                           ).fetchall()
        hits = []
        for table, col, typ in cols:
            expr = f'"{col}"' if typ == "VARCHAR" else f"array_to_string(\"{col}\", ' ')"
            n = con.execute(f'SELECT count(*) FROM "{table}" WHERE regexp_matches({expr}, ?)',
                            [_id_regex(user_id)]).fetchall()[0][0]
            if n:
                hits.append(f"{layout(cfg).duckdb_path}: table {table} column {col} ({n} rows)")
        return hits
    finally:
        con.close()


def find_user_everywhere(cfg: Config, user_id: str) -> list[str]:
    """Every place under the data root (and every export in the manifest) where ``user_id`` still
    appears as a whole token: decoded values of every Parquet file, every text and list-of-text
    column of the DuckDB warehouse, and the raw bytes of every file. Empty after a good ``forget``."""
    user_id = str(user_id).strip()
    lay = layout(cfg)
    raw = re.compile(_id_regex(user_id).encode())
    found: list[str] = []
    files = [f for f in sorted(lay.home.rglob("*")) if f.is_file()]
    files += [p for p in _export_paths(cfg) if p.is_file() and lay.home not in p.parents]
    for f in files:
        if f.suffix == ".parquet" and not _in_transaction(f):
            found += _parquet_hits(f, user_id)
        if f == lay.duckdb_path:
            found += _duckdb_hits(cfg, user_id)
        if raw.search(f.read_bytes()):
            found.append(f"{f}: raw bytes")
    return found
