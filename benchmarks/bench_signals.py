"""The wider signals on demo data (issue 17): the same demo night three times.

    .venv/bin/python benchmarks/bench_signals.py [--users 2000] [--items 400] [--days 90]

1. **signals used**: demo data with ratings, reviews, wishlists, dwell times and context
   (pipelines/dev/demo_signals.py), default configuration;
2. **signals ignored**: the same data, their weights off (wishlist and review weights 0, rating
   weight 0, no dislike exclusion, dwell factor 1);
3. **no signals**: the demo data without them (``recsys demo-data --no-signals``).

Prints each candidate's NDCG@10 on the night's holdout (purchases of the last 7 days), the champion,
and on the published lists: how many wishlisted-and-not-bought items reach the user's for_you list
and how many disliked items (latest rating 2 stars or fewer) do.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import duckdb
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from pipelines import constants as C  # noqa: E402
from pipelines.artifacts import layout  # noqa: E402
from pipelines.config import load_config  # noqa: E402
from pipelines.dev.demo_data import generate, import_demo  # noqa: E402
from pipelines.run import run_all  # noqa: E402

DS = "2026-11-27"
IGNORE = {"RECSYS_EVENT_WEIGHTS": "add_to_wishlist=0,review=0", "RECSYS_RATING_WEIGHT": "0",
          "RECSYS_DISLIKE_MAX_RATING": "0", "RECSYS_DWELL_MIN_FACTOR": "1", "RECSYS_DWELL_MAX_FACTOR": "1"}


def night(root: Path, signals: bool, environ: dict, args) -> dict:
    cfg = load_config(environ=environ, home=root / "var")
    import_demo(cfg, seed=args.seed, users=args.users, items=args.items, days=args.days, end_date=DS, signals=signals)
    t0 = time.perf_counter()
    run_all(cfg, DS, "bench-signals")
    seconds = time.perf_counter() - t0
    summary = json.loads((layout(cfg).home / "eval" / f"ds={DS}" / "summary.json").read_text())
    con = duckdb.connect(str(layout(cfg).duckdb_path), read_only=True)
    recs = con.execute("SELECT user_id, item_id, surface, rank FROM latest_user_recommendations").df()
    con.close()
    ndcg = {m: v["ndcg_at_10"] for m, v in summary["metrics"].items()}
    return {"ndcg": ndcg, "champion": summary["best_model"], "seconds": seconds, "recs": recs}


def reach(recs: pd.DataFrame, pairs: set) -> int:
    fy = recs[recs["surface"] == "for_you"]
    return len(set(zip(fy["user_id"], fy["item_id"])) & pairs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=2000)
    ap.add_argument("--items", type=int, default=400)
    ap.add_argument("--days", type=int, default=90)
    ap.add_argument("--seed", type=int, default=42)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    ev = generate(seed=args.seed, users=args.users, items=args.items, days=args.days, end_date=DS, signals=True).events
    bought = set(zip(ev.loc[ev[C.EVENT_TYPE] == C.PURCHASE, C.USER_ID], ev.loc[ev[C.EVENT_TYPE] == C.PURCHASE, C.ITEM_ID]))
    wl = ev[C.EVENT_TYPE] == C.ADD_TO_WISHLIST
    wished = set(zip(ev.loc[wl, C.USER_ID], ev.loc[wl, C.ITEM_ID])) - bought
    rated = ev[ev[C.EVENT_TYPE].isin([C.RATING_EVENT, C.REVIEW_EVENT]) & ev[C.RATING].between(1, 5)]
    last = rated.sort_values(C.EVENT_TIME, kind="stable").groupby([C.USER_ID, C.ITEM_ID])[C.RATING].last()
    disliked = set(last[last <= 2].index)
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, signals, environ in (("signals used", True, {}), ("signals ignored", True, IGNORE),
                                       ("no signals", False, {})):
            runs[name] = night(Path(tmp) / name.replace(" ", "_"), signals, environ, args)
            print(f"{name}: night {runs[name]['seconds']:.1f} s, champion {runs[name]['champion']}", flush=True)
    models = sorted(set().union(*(r["ndcg"] for r in runs.values())))
    print(f"\ndemo data: {args.users} users, {args.items} items, {args.days} days, seed {args.seed}; "
          f"{len(wished)} wishlisted-not-bought pairs, {len(disliked)} disliked pairs\n")
    print("| NDCG@10 (holdout) | " + " | ".join(runs) + " |")
    print("|---|" + "---|" * len(runs))
    for m in models:
        print(f"| {m} | " + " | ".join(f"{r['ndcg'].get(m, float('nan')):.4f}" for r in runs.values()) + " |")
    print("| champion | " + " | ".join(r["champion"] for r in runs.values()) + " |")
    print("| wishlisted items on the user's for_you | "
          + " | ".join(str(reach(r["recs"], wished)) for r in runs.values()) + " |")
    print("| disliked items on the user's for_you | "
          + " | ".join(str(reach(r["recs"], disliked)) for r in runs.values()) + " |")


if __name__ == "__main__":
    main()
