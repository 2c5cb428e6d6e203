"""Validation throughput: one million landed events through the whole gate (read, row rules,
quarantine split, Great Expectations suite with Data Docs, writes, DuckDB accounting).

    .venv/bin/python benchmarks/bench_validate.py [--rows 1000000] [--dirty 0.02]

Prints seconds and rows per second for the validate step, and, for scale, a plain Great
Expectations run of the events suite over the same frame in memory.
"""
from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from pipelines.config import load_config
from pipelines.services.importers import land_frames
from pipelines.validation.expectations import run_expectations
from pipelines.validation.gate import validate


def make_events(n: int, dirty: float, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    ds = np.datetime64("2024-06-21T00:00:00", "s")
    df = pd.DataFrame({
        "user_id": np.char.add("u", rng.integers(0, 200_000, n).astype(str)),
        "item_id": np.char.add("i", rng.zipf(1.3, n).clip(max=50_000).astype(str)),
        "event_type": rng.choice(["view", "add_to_cart", "purchase", "return"], n, p=[0.7, 0.15, 0.13, 0.02]),
        "event_time": pd.to_datetime(ds + rng.integers(0, 86_400, n).astype("timedelta64[s]")).tz_localize("UTC"),
        "quantity": rng.integers(1, 4, n),
        "price": np.round(rng.lognormal(2, 0.7, n), 2),
        "order_id": np.char.add("o", rng.integers(0, 300_000, n).astype(str)),
        "session_id": None,
    })
    bad = rng.random(n) < dirty
    kind = rng.integers(0, 3, n)
    df.loc[bad & (kind == 0), "price"] = -1.0
    df.loc[bad & (kind == 1), "event_type"] = "click"
    df.loc[bad & (kind == 2), "user_id"] = None
    return df


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--dirty", type=float, default=0.02)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    events = make_events(args.rows, args.dirty)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(environ={}, home=Path(tmp) / "var")
        land_frames(cfg, "bench", events, None, None)
        validate(load_config(environ={}, home=Path(tmp) / "warmup"), "2024-06-21", "warmup")  # imports, GX start-up
        t0 = time.perf_counter()
        out = validate(cfg, "2024-06-21", "bench")
        gate = time.perf_counter() - t0
        t0 = time.perf_counter()
        run_expectations(events)
        plain = time.perf_counter() - t0
    print(f"rows validated:            {out['rows_in']:>12,}")
    print(f"rows quarantined:          {out['rows_quarantined']:>12,}  { {k: v for k, v in out['rule_counts'].items() if v} }")
    print(f"validate step (full gate): {gate:>12.2f} s   {out['rows_in'] / gate:>12,.0f} rows/s")
    print(f"plain GX suite in memory:  {plain:>12.2f} s   {out['rows_in'] / plain:>12,.0f} rows/s")


if __name__ == "__main__":
    main()
