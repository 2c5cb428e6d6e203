"""Validate step: the Great Expectations 1.x gate over everything landed, with row-level quarantine.

For the run of ``ds``:

* **catalog and users**: every landed batch not validated yet is checked (null or duplicate ids,
  negative prices); failing rows go to ``quarantine/<dataset>/``, valid rows to
  ``validated/<dataset>/`` (the features step reads the catalog from there).
* **events**: every landing partition ``event_date <= ds`` whose files changed since it was last
  validated (normally just ``ds``; on the first run, all imported history) is read once.

Two levels of rule (docs/validation.md):

* **row rules** (``ROW_RULES``), vectorised: a failing row goes to the quarantine zone and the
  ``quarantined_events`` table with every rule it broke; valid rows go on.
* **batch rules**: an unreadable file, a missing (or renamed) required column, a wrong column type,
  an empty file, a quarantine share above ``max_quarantine_share`` fail the task, and so do volume
  and freshness anomalies when configured to ("warn" by default). A failure names the file, the
  column, the rule, counts and example rows, writes nothing to the validated zone, and so leaves
  every published table as it was.

Accounting: rows in = rows valid + rows quarantined, asserted per partition and recorded in the
DuckDB table ``validation_runs`` (failed runs too). The rules also run as Great Expectations suites
(``ExpectationSuite`` -> ``ValidationDefinition`` -> ``Checkpoint``) whose results are rendered as
Data Docs under ``validation/ds=<ds>/data_docs/`` and attached to the run's MLflow run.
"""
from __future__ import annotations

import difflib
import logging
import os
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines import constants as C
from pipelines.artifacts import layout
from pipelines.config import Config, load_config
from pipelines.infra import storage

log = logging.getLogger(__name__)

UNPARSEABLE = "_unparseable"  # set by the importers: "column='raw value'" for values they could not parse
ROW_RULES = ("null_user_id", "null_item_id", "id_too_long", "unknown_event_type", "null_event_time",
             "event_time_outside_partition", "event_time_after_ds", "quantity_out_of_range",
             "negative_price", "unparseable_value", "unknown_item", "duplicate_event")
RULE_COLUMN = {
    "null_user_id": C.USER_ID, "null_item_id": C.ITEM_ID, "id_too_long": "user_id, item_id",
    "unknown_event_type": C.EVENT_TYPE, "null_event_time": C.EVENT_TIME,
    "event_time_outside_partition": C.EVENT_TIME, "event_time_after_ds": C.EVENT_TIME,
    "quantity_out_of_range": C.QUANTITY, "negative_price": C.PRICE, "unparseable_value": UNPARSEABLE,
    "unknown_item": C.ITEM_ID, "duplicate_event": "user_id, item_id, event_type, event_time, order_id",
}
DUPLICATE_KEY = [C.USER_ID, C.ITEM_ID, C.EVENT_TYPE, C.EVENT_TIME, C.ORDER_ID]
STRING_COLUMNS = (C.USER_ID, C.ITEM_ID, C.EVENT_TYPE, C.ORDER_ID, C.SESSION_ID)
EVENT_SCHEMA = pa.schema([
    (C.USER_ID, pa.string()), (C.ITEM_ID, pa.string()), (C.EVENT_TYPE, pa.string()),
    (C.EVENT_TIME, pa.timestamp("us", tz="UTC")), (C.QUANTITY, pa.int64()), (C.PRICE, pa.float64()),
    (C.ORDER_ID, pa.string()), (C.SESSION_ID, pa.string()), (UNPARSEABLE, pa.string()),
])
QUARANTINE_SCHEMA = pa.schema([
    ("ds", pa.date32()), ("run_id", pa.string()), ("event_date", pa.string()), ("rule", pa.string()),
    *[f for f in EVENT_SCHEMA if f.name != UNPARSEABLE], ("unparseable", pa.string()), ("source_file", pa.string()),
])


class ValidationError(ValueError):
    """A batch-level failure: the message names the file, the column, the rule, counts and example rows."""


@dataclass
class Outcome:
    dataset: str
    rows_in: int = 0
    rows_valid: int = 0
    rows_quarantined: int = 0
    partitions: int = 0
    rule_counts: dict = field(default_factory=dict)
    errors: list = field(default_factory=list)
    warnings: list = field(default_factory=list)
    expectations: list = field(default_factory=list)

    @property
    def success(self) -> bool:
        return not self.errors


