"""Similar items' content leg within the catalog's categories (pipelines/ranking/publish_tables.py),
against a dense cosine matrix masked by hand."""
import numpy as np
import pandas as pd

from models import REGISTRY
from pipelines.ranking.publish_tables import _within_categories, catalog_categories


def test_catalog_categories_only_for_the_catalogs_own():
    assert catalog_categories(pd.DataFrame({"item_id": ["a", "b"]})) is None
    assert catalog_categories(pd.DataFrame({"category_key": ["~mug_1", "~lamp_2"]})) is None
    keys = catalog_categories(pd.DataFrame({"category_key": ["mugs", "uncategorised", "lamps"]}))
    assert list(keys) == ["mugs", "uncategorised", "lamps"]


def test_uncategorised_anchors_look_over_the_whole_catalog():
    rng = np.random.default_rng(3)
    words = ["red", "blue", "mug", "lamp", "cotton", "steel"]
    text = [" ".join(rng.choice(words, 3)) for _ in range(60)]
    model = REGISTRY["content"]().fit(None, pd.DataFrame({"item_idx": np.arange(60), "text": text}))
    cats = np.array(["a", "b", "c"], dtype=object)[np.arange(60) % 3]
    cats[[5, 17, 40]] = "uncategorised"
    anchors = np.arange(60)
    ids, scores = _within_categories(model, anchors, 8, np.array([7]), cats)
    v = model.item_vectors().toarray().astype(np.float64)
    cos = v @ v.T / np.outer(np.linalg.norm(v, axis=1), np.linalg.norm(v, axis=1))
    for a in anchors:
        row = cos[a].copy()
        row[[a, 7]] = -np.inf
        if cats[a] != "uncategorised":
            row[cats != cats[a]] = -np.inf  # its own category only
        row[row <= 1e-9] = -np.inf
        order = np.lexsort((np.arange(60), -row))
        want = row[order][np.isfinite(row[order])][:8]
        got = ids[a][ids[a] >= 0]
        assert len(got) == len(want)
        np.testing.assert_allclose(scores[a][:len(got)], want, rtol=1e-5)
    # The uncategorised anchors reach other categories; the others never reach an uncategorised item.
    loose = np.isin(anchors, [5, 17, 40])
    assert len({cats[i] for i in ids[loose].ravel() if i >= 0}) > 1
    assert not np.isin(ids[~loose], [5, 17, 40]).any()
