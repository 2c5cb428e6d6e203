"""Events through the validation gate: every landing partition ``event_date <= ds`` whose files
changed since it was last validated (normally just ``ds``; on the first run, all imported history),
or whose batches were withdrawn, restored or judged failed since.

``validate_events`` reads the pending partitions once (leaving out withdrawn batches), applies the
row rules, runs the events suite and checks the batch rules: the quarantine share of each import
batch not judged yet (validation/batches.py), volume and freshness. ``write_events`` then writes each
partition's valid rows to the validated zone and its bad rows to quarantine, and last a manifest
(the fingerprint of the landing files it validated) that makes the partition done.
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
from pipelines.validation.rules import (
    BATCH_FAILED,
    EVENT_SCHEMA,
    QUARANTINE_SCHEMA,
    RULE_COLUMN,
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


def _fingerprint(part_dir: Path, ledger: dict) -> list[list]:
    """[name, size] per landing file; a withdrawn batch's file is left out and a failed batch's file
    is marked, so withdrawing, restoring or re-judging a batch makes its partitions pending again."""
    gone, failed = batches.ids_with(ledger, batches.WITHDRAWN), batches.ids_with(ledger, batches.FAILED)
    return [[f.name, f.stat().st_size] + (["failed"] if batches.batch_of(f) in failed else [])
            for f in sorted(part_dir.glob("batch-*.parquet")) if batches.batch_of(f) not in gone]


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


def _examples(df: pd.DataFrame, mask: np.ndarray, n: int = 3) -> list[dict]:
    """A few rows, with the raw text of what the importer could not parse (``_unparseable``)."""
    cols = [C.USER_ID, C.ITEM_ID, C.EVENT_TYPE, C.EVENT_TIME, C.QUANTITY, C.PRICE, UNPARSEABLE, "_source_file"]
    rows = df.loc[mask, cols].head(n).copy()
    rows[C.EVENT_TIME] = rows[C.EVENT_TIME].astype(str)
    return [{k: (None if pd.isna(v) else (v[:80] + "..." if isinstance(v, str) and len(v) > 80 else v))
             for k, v in r.items() if not (k == UNPARSEABLE and pd.isna(v))} for r in rows.to_dict("records")]


# ------------------------------------------------------------------ reading and judging
def _read_pending(pending: list[Path], gone: set[str], out: Outcome) -> pd.DataFrame:
    """The rows of the pending partitions (withdrawn batches left out, with a warning), with their
    landing file, partition and batch; an empty frame when no file is left."""
    tables, cols, left_out = [], {"_source_file": [], "_partition": [], "_batch": []}, {}
    for d in pending:
        for f in sorted(d.glob("batch-*.parquet")):
            b = batches.batch_of(f)
            if b in gone:
                left_out.setdefault(b, []).append(d.name.split("=", 1)[1])
                continue
            t = read_event_file(f)
            tables.append(t)
            for k, v in (("_source_file", f"{d.name}/{f.name}"), ("_partition", d.name.split("=", 1)[1]), ("_batch", b)):
                cols[k].append(np.full(t.num_rows, v, dtype=object))
    out.warnings += [f"batch {b} is withdrawn: left out of {len(dates)} partition(s) ({', '.join(dates[:5])}); "
                     f"`recsys restore {b}` brings it back" for b, dates in left_out.items()]
    if not tables:
        df = EVENT_SCHEMA.empty_table().to_pandas()
        return df.assign(**{k: pd.Series([], dtype=object) for k in cols})
    combined = pa.concat_tables(tables)
    tables.clear()
    # Arrow buffers are released column by column as pandas takes them over (no second copy).
    df = combined.to_pandas(split_blocks=True, self_destruct=True)
    del combined
    for k, v in cols.items():
        df[k] = np.concatenate(v)
    return df


def _judge(cfg: Config, df: pd.DataFrame, masks: dict, errors: np.ndarray, ledger: dict) -> dict[str, dict]:
    """The verdict on each batch not judged before: ``failed`` when more than
    ``max_quarantine_share`` of its rows read by this run break a data rule, else ``validated``."""
    before = batches.ids_with(ledger, batches.VALIDATED) | batches.ids_with(ledger, batches.FAILED)
    limit, exempt = cfg.validation.max_quarantine_share, set(cfg.validation.quarantine_share_exempt_rules)
    verdicts: dict[str, dict] = {}
    if not len(df):
        return verdicts
    per_batch = pd.DataFrame({"b": df["_batch"].to_numpy(), "e": errors}).groupby("b")["e"].agg(["size", "sum"])
    for b, (n, e) in per_batch.iterrows():
        if b in before:
            continue
        n, e = int(n), int(e)
        if e / n <= limit:
            verdicts[b] = {"status": batches.VALIDATED, "rows": n, "errors": e}
            continue
        mine = (df["_batch"] == b).to_numpy()
        files = sorted(set(df.loc[mine & errors, "_source_file"]))
        detail = "; ".join(
            f"{r} (column {RULE_COLUMN[r]}): {int((m & mine).sum())} rows, e.g. {_examples(df, m & mine)}"
            for r, m in masks.items() if (m & mine).any() and r not in exempt and r != BATCH_FAILED)
        msg = (f"rule quarantine_share: {e} of {n} rows ({e / n:.1%}) of batch {b} break a data rule, above the limit "
               f"of {limit:.0%} (config max_quarantine_share) in {len(files)} file(s) under "
               f"{layout(cfg).landing_events}: {files[:5]}; by rule: {detail}. Batch {b} is now marked failed: this "
               f"run fails, later runs quarantine its rows (rule batch_failed) with a warning and go on; run "
               f"`recsys withdraw {b} --reason TEXT` to exclude this batch, or fix the file and re-import it")
        verdicts[b] = {"status": batches.FAILED, "rows": n, "errors": e, "message": msg}
    return verdicts


def _failed_batch_warnings(df: pd.DataFrame, failed_rows: np.ndarray, ledger: dict) -> list[str]:
    out = []
    for b, n in pd.Series(df.loc[failed_rows, "_batch"]).value_counts().sort_index().items():
        j = ledger["batches"][b].get("judged", {})
        out.append(f"batch {b} failed its quarantine-share judgement on ds={j.get('ds')} (run {j.get('run_id')}): its "
                   f"{n} rows read by this run are quarantined (rule batch_failed); run `recsys withdraw {b} --reason "
                   f"TEXT` to exclude this batch, or fix the file and re-import it")
    return out


def validate_events(cfg: Config, ds: str, run_id: str, runner: ExpectationRunner,
                    known_items: pd.Index) -> tuple[Outcome, dict]:
    ledger = batches.read_ledger(cfg)
    gone = batches.ids_with(ledger, batches.WITHDRAWN)
    dirs = _partition_dirs(cfg, ds)
    pending = [d for d in dirs if _is_pending(cfg, d, ledger)]
    log.info("validate ds=%s: %d landing partitions up to ds, %d pending validation", ds, len(dirs), len(pending))
    out = Outcome("events", partitions=len(pending))
    df = _read_pending(pending, gone, out)
    _volume_and_freshness(cfg, ds, out, gone)
    if not pending:
        return out, {}
    v = cfg.validation
    failed_rows = df["_batch"].isin(batches.ids_with(ledger, batches.FAILED)).to_numpy(bool)
    masks = row_rule_masks(df, df["_partition"], ds, known_items, v.max_id_length, v.max_quantity,
                           max_price=v.max_price, earliest_event_date=v.earliest_event_date,
                           duplicate_scope=~failed_rows)
    masks[BATCH_FAILED] = failed_rows
    codes, names = encode_rules(masks)
    bad = codes != 0
    exempt_bits = sum(1 << names.index(r) for r in (*v.quarantine_share_exempt_rules, BATCH_FAILED) if r in names)
    errors = bad & ((codes & ~exempt_bits) != 0)
    out.rows_in, out.rows_quarantined = len(df), int(bad.sum())
    out.rows_valid = out.rows_in - out.rows_quarantined
    out.rule_counts = {r: int(m.sum()) for r, m in masks.items()}
    # The whole frame, not a copy of its event columns: the suite only reads the columns it names.
    out.expectations = runner.run("events", df) if len(df) else []
    out.warnings += _failed_batch_warnings(df, failed_rows, ledger)
    verdicts = _judge(cfg, df, masks, errors, ledger)
    out.errors += [j["message"] for j in verdicts.values() if j["status"] == batches.FAILED]
    counts: dict[str, dict] = {}
    if len(df):
        grouped = pd.DataFrame({"b": df["_batch"].to_numpy(), "p": df["_partition"].to_numpy(), "q": bad})
        for (b, p), g in grouped.groupby(["b", "p"])["q"]:
            counts.setdefault(b, {})[p] = [len(g), int(len(g) - g.sum()), int(g.sum())]
    return out, {"df": df, "bad": bad, "codes": codes, "names": names, "pending": pending, "verdicts": verdicts,
                 "counts": counts, "ledger": ledger}


def write_events(cfg: Config, ds: str, run_id: str, work: dict) -> pa.Table:
    df, bad, codes, names = work["df"], work["bad"], work["codes"], work["names"]
    rules = rule_names(codes[bad], names)
    valid = df[~bad]
    quarantined = df[bad].assign(rule=rules.to_numpy())
    q_tables = []
    for d in work["pending"]:
        date_ = d.name.split("=", 1)[1]
        in_part = (df["_partition"] == date_).to_numpy()
        v = valid[valid["_partition"] == date_]
        q = quarantined[quarantined["_partition"] == date_]
        assert in_part.sum() == len(v) + len(q), f"accounting broken for {date_}: {in_part.sum()} != {len(v)} + {len(q)}"
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
            "source_file": pa.array(q["_source_file"], pa.string()),
        }, schema=QUARANTINE_SCHEMA)
        storage.atomic_write_parquet(qt, qdir / "part.parquet")
        q_tables.append(qt)
        # The manifest goes last: a crash before it leaves the partition pending, never half-done.
        storage.write_json({"fingerprint": _fingerprint(d, work["ledger"]), "rows_in": int(in_part.sum()), "rows_valid": len(v),
                            "rows_quarantined": len(q), "run_id": run_id, "ds": ds}, layout(cfg).partition_manifest(date_))
    return pa.concat_tables(q_tables) if q_tables else QUARANTINE_SCHEMA.empty_table()
