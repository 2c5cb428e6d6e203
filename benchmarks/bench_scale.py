"""Scale benchmark: ten million demo events, the nightly run, the ALS floor, and scoring with rules.

Usage: python benchmarks/bench_scale.py [--home DATA_ROOT] [--events N [--users N --items N] --days N]
                                        [--pipeline] [--shards N] [--deep SECONDS]

1. ``recsys demo-data --scale`` data (generated day by day; skipped when the data root has it): ten
   million events by default, users and items scaled with ``--events`` (a tenth and a hundredth);
2. with ``--pipeline``: every nightly step in order, each in its own process as an Airflow task
   runs (the score step as ``--shards`` shard tasks at once): its time and peak resident memory;
3. the floor: implicit ALS (64 factors, 15 iterations) fitted on the user x item weights (the
   features step's matrix after ``--pipeline``, else one built from the landing files), then
   implicit's batched ``recommend`` (top 10, already-bought items filtered) for every user;
4. block scoring (models/scoring.py) on the same factors: top 20 per user with the rule masks
   (unavailable items for everyone, already-bought items per user) inside the fused top-K;
5. with ``--pipeline``: the score step again, its shard tasks at once, with the floor's 64-factor
   ALS as the champion (restored afterwards): top 20 for_you and new_for_you plus buy_again for
   every user through the whole rules layer, on the same factors as implicit's recommend;
6. the ratio of the nightly run to the floor (ALS fit + implicit recommend).

Prints every figure; nothing is asserted.
"""
from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

from pipelines.artifacts import layout

REPO = Path(__file__).resolve().parent.parent


def peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 / 1024