# ------------------------------------------------------------------ type and schema rules
def _type_ok(column: str, t: pa.DataType) -> bool:
    if pa.types.is_null(t):
        return column not in C.REQUIRED_EVENT_COLUMNS
    if column in STRING_COLUMNS or column == UNPARSEABLE:
        return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)
    if column == C.EVENT_TIME:
        return pa.types.is_timestamp(t)
    if column == C.QUANTITY:
        return pa.types.is_integer(t)
    if column == C.PRICE:
        return pa.types.is_floating(t) or pa.types.is_integer(t)
    return True


def read_event_file(path: Path) -> pa.Table:
    """Read one landing file and check its schema; raise ValidationError naming file, column and rule."""
    try:
        table = pq.read_table(path)
    except Exception as exc:  # truncated, corrupt or not Parquet at all
        raise ValidationError(f"{path}: rule unreadable_file: cannot be read as Parquet ({exc})") from exc
    names = table.column_names
    missing = [c for c in C.REQUIRED_EVENT_COLUMNS if c not in names]
    if missing:
        hints = []
        for c in missing:
            close = difflib.get_close_matches(c, [n for n in names if n not in C.EVENT_COLUMNS], n=1, cutoff=0.5)
            hints.append(f"{c!r}" + (f" (renamed to {close[0]!r}?)" if close else ""))
        raise ValidationError(f"{path}: rule missing_column: required column(s) {', '.join(hints)} missing; "
                              f"the file has columns {names}")
    wrong = [f"{c!r} is {table.schema.field(c).type}" for c in names
             if c in EVENT_SCHEMA.names and not _type_ok(c, table.schema.field(c).type)]
    if wrong:
        examples = table.slice(0, 3).to_pylist()
        raise ValidationError(f"{path}: rule wrong_type: column {', '.join(wrong)}; expected "
                              + ", ".join(f"{c} {EVENT_SCHEMA.field(c).type}" for c in names if c in EVENT_SCHEMA.names)
                              + f"; first rows: {examples}")
    if table.num_rows == 0:
        raise ValidationError(f"{path}: rule empty_file: the file has its header (columns {names}) but no rows")
    cols = {}
    for f in EVENT_SCHEMA:
        if f.name in names:
            cols[f.name] = table.column(f.name).cast(f.type)
        else:
            cols[f.name] = pa.nulls(table.num_rows, f.type)
    return pa.table(cols, schema=EVENT_SCHEMA)


# ------------------------------------------------------------------ row rules
def row_rule_masks(df: pd.DataFrame, partition_date: pd.Series, ds: str | None = None,
                   catalog_ids: pd.Index | None = None, max_id_length: int = 256,
                   max_quantity: int = 100_000) -> dict[str, np.ndarray]:
    """One boolean mask per row rule: True where the row breaks the rule. Vectorised."""
    def text(col):
        return df[col].astype("string")

    def blank(col):
        s = text(col)
        return (s.isna() | (s.str.strip() == "")).to_numpy(dtype=bool)

    etime = pd.to_datetime(df[C.EVENT_TIME], utc=True)
    day = etime.dt.tz_localize(None).to_numpy().astype("datetime64[D]")
    pday = pd.to_datetime(partition_date.where(partition_date != "unknown"), errors="coerce").to_numpy().astype("datetime64[D]")
    qty = pd.to_numeric(df[C.QUANTITY], errors="coerce")
    price = pd.to_numeric(df[C.PRICE], errors="coerce")
    lengths = np.maximum(text(C.USER_ID).str.len().fillna(0).to_numpy(), text(C.ITEM_ID).str.len().fillna(0).to_numpy())
    has_time = ~np.isnat(day)
    masks = {
        "null_user_id": blank(C.USER_ID),
        "null_item_id": blank(C.ITEM_ID),
        "id_too_long": lengths > max_id_length,
        "unknown_event_type": (~df[C.EVENT_TYPE].isin(C.EVENT_TYPES)).to_numpy(dtype=bool),
        "null_event_time": ~has_time,
        "event_time_outside_partition": has_time & (day != pday),
        "event_time_after_ds": has_time & (day > np.datetime64(ds, "D")) if ds else np.zeros(len(df), bool),
        "quantity_out_of_range": (qty.notna() & ((qty < 1) | (qty > max_quantity))).to_numpy(dtype=bool),
        "negative_price": (price.notna() & (price < 0)).to_numpy(dtype=bool),
        "unparseable_value": (text(UNPARSEABLE).fillna("") != "").to_numpy(dtype=bool) if UNPARSEABLE in df
        else np.zeros(len(df), bool),
        "unknown_item": (~df[C.ITEM_ID].isin(catalog_ids)).to_numpy(dtype=bool) & ~blank(C.ITEM_ID)
        if catalog_ids is not None and len(catalog_ids) else np.zeros(len(df), bool),
    }
    # Later copies of the same (user, item, type, time, order) are duplicates; the first one stays.
    masks["duplicate_event"] = df.duplicated(subset=DUPLICATE_KEY, keep="first").to_numpy(dtype=bool)
    return masks


