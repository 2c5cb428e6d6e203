"""Events through the validation gate: every landing partition ``event_date <= ds`` whose files
changed since it was last validated (normally just ``ds``; on the first run, all imported history),
or whose batches were withdrawn, restored or judged failed since.

``validate_events`` streams the pending partitions in chunks of whole partitions (about
``validation_chunk_rows`` rows each; withdrawn batches left out), applies the row rules and the
events suite to each chunk and tallies them (validation/tally.py), then checks the batch rules on
the totals: the quarantine share of each import batch not judged yet (validation/batches.py), volume
and freshness. ``write_events`` then reads the chunks again and writes each partition's valid rows to
the validated zone and its bad rows to quarantine, and last a manifest (the fingerprint of the
landing files it validated) that makes the partition done. Peak memory is one chunk, whatever the
backlog (a first night over years of history, a ten-million-event day).
"""
from __future__ import annotations

import logging
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines import constants as C
from pipelines.artifacts import layout
from pipelines.config import Config
from pipelines.infra import storage
from pipelines.validation import batches
from pipelines.validation.expectations import ExpectationRunner
from pipelines.validation.outcome import Outcome
from pipelines.validation.tally import Tally
from pipelines.validation.rules import (
    BATCH_FAILED,
    EVENT_SCHEMA,
    QUARANTINE_SCHEMA,
    UNPARSEABLE,
    encode_rules,
    read_event_file,
    row_rule_masks,
    rule_names,
)

log = logging.getLogger(__name__)


# ------------------------------------------------------------------ pending partitions
def _partition_dirs(cfg: Config, ds: str) -> list[Path]:
    root = layout(cfg).landing_events
    if not root.exists():
        return []
    return [d for d in sorted(root.glob(f"{C.EVENT_DATE}=*"))
            if d.name.split("=", 1)[1] == "unknown" or d.name.split("=", 1)[1] <= ds]


def _fingerprint(part_dir: Path, ledger: dict, files: list[Path] | None = None) -> list[list]:
    """[name, size] per landing file (``files``, default every file of the partition); a withdrawn
    batch's file is left out and a failed batch's file is marked, so withdrawing, restoring or
    re-judging a batch makes its partitions pending again."""
    gone, failed = batches.ids_with(ledger, batches.WITHDRAWN), batches.ids_with(ledger, batches.FAILED)
    return [[f.name, f.stat().st_size] + (["failed"] if batches.batch_of(f) in failed else [])
            for f in (sorted(part_dir.glob("batch-*.parquet")) if files is None else files)
            if batches.batch_of(f) not in gone]


def _is_pending(cfg: Config, part_dir: Path, ledger: dict) -> bool:
    """New, or its landing files (or their batches' standing) changed since its last validation."""
    manifest = layout(cfg).partition_manifest(part_dir.name.split("=", 1)[1])
    return not manifest.exists() or storage.read_json(manifest).get("fingerprint") != _fingerprint(part_dir, ledger)


def _landing_rows(cfg: Config, date_: str, gone: set[str]) -> int | None:
    d = layout(cfg).landing_partition(date_)
    files = [f for f in sorted(d.glob("batch-*.parquet")) if batches.batch_of(f) not in gone] if d.exists() else []
    if not files:
        return None
    try:
        return sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    except (OSError, pa.ArrowException):
        return None  # an unreadable file is reported by read_event_file, with its name


def _volume_and_freshness(cfg: Config, ds: str, out: Outcome, gone: set[str]) -> None:
    today = _landing_rows(cfg, ds, gone)
    if not today:
        msg = (f"rule stale_feed: no events landed for ds={ds} under {layout(cfg).landing_partition(ds)}; "
               "the feed sent nothing new")
        (out.errors if cfg.validation.freshness_rule == "fail" else out.warnings).append(msg)
        return
    d0 = date.fromisoformat(ds)
    history = [_landing_rows(cfg, (d0 - timedelta(days=k)).isoformat(), gone) for k in range(1, 8)]
    if any(h is None for h in history):
        return  # a new feed without seven days of history has no trailing median to compare against
    median = float(np.median(history))
    ratio = today / median if median else float("inf")
    if ratio < cfg.validation.volume_low_ratio or ratio > cfg.validation.volume_high_ratio:
        msg = (f"rule volume_anomaly: {today} events on {ds} against a trailing 7-day median of {median:.0f} "
               f"(ratio {ratio:.2f}, allowed {cfg.validation.volume_low_ratio}..{cfg.validation.volume_high_ratio}); daily counts {history[::-1]}")
        (out.errors if cfg.validation.volume_rule == "fail" else out.warnings).append(msg)


# ------------------------------------------------------------------ reading in chunks
Part = tuple[Path, list[Path]]  # a pending partition and its landing files (withdrawn batches left out)


