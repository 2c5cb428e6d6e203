"""Item text for the content model: title, description, category, brand and a price band."""
from __future__ import annotations

import numpy as np
import pandas as pd

PRICE_BANDS = (0, 2, 5, 10, 20, 50, 100, np.inf)


def price_band(price: pd.Series) -> pd.Series:
    """Coarse price band token (e.g. ``price_5_10``) so that similar price points share a word."""
    edges = np.array(PRICE_BANDS, dtype=float)
    idx = np.searchsorted(edges, pd.to_numeric(price, errors="coerce").fillna(-1).to_numpy(), side="right") - 1
    labels = np.array([f"price_{int(a)}_{'up' if np.isinf(b) else int(b)}" for a, b in zip(edges[:-1], edges[1:])] + [""])
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
