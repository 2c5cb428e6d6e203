"""Validate step: a Great Expectations 1.x gate over the landed events, with row-level quarantine.

For the run of ``ds`` every landing partition ``event_date <= ds`` whose files changed since it was
last validated (normally just ``ds`` itself; on the first run, all imported history) is read once.
Each row is checked against the row rules below, vectorised; failing rows go to the quarantine zone
with the rule(s) they broke, valid rows to the validated zone. Nothing is dropped:
rows in = rows valid + rows quarantined, asserted per partition.

The same rules are declared as a Great Expectations suite (``build_suite``) and run through a
``Checkpoint`` over the batch; its results are stored next to the run's counts.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines import constants as C
from pipelines import storage
from pipelines.config import Config

log = logging.getLogger(__name__)

MAX_QUANTITY = 100_000
ROW_RULES = ("null_user_id", "null_item_id", "unknown_event_type", "null_event_time",
             "event_time_outside_partition", "quantity_out_of_range", "negative_price", "duplicate_event")
DUPLICATE_KEY = [C.USER_ID, C.ITEM_ID, C.EVENT_TYPE, C.EVENT_TIME, C.ORDER_ID]


class ValidationError(ValueError):
    """A batch-level failure: the message names the file, the column, the rule and example rows."""


@dataclass(frozen=True)
class PartitionResult:
    event_date: str
    rows_in: int
    rows_valid: int
    rows_quarantined: int


def _partition_dirs(cfg: Config, ds: str) -> list[Path]:
    root = cfg.landing / "events"
    if not root.exists():
        return []
    out = []
    for d in sorted(root.glob(f"{C.EVENT_DATE}=*")):
        date = d.name.split("=", 1)[1]
        if date == "unknown" or date <= ds:
            out.append(d)
    return out


def _fingerprint(part_dir: Path) -> list[list]:
    return [[f.name, f.stat().st_size] for f in sorted(part_dir.glob("batch-*.parquet"))]


def _manifest_path(cfg: Config, date: str) -> Path:
    return cfg.validated / "events" / f"{C.EVENT_DATE}={date}" / "_manifest.json"


def row_rule_masks(df: pd.DataFrame, partition_date: pd.Series) -> dict[str, np.ndarray]:
    """One boolean mask per row rule: True where the row breaks the rule. Vectorised."""
    def blank(col):
        s = df[col]
        return (s.isna() | (s.astype("string").str.strip() == "")).to_numpy(dtype=bool)

    etime = df[C.EVENT_TIME]
    qty = pd.to_numeric(df[C.QUANTITY], errors="coerce")
    price = pd.to_numeric(df[C.PRICE], errors="coerce")
    event_date = etime.dt.strftime("%Y-%m-%d")
    masks = {
        "null_user_id": blank(C.USER_ID),
        "null_item_id": blank(C.ITEM_ID),
        "unknown_event_type": (~df[C.EVENT_TYPE].isin(C.EVENT_TYPES)).to_numpy(dtype=bool),
        "null_event_time": etime.isna().to_numpy(dtype=bool),
        "event_time_outside_partition": (etime.notna() & (event_date != partition_date)).to_numpy(dtype=bool),
        "quantity_out_of_range": (qty.notna() & ((qty < 1) | (qty > MAX_QUANTITY))).to_numpy(dtype=bool),
        "negative_price": (price.notna() & (price < 0)).to_numpy(dtype=bool),
    }
    # Later copies of the same (user, item, type, time, order) are duplicates; the first one stays.
    masks["duplicate_event"] = df.duplicated(subset=DUPLICATE_KEY, keep="first").to_numpy(dtype=bool)
    return masks


def build_suite(name: str = "events"):
    """The Great Expectations suite that mirrors the row rules (used for the stored results)."""
    import great_expectations as gx

    E = gx.expectations
    suite = gx.ExpectationSuite(name=name)
    for col in C.REQUIRED_EVENT_COLUMNS:
        suite.add_expectation(E.ExpectColumnToExist(column=col))
    for col in (C.USER_ID, C.ITEM_ID, C.EVENT_TIME):
        suite.add_expectation(E.ExpectColumnValuesToNotBeNull(column=col))
    suite.add_expectation(E.ExpectColumnValuesToBeInSet(column=C.EVENT_TYPE, value_set=list(C.EVENT_TYPES)))
    suite.add_expectation(E.ExpectColumnValuesToBeBetween(column=C.QUANTITY, min_value=1, max_value=MAX_QUANTITY))
    suite.add_expectation(E.ExpectColumnValuesToBeBetween(column=C.PRICE, min_value=0))
    return suite


def run_expectations(df: pd.DataFrame) -> dict:
    """Run the suite through a GX Checkpoint on an in-memory batch; return a JSON-able summary."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    os.environ.setdefault("TQDM_DISABLE", "1")
    for name in ("great_expectations", "great_expectations.core", "great_expectations.data_context"):
        logging.getLogger(name).setLevel(logging.WARNING)
    import great_expectations as gx

    from great_expectations.data_context.types.base import ProgressBarsConfig

    ctx = gx.get_context(mode="ephemeral")
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    asset = ctx.data_sources.add_pandas("landing").add_dataframe_asset("events")
    batch = asset.add_batch_definition_whole_dataframe("run_batch")
    suite = ctx.suites.add(build_suite())
    vd = ctx.validation_definitions.add(gx.ValidationDefinition(data=batch, suite=suite, name="events_gate"))
    cp = ctx.checkpoints.add(gx.Checkpoint(name="events_checkpoint", validation_definitions=[vd],
                                           result_format={"result_format": "SUMMARY"}))
    result = cp.run(batch_parameters={"dataframe": df})
    rows = []
    for vr in result.run_results.values():
        for er in vr.results:
            cfg = er.expectation_config
            rows.append({"expectation": cfg.type, "column": cfg.kwargs.get("column"), "success": bool(er.success),
                         "unexpected_count": er.result.get("unexpected_count"),
                         "element_count": er.result.get("element_count")})
    return {"success": bool(result.success), "expectations": rows}