def encode_rules(masks: dict[str, np.ndarray]) -> tuple[np.ndarray, list[str]]:
    """Bit set of broken rules per row (bit i = i-th rule of ``masks``)."""
    names = list(masks)
    n = len(next(iter(masks.values()))) if masks else 0
    codes = np.zeros(n, dtype=np.int64)
    for i, r in enumerate(names):
        codes |= masks[r].astype(np.int64) << i
    return codes, names


def rule_names(codes: np.ndarray, names: list[str]) -> pd.Series:
    """';'-joined rule names per code; each distinct code is spelled out once."""
    lookup = {c: ";".join(n for i, n in enumerate(names) if c >> i & 1) for c in np.unique(codes).tolist()}
    return pd.Series(codes).map(lookup).astype("string")


# ------------------------------------------------------------------ Great Expectations
class ExpectationRunner:
    """One ephemeral GX context per validate run, its suites, and Data Docs on local disk."""

    def __init__(self, docs_dir: Path, run_name: str, ds: str, cfg: Config) -> None:
        os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
        for name in ("great_expectations",):
            logging.getLogger(name).setLevel(logging.WARNING)
        import great_expectations as gx
        from great_expectations.core.run_identifier import RunIdentifier
        from great_expectations.data_context.types.base import ProgressBarsConfig

        self.gx, self.cfg, self.docs_dir = gx, cfg, docs_dir
        for name in [n for n in logging.root.manager.loggerDict if n.startswith("great_expectations")]:
            logging.getLogger(name).setLevel(logging.WARNING)
        self.ctx = gx.get_context(mode="ephemeral")
        self.ctx.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
        self.ctx.add_data_docs_site(site_name="recsys", site_config={
            "class_name": "SiteBuilder",
            "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(docs_dir)},
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"}})
        self.source = self.ctx.data_sources.add_pandas("recsys")
        # The run is named after the pipeline run and dated by ds, so pages do not depend on the clock.
        self.run_id = RunIdentifier(run_name=run_name, run_time=datetime.fromisoformat(ds).replace(tzinfo=timezone.utc))

    def suite(self, kind: str, name: str, columns: list[str]):
        """The suite for one kind of data: ``events``, ``items`` (catalog) or ``users``."""
        gx, E, cfg = self.gx, self.gx.expectations, self.cfg
        s = gx.ExpectationSuite(name=f"{name}_suite")
        if kind == "events":
            for col in C.REQUIRED_EVENT_COLUMNS:
                s.add_expectation(E.ExpectColumnToExist(column=col))
            for col in (C.USER_ID, C.ITEM_ID, C.EVENT_TIME):
                s.add_expectation(E.ExpectColumnValuesToNotBeNull(column=col))
            s.add_expectation(E.ExpectColumnValuesToBeInSet(column=C.EVENT_TYPE, value_set=list(C.EVENT_TYPES)))
            s.add_expectation(E.ExpectColumnValuesToBeBetween(column=C.QUANTITY, min_value=1, max_value=cfg.validation.max_quantity))
            s.add_expectation(E.ExpectColumnValuesToBeBetween(column=C.PRICE, min_value=0))
            for col in (C.USER_ID, C.ITEM_ID):
                s.add_expectation(E.ExpectColumnValueLengthsToBeBetween(column=col, max_value=cfg.validation.max_id_length))
        else:
            key = "item_id" if kind == "items" else "user_id"
            s.add_expectation(E.ExpectColumnToExist(column=key))
            s.add_expectation(E.ExpectColumnValuesToNotBeNull(column=key))
            s.add_expectation(E.ExpectColumnValuesToBeUnique(column=key))
            if "price" in columns:
                s.add_expectation(E.ExpectColumnValuesToBeBetween(column="price", min_value=0))
        return self.ctx.suites.add(s)

    def run(self, kind: str, df: pd.DataFrame, name: str | None = None) -> list[dict]:
        from great_expectations.checkpoint import UpdateDataDocsAction

        gx, name = self.gx, name or kind
        batch = self.source.add_dataframe_asset(name).add_batch_definition_whole_dataframe(f"{name}_batch")
        vd = self.ctx.validation_definitions.add(
            gx.ValidationDefinition(data=batch, suite=self.suite(kind, name, list(df.columns)), name=f"{name}_gate"))
        cp = self.ctx.checkpoints.add(gx.Checkpoint(
            name=f"{name}_checkpoint", validation_definitions=[vd],
            actions=[UpdateDataDocsAction(name="data_docs", site_names=["recsys"])],
            result_format={"result_format": "SUMMARY"}))
        result = cp.run(batch_parameters={"dataframe": df}, run_id=self.run_id)
        rows = []
        for vr in result.run_results.values():
            for er in vr.results:
                ec = er.expectation_config
                rows.append({"expectation": ec.type, "column": ec.kwargs.get("column"), "success": bool(er.success),
                             "unexpected_count": er.result.get("unexpected_count"),
                             "element_count": er.result.get("element_count")})
        return rows

    @property
    def index(self) -> Path:
        return self.docs_dir / "index.html"


def run_expectations(df: pd.DataFrame, cfg: Config | None = None, docs_dir: Path | None = None) -> dict:
    """Run the events suite over a frame (used by tests and the benchmark)."""
    import tempfile

    cfg = cfg or load_config(environ={})
    runner = ExpectationRunner(docs_dir or Path(tempfile.mkdtemp(prefix="gx-docs-")), "adhoc", "2000-01-01", cfg)
    rows = runner.run("events", df)
    return {"success": all(r["success"] for r in rows), "expectations": rows}


# ------------------------------------------------------------------ catalog and users
def validate_reference(cfg: Config, dataset: str, runner: ExpectationRunner) -> Outcome:
    """Validate catalog (items) or users batches that have not been validated yet."""
    key = "item_id" if dataset == "items" else "user_id"
    out = Outcome(dataset)
    for f in storage.landing_files(layout(cfg).landing, dataset):
        target = layout(cfg).validated / dataset / f.name
        if target.exists():
            continue
        try:
            df = pq.read_table(f).to_pandas()
        except Exception as exc:
            raise ValidationError(f"{f}: rule unreadable_file: cannot be read as Parquet ({exc})") from exc
        if key not in df:
            raise ValidationError(f"{f}: rule missing_column: required column {key!r} missing; "
                                  f"the file has columns {list(df.columns)}")
        ids = df[key].astype("string")
        masks = {f"null_{key}": (ids.isna() | (ids.str.strip() == "")).to_numpy(bool),
                 f"duplicate_{key}": ids.duplicated(keep="last").to_numpy(bool) & ids.notna().to_numpy(bool)}
        if "price" in df:
            p = pd.to_numeric(df["price"], errors="coerce")
            masks["negative_price"] = (p.notna() & (p < 0)).to_numpy(bool)
        codes, names = encode_rules(masks)
        bad = codes != 0
        out.expectations += runner.run(dataset, df, name=f"{dataset}_{f.stem}") if len(df) else []
        storage.atomic_write_parquet(pa.Table.from_pandas(df[~bad], preserve_index=False), target)
        if bad.any():
            q = df[bad].assign(rule=rule_names(codes[bad], names).to_numpy())
            storage.atomic_write_parquet(pa.Table.from_pandas(q, preserve_index=False),
                                         layout(cfg).quarantine / dataset / f.name)
        out.rows_in += len(df)
        out.rows_valid += int((~bad).sum())
        out.rows_quarantined += int(bad.sum())
        out.partitions += 1
        for r, m in masks.items():
            out.rule_counts[r] = out.rule_counts.get(r, 0) + int(m.sum())
    return out


def catalog_ids(cfg: Config) -> pd.Index:
    files = sorted((layout(cfg).validated / "items").glob("batch-*.parquet")) if (layout(cfg).validated / "items").exists() else []
    if not files:
        return pd.Index([], dtype="string")
    return pd.Index(pd.concat([pq.read_table(f, columns=["item_id"]).to_pandas()["item_id"] for f in files]).unique())


# ------------------------------------------------------------------ events
def _partition_dirs(cfg: Config, ds: str) -> list[Path]:
    root = layout(cfg).landing / "events"
    if not root.exists():
        return []
    return [d for d in sorted(root.glob(f"{C.EVENT_DATE}=*"))
            if d.name.split("=", 1)[1] == "unknown" or d.name.split("=", 1)[1] <= ds]


def _fingerprint(part_dir: Path) -> list[list]:
    return [[f.name, f.stat().st_size] for f in sorted(part_dir.glob("batch-*.parquet"))]


def _manifest_path(cfg: Config, date_: str) -> Path:
    return layout(cfg).validated / "events" / f"{C.EVENT_DATE}={date_}" / "_manifest.json"


def _is_pending(cfg: Config, part_dir: Path) -> bool:
    """New, or its landing files changed since the manifest of its last validation was written."""
    manifest = _manifest_path(cfg, part_dir.name.split("=", 1)[1])
    return not manifest.exists() or storage.read_json(manifest).get("fingerprint") != _fingerprint(part_dir)


def _landing_rows(cfg: Config, date_: str) -> int | None:
    d = layout(cfg).landing / "events" / f"{C.EVENT_DATE}={date_}"
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
        msg = (f"rule stale_feed: no events landed for ds={ds} under {layout(cfg).landing / 'events' / f'event_date={ds}'}; "
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
            f"{layout(cfg).landing / 'events'}: {files[:5]}; by rule: {detail}")
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
        vdir = layout(cfg).validated / "events" / f"{C.EVENT_DATE}={date_}"
        qdir = layout(cfg).quarantine / "events" / f"{C.EVENT_DATE}={date_}"
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
                            "rows_quarantined": len(q), "run_id": run_id, "ds": ds}, _manifest_path(cfg, date_))
    return pa.concat_tables(q_tables) if q_tables else QUARANTINE_SCHEMA.empty_table()


