import pandas as pd

from features.text import item_text, price_band


def test_price_band_edges():
    bands = price_band(pd.Series([0.5, 2.0, 4.99, 150.0, None]))
    assert bands.tolist() == ["price_0_2", "price_2_5", "price_2_5", "price_100_up", ""]


def test_item_text_joins_fields_with_prefixed_tokens():
    items = pd.DataFrame({"title": ["Red Mug", None], "description": ["Big", None], "category": ["Home Decor", None],
                          "brand": ["Acme", None], "price": [3.0, None]})
    assert item_text(items).tolist() == ["red mug big cat_home_decor bra_acme price_2_5", ""]
