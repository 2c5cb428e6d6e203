"""Integration on the real UCI Online Retail file (dirty, 541,909 rows), through the CLI."""
import duckdb
import pandas as pd
import pytest

from pipelines.artifacts import layout
from pipelines.cli import main

DS = "2011-11-08"


def expected_users(path) -> tuple[set, set]:
    """Customers with a valid event, and with a valid purchase, before 2011-11-09, by plain pandas."""
    raw = pd.read_parquet(path)
    raw = raw[raw["CustomerID"].notna() & (raw["InvoiceDate"] < "2011-11-09")]
    is_return = raw["InvoiceNo"].astype(str).str.startswith("C")
    qty = raw["Quantity"].where(~is_return, raw["Quantity"].abs())
    ok = qty.between(1, 100_000) & (raw["UnitPrice"] >= 0) & raw["StockCode"].notna()
    ids = raw["CustomerID"].astype("int64").astype(str)
    return set(ids[ok]), set(ids[ok & ~is_return])


@pytest.fixture(scope="module")
def or_run(tmp_path_factory):
    from tests.conftest import require_online_retail

    path = require_online_retail()
    tmp_path = tmp_path_factory.mktemp("or")
    home = str(tmp_path / "var")
    assert main(["--home", home, "import-online-retail", str(path)]) == 0
    assert main(["--home", home, "run", "--ds", DS, "--run-id", "or-1"]) == 0
    return tmp_path


def test_import_and_run_publish_twenty_per_customer(or_run, online_retail_path):
    tmp_path = or_run
    home = str(tmp_path / "var")
    db = tmp_path / "var" / "warehouse" / "recsys.duckdb"
    con = duckdb.connect(str(db), read_only=True)
    per_user = con.execute("SELECT user_id, count(*) AS n, count(DISTINCT item_id) AS d FROM user_recommendations "
                           "WHERE ds = DATE '2011-11-08' AND surface = 'for_you' GROUP BY user_id").df()
    new_per_user = con.execute("SELECT user_id, count(*) AS n FROM user_recommendations "
                               "WHERE surface = 'new_for_you' GROUP BY user_id").df()
    active_catalog = con.execute("SELECT count(DISTINCT item_id) FROM similar_items").fetchall()[0][0]
    first_counts = {t: con.execute(f"SELECT count(*) FROM {t}").fetchall()[0][0]
                    for t in ("user_recommendations", "similar_items", "model_runs")}
    accounting = con.execute("SELECT rows_in, rows_valid, rows_quarantined, success, rule_counts FROM validation_runs "
                             "WHERE dataset = 'events' AND run_id = 'or-1'").fetchall()[0]
    quarantined_by_rule = dict(con.execute("SELECT rule, count(*) FROM quarantined_events GROUP BY rule").fetchall())
    bad = con.execute("SELECT count(*) FROM user_recommendations WHERE item_id IN ('POST', 'M', 'DOT', 'BANK CHARGES')"
                      ).fetchall()[0][0]
    con.close()
    raw = pd.read_parquet(online_retail_path, columns=["InvoiceDate", "CustomerID"])
    raw = raw[raw["InvoiceDate"] < "2011-11-09"]
    assert accounting[0] == len(raw) == accounting[1] + accounting[2] and accounting[3] is True
    assert accounting[4]["null_user_id"] == raw["CustomerID"].isna().sum()
    assert sum(quarantined_by_rule.values()) == accounting[2]
    with_event, with_purchase = expected_users(online_retail_path)
    assert set(per_user["user_id"]) == with_event
    assert with_purchase <= set(per_user["user_id"]) and len(with_purchase) > 4000
    assert (per_user["n"] == 20).all() and (per_user["d"] == 20).all()
    assert set(new_per_user["user_id"]) == with_event and (new_per_user["n"] == 20).all()
    assert bad == 0  # non-product codes are never recommended
    assert active_catalog > 3000

    # A second identical run leaves the same row counts.
    assert main(["--home", home, "run", "--ds", DS, "--run-id", "or-2"]) == 0
    con = duckdb.connect(str(db), read_only=True)
    again = {t: con.execute(f"SELECT count(*) FROM {t}").fetchall()[0][0] for t in first_counts}
    con.close()
    assert again == first_counts

    import mlflow

    uri = f"sqlite:///{tmp_path / 'var' / 'mlflow' / 'mlflow.db'}"
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name("recsys_nightly").experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert sorted(r.data.tags["run_id"] for r in parents) == ["or-1", "or-2"]  # one parent run per night
    children = [r for r in runs if "candidate" in r.data.tags]
    assert len(children) == 2 * (8 + 1)  # a nested run per candidate (8) and the hybrid, each night
    champion = client.get_model_version_by_alias("recsys_recommender", "champion")
    assert champion.tags["ds"] == DS and str(champion.version) == "2"


