"""Session next-item baselines on UCI Online Retail: leave-last-out HR@20 and MRR@20 (issue 16).

Online Retail has no clickstream and no session ids: each invoice's lines in file order are taken as
one session (features.sessions.sessions_from_orders), which says "what was added to the same basket
next", not what was viewed next. Sales only (no cancellations "C...", positive quantities); items are
StockCodes. Split by time: sessions (invoices) of the last ``--test-days`` days are the test sessions,
the earlier ones train; test items unknown in training stay (they can only be missed). Each test
session of two or more items is asked for its next item from all but its last item.

Printed: sessions, items, then per model HR@20, MRR@20 and fit / recommend seconds. Models:
popularity (the most frequent items in training sessions, a floor), item co-occurrence from the last
item (models.sessions.ItemCooccurrence), session-kNN (models.sessions.SessionKNN), the GRU4Rec-style
model (models.session_gru.SessionGRU, PyTorch on the CPU; ``--gru-budget`` seconds of training at most).

    python benchmarks/bench_sessions.py [../shared/data/online_retail.parquet] [--test-days 30]
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from features.sessions import leave_last_out, sessions_from_orders  # noqa: E402
from models.kernels import sparse_topk  # noqa: E402
from models.session_gru import SessionGRU  # noqa: E402
from models.sessions import ItemCooccurrence, SessionKNN, hit_rate_mrr, session_matrix  # noqa: E402

DEFAULT = REPO.parent / "shared" / "data" / "online_retail.parquet"
K = 20


def load(path: Path) -> pd.DataFrame:
    df = pd.read_parquet(path, columns=["InvoiceNo", "StockCode", "Quantity", "InvoiceDate"])
    inv = df["InvoiceNo"].astype(str)
    df = df[~inv.str.startswith("C") & (df["Quantity"] > 0)].reset_index(drop=True)  # file order kept
    return df.assign(StockCode=df["StockCode"].astype(str).str.strip().str.upper())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("path", nargs="?", default=str(DEFAULT))
    ap.add_argument("--test-days", type=int, default=30, help="the last N days' invoices are the test sessions")
    ap.add_argument("--gru-budget", type=float, default=240.0, help="SessionGRU's training budget in seconds")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    session_rows(Path(args.path), args.test_days, args.gru_budget)


def session_rows(path: Path, test_days: int = 30, gru_budget: float = 240.0) -> tuple[str, list[dict]]:
    """Prints and returns (the protocol's line, one row per model: model, hr_at_20, mrr_at_20, fit_s, rec_s)."""
    df = load(path)
    cutoff = df["InvoiceDate"].max().normalize() - pd.Timedelta(days=test_days - 1)
    codes, uniques = pd.factorize(df["StockCode"])
    order = pd.factorize(df["InvoiceNo"])[0]
    test_rows = (df["InvoiceDate"] >= cutoff).to_numpy()
    tr_ip, tr_items = sessions_from_orders(order[~test_rows], codes[~test_rows])
    te_ip, te_items = sessions_from_orders(order[test_rows], codes[test_rows])
    q_ip, q_items, targets = leave_last_out(te_ip, te_items)
    n_items = len(uniques)
    protocol = (f"Online Retail, invoices as sessions (file order): {len(tr_ip) - 1:,} training sessions before "
                f"{cutoff.date()}, {len(q_ip) - 1:,} test sessions of 2+ items after it, {n_items:,} items; "
                f"leave-last-out, K={K}")
    print(protocol)
    print(f"{'model':<20}{'HR@20':>8}{'MRR@20':>9}{'fit s':>8}{'rec s':>8}")
    # Popularity without the session's own items, as the models exclude them too.
    counts = np.bincount(tr_items, minlength=n_items).astype(np.float32)
    q = session_matrix(q_ip, q_items, n_items)
    pop_ranked, _ = sparse_topk(sp.csr_matrix(q.shape, dtype=np.float32), counts, K, n_items, exclude=q)
    hr, mrr = hit_rate_mrr(pop_ranked, targets, K)
    rows = [{"model": "popularity", "hr_at_20": hr, "mrr_at_20": mrr, "fit_s": 0.0, "rec_s": 0.0}]
    print(f"{'popularity':<20}{hr:>8.4f}{mrr:>9.4f}{0:>8.2f}{0:>8.2f}")
    for model in (ItemCooccurrence(), SessionKNN(), SessionGRU(budget_seconds=gru_budget, device="cpu")):
        t0 = time.perf_counter()
        model.fit(tr_ip, tr_items, n_items)
        t1 = time.perf_counter()
        ids, _ = model.recommend(q_ip, q_items, K)
        t2 = time.perf_counter()
        hr, mrr = hit_rate_mrr(ids, targets, K)
        rows.append({"model": model.name, "hr_at_20": hr, "mrr_at_20": mrr, "fit_s": t1 - t0, "rec_s": t2 - t1})
        print(f"{model.name:<20}{hr:>8.4f}{mrr:>9.4f}{t1 - t0:>8.2f}{t2 - t1:>8.2f}", flush=True)
    return protocol, rows


if __name__ == "__main__":
    main()
