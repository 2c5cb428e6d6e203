"""The publish step's tables besides the personal lists: product-page neighbours (similar_items),
the surfaces step's tables re-checked against the catalog, model_runs (every candidate's
holdout metrics, the hybrid against its generators and the session models on held-out sessions,
with the night's MLflow run and model version) and items (the catalog as the night saw it, for titles in SQL)."""
from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from features.text import UNCATEGORISED
from models import load_model
from pipelines.artifacts import (
    Features,
    layout,
    read_eval_metrics,
    read_hybrid_metrics,
    read_surface,
)
from pipelines.config import Config
from pipelines.infra.hashing import recommendation_ids
from pipelines.session_artifacts import read_session_metrics


def similar_items(cfg: Config, ds: str, run_id: str, f: Features, available: np.ndarray) -> pa.Table:
    """Product page "similar items": content (TF-IDF, or the two-tower item tower when
    ``cold_item_model`` is two_tower) and collaborative (item-kNN co-interaction) cosines blended,
    ``similar_content_weight`` x content + (1 - it) x item-kNN, over the union of both models' top
    2n neighbours; available items only.

    When the catalog has categories (features.text.item_categories: not derived), the content leg
    looks only within the anchor's category: a product page's "similar" item is a substitute, and
    the content cosines then cost the sum of the categories' squares instead of the catalog's
    square (100,000 items in 20 categories: similar items 44 s -> 15 s). An item without a category
    gets content neighbours from the whole catalog, and is a content neighbour only of such items.
    Co-interaction neighbours cross categories as before."""
    items = f.items
    anchors = np.flatnonzero(available)
    unavailable = np.flatnonzero(~available)
    n = cfg.ranking.similar_items_n
    w = cfg.ranking.similar_content_weight
    n_all = len(items)
    parts = []
    for name, saved in (("content", cfg.ranking.cold_item_model), ("itemknn", "itemknn")):
        model = load_model(layout(cfg).model(ds, saved), cfg)
        within = catalog_categories(items) if name == "content" else None
        if within is None:
            ids, scores = model.similar_items(anchors, 2 * n, filter_items=unavailable)
        else:
            ids, scores = _within_categories(model, anchors, 2 * n, unavailable, within)
        keep = ids.ravel() >= 0  # each (anchor, neighbour) pair once per model
        parts.append((np.repeat(anchors, ids.shape[1])[keep] * n_all + ids.ravel()[keep],
                      scores.ravel()[keep].astype(np.float64)))
    # The union of both models' pairs (a missing score is 0), by (anchor, score desc, neighbour).
    key = np.union1d(parts[0][0], parts[1][0])
    content, itemknn = np.zeros(len(key)), np.zeros(len(key))
    content[np.searchsorted(key, parts[0][0])] = parts[0][1]
    itemknn[np.searchsorted(key, parts[1][0])] = parts[1][1]
    score = w * content + (1.0 - w) * itemknn
    a, b = key // n_all, key % n_all
    order = np.lexsort((b, -score, a))
    order = order[score[order] > 0]
    rank = np.arange(len(order)) - np.searchsorted(a[order], a[order], side="left") + 1
    order, rank = order[rank <= n], rank[rank <= n]
    both = pd.DataFrame({"a": a[order], "b": b[order], "rank": rank, "score": score[order],
                         "content": content[order], "itemknn": itemknn[order]})
    item_ids = items["item_id"].to_numpy()
    model = np.where((both["content"] > 0) & (both["itemknn"] > 0), "content+itemknn",
                     np.where(both["content"] > 0, "content", "itemknn"))
    table = pd.DataFrame({
        "ds": date.fromisoformat(ds), "run_id": run_id,
        "item_id": item_ids[both["a"].to_numpy()], "rank": both["rank"].to_numpy(np.int32),
        "similar_item_id": item_ids[both["b"].to_numpy()], "score": both["score"].to_numpy(np.float32),
        "content_score": both["content"].to_numpy(np.float32), "itemknn_score": both["itemknn"].to_numpy(np.float32),
        "model": model})
    return pa.Table.from_pandas(table, preserve_index=False)


