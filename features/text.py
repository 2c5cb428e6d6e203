"""Item text for the content model: title, description, category, brand and a price band."""
from __future__ import annotations

from itertools import pairwise

import numpy as np
import pandas as pd

PRICE_BANDS = (0, 2, 5, 10, 20, 50, 100, np.inf)


def price_band(price: pd.Series) -> pd.Series:
    """Coarse price band token (e.g. ``price_5_10``) so that similar price points share a word."""
    edges = np.array(PRICE_BANDS, dtype=float)
    idx = np.searchsorted(edges, pd.to_numeric(price, errors="coerce").fillna(-1).to_numpy(), side="right") - 1
    labels = np.array([f"price_{int(a)}_{'up' if np.isinf(b) else int(b)}" for a, b in pairwise(edges)] + [""])
    return pd.Series(np.where(idx >= 0, labels[idx.clip(0, len(labels) - 1)], ""), index=price.index)


def item_text(items: pd.DataFrame) -> pd.Series:
    """One lower-case document per item; missing fields contribute nothing."""
    parts = []
    for col in ("title", "description"):
        if col in items:
            parts.append(items[col].fillna("").astype(str))
    for col in ("category", "brand"):
        if col in items:
            # Prefixed tokens: "cat_kitchen" must not match the word "kitchen" in a title by accident.
            v = items[col].fillna("").astype(str).str.replace(r"\s+", "_", regex=True)
            parts.append(np.where(v != "", col[:3] + "_" + v, ""))
    if "price" in items:
        parts.append(price_band(items["price"]))
    if not parts:
        return pd.Series([""] * len(items), index=items.index)
    text = pd.Series(parts[0], index=items.index).astype(str)
    for p in parts[1:]:
        text = text + " " + pd.Series(p, index=items.index).astype(str)
    return text.str.lower().str.strip()


UNCATEGORISED = "uncategorised"  # the category of an item the catalog gives none


def item_categories(items: pd.DataFrame, seed: int = 42, min_share: float = 0.5) -> pd.Series:
    """The category each item is grouped under, for category caps, discovery, complete-the-look
    and category affinity.

    The catalog's ``category`` when at least ``min_share`` of the items have one (items without
    one get ``uncategorised``). Otherwise (a catalog of titles only, like Online Retail) categories
    are derived: items are clustered by their TF-IDF text (MiniBatchKMeans, about sqrt(items / 2)
    clusters, at most 200) and each cluster is named after its strongest term, e.g. ``~bag_12``
    (the ``~`` marks a derived name). Deterministic for a given seed.
    """
    if "category" in items:
        cat = items["category"].astype("string").str.strip()
        if cat.notna().mean() >= min_share and (cat != "").mean() >= min_share:
            return cat.fillna(UNCATEGORISED).replace("", UNCATEGORISED).astype(str)
    text = items["text"] if "text" in items else item_text(items)
    text = text.fillna("").astype(str)
    # Words only: price bands and prefixed tokens would group by price rather than by kind of product.
    words = text.str.replace(r"\b(price|cat|bra)_\S*", " ", regex=True)
    has_text = words.str.contains(r"[a-z]{3,}", regex=True).to_numpy()
    out = np.full(len(items), UNCATEGORISED, dtype=object)
    n = int(has_text.sum())
    if n < 4:
        return pd.Series(out, index=items.index)
    from sklearn.cluster import MiniBatchKMeans
    from sklearn.feature_extraction.text import TfidfVectorizer

    vec = TfidfVectorizer(token_pattern=r"(?u)\b[a-z][a-z]{2,}\b", sublinear_tf=True, min_df=2 if n > 50 else 1)
    try:
        x = vec.fit_transform(words[has_text])
    except ValueError:
        return pd.Series(out, index=items.index)
    k = int(min(200, max(2, round(np.sqrt(n / 2)))))
    km = MiniBatchKMeans(n_clusters=k, random_state=seed, n_init=3, batch_size=4096).fit(x)
    terms = vec.get_feature_names_out()
    names = np.array([f"~{terms[int(np.argmax(c))]}_{i}" for i, c in enumerate(km.cluster_centers_)], dtype=object)
    out[has_text] = names[km.labels_]
    return pd.Series(out, index=items.index)
