"""Homepage banner campaigns: ``recsys import-campaigns FILE`` and the campaigns a night uses.

A campaigns file (CSV or Parquet) has one row per banner: ``banner_id``, ``start_date`` and
``end_date`` (YYYY-MM-DD, both days included), and optionally ``target_categories``,
``target_brands`` and ``countries`` (lists, or text separated by ``;``; empty = any: a campaign
without targets is a general one, one without countries runs everywhere). A bad file is refused
whole, naming the file, the column, the rule and example rows (blank or duplicate banner ids,
unparseable or missing dates, an end before the start), and nothing is written. A good one lands
like a catalog update: an immutable batch ``landing/campaigns/batch-<UTC time>-<digest>.parquet``
(written to a temporary name and renamed); importing the same file again is a no-op. Later
batches win per ``banner_id``; the publish step uses the campaigns active on ``ds``
(pipelines/ranking/homepage.py). Values are matched trimmed and lower-case, as the context values.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.artifacts import layout
from pipelines.config import Config
from pipelines.infra import storage
from pipelines.infra.parsing import id_text, parse_dates
from pipelines.services.reading import ImportError_, existing_file, read_any, refuse_bad

log = logging.getLogger(__name__)

CAMPAIGNS = "campaigns"  # the landing dataset
LIST_COLUMNS = ("target_categories", "target_brands", "countries")
REQUIRED = ("banner_id", "start_date", "end_date")
SCHEMA = pa.schema([("banner_id", pa.string()), ("target_categories", pa.list_(pa.string())),
                    ("target_brands", pa.list_(pa.string())), ("start_date", pa.date32()),
                    ("end_date", pa.date32()), ("countries", pa.list_(pa.string()))])


@dataclass(frozen=True)
class CampaignImport:
    batch_id: str
    banners: int
    skipped: bool = False

    def summary(self) -> str:
        if self.skipped:
            return f"batch {self.batch_id} was imported before; nothing written"
        return f"batch {self.batch_id}: {self.banners} campaigns landed"


def split_list(values: pd.Series) -> list[list[str]]:
    """Per cell: a list (Parquet) or ``;``-separated text -> the distinct values, trimmed and
    lower-case, in the order given (empty cell: [])."""
    out = []
    for v in values.tolist():
        parts = list(v) if isinstance(v, (list, tuple, np.ndarray)) else \
            ([] if v is None or (isinstance(v, float) and np.isnan(v)) or v is pd.NA else str(v).split(";"))
        parts = [str(p).strip().lower() for p in parts if p is not None and str(p).strip()]
        out.append(list(dict.fromkeys(parts)))
    return out


def _dates(path: Path, df: pd.DataFrame, col: str) -> pd.Series:
    raw = df[col]
    when, bad = parse_dates(raw)
    refuse_bad(path, col, "invalid_date (YYYY-MM-DD)", raw, bad)
    refuse_bad(path, col, "missing_date", raw, when.isna())
    return when.dt.date


def parse_campaigns(path: Path, df: pd.DataFrame) -> pa.Table:
    """The campaigns of one file as SCHEMA, or ImportError_ naming file, column, rule and rows."""
    missing = [c for c in REQUIRED if c not in df]
    if missing:
        raise ImportError_(f"{path}: rule missing_column: column(s) {missing} are required; the file has "
                           f"{list(df.columns)}; nothing written")
    unknown = [c for c in df.columns if c not in REQUIRED + LIST_COLUMNS]
    if unknown:
        raise ImportError_(f"{path}: unknown column(s) {unknown}; known: {list(REQUIRED + LIST_COLUMNS)}; "
                           "nothing written")
    if df.empty:
        raise ImportError_(f"{path}: the file has a header ({list(df.columns)}) but no rows; nothing written")
    df = df.reset_index(drop=True)
    ids = id_text(df["banner_id"])
    refuse_bad(path, "banner_id", "blank_banner_id", df["banner_id"], ids.isna() | ids.eq(""))
    refuse_bad(path, "banner_id", "duplicate_banner_id", df["banner_id"], ids.duplicated(keep=False))
    start, end = _dates(path, df, "start_date"), _dates(path, df, "end_date")
    refuse_bad(path, "end_date", f"end_before_start (start_date {start[end < start].head(5).astype(str).tolist()})",
               df["end_date"], end < start)
    cols = {"banner_id": ids.tolist(), "start_date": start.tolist(), "end_date": end.tolist()}
    for c in LIST_COLUMNS:
        cols[c] = split_list(df[c]) if c in df else [[] for _ in range(len(df))]
    return pa.table({f.name: pa.array(cols[f.name], f.type) for f in SCHEMA}, schema=SCHEMA)


def import_campaigns(cfg: Config, path: str | Path, encoding: str = "utf-8") -> CampaignImport:
    """Check a campaigns file and land it as one batch (module docstring)."""
    path = existing_file(path, "import-campaigns")
    table = parse_campaigns(path, read_any(path, encoding=encoding))
    batch_id = "campaigns-" + storage.file_digest(path)
    if storage.landing_batch_exists(layout(cfg).landing, CAMPAIGNS, batch_id):
        return CampaignImport(batch_id, 0, skipped=True)
    storage.write_landing_table(layout(cfg).landing, CAMPAIGNS, table, batch_id)
    log.info("import-campaigns: %d campaigns from %s (batch %s)", table.num_rows, path, batch_id)
    return CampaignImport(batch_id, table.num_rows)


def read_campaigns(cfg: Config) -> pd.DataFrame:
    """Every landed campaign, the latest batch's row per banner_id (SCHEMA's columns)."""
    files = storage.landing_files(layout(cfg).landing, CAMPAIGNS)
    if not files:
        return SCHEMA.empty_table().to_pandas()
    df = pd.concat([pq.read_table(f).to_pandas() for f in files], ignore_index=True)
    return df.drop_duplicates("banner_id", keep="last").sort_values("banner_id").reset_index(drop=True)


def active_campaigns(cfg: Config, ds: str) -> pd.DataFrame:
    """The campaigns running on ``ds`` (start_date <= ds <= end_date)."""
    df = read_campaigns(cfg)
    day = date.fromisoformat(ds)
    on = (pd.to_datetime(df["start_date"]).dt.date <= day) & (pd.to_datetime(df["end_date"]).dt.date >= day)
    return df[on.to_numpy(bool)].reset_index(drop=True)