REPORT_CSS = ("body{font-family:sans-serif;margin:2em;color:#222}table{border-collapse:collapse;margin:1em 0}"
              "td,th{border:1px solid #ccc;padding:4px 10px;text-align:left}th{background:#f3f3f3}"
              ".ok{color:#17702f;font-weight:bold}.bad{color:#b00020;font-weight:bold}pre{white-space:pre-wrap;"
              "background:#fff4f4;padding:1em;border:1px solid #f0c0c0}.warn{background:#fffbe6}")


def render_report(summary: dict, docs_dir: Path, out: Path) -> Path:
    """A self-contained HTML page for one validation run (no external assets, every value escaped),
    linking to the Great Expectations Data Docs pages of the run."""
    from html import escape

    ok = summary["success"]
    rows = "".join(
        f"<tr><td>{escape(name)}</td><td>{d['rows_in']:,}</td><td>{d['rows_valid']:,}</td><td>{d['rows_quarantined']:,}</td>"
        f"<td>{escape(', '.join(f'{k}: {v:,}' for k, v in d['rule_counts'].items() if v)) or '-'}</td></tr>"
        for name, d in summary["datasets"].items())
    gx_rows = ""
    for name, results in summary["great_expectations"].items():
        for r in results:
            unexpected = "" if r["unexpected_count"] is None else f"{r['unexpected_count']:,}"
            verdict = "<td class='ok'>passed</td>" if r["success"] else "<td class='bad'>failed</td>"
            gx_rows += (f"<tr><td>{escape(name)}</td><td>{escape(r['expectation'])}</td>"
                        f"<td>{escape(str(r['column']))}</td>{verdict}<td>{unexpected}</td></tr>")
    pages = sorted(docs_dir.rglob("validations/**/*.html")) if docs_dir.exists() else []
    links = "".join(f"<li><a href='{escape(str(p.relative_to(out.parent)))}'>{escape(p.parts[-4])}</a></li>" for p in pages)
    warn = "".join(f"<li>{escape(w)}</li>" for w in summary.get("warnings") or [])
    err = f"<h2>Failure</h2><pre>{escape(summary.get('error') or '')}</pre>" if not ok else ""
    html = (f"<!doctype html><html><head><meta charset='utf-8'><title>Validation {escape(summary['ds'])}</title>"
            f"<style>{REPORT_CSS}</style></head><body><h1>Validation of ds={escape(summary['ds'])}</h1>"
            f"<p>Run <code>{escape(summary['run_id'])}</code>: <span class='{'ok' if ok else 'bad'}'>"
            f"{'passed' if ok else 'FAILED'}</span>; {summary['partitions_validated']} event partition(s) validated.</p>"
            f"{err}{f'<h2>Warnings</h2><ul class=warn>{warn}</ul>' if warn else ''}"
            f"<h2>Rows</h2><table><tr><th>dataset</th><th>rows in</th><th>valid</th><th>quarantined</th>"
            f"<th>quarantined by rule</th></tr>{rows}</table>"
            f"<h2>Great Expectations</h2><table><tr><th>suite</th><th>expectation</th><th>column</th><th>result</th>"
            f"<th>unexpected</th></tr>{gx_rows}</table>"
            f"<h2>Data Docs pages</h2><ul>{links}</ul><p><a href='data_docs/index.html'>Data Docs home</a></p>"
            f"</body></html>")
    return storage.atomic_write_text(html, out)