def _within_categories(model, anchors: np.ndarray, n: int, unavailable: np.ndarray, within: np.ndarray):
    """``model.similar_items`` of ``anchors`` within their categories; an anchor without a category
    (``uncategorised``: the catalog does not say what it is) looks over the whole catalog."""
    loose = within[anchors] == UNCATEGORISED
    ids = np.full((len(anchors), n), -1, np.int64)
    scores = np.full((len(anchors), n), -np.inf, np.float32)
    for pick, kw in ((~loose, {"within": within}), (loose, {})):
        if pick.any():
            i, v = model.similar_items(anchors[pick], n, filter_items=unavailable, **kw)
            ids[pick, :i.shape[1]], scores[pick, :i.shape[1]] = i, v
    return ids, scores


def catalog_categories(items: pd.DataFrame) -> np.ndarray | None:
    """The catalog's own category per item (``category_key``), or None when the categories are
    derived from text clusters (their names start with ``~``) or absent."""
    if "category_key" not in items:
        return None
    keys = items["category_key"].astype(str).to_numpy(dtype=str)
    return None if np.char.startswith(keys, "~").any() else keys


# The email table's types, for a night without a customer to email (pandas cannot type empty lists).
EMAIL_SCHEMA = pa.schema([("ds", pa.date32()), ("run_id", pa.string()), ("user_id", pa.string()),
                          ("purchased_items", pa.list_(pa.string())), ("recommended_items", pa.list_(pa.string())),
                          ("reasons", pa.list_(pa.string())), ("scores", pa.list_(pa.float64())),
                          ("recommendation_ids", pa.list_(pa.string()))])


def isin(values: pd.Series, allowed: pa.Array) -> np.ndarray:
    """``values.isin(allowed)`` computed by Arrow (pandas' isin on Arrow strings converts the whole set
    in Python on every call: 3.6 s for 15 calls against 100,000 items); missing values are not in."""
    return pc.is_in(pa.array(values, type=pa.string(), from_pandas=True), value_set=allowed).fill_null(False) \
        .to_numpy(zero_copy_only=False)


def email_rows(ds: str, df: pd.DataFrame, ok_items: pa.Array) -> pd.DataFrame:
    """The email list with items no longer available taken out of each customer's lists (items,
    reasons and scores together) and a recommendation id per item."""
    if df.empty:
        return df[["user_id", "purchased_items", "recommended_items", "reasons", "scores"]].assign(
            recommendation_ids=pd.Series([], dtype=object))
    long = df[["user_id", "recommended_items", "reasons", "scores"]].explode(["recommended_items", "reasons", "scores"])
    long = long[isin(long["recommended_items"], ok_items)]
    long["rank"] = long.groupby("user_id").cumcount() + 1
    long["recommendation_ids"] = recommendation_ids(
        ds, long.assign(surface="post_purchase_email")[["surface", "user_id", "rank", "recommended_items"]])
    lists = long.groupby("user_id", sort=False).agg(
        recommended_items=("recommended_items", list), reasons=("reasons", list),
        scores=("scores", lambda v: [float(x) for x in v]), recommendation_ids=("recommendation_ids", list))
    out = df[["user_id", "purchased_items"]].merge(lists, left_on="user_id", right_index=True, how="inner")
    return out.reset_index(drop=True)


def surface_tables(cfg: Config, ds: str, run_id: str, f: Features, available: np.ndarray) -> dict[str, pa.Table]:
    """The surfaces step's tables, stamped with ds and run_id; unavailable items filtered out (the
    catalog may have changed since the surfaces step ran, e.g. a rerun of publish after import-catalog)."""
    ok_items = pa.array(f.items["item_id"].to_numpy()[available], type=pa.string(), from_pandas=True)
    item_cols = {"frequently_bought_together": ("item_id", "other_item_id"),
                 "complete_the_look": ("item_id", "other_item_id"),
                 "cart_cross_sell": ("item_id", "add_item_id"),
                 "trending": ("item_id",), "best_sellers": ("item_id",),
                 "session_next_items": ("item_id", "next_item_id"), "context_defaults": ("item_id",)}
    out = {}
    for name in ("frequently_bought_together", "complete_the_look", "cart_cross_sell", "trending", "best_sellers",
                 "post_purchase_email", "user_category_affinity", "session_next_items", "context_defaults"):
        df = read_surface(cfg, ds, name)
        for col in item_cols.get(name, ()):
            df = df[isin(df[col], ok_items)]
        if name == "post_purchase_email":
            df = email_rows(ds, df, ok_items)
        if "rank" in df and name in item_cols:
            key = "country" if name in ("trending", "best_sellers") else \
                ["context", "value"] if name == "context_defaults" else "item_id"
            df = df.assign(rank=(df.groupby(key).cumcount() + 1).astype(np.int32))
        elif "rank" in df:
            df = df.assign(rank=df["rank"].astype(np.int32))  # ranks are INTEGER in every table
        df.insert(0, "run_id", run_id)
        df.insert(0, "ds", date.fromisoformat(ds))
        t = pa.Table.from_pandas(df.reset_index(drop=True), preserve_index=False)
        # An empty table's ds column has no type in pandas: typed here, or a fresh warehouse gets a text ds.
        t = t.set_column(0, "ds", pa.array([date.fromisoformat(ds)] * t.num_rows, pa.date32()))
        out[name] = t.cast(EMAIL_SCHEMA) if name == "post_purchase_email" and not t.num_rows else t
    return out


