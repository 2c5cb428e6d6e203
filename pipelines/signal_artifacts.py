"""The hybrid ranker's extra feature files (issue 17), beside pipelines.artifacts (which holds the paths).

=======================================  ==========  =====================================================
file                                     written by  read by
=======================================  ==========  =====================================================
``features/ds=/reviews_daily.parquet``   features    rank (review count and sentiment at each cut-off)
``features/ds=/hours.parquet``           features    rank, only with ``ranker_context_features`` on
=======================================  ==========  =====================================================

features/context.py documents the columns.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.artifacts import ArtifactMissing, layout
from pipelines.config import Config

SIGNAL_FILES = ("reviews_daily", "hours")


@dataclass(frozen=True)
class RankerSignals:
    """reviews: item_idx, day, reviews, sentiment_sum (None: features older than issue 17, no
    reviews); hours: user_idx, item_idx, day, hour, events, purchases (None: context features off)."""
    reviews: pd.DataFrame | None = None
    hours: pd.DataFrame | None = None


def write_ranker_signals(cfg: Config, ds: str, tables: dict[str, pa.Table]) -> None:
    """Each table of SIGNAL_FILES into the features of ds, written whole and renamed into place
    (after write_features swapped the folder in)."""
    d = layout(cfg).features_dir(ds)
    for name, table in tables.items():
        if name not in SIGNAL_FILES:
            raise ValueError(f"unknown ranker signal {name!r}; known: {SIGNAL_FILES}")
        tmp = d / f".{name}.tmp.parquet"
        pq.write_table(table, tmp)
        os.replace(tmp, d / f"{name}.parquet")


def read_ranker_signals(cfg: Config, ds: str) -> RankerSignals:
    """The signals of ds for the rank step. Reviews: None when the features predate them (no
    sentiment: the ranker's review columns are 0). Hours: read only with ``ranker_context_features``
    on, and then required (features built with the setting off lack them: run the features step again)."""
    d = layout(cfg).features_dir(ds)
    reviews = pd.read_parquet(d / "reviews_daily.parquet") if (d / "reviews_daily.parquet").exists() else None
    hours = None
    if cfg.hybrid.ranker_context_features:
        if not (d / "hours.parquet").exists():
            raise ArtifactMissing(f"ranker_context_features is on but the features of ds={ds} have no "
                                  f"{d / 'hours.parquet'}: run the features step again with the setting on")
        hours = pd.read_parquet(d / "hours.parquet")
    return RankerSignals(reviews, hours)
