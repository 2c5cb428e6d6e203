"""Events through the validation gate: every landing partition ``event_date <= ds`` whose files
changed since it was last validated (normally just ``ds``; on the first run, all imported history).

``validate_events`` reads the pending partitions once, applies the row rules, runs the events suite
and checks the batch rules (quarantine share, volume, freshness); ``write_events`` then writes each
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
from pipelines.validation.expectations import ExpectationRunner
from pipelines.validation.outcome import Outcome
from pipelines.validation.rules import (
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


# ------------------------------------------------------------------ places of one event partition
# ------------------------------------------------------------------ pending partitions
def _partition_dirs(cfg: Config, ds: str) -> list[Path]:
    root = layout(cfg).landing_events
    if not root.exists():
        return []
    return [d for d in sorted(root.glob(f"{C.EVENT_DATE}=*"))
            if d.name.split("=", 1)[1] == "unknown" or d.name.split("=", 1)[1] <= ds]


def _fingerprint(part_dir: Path) -> list[list]:
    return [[f.name, f.stat().st_size] for f in sorted(part_dir.glob("batch-*.parquet"))]


def _is_pending(cfg: Config, part_dir: Path) -> bool:
    """New, or its landing files changed since the manifest of its last validation was written."""
    manifest = layout(cfg).partition_manifest(part_dir.name.split("=", 1)[1])
    return not manifest.exists() or storage.read_json(manifest).get("fingerprint") != _fingerprint(part_dir)


def _landing_rows(cfg: Config, date_: str) -> int | None:
    d = layout(cfg).landing_partition(date_)
    files = sorted(d.glob("batch-*.parquet")) if d.exists() else []
    if not files:
        return None
    try:
        return sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    except (OSError, pa.ArrowException):
        return None  # an unreadable file is reported by read_event_file, with its name


def _volume_and_freshness(cfg: Config, ds: str, out: Outcome) -> None:
    today = _landing_rows(cfg, ds)
    if not today:
        msg = (f"rule stale_feed: no events landed for ds={ds} under {layout(cfg).landing_partition(ds)}; "
               "the feed sent nothing new")
        (out.errors if cfg.validation.freshness_rule == "fail" else out.warnings).append(msg)
        return
    d0 = date.fromisoformat(ds)
    history = [_landing_rows(cfg, (d0 - timedelta(days=k)).isoformat()) for k in range(1, 8)]
    if any(h is None for h in history):
        return  # a new feed without seven days of history has no trailing median to compare against
    median = float(np.median(history))
    ratio = today / median if median else float("inf")
    if ratio < cfg.validation.volume_low_ratio or ratio > cfg.validation.volume_high_ratio:
        msg = (f"rule volume_anomaly: {today} events on {ds} against a trailing 7-day median of {median:.0f} "
               f"(ratio {ratio:.2f}, allowed {cfg.validation.volume_low_ratio}..{cfg.validation.volume_high_ratio}); daily counts {history[::-1]}")
        (out.errors if cfg.validation.volume_rule == "fail" else out.warnings).append(msg)


def _examples(df: pd.DataFrame, mask: np.ndarray, n: int = 3) -> list[dict]:
    cols = [C.USER_ID, C.ITEM_ID, C.EVENT_TYPE, C.EVENT_TIME, C.QUANTITY, C.PRICE, "_source_file"]
    rows = df.loc[mask, cols].head(n).copy()
    rows[C.EVENT_TIME] = rows[C.EVENT_TIME].astype(str)
    return [{k: (None if pd.isna(v) else (v[:80] + "..." if isinstance(v, str) and len(v) > 80 else v))
             for k, v in r.items()} for r in rows.to_dict("records")]


def validate_events(cfg: Config, ds: str, run_id: str, runner: ExpectationRunner,
                    known_items: pd.Index) -> tuple[Outcome, dict]:
    dirs = _partition_dirs(cfg, ds)
    pending = [d for d in dirs if _is_pending(cfg, d)]
    log.info("validate ds=%s: %d landing partitions up to ds, %d pending validation", ds, len(dirs), len(pending))
    out = Outcome("events", partitions=len(pending))
    tables, sources, parts = [], [], []
    for d in pending:
        for f in sorted(d.glob("batch-*.parquet")):
            t = read_event_file(f)
            tables.append(t)
            sources.append(np.full(t.num_rows, f"{d.name}/{f.name}", dtype=object))
            parts.append(np.full(t.num_rows, d.name.split("=", 1)[1], dtype=object))
    _volume_and_freshness(cfg, ds, out)
    if not tables:
        return out, {}
    combined = pa.concat_tables(tables)
    tables.clear()
    # Arrow buffers are released column by column as pandas takes them over (no second copy).
    df = combined.to_pandas(split_blocks=True, self_destruct=True)
    del combined
    df["_source_file"] = np.concatenate(sources)
    df["_partition"] = np.concatenate(parts)
    masks = row_rule_masks(df, df["_partition"], ds, known_items, cfg.validation.max_id_length, cfg.validation.max_quantity)
    codes, names = encode_rules(masks)
    bad = codes != 0
    exempt_bits = sum(1 << names.index(r) for r in cfg.validation.quarantine_share_exempt_rules if r in names)
    errors = bad & ((codes & ~exempt_bits) != 0)
    out.rows_in, out.rows_quarantined = len(df), int(bad.sum())
    out.rows_valid = out.rows_in - out.rows_quarantined
    out.rule_counts = {r: int(m.sum()) for r, m in masks.items()}
    # The whole frame, not a copy of its event columns: the suite only reads the columns it names.
    out.expectations = runner.run("events", df)
    share = errors.sum() / len(df)
    if share > cfg.validation.max_quarantine_share:
        files = sorted(set(df.loc[errors, "_source_file"]))
        detail = "; ".join(
            f"{r} (column {RULE_COLUMN[r]}): {int(masks[r].sum())} rows, e.g. {_examples(df, masks[r])}"
            for r in names if masks[r].any() and r not in cfg.validation.quarantine_share_exempt_rules)
        out.errors.append(
            f"rule quarantine_share: {int(errors.sum())} of {len(df)} rows ({share:.1%}) break a data rule, above the "
            f"limit of {cfg.validation.max_quarantine_share:.0%} (config max_quarantine_share) in {len(files)} file(s) under "
            f"{layout(cfg).landing_events}: {files[:5]}; by rule: {detail}")
    return out, {"df": df, "bad": bad, "codes": codes, "names": names, "pending": pending}


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
        storage.atomic_write_parquet(
            pa.Table.from_pandas(v[[c for c in EVENT_SCHEMA.names if c != UNPARSEABLE]], preserve_index=False),
            vdir / "part.parquet")
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
        storage.write_json({"fingerprint": _fingerprint(d), "rows_in": int(in_part.sum()), "rows_valid": len(v),
                            "rows_quarantined": len(q), "run_id": run_id, "ds": ds}, layout(cfg).partition_manifest(date_))
    return pa.concat_tables(q_tables) if q_tables else QUARANTINE_SCHEMA.empty_table()
