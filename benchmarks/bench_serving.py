"""Serving latency of `recsys cart-recs` and `recsys rerank` on the Online Retail run.

Usage: python benchmarks/bench_serving.py [ONLINE_RETAIL_FILE] [--home DATA_ROOT]

Without --home (or with a data root that has no warehouse yet) it imports the file and runs the
pipeline for ds 2011-11-08 into a temporary data root first. Prints, for each command, the wall
time of the whole command as a user runs it (Python start-up included) and of the in-process call,
median and max over repeated runs.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pipelines.artifacts import layout

REPO = Path(__file__).resolve().parent.parent
DEFAULT = REPO.parent / "shared" / "data" / "online_retail.parquet"
DS = "2011-11-08"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("path", nargs="?", default=str(DEFAULT))
    ap.add_argument("--home")
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()
    sys.path.insert(0, str(REPO))
    from pipelines.cli import main as cli
    from pipelines.config import load_config
    from pipelines.services.serving import cart_recs, rerank

    home = Path(args.home) if args.home else Path(tempfile.mkdtemp(prefix="bench-serving-")) / "var"
    cfg = load_config(environ={}, home=home)
    if not layout(cfg).duckdb_path.exists():
        print(f"importing {args.path} and running ds {DS} into {home} ...", flush=True)
        assert cli(["--home", str(home), "-q", "import-online-retail", args.path]) == 0
        assert cli(["--home", str(home), "-q", "run", "--ds", DS]) == 0
    import duckdb

    con = duckdb.connect(str(layout(cfg).duckdb_path), read_only=True)
    cart = [r[0] for r in con.execute("SELECT item_id FROM latest_cart_cross_sell GROUP BY item_id "
                                      "ORDER BY count(*) DESC LIMIT 3").fetchall()]
    user = con.execute("SELECT user_id FROM latest_user_recommendations GROUP BY user_id "
                       "ORDER BY user_id LIMIT 1").fetchall()[0][0]
    results = [r[0] for r in con.execute("SELECT item_id FROM latest_best_sellers WHERE country = 'ALL' "
                                         "ORDER BY rank LIMIT 30").fetchall()]
    con.close()
    exe = str(Path(sys.executable).parent / "recsys")
    cases = {
        f"recsys cart-recs ({len(cart)} items)": ([exe, "--home", str(home), "-q", "cart-recs", *cart],
                                                  lambda: cart_recs(cfg, cart)),
        f"recsys rerank ({len(results)} results)": ([exe, "--home", str(home), "-q", "rerank", user, *results],
                                                    lambda: rerank(cfg, user, results)),
    }
    print(f"{'command':<34} {'CLI median':>11} {'CLI max':>9} {'in-process median':>18}")
    for name, (argv, call) in cases.items():
        cli_times, fn_times = [], []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            subprocess.run(argv, check=True, capture_output=True)
            cli_times.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            call()
            fn_times.append(time.perf_counter() - t0)
        print(f"{name:<34} {statistics.median(cli_times):>10.3f}s {max(cli_times):>8.3f}s "
              f"{statistics.median(fn_times) * 1000:>16.1f}ms", flush=True)


if __name__ == "__main__":
    main()
