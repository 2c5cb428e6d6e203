"""Recommendation quality on the UCI Online Retail data, protocol of docs/benchmarks.md.

    .venv/bin/python benchmarks/bench_quality.py [PATH] [--write-docs]

Clean purchases: CustomerID present, invoice not starting with 'C', Quantity > 0, UnitPrice > 0,
StockCode starting with five digits. History: purchases before 2011-11-09. Truth: each customer's
purchases from 2011-11-09 to 2011-12-08, for customers with history, items present in history.
Top 10. Task "all": truth = every item bought in the window. Task "new": items bought before are
removed from the truth (and from the lists), users left with no truth are dropped.

Every candidate model is fitted here on the history alone (its fit time printed beside its
figures); the published lists come from a real pipeline run (`recsys import-online-retail`,
`recsys run --ds 2011-11-08`) in a temporary data root. The deep models (LightGCN, two-tower, the
SASRec sequence transformer: each customer's purchase lines in time order, file order within an
invoice) train with ``--deep-budget`` seconds at most each, on the CPU unless ``--device cuda``.
Then the session models (benchmarks/bench_sessions.py: each invoice's lines in file order are a
session, since Online Retail has no clickstream) against session-kNN and item co-occurrence.
"""
from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from features.sequences import PURCHASE, build_sequences  # noqa: E402
from models.registry import DEEP_MODELS  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
DEFAULT = REPO.parent / "shared" / "data" / "online_retail.parquet"
K = 10


def load(path: Path):
    raw = pd.read_parquet(path)
    code = raw["StockCode"].astype(str).str.strip().str.upper()
    clean = raw[raw["CustomerID"].notna() & ~raw["InvoiceNo"].astype(str).str.startswith("C")
                & (raw["Quantity"] > 0) & (raw["UnitPrice"] > 0) & code.str.match(r"^\d{5}")].copy()
    clean["user"] = clean["CustomerID"].astype("int64").astype(str)
    clean["item"] = code[clean.index]
    hist = clean[clean["InvoiceDate"] < "2011-11-09"]
    future = clean[(clean["InvoiceDate"] >= "2011-11-09") & (clean["InvoiceDate"] < "2011-12-09")]
    users = pd.Index(sorted(hist["user"].unique()))
    items = pd.Index(sorted(hist["item"].unique()))
    u, i = users.get_indexer(hist["user"]), items.get_indexer(hist["item"])
    x = sp.csr_matrix((np.ones(len(u), np.float32), (u, i)), shape=(len(users), len(items)))
    x.sum_duplicates()
    fu, fi = users.get_indexer(future["user"]), items.get_indexer(future["item"])
    keep = (fu >= 0) & (fi >= 0)
    truth = sp.csr_matrix((np.ones(keep.sum(), np.float32), (fu[keep], fi[keep])), shape=x.shape)
    truth.sum_duplicates()
    truth.data[:] = 1
    # Trending: purchase lines decayed with a 7-day half-life (the pipeline's default) at the cut-off.
    age = (pd.Timestamp("2011-11-09") - pd.to_datetime(hist["InvoiceDate"])).dt.total_seconds() / 86400
    trending = (0.5 ** (age / 7.0)).groupby(hist["item"]).sum().reindex(items).fillna(0.0).to_numpy()
    text = (hist.groupby("item")["Description"].agg(lambda s: s.mode().iat[0] if s.notna().any() else "")
            .reindex(items).fillna("").str.lower())
    # Each customer's purchase lines in time order (file order within an invoice), for the sequence model.
    seq = build_sequences(u, i, np.full(len(u), PURCHASE, np.int8),
                          pd.to_datetime(hist["InvoiceDate"]).dt.as_unit("s").astype("int64").to_numpy(), len(users))
    return x, truth, users, items, text, trending, seq