def _parts(pending: list[Path], gone: set[str], out: Outcome) -> list[Part]:
    """The pending partitions with their files; a warning per withdrawn batch left out."""
    parts, left_out = [], {}
    for d in pending:
        files = []
        for f in sorted(d.glob("batch-*.parquet")):
            b = batches.batch_of(f)
            if b in gone:
                left_out.setdefault(b, []).append(d.name.split("=", 1)[1])
            else:
                files.append(f)
        parts.append((d, files))
    out.warnings += [f"batch {b} is withdrawn: left out of {len(dates)} partition(s) ({', '.join(dates[:5])}); "
                     f"`recsys restore {b}` brings it back" for b, dates in left_out.items()]
    return parts


def _file_rows(f: Path) -> int:
    try:
        return pq.ParquetFile(f).metadata.num_rows
    except (OSError, pa.ArrowException):
        return 0  # an unreadable file is reported by read_event_file, with its name


def _chunks(parts: list[Part], limit: int) -> list[list[Part]]:
    """Whole partitions in groups of at most ``limit`` rows (a larger partition is a chunk alone); at
    least one (maybe empty) chunk. Duplicates are looked for within a chunk: two copies of an event
    share its time, so its date, so its partition (a copy landed in another partition breaks
    ``event_time_outside_partition`` anyway)."""
    chunks: list[list[Part]] = [[]]
    rows = 0
    for part in parts:
        n = sum(_file_rows(f) for f in part[1])
        if chunks[-1] and rows + n > max(int(limit), 1):
            chunks.append([])
            rows = 0
        chunks[-1].append(part)
        rows += n
    return chunks


def _read(chunk: list[Part]) -> pd.DataFrame:
    """The rows of a chunk's files, with their landing file, partition and batch; an empty frame of
    the schema when there is none."""
    tables, values = [], {"_source_file": [], "_partition": [], "_batch": []}
    for d, files in chunk:
        for f in files:
            tables.append(read_event_file(f))
            for k, v in (("_source_file", f"{d.name}/{f.name}"), ("_partition", d.name.split("=", 1)[1]),
                         ("_batch", batches.batch_of(f))):
                values[k].append(v)
    if not tables:
        df = EVENT_SCHEMA.empty_table().to_pandas()
        return df.assign(**{k: pd.Series([], dtype=object) for k in values})
    sizes = [t.num_rows for t in tables]
    combined = pa.concat_tables(tables)
    tables.clear()
    # Arrow buffers are released column by column as pandas takes them over (no second copy).
    df = combined.to_pandas(split_blocks=True, self_destruct=True)
    del combined
    # Where each row came from: one value per file, so categoricals (a code per row, each name once).
    for k, v in values.items():
        names, per_file = np.unique(np.array(v, dtype=object), return_inverse=True)
        df[k] = pd.Categorical.from_codes(np.repeat(per_file.astype(np.int32), sizes), categories=names)
    return df


def _suite_rows(df: pd.DataFrame, v, seed: int) -> pd.DataFrame:
    """The rows of a chunk the Great Expectations suite checks: all of them, or a uniform sample of
    ``expectation_sample_rows`` (the suite holds several copies of what it checks, and takes longer
    than every row rule together; the row rules, which decide the quarantine, see every row). The
    whole frame, not a copy of its event columns: the suite only reads the columns it names."""
    limit = int(v.expectation_sample_rows)
    if limit <= 0 or len(df) <= limit:
        return df
    log.info("validate: the events suite checks a uniform sample of %d of the chunk's %d rows "
             "(expectation_sample_rows); the row rules check every row", limit, len(df))
    return df.sample(n=limit, random_state=seed).sort_index()