def run_tasks(home: Path, ds: str, step: str, shards: int | None, env: dict, tag: str) -> tuple[float, float]:
    """One pipeline step as Airflow runs it: a process per task (per shard for the score step, all
    at once). Returns (wall seconds, peak resident GiB: the tasks' own maxima, added up)."""
    import os
    import subprocess

    t0 = time.perf_counter()
    procs = []
    for shard in (range(shards) if shards else [None]):
        cmd = [sys.executable, "-m", "pipelines.cli", "run", "--ds", ds, "--step", step, "--run-id", "bench-scale"] \
            + ([] if shard is None else ["--shard", str(shard)])
        log_file = open(home / f"bench-{tag}-{shard}.log", "w")
        procs.append((subprocess.Popen(cmd, env=env, cwd=str(REPO), stdout=log_file, stderr=log_file), log_file))
    peak = 0.0
    for proc, log_file in procs:
        _, status, usage = os.wait4(proc.pid, 0)  # the child's own peak resident memory
        log_file.close()
        if status != 0:
            print(Path(log_file.name).read_text()[-3000:])
            raise SystemExit(f"step {step} failed (status {status}), log {log_file.name}")
        peak += usage.ru_maxrss / 1024 / 1024
    return time.perf_counter() - t0, peak


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--home")
    ap.add_argument("--events", type=int, default=10_000_000)
    ap.add_argument("--users", type=int, default=None, help="default: events / 10 (1,000,000 at ten million)")
    ap.add_argument("--items", type=int, default=None, help="default: events / 100 (100,000 at ten million)")
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--ds", default="2026-11-27")
    ap.add_argument("--pipeline", action="store_true", help="also run the nightly steps")
    ap.add_argument("--shards", type=int, default=2,
                    help="user shards of the score step, run at once (default 2: one per core)")
    ap.add_argument("--skip-floor", action="store_true",
                    help="with --pipeline: only the nightly steps (no floor, no scoring figures)")
    ap.add_argument("--deep", type=float, default=0.0, metavar="SECONDS",
                    help="also the deep candidates (lightgcn, two_tower, sasrec), each with this time budget "
                         "per fit (RECSYS_<MODEL>_BUDGET_SECONDS); 0 (default): the default candidates only")
    args = ap.parse_args()
    # The data size scales users and items alike (make bench-scale EVENTS=30000000).
    args.users = args.users or max(1, args.events // 10)
    args.items = args.items or max(1, args.events // 100)
    sys.path.insert(0, str(REPO))
    import logging
    import os
    import shutil

    logging.basicConfig(level=logging.WARNING)
    import duckdb
    import numpy as np
    import scipy.sparse as sp
    from threadpoolctl import threadpool_limits

    from models.scoring import block_topk
    from pipelines.config import load_config
    from pipelines.dev.demo_scale import generate_scale

    home = Path(args.home) if args.home else Path(tempfile.mkdtemp(prefix="bench-scale-")) / "var"
    cfg = load_config(environ={}, home=home)
    figures = {}
    t0 = time.perf_counter()
    gen = generate_scale(cfg, users=args.users, items=args.items, events=args.events, days=args.days,
                         end_date=args.ds)
    figures["generate"] = time.perf_counter() - t0
    print(f"data: {gen} in {figures['generate']:.1f}s (peak RSS {peak_gb():.2f} GiB)", flush=True)
    env = {**os.environ, "RECSYS_HOME": str(home), "PYTHONPATH": str(REPO), "RECSYS_PUBLISH_SHARDS": str(args.shards)}
    env.pop("RECSYS_CONFIG", None)
    if args.deep > 0:
        from models.registry import DEEP_MODELS

        env["RECSYS_CANDIDATES"] = ",".join([*cfg.models.candidates, *DEEP_MODELS])
        env.update({f"RECSYS_{name.upper()}_BUDGET_SECONDS": str(args.deep) for name in DEEP_MODELS})
        print(f"deep candidates on: {', '.join(DEEP_MODELS)}, {args.deep:g} s per fit", flush=True)

    total, peak = None, 0.0
    if args.pipeline:
        from pipelines.run import STEPS

        print("nightly run, each step in its own process:", flush=True)
        total = 0.0
        for step in STEPS:
            dt, step_peak = run_tasks(home, args.ds, step, args.shards if step == "score" else None, env, step)
            total += dt
            peak = max(peak, step_peak)
            what = f" ({args.shards} shard tasks at once; peaks added)" if step == "score" else ""
            print(f"  {step:<10} {dt:7.1f}s   peak RSS {step_peak:5.2f} GiB{what}", flush=True)
            if step == "score":
                n_scored = sum(json_tail(home / f"bench-score-{k}.log")["users"] for k in range(args.shards))
                print(f"             {n_scored:,} users, {n_scored / dt:,.0f} users/s (the pipeline's own champion)",
                      flush=True)
        print(f"nightly run {total:.1f}s ({total / 60:.1f} min); largest step peak RSS {peak:.2f} GiB", flush=True)
    if args.skip_floor:
        return

    # The floor's matrix: the features step's user x item weights after the nightly run (so the
    # factors line up with the pipeline's users and items), else straight from the landing Parquet.
    t0 = time.perf_counter()
    if args.pipeline:
        from pipelines.artifacts import read_features

        x = read_features(cfg, args.ds).full.astype(np.float32).tocsr()
    else:
        con = duckdb.connect()
        w = cfg.features.event_weights
        m = con.execute(f"""
            WITH e AS (SELECT user_id, item_id, sum(CASE event_type WHEN 'purchase' THEN {w['purchase']}
                              WHEN 'add_to_cart' THEN {w['add_to_cart']} ELSE {w['view']} END) AS w
                       FROM read_parquet('{layout(cfg).landing}/events/*/*.parquet') GROUP BY ALL),
                 u AS (SELECT user_id, row_number() OVER (ORDER BY user_id) - 1 AS ui FROM (SELECT DISTINCT user_id FROM e)),
                 i AS (SELECT item_id, row_number() OVER (ORDER BY item_id) - 1 AS ii FROM (SELECT DISTINCT item_id FROM e))
            SELECT ui, ii, w FROM e JOIN u USING (user_id) JOIN i USING (item_id)""").fetchnumpy()
        n_users, n_items = int(m["ui"].max()) + 1, int(m["ii"].max()) + 1
        x = sp.csr_matrix((m["w"].astype(np.float32), (m["ui"], m["ii"])), shape=(n_users, n_items))
        del m
        con.close()
    n_users, n_items = x.shape
    print(f"floor matrix {n_users} x {n_items}, {x.nnz} cells in {time.perf_counter() - t0:.1f}s", flush=True)

    from implicit.als import AlternatingLeastSquares

    with threadpool_limits(1, "blas"):
        model = AlternatingLeastSquares(factors=64, iterations=15, regularization=0.05, alpha=2.0, random_state=7)
        t0 = time.perf_counter()
        model.fit(x, show_progress=False)
        figures["als_fit"] = time.perf_counter() - t0
        users = np.arange(n_users)
        t0 = time.perf_counter()
        for s in range(0, n_users, 100_000):
            b = users[s:s + 100_000]
            model.recommend(b, x[b], N=10, filter_already_liked_items=True)
        figures["implicit_recommend"] = time.perf_counter() - t0
    floor = figures["als_fit"] + figures["implicit_recommend"]
    print(f"floor: ALS fit {figures['als_fit']:.1f}s + implicit recommend {figures['implicit_recommend']:.1f}s "
          f"({n_users / figures['implicit_recommend']:,.0f} users/s) = {floor:.1f}s", flush=True)
    # Our block scoring on the same factors: top 20 with the rule masks (2% of items out of stock for
    # everyone, each user's bought items) inside the fused top-K.
    rng = np.random.default_rng(0)
    unavailable = np.flatnonzero(rng.random(n_items) < 0.02)
    t0 = time.perf_counter()
    ids, _ = block_topk(model.user_factors, model.item_factors, users, 20, exclude=x, filter_items=unavailable)
    figures["block_scoring"] = time.perf_counter() - t0
    assert not np.isin(ids, unavailable).any()
    print(f"block scoring, top 20 with rule masks: {figures['block_scoring']:.1f}s "
          f"({n_users / figures['block_scoring']:,.0f} users/s); peak RSS {peak_gb():.2f} GiB", flush=True)

    if args.pipeline:
        # The score step (its shard tasks at once) with these 64 factors as the champion: the whole
        # rules layer, on the same factors as implicit's recommend. The pipeline's champion is put back.
        from models import REGISTRY

        champion = layout(cfg).models_dir(args.ds) / "champion"
        kept = champion.with_name("champion.pipeline")
        als = REGISTRY["als"](factors=64, regularization=0.05, alpha=2.0, iterations=15, random_state=7)
        als.user_factors_ = np.ascontiguousarray(model.user_factors, dtype=np.float32)
        als.item_factors_ = np.ascontiguousarray(model.item_factors, dtype=np.float32)
        del model, x
        champion.rename(kept)
        try:
            als.save(champion)
            dt, step_peak = run_tasks(home, args.ds, "score", args.shards, env, "score64")
        finally:
            shutil.rmtree(champion, ignore_errors=True)
            kept.rename(champion)
        figures["rules_scoring"] = dt
        print(f"score step with the floor's 64-factor ALS as champion ({args.shards} shard tasks at once): {dt:.1f}s, "
              f"{n_users / dt:,.0f} users/s (top 20 for_you and new_for_you, buy_again, whole rules layer, "
              f"task start-up included) = {figures['implicit_recommend'] / dt:.2f} x implicit recommend's rate; "
              f"peak RSS {step_peak:.2f} GiB", flush=True)
        print(f"nightly run {total:.1f}s = {total / floor:.2f} x the floor ({floor:.1f}s); "
              f"largest step peak RSS {peak:.2f} GiB", flush=True)


def json_tail(path: Path) -> dict:
    """The result a ``recsys run --step`` task prints last (a Python dict literal)."""
    import ast

    return ast.literal_eval([line for line in path.read_text().splitlines() if line.startswith("{")][-1])


if __name__ == "__main__":
    main()