def tasks(x, truth):
    all_users = np.flatnonzero(np.diff(truth.indptr) > 0)
    new_truth = truth - truth.multiply(x > 0)
    new_truth.eliminate_zeros()
    new_users = np.flatnonzero(np.diff(new_truth.indptr) > 0)
    return {"all": (all_users, truth[all_users], None), "new": (new_users, new_truth[new_users], x)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("path", nargs="?", default=str(DEFAULT))
    ap.add_argument("--write-docs", action="store_true", help="write docs/benchmarks.md")
    ap.add_argument("--skip-pipeline", action="store_true", help="candidates only, no pipeline run")
    ap.add_argument("--skip-sessions", action="store_true", help="no session models")
    ap.add_argument("--deep-budget", type=float, default=120.0, help="training seconds per deep model at most")
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"), help="where the deep models train")
    ap.add_argument("--only", default=None, help="comma-separated list names to fit (default: all; '' for none)")
    ap.add_argument("--night-env", default="", help="settings for the pipeline run, 'RECSYS_X=v;RECSYS_Y=w' "
                    "(e.g. the deep models on); its published lists are labelled with them")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    from models import REGISTRY
    from models.registry import fit_model
    from pipelines.evaluation.metrics import ranking_metrics

    x, truth, users, items, text, trending, seq = load(Path(args.path))
    item_frame = pd.DataFrame({"item_idx": range(len(items)), "text": text.to_numpy(),
                               "popularity": np.asarray((x > 0).sum(axis=0)).ravel(), "trending": trending})
    specs = {
        "popularity": REGISTRY["popularity"](),
        "trending": REGISTRY["trending"](),
        "buy_again": REGISTRY["buy_again"](),
        "itemknn_cosine": REGISTRY["itemknn"](neighbours=100),
        "itemknn_bm25": REGISTRY["itemknn"](neighbours=100, weighting="bm25"),
        "als": REGISTRY["als"](factors=64, regularization=0.05, alpha=2.0, iterations=15, random_state=42),
        "bpr": REGISTRY["bpr"](factors=64, iterations=100, random_state=42),
        "ease": REGISTRY["ease"](regularization=200.0),
        "content": REGISTRY["content"](),
        # The deep models with their defaults (config), a time budget and a device.
        **{name: REGISTRY[name](budget_seconds=args.deep_budget, device=args.device, random_state=42)
           for name in DEEP_MODELS},
    }
    if args.only is not None:
        specs = {k: v for k, v in specs.items() if k in args.only.split(",")}
    t = tasks(x, truth)
    rows = []
    for name, model in specs.items():
        t0 = time.perf_counter()
        fit_model(model, x, item_frame, seq)
        fit_s = time.perf_counter() - t0
        for task, (u, tr, excl) in t.items():
            recs, _ = model.recommend(u, x, K, exclude=excl)
            m = ranking_metrics(recs, tr, K, len(items))
            rows.append({"list": name, "task": task, "fit_s": fit_s, **m})
        stop = getattr(model, "fit_summary_", None)
        print(f"  {name:<16} fitted in {fit_s:6.1f}s, scored in {time.perf_counter() - t0 - fit_s:5.1f}s"
              + (f" ({stop['epochs']} epochs, stopped by {stop['stopped_by']})" if stop else ""), flush=True)
    if not args.skip_pipeline:
        rows += published_lists(Path(args.path), users, items, t, args.night_env)
    table = pd.DataFrame(rows)
    wide = table.pivot_table(index="list", columns="task", values=[f"ndcg_at_{K}", f"recall_at_{K}",
                             f"precision_at_{K}", f"coverage_at_{K}"]).sort_values((f"ndcg_at_{K}", "all"), ascending=False)
    wide.columns = [f"{m.replace('_at_10', '@10')} {task}" for m, task in wide.columns]
    cols = [c for m in ("ndcg", "recall", "precision", "coverage") for c in (f"{m}@10 all", f"{m}@10 new")]
    wide = wide[cols]
    wide["fit s"] = table.groupby("list")["fit_s"].first().reindex(wide.index)
    with pd.option_context("display.width", 250, "display.max_columns", None, "display.float_format", "{:.4f}".format):
        print(wide)
    pub = next((name for name in wide.index if name.startswith("published")), None)
    ratios = {}
    if pub is not None and len(wide) > 1:  # ratios need a single list beside the published one
        for task in ("all", "new"):
            col = f"ndcg@10 {task}"
            best = wide.drop(index=pub)[col].max()
            ratios[task] = (wide.loc[pub, col], best, wide.drop(index=pub)[col].idxmax())
            print(f"task {task}: published NDCG@10 {ratios[task][0]:.4f} = {ratios[task][0] / best:.3f} x the best "
                  f"single list ({ratios[task][2]}, {best:.4f})")
    users_all, users_new = len(t["all"][0]), len(t["new"][0])
    print(f"users evaluated: all {users_all}, new {users_new}; catalog {len(items)} items; K={K}")
    sessions = None
    if not args.skip_sessions:
        from bench_sessions import session_rows
        print("Next item in a session:")
        sessions = session_rows(Path(args.path), gru_budget=max(args.deep_budget, 240.0))
    if args.write_docs:
        write_docs(wide, users_all, users_new, len(items), ratios, sessions, args.deep_budget)


def published_lists(path: Path, users, items, t, night_env: str = "") -> list[dict]:
    """Run the real pipeline for ds=2011-11-08 (with the settings of ``night_env``) and score its
    published lists on the same truth."""
    import os

    import duckdb

    from pipelines.cli import main as recsys

    env = dict(kv.split("=", 1) for kv in night_env.split(";") if kv.strip())
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    label = "published (for_you / new_for_you)" + (f", {night_env}" if env else "")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            home = str(Path(tmp) / "var")
            t0 = time.perf_counter()
            assert recsys(["-q", "--home", home, "import-online-retail", str(path)]) == 0
            t1 = time.perf_counter()
            with StepTimes() as steps:
                assert recsys(["-q", "--home", home, "run", "--ds", "2011-11-08", "--run-id", "bench"]) == 0
            print(f"  pipeline: import {t1 - t0:5.1f}s, nightly run {time.perf_counter() - t1:5.1f}s"
                  + (f" ({night_env})" if env else ""), flush=True)
            print("  steps: " + ", ".join(steps.lines), flush=True)
            con = duckdb.connect(str(Path(home) / "warehouse" / "recsys.duckdb"), read_only=True)
            recs = con.execute("SELECT surface, user_id, rank, item_id FROM user_recommendations").df()
            runs = con.execute("SELECT * FROM model_runs").df()
            con.close()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    if env:
        print(runs.to_string(max_rows=60), flush=True)
    return score_published(recs, users, items, t, label)


class StepTimes(logging.Handler):
    """Collects the pipeline's "[i/n] step done in Xs" lines of a quiet run (logger pipelines.run)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []
        self.logger = logging.getLogger("pipelines.run")

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage()
        if " done in " in msg:
            self.lines.append(msg.split("] ", 1)[-1].replace(" done in ", " "))

    def __enter__(self) -> "StepTimes":
        self.saved = self.logger.level, self.logger.propagate
        self.logger.setLevel(logging.INFO)
        self.logger.propagate = False
        self.logger.addHandler(self)
        return self

    def __exit__(self, *exc) -> None:
        self.logger.removeHandler(self)
        self.logger.setLevel(self.saved[0])
        self.logger.propagate = self.saved[1]


def score_published(recs, users, items, t, label: str) -> list[dict]:
    """The published for_you / new_for_you lists scored on the protocol's truth."""
    from pipelines.evaluation.metrics import ranking_metrics

    out = []
    surfaces = {"all": "for_you", "new": "new_for_you"}
    for task, (u, tr, _) in t.items():
        surface = surfaces[task] if surfaces[task] in set(recs["surface"]) else "for_you"
        r = recs[recs["surface"] == surface]
        uid = users.get_indexer(r["user_id"])
        iid = items.get_indexer(r["item_id"])  # items outside the protocol's catalog never count as hits
        mat = np.full((len(users), K), -1, dtype=np.int64)
        ok = (uid >= 0) & (r["rank"].to_numpy() <= K)
        mat[uid[ok], r["rank"].to_numpy()[ok] - 1] = iid[ok]
        out.append({"list": label, "task": task, "fit_s": np.nan,
                    **ranking_metrics(mat[u], tr, K, len(items))})
    return out


def write_docs(wide: pd.DataFrame, users_all: int, users_new: int, n_items: int, ratios: dict,
               sessions: tuple[str, list[dict]] | None, deep_budget: float) -> None:
    lines = ["# Benchmarks", "", "## Recommendation quality on UCI Online Retail", "",
             "Produced by `make bench-quality` (`benchmarks/bench_quality.py`); protocol in its docstring.",
             f"Users evaluated: {users_all} (task all), {users_new} (task new); {n_items} items; top {K}.",
             "Data: UCI Online Retail (Chen, Sain and Guo, 2012), CC BY 4.0.", "",
             "| list | " + " | ".join(wide.columns) + " |", "|---|" + "---|" * len(wide.columns)]
    for name, row in wide.iterrows():
        cells = [f"{v:.4f}" for v in row.to_numpy()[:-1]] + ["" if np.isnan(row.iloc[-1]) else f"{row.iloc[-1]:.1f}"]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append("")
    for task, (value, best, name) in ratios.items():
        surface = "for_you" if task == "all" else "new_for_you"
        lines.append(f"- `{surface}` (task {task}): NDCG@10 {value:.4f} = {value / best:.3f} x the best single list "
                     f"({name}, {best:.4f}).")
    lines += ["", "Task all scores `for_you`, task new scores `new_for_you`; the single lists are fitted by the "
              "benchmark on the protocol's history, the published lists come from a real `recsys run` of the "
              "pipeline for ds 2011-11-08 on the imported file. `fit s`: the list's fit time on this machine; the "
              f"deep models ({', '.join(DEEP_MODELS)}) train on the CPU with at most {deep_budget:.0f} s each."]
    if sessions:
        protocol, srows = sessions
        lines += ["", "Next item in a session (the same run, benchmarks/bench_sessions.py): " + protocol + ".", "",
                  "| model | HR@20 | MRR@20 | fit s |", "|---|---|---|---|"]
        lines += [f"| {r['model']} | {r['hr_at_20']:.4f} | {r['mrr_at_20']:.4f} | {r['fit_s']:.1f} |" for r in srows]
    # Sections after the quality table (run times, validation) are kept as they are.
    path = REPO / "docs" / "benchmarks.md"
    tail = ""
    if path.exists() and "\n## Nightly run time" in path.read_text():
        tail = path.read_text()[path.read_text().index("\n## Nightly run time"):]
    path.write_text("\n".join(lines) + "\n" + tail)
    print(f"wrote {REPO / 'docs' / 'benchmarks.md'}")


if __name__ == "__main__":
    main()
