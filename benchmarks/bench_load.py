"""Steps under a concurrent load (issue 14, problem 11): the rank, train and score steps alone, then
beside N CPU-bound processes (``python -c "while True: pass"``), each as its own ``recsys run --step``
process on a prepared data root. A step whose thread pools spin against the other processes
collapses; one sized to its CPUs slows down by about N + 1 at worst.

    .venv/bin/python benchmarks/bench_load.py                       # demo data
    .venv/bin/python benchmarks/bench_load.py ../shared/data/online_retail.parquet
    .venv/bin/python benchmarks/bench_load.py --env OMP_WAIT_POLICY=ACTIVE   # compare a setting

Prints a table: seconds alone, seconds under load, the ratio and the (N + 1) target.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent
ONLINE_RETAIL_DS = "2011-12-09"


def recsys(home: Path, env: dict, *args: str) -> float:
    """Run one ``recsys`` command; its wall seconds (fails loudly)."""
    t0 = time.perf_counter()
    subprocess.run([str(BIN / "recsys"), "--home", str(home), "-q", *args], check=True, env=env,
                   stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def prepare(home: Path, env: dict, data: str | None, ds: str, users: int, items: int, days: int) -> None:
    """A data root with one whole night at ``ds`` (every input of the timed steps)."""
    if (home / "warehouse").exists():
        return
    if data:
        recsys(home, env, "import-online-retail", data)
    else:
        recsys(home, env, "demo-data", "--end-date", ds, "--users", str(users), "--items", str(items),
               "--days", str(days))
    print(f"prepared {home} with one night at {ds} in {recsys(home, env, 'run', '--ds', ds):.0f}s", flush=True)


def timed(home: Path, env: dict, ds: str, step: str, busy: int) -> float:
    """Seconds of one step with ``busy`` CPU-bound processes running beside it."""
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(busy)]
    try:
        return recsys(home, env, "run", "--ds", ds, "--step", step)
    finally:
        for p in hogs:
            p.kill()
            p.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", nargs="?", help="Online Retail file (xlsx, csv or parquet); default: demo data")
    ap.add_argument("--ds", help=f"the night to time (default: the demo's end date, or {ONLINE_RETAIL_DS})")
    ap.add_argument("--users", type=int, default=2000)
    ap.add_argument("--items", type=int, default=600)
    ap.add_argument("--days", type=int, default=60)
    ap.add_argument("--busy", type=int, default=2, help="CPU-bound processes beside the step")
    ap.add_argument("--steps", default="rank,train,score")
    ap.add_argument("--home", type=Path, help="data root to reuse (prepared on first use)")
    ap.add_argument("--env", action="append", default=[], help="KEY=VALUE for the timed processes")
    args = ap.parse_args()
    ds = args.ds or (ONLINE_RETAIL_DS if args.data else "2024-06-30")
    home = args.home or Path(tempfile.mkdtemp(prefix="bench-load-")) / "var"
    env = {**os.environ, "RECSYS_SEARCH_BUDGET_SECONDS": "0",
           **dict(kv.split("=", 1) for kv in args.env)}
    prepare(home, env, args.data, ds, args.users, args.items, args.days)
    print(f"CPUs available: {len(os.sched_getaffinity(0))}; extra env: {args.env or 'none'}", flush=True)
    rows = []
    for step in args.steps.split(","):
        alone = timed(home, env, ds, step, 0)
        loaded = timed(home, env, ds, step, args.busy)
        rows.append((step, alone, loaded))
        print(f"  {step}: {alone:.1f}s alone, {loaded:.1f}s beside {args.busy} busy processes", flush=True)
    print(f"\n| step | alone (s) | beside {args.busy} busy (s) | ratio | target |")
    print("|---|---:|---:|---:|---:|")
    for step, alone, loaded in rows:
        print(f"| {step} | {alone:.1f} | {loaded:.1f} | {loaded / alone:.2f} | <= {args.busy + 1} |")


if __name__ == "__main__":
    main()