# ------------------------------------------------------------------ the gate over the pending partitions
def validate_events(cfg: Config, ds: str, run_id: str, runner: ExpectationRunner,
                    known_items: pd.Index) -> tuple[Outcome, dict]:
    """Row rules, the events suite and the batch rules over every pending partition, read in chunks of
    about ``validation_chunk_rows`` rows (memory bounded by the chunk, not the backlog); nothing is
    written here (``write_events`` reads the chunks again once every batch was judged)."""
    ledger = batches.read_ledger(cfg)
    gone = batches.ids_with(ledger, batches.WITHDRAWN)
    dirs = _partition_dirs(cfg, ds)
    pending = [d for d in dirs if _is_pending(cfg, d, ledger)]
    log.info("validate ds=%s: %d landing partitions up to ds, %d pending validation", ds, len(dirs), len(pending))
    out = Outcome("events", partitions=len(pending))
    parts = _parts(pending, gone, out)
    _volume_and_freshness(cfg, ds, out, gone)
    if not pending:
        return out, {}
    v = cfg.validation
    failed = batches.ids_with(ledger, batches.FAILED)
    tally = Tally(exempt=set(v.quarantine_share_exempt_rules))
    chunks = _chunks(parts, v.validation_chunk_rows)
    for k, chunk in enumerate(chunks):
        df = _read(chunk)
        failed_rows = df["_batch"].isin(failed).to_numpy(bool)
        masks = row_rule_masks(df, df["_partition"], ds, known_items, v.max_id_length, v.max_quantity,
                               max_price=v.max_price, earliest_event_date=v.earliest_event_date,
                               max_dwell_seconds=v.max_dwell_seconds, max_review_length=v.max_review_length,
                               duplicate_scope=~failed_rows)
        masks[BATCH_FAILED] = failed_rows
        codes, names = encode_rules(masks)
        tally.add(df, masks, codes, names)
        out.expectations += runner.run("events" if k == 0 else f"events_{k + 1}", _suite_rows(df, v, cfg.seed)) \
            if len(df) else []
        if len(chunks) > 1:
            log.info("validate ds=%s: chunk %d/%d: %d partitions, %d rows", ds, k + 1, len(chunks), len(chunk), len(df))
        del df, masks
    out.rows_in, out.rows_quarantined = tally.rows_in, tally.quarantined
    out.rows_valid = out.rows_in - out.rows_quarantined
    out.rule_counts = dict(tally.rule_counts)
    out.warnings += tally.failed_batch_warnings(ledger)
    verdicts = tally.judge(cfg, ledger)
    out.errors += [j["message"] for j in verdicts.values() if j["status"] == batches.FAILED]
    return out, {"chunks": chunks, "codes": tally.codes, "names": tally.names, "pending": pending,
                 "verdicts": verdicts, "counts": tally.counts, "ledger": ledger}


def write_events(cfg: Config, ds: str, run_id: str, work: dict) -> pa.Table:
    """Each pending partition's valid rows to the validated zone and its bad rows (with their rules)
    to quarantine, chunk by chunk (the chunks ``validate_events`` judged, read again), each partition
    last its manifest. Returns the quarantined rows."""
    names, q_tables = work["names"], []
    for chunk, codes in zip(work["chunks"], work["codes"]):
        df = _read(chunk)
        assert len(df) == len(codes), f"a landing file changed during validation: {len(df)} rows, {len(codes)} judged"
        bad = codes != 0
        valid = df[~bad]
        quarantined = df[bad].assign(rule=rule_names(codes[bad], names).to_numpy())
        del df
        for d, files in chunk:
            q_tables.append(_write_partition(cfg, ds, run_id, d, files, valid, quarantined, work["ledger"]))
    return pa.concat_tables(q_tables) if q_tables else QUARANTINE_SCHEMA.empty_table()


def _write_partition(cfg: Config, ds: str, run_id: str, d: Path, files: list[Path], valid: pd.DataFrame,
                     quarantined: pd.DataFrame, ledger: dict) -> pa.Table:
    date_ = d.name.split("=", 1)[1]
    v = valid[(valid["_partition"] == date_).to_numpy()]
    q = quarantined[(quarantined["_partition"] == date_).to_numpy()]
    vdir = layout(cfg).validated_partition(date_)
    qdir = layout(cfg).quarantine_partition(date_)
    valid_cols = [c for c in EVENT_SCHEMA.names if c != UNPARSEABLE]
    storage.atomic_write_parquet(  # a partition whose every batch was withdrawn: an empty file of the schema
        pa.Table.from_pandas(v[valid_cols], preserve_index=False) if len(v)
        else pa.schema([EVENT_SCHEMA.field(c) for c in valid_cols]).empty_table(), vdir / "part.parquet")
    qt = pa.table({
        "ds": pa.array([date.fromisoformat(ds)] * len(q), pa.date32()), "run_id": pa.array([run_id] * len(q), pa.string()),
        "event_date": pa.array([date_] * len(q), pa.string()), "rule": pa.array(q["rule"], pa.string()),
        **{f.name: pa.array(q[f.name], f.type, from_pandas=True) for f in EVENT_SCHEMA if f.name != UNPARSEABLE},
        "unparseable": pa.array(q[UNPARSEABLE], pa.string(), from_pandas=True),
        "source_file": pa.array(q["_source_file"].astype(object), pa.string()),
    }, schema=QUARANTINE_SCHEMA)
    storage.atomic_write_parquet(qt, qdir / "part.parquet")
    # The manifest goes last: a crash before it leaves the partition pending, never half-done. Its
    # fingerprint is of the files read (a file landed meanwhile makes the partition pending again).
    storage.write_json({"fingerprint": _fingerprint(d, ledger, files), "rows_in": len(v) + len(q), "rows_valid": len(v),
                        "rows_quarantined": len(q), "run_id": run_id, "ds": ds}, layout(cfg).partition_manifest(date_))
    return qt
