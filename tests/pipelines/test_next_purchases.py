"""others_bought_next (pipelines/ranking/surface_tables.py): customers who bought more than
``next_purchase_max_items`` distinct items are left out of both counts. Figures by hand."""
import duckdb
import pandas as pd

from pipelines.config import load_config
from pipelines.ranking.surface_tables import others_bought_next


def _purchases() -> duckdb.DuckDBPyConnection:
    rows = [(u, "x", "2024-06-01") for u in ("a", "b", "c")] + [(u, "y", "2024-06-03") for u in ("a", "b", "c")]
    # A wholesale account: x, then five other items on later days (never y).
    rows += [("h", "x", "2024-06-01")] + [("h", f"z{k}", "2024-06-02") for k in range(5)]
    con = duckdb.connect()
    p = pd.DataFrame(rows, columns=["user_id", "item_id", "day"]).assign(day=lambda d: pd.to_datetime(d["day"]).dt.date)
    con.register("_p", p)
    con.execute("CREATE TEMP TABLE p AS SELECT * FROM _p")
    return con


def test_wholesale_accounts_are_left_out_of_both_counts(tmp_path):
    cfg = load_config(environ={}, home=tmp_path)
    # Cap off: h is one of x's 4 buyers; 3 of them bought y next. h's own pairs have 1 customer (< 3).
    off = others_bought_next(cfg.replace(next_purchase_max_items=0), _purchases())
    assert off[["item_id", "next_item_id", "customers", "buyers"]].values.tolist() == [["x", "y", 3, 4]]
    assert off["confidence"].tolist() == [0.75]
    # Cap 5: h bought 6 distinct items, so x has 3 buyers, all of whom bought y next.
    on = others_bought_next(cfg.replace(next_purchase_max_items=5), _purchases())
    assert on[["item_id", "next_item_id", "customers", "buyers"]].values.tolist() == [["x", "y", 3, 3]]
    assert on["confidence"].tolist() == [1.0]
    # At the cap (6 items allowed): h counts again.
    assert others_bought_next(cfg.replace(next_purchase_max_items=6), _purchases())["buyers"].tolist() == [4]