ITEMS_SCHEMA = pa.schema([("ds", pa.date32()), ("run_id", pa.string()), ("item_id", pa.string()),
                          ("title", pa.string()), ("category", pa.string()), ("brand", pa.string()),
                          ("price", pa.float64()), ("in_stock", pa.bool_()), ("active", pa.bool_()),
                          ("first_seen", pa.date32()), ("url", pa.string()), ("image_url", pa.string()),
                          ("review_count", pa.int64()), ("review_sentiment", pa.float64())])


def items_table(ds: str, run_id: str, items: pd.DataFrame) -> pa.Table:
    """The ``items`` rows of ds: every item of the night's features with its catalog columns; a
    column the catalog lacks (``url`` and ``image_url`` before catalogs had them) is NULL; the review
    columns are the features' full-window ones (features/sentiment.py; NULL in features before them)."""
    items = items.rename(columns={"review_count_full": "review_count", "sentiment_full": "review_sentiment"})
    n = len(items)
    cols = {"ds": [date.fromisoformat(ds)] * n, "run_id": [run_id] * n}
    for f in ITEMS_SCHEMA:
        if f.name in cols:
            continue
        if f.name not in items:
            cols[f.name] = pa.nulls(n, f.type)
        elif f.name == "first_seen":
            cols[f.name] = pd.to_datetime(items[f.name], errors="coerce").dt.date.astype(object) \
                .where(items[f.name].notna(), None).tolist()
        else:
            cols[f.name] = items[f.name].astype(object).where(items[f.name].notna(), None).tolist()
    return pa.table({f.name: pa.array(cols[f.name], f.type) if not isinstance(cols[f.name], pa.Array)
                     else cols[f.name] for f in ITEMS_SCHEMA}, schema=ITEMS_SCHEMA)


def model_runs(cfg: Config, ds: str, run_id: str, selection: dict | None = None) -> pa.Table:
    """Every candidate's metrics; ``selection`` (the select step's) links each row to the night's
    MLflow run and registered model version."""
    m = read_eval_metrics(cfg, ds)
    m.insert(0, "run_id", run_id)
    m.insert(0, "ds", date.fromisoformat(ds))
    if "segment" not in m:
        m["segment"] = "returning"
    m["task"], m["protocol"] = "all", "holdout"
    h = read_hybrid_metrics(cfg, ds)
    if h is not None:
        # The rank step's own protocol (window of ranker_window_days): hybrid vs its generators.
        h = h.assign(ds=date.fromisoformat(ds), run_id=run_id, segment="returning", protocol="ranker_window")
        m = pd.concat([m, h], ignore_index=True)
    s = read_session_metrics(cfg, ds)
    if s is not None and len(s):
        # Next-item models of anonymous sessions, leave-last-out on the holdout window's sessions.
        m = pd.concat([m, s.assign(ds=date.fromisoformat(ds), run_id=run_id, segment="sessions", task="next_item",
                                   protocol="session")], ignore_index=True)
    selection = selection or {}
    m["mlflow_run_id"] = selection.get("mlflow_run_id")
    m["model_version"] = None if selection.get("model_version") is None else str(selection["model_version"])
    cols = ["ds", "run_id", "protocol", "model", "segment", "task", "metric", "value", "mlflow_run_id", "model_version"]
    t = pa.Table.from_pandas(m[cols], preserve_index=False)
    return t.cast(pa.schema([pa.field(f.name, pa.string()) if f.name in ("mlflow_run_id", "model_version") else f
                             for f in t.schema]))