def clean_purchases(path, net_of_returns: bool = False) -> pd.DataFrame:
    """Purchase lines the gate lets through before 2011-11-09, by plain pandas. With
    ``net_of_returns``, lines of a (customer, item) whose returns ('C' invoices) cover every unit
    bought are left out, as the pair tables do."""
    raw = pd.read_parquet(path)
    raw = raw[raw["CustomerID"].notna() & (raw["InvoiceDate"] < "2011-11-09")]
    is_return = raw["InvoiceNo"].astype(str).str.startswith("C")
    qty = raw["Quantity"].abs()
    raw = raw.assign(user_id=raw["CustomerID"].astype("int64").astype(str),
                     item_id=raw["StockCode"].astype(str).str.strip().str.upper())
    ok = qty.between(1, 100_000) & (raw["UnitPrice"] >= 0)
    buys = raw[~is_return & (raw["Quantity"] > 0) & ok]
    if net_of_returns:
        returned = raw[is_return & ok].assign(q=qty).groupby(["user_id", "item_id"])["q"].sum()
        bought = buys.groupby(["user_id", "item_id"])["Quantity"].sum()
        gone = (returned.reindex(bought.index).fillna(0) >= bought)
        keys = pd.MultiIndex.from_frame(buys[["user_id", "item_id"]])
        buys = buys[~gone.reindex(keys).to_numpy()]
    return pd.DataFrame({"user_id": buys["user_id"], "item_id": buys["item_id"],
                         "order_id": buys["InvoiceNo"].astype(str).str.strip(), "day": buys["InvoiceDate"].dt.date})


def test_every_surface_table_and_its_invariants(or_run, online_retail_path):
    from pipelines.artifacts import read_features
    from pipelines.config import load_config
    from pipelines.ranking.rules import item_flags, load_rules

    cfg = load_config(environ={}, home=or_run / "var")
    con = duckdb.connect(str(layout(cfg).duckdb_path), read_only=True)
    q = lambda sql: con.execute(sql).df()
    tables = ("user_recommendations", "similar_items", "frequently_bought_together", "complete_the_look",
              "cart_cross_sell", "post_purchase_email", "trending", "best_sellers", "user_category_affinity")
    data = {t: q(f"SELECT * FROM {t} WHERE ds = DATE '{DS}'") for t in tables}
    con.close()
    for t, df in data.items():
        assert len(df), t
    items = read_features(cfg, DS).items
    flags = item_flags(items, load_rules(cfg))
    unavailable = set(items.loc[~flags["available"].to_numpy(), "item_id"])
    assert {"POST", "M", "DOT"} <= unavailable
    for t, cols in {"user_recommendations": ["item_id"], "similar_items": ["item_id", "similar_item_id"],
                    "frequently_bought_together": ["item_id", "other_item_id"],
                    "complete_the_look": ["item_id", "other_item_id"], "cart_cross_sell": ["item_id", "add_item_id"],
                    "trending": ["item_id"], "best_sellers": ["item_id"]}.items():
        for c in cols:
            assert not set(data[t][c]) & unavailable, (t, c)
    # No empty list, no already-bought non-repeatable item (bought pairs from the raw file).
    recs = data["user_recommendations"]
    per_user = recs[recs.surface != "buy_again"].groupby(["surface", "user_id"]).size()
    assert (per_user == 20).all() and per_user.loc["for_you"].size == per_user.loc["new_for_you"].size > 4000
    p = clean_purchases(online_retail_path)
    bought = set(zip(p["user_id"], p["item_id"]))
    non_repeatable = set(items.loc[~flags["repeatable"].to_numpy(), "item_id"])
    assert non_repeatable
    for surface in ("for_you", "buy_again"):
        r = recs[recs.surface == surface]
        assert not {x for x in set(zip(r["user_id"], r["item_id"])) & bought if x[1] in non_repeatable}, surface
    new = recs[recs.surface == "new_for_you"]
    assert not set(zip(new["user_id"], new["item_id"])) & bought
    # Pairs: symmetric where they should be, and one pair's lift worked out from the raw file.
    fbt = data["frequently_bought_together"]
    mirror = fbt.merge(fbt, left_on=["item_id", "other_item_id"], right_on=["other_item_id", "item_id"])
    assert len(mirror) > 1000
    assert (mirror["pair_count_x"] == mirror["pair_count_y"]).all()
    assert ((mirror["lift_x"] - mirror["lift_y"]).abs() < 1e-9).all()
    net = clean_purchases(online_retail_path, net_of_returns=True)
    baskets = net[~net["item_id"].isin(unavailable)][["order_id", "item_id"]].drop_duplicates()
    size = baskets.groupby("order_id").size()
    baskets = baskets[baskets["order_id"].map(size) <= cfg.surfaces.fbt_max_basket_items]
    n = baskets["order_id"].nunique()
    top = fbt.sort_values(["pair_count", "item_id", "other_item_id"], ascending=[False, True, True]).iloc[0]
    a = set(baskets.loc[baskets.item_id == top["item_id"], "order_id"])
    b = set(baskets.loc[baskets.item_id == top["other_item_id"], "order_id"])
    assert top["pair_count"] == len(a & b)
    assert top["lift"] == pytest.approx(len(a & b) * n / (len(a) * len(b)))
    assert top["confidence"] == pytest.approx(len(a & b) / len(a))
    ctl = data["complete_the_look"]
    assert (ctl["category"] != ctl["other_category"]).all()
    # Post-purchase email: exactly the customers who bought (and kept) something on ds, never an item
    # they already have.
    email = data["post_purchase_email"]
    on_ds = net[(net["day"] == pd.Timestamp(DS).date()) & ~net["item_id"].isin(unavailable)]
    assert set(email["user_id"]) == set(on_ds["user_id"])
    owned = net.groupby("user_id")["item_id"].agg(set)
    assert all(not set(r.recommended_items) & owned[r.user_id] for r in email.itertuples())
    # The two commands answer from these tables.
    assert main(["--home", str(cfg.home), "-q", "cart-recs", top["item_id"]]) == 0
    assert main(["--home", str(cfg.home), "-q", "rerank", recs["user_id"].iloc[0], top["item_id"], "85123A"]) == 0