def _read_partitions(dirs: list[Path]) -> pd.DataFrame:
    frames = []
    for d in dirs:
        date = d.name.split("=", 1)[1]
        for f in sorted(d.glob("batch-*.parquet")):
            try:
                t = pq.read_table(f)
            except Exception as exc:  # truncated or not Parquet at all
                raise ValidationError(f"{f}: cannot be read as Parquet ({exc}); nothing was published") from exc
            missing = [c for c in C.REQUIRED_EVENT_COLUMNS if c not in t.column_names]
            if missing:
                raise ValidationError(f"{f}: required column(s) {missing} missing (rule: schema); "
                                      f"the file has {t.column_names}")
            df = t.to_pandas()
            for col in C.EVENT_COLUMNS:
                if col not in df:
                    df[col] = None
            df = df[list(C.EVENT_COLUMNS)]
            df["_partition"] = date
            df["_source_file"] = f.name
            frames.append(df)
    if not frames:
        return pd.DataFrame(columns=[*C.EVENT_COLUMNS, "_partition", "_source_file"])
    return pd.concat(frames, ignore_index=True)


def validate(cfg: Config, ds: str, run_id: str) -> dict:
    """Validate every pending landing partition up to ``ds``. Returns counts (small, XCom-safe)."""
    dirs = _partition_dirs(cfg, ds)
    pending = [d for d in dirs if not _manifest_path(cfg, d.name.split("=", 1)[1]).exists()
               or storage.read_json(_manifest_path(cfg, d.name.split("=", 1)[1])).get("fingerprint") != _fingerprint(d)]
    if not any(d.name == f"{C.EVENT_DATE}={ds}" for d in dirs):
        log.warning("no landing partition for ds=%s: the feed sent nothing for that day", ds)
    log.info("validate ds=%s: %d landing partitions up to ds, %d pending validation", ds, len(dirs), len(pending))
    df = _read_partitions(pending)
    rows_in = len(df)
    masks = row_rule_masks(df, df["_partition"]) if rows_in else {r: np.zeros(0, bool) for r in ROW_RULES}
    bad = np.zeros(rows_in, dtype=bool)
    for m in masks.values():
        bad |= m
    rule_counts = {r: int(m.sum()) for r, m in masks.items()}
    ge = run_expectations(df[list(C.EVENT_COLUMNS)]) if rows_in else {"success": True, "expectations": []}

    # Encode the broken rules of each row as a bit set, then name each distinct set once.
    names = list(masks)
    codes = np.zeros(rows_in, dtype=np.int64)
    for i, r in enumerate(names):
        codes |= masks[r].astype(np.int64) << i
    lookup = {c: ";".join(n for i, n in enumerate(names) if c >> i & 1) for c in np.unique(codes[bad]).tolist()}
    rules = pd.Series(codes[bad]).map(lookup).astype("string")
    valid = df[~bad]
    quarantined = df[bad].assign(rule=rules.to_numpy())
    results = []
    for d in pending:
        date = d.name.split("=", 1)[1]
        v = valid[valid["_partition"] == date].drop(columns=["_partition"])
        q = quarantined[quarantined["_partition"] == date].drop(columns=["_partition"])
        n_in = int((df["_partition"] == date).sum())
        assert n_in == len(v) + len(q), f"accounting broken for {date}: {n_in} != {len(v)} + {len(q)}"
        vdir = cfg.validated / "events" / f"{C.EVENT_DATE}={date}"
        qdir = cfg.quarantine / "events" / f"{C.EVENT_DATE}={date}"
        storage.atomic_write_parquet(pa.Table.from_pandas(v.drop(columns=["_source_file"]), preserve_index=False),
                                     vdir / "part.parquet")
        storage.atomic_write_parquet(pa.Table.from_pandas(q, preserve_index=False), qdir / "part.parquet")
        # The manifest goes last: a crash before it leaves the partition pending, never half-done.
        storage.write_json({"fingerprint": _fingerprint(d), "rows_in": n_in, "rows_valid": len(v),
                            "rows_quarantined": len(q), "run_id": run_id, "ds": ds}, _manifest_path(cfg, date))
        results.append(PartitionResult(date, n_in, len(v), len(q)))
    summary = {
        "ds": ds, "run_id": run_id, "partitions_validated": len(pending), "rows_in": rows_in,
        "rows_valid": int((~bad).sum()), "rows_quarantined": int(bad.sum()), "rule_counts": rule_counts,
        "great_expectations": ge,
    }
    storage.write_json(summary, cfg.home / "validation" / f"ds={ds}" / "summary.json")
    log.info("validate ds=%s: %d rows in, %d valid, %d quarantined %s", ds, rows_in, summary["rows_valid"],
             summary["rows_quarantined"], {k: v for k, v in rule_counts.items() if v})
    if rows_in:
        examples = quarantined.head(3)[[C.USER_ID, C.ITEM_ID, C.EVENT_TYPE, "rule"]].to_dict("records")
        if examples:
            log.info("example quarantined rows: %s", examples)
    return {k: v for k, v in summary.items() if k != "great_expectations"}
