"""Integration on the real UCI Online Retail file (dirty, 541,909 rows), through the CLI."""
import duckdb
import pandas as pd
import pytest

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


def test_import_and_run_publish_twenty_per_customer(online_retail_path, tmp_path, capsys):
    home = str(tmp_path / "var")
    assert main(["--home", home, "import-online-retail", str(online_retail_path)]) == 0
    assert main(["--home", home, "run", "--ds", DS, "--run-id", "or-1"]) == 0
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
    import json

    assert json.loads(accounting[4])["null_user_id"] == raw["CustomerID"].isna().sum()
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
