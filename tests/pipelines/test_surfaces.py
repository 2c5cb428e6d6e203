"""Every surface table on one demo run: invariants checked against the validated events with pandas,
then a catalog update and a consent change rerun, then `recsys forget` grepped across the data root."""
import csv
import itertools
import subprocess

import duckdb
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from pipelines.artifacts import layout
from pipelines.cli import main
from pipelines.dev.demo_data import import_demo
from pipelines.infra.contacts import read_contacts
from pipelines.run import run_all

DS = "2024-06-30"
SURFACE_TABLES = ("frequently_bought_together", "complete_the_look", "cart_cross_sell", "trending", "best_sellers",
                  "post_purchase_email", "user_category_affinity", "similar_items", "user_recommendations",
                  "context_defaults", "homepage")
ITEM_COLUMNS = {"frequently_bought_together": ("item_id", "other_item_id"), "context_defaults": ("item_id",),
                "homepage": ("item_id",),
                "complete_the_look": ("item_id", "other_item_id"), "cart_cross_sell": ("item_id", "add_item_id"),
                "trending": ("item_id",), "best_sellers": ("item_id",), "similar_items": ("item_id", "similar_item_id"),
                "user_recommendations": ("item_id",)}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from pipelines.config import load_config

    cfg = load_config(environ={}, home=tmp_path_factory.mktemp("surf") / "var")
    import_demo(cfg, seed=11, users=400, items=120, days=45, end_date=DS)
    run_all(cfg, DS, "run-1")
    return cfg


def q(cfg, sql, *params) -> pd.DataFrame:
    con = duckdb.connect(str(layout(cfg).duckdb_path), read_only=True)
    try:
        return con.execute(sql, list(params)).df()
    finally:
        con.close()


def purchases(cfg) -> pd.DataFrame:
    files = sorted((layout(cfg).validated / "events").glob("event_date=*/part.parquet"))
    ev = pd.concat([pq.read_table(f).to_pandas() for f in files])
    ev = ev[(ev["event_type"] == "purchase") & (ev["event_time"] < pd.Timestamp("2024-07-01", tz="UTC"))]
    return ev


def catalog(cfg) -> pd.DataFrame:
    from pipelines.artifacts import read_features

    return read_features(cfg, DS).items


def test_every_table_has_rows_and_no_unavailable_item(run):
    items = catalog(run)
    unavailable = set(items.loc[~items["active"] | ~items["in_stock"].astype(bool), "item_id"])
    assert unavailable  # the demo catalog marks about 5% out of stock
    for table in SURFACE_TABLES:
        df = q(run, f'SELECT * FROM "{table}" WHERE ds = ?::DATE', DS)
        assert len(df), table
        for col in ITEM_COLUMNS.get(table, ()):
            assert not set(df[col]) & unavailable, (table, col)
    email = q(run, "SELECT recommended_items FROM post_purchase_email")
    assert not set(itertools.chain.from_iterable(email["recommended_items"])) & unavailable


def test_lift_support_confidence_by_hand_and_symmetry(run):
    fbt = q(run, "SELECT * FROM frequently_bought_together WHERE ds = ?::DATE", DS)
    ev = purchases(run)
    items = catalog(run)
    ok = set(items.loc[items["active"] & items["in_stock"].astype(bool), "item_id"])
    ev = ev[ev["item_id"].isin(ok)]
    basket = ev["order_id"].map(lambda o: f"o:{o}", na_action="ignore")
    basket = basket.fillna(ev["session_id"].map(lambda s: f"s:{s}", na_action="ignore"))
    ev = ev.assign(basket=basket).dropna(subset=["basket"])[["basket", "item_id"]].drop_duplicates()
    sizes = ev.groupby("basket").size()
    ev = ev[ev["basket"].map(sizes) <= run.surfaces.fbt_max_basket_items]
    n = ev["basket"].nunique()
    row = fbt.sort_values(["pair_count", "item_id", "other_item_id"], ascending=[False, True, True]).iloc[0]
    a, b = row["item_id"], row["other_item_id"]
    with_a, with_b = set(ev.loc[ev.item_id == a, "basket"]), set(ev.loc[ev.item_id == b, "basket"])
    n_ab = len(with_a & with_b)
    assert row["pair_count"] == n_ab
    assert row["support"] == pytest.approx(n_ab / n)
    assert row["confidence"] == pytest.approx(n_ab / len(with_a))
    assert row["lift"] == pytest.approx(n_ab * n / (len(with_a) * len(with_b)))
    assert row["reason"] == f"bought together with {a}"
    both = fbt.merge(fbt, left_on=["item_id", "other_item_id"], right_on=["other_item_id", "item_id"])
    assert len(both) > 10
    np.testing.assert_allclose(both["lift_x"], both["lift_y"])
    np.testing.assert_array_equal(both["pair_count_x"], both["pair_count_y"])
    np.testing.assert_allclose(both["support_x"], both["support_y"])
    ctl = q(run, "SELECT * FROM complete_the_look WHERE ds = ?::DATE", DS)
    assert (ctl["category"] != ctl["other_category"]).all()


def test_personal_lists_obey_the_rules(run):
    from pipelines.ranking.rules import item_flags, load_rules

    recs = q(run, "SELECT * FROM user_recommendations WHERE ds = ?::DATE", DS)
    items = catalog(run)
    flags = item_flags(items, load_rules(run))
    non_repeatable = set(items.loc[~flags["repeatable"].to_numpy(), "item_id"])
    assert non_repeatable
    ev = purchases(run)
    bought = set(zip(ev["user_id"], ev["item_id"]))
    for surface in ("for_you", "buy_again"):
        r = recs[recs.surface == surface]
        pairs = set(zip(r["user_id"], r["item_id"]))
        assert not {p for p in pairs & bought if p[1] in non_repeatable}, surface
    assert set(zip(recs.loc[recs.surface == "buy_again", "user_id"], recs.loc[recs.surface == "buy_again", "item_id"])) <= bought
    # No empty or short list: min_items (20) per user on the personal surfaces; every row has a reason.
    per_user = recs[recs.surface != "buy_again"].groupby(["surface", "user_id"]).size()
    assert (per_user == 20).all()
    users = q(run, "SELECT count(DISTINCT user_id) AS n FROM user_recommendations WHERE surface = 'for_you'")["n"].iloc[0]
    assert per_user.loc["new_for_you"].size == per_user.loc["for_you"].size == users
    assert recs["reason"].str.len().gt(0).all()
    # Category caps: at most half of a list from one category.
    cats = items.set_index("item_id")["category_key"]
    top = recs[recs.surface == "for_you"].assign(cat=lambda d: d["item_id"].map(cats))
    assert top.groupby(["user_id", "cat"]).size().max() <= 10
    # Discovery slots: items from a category the user never touched, at the end of the list.
    disc = top[top["model"] == "discovery"]
    assert len(disc) and disc["rank"].min() >= 20 - 2 - 2 + 1


def test_post_purchase_email_and_its_export(run, tmp_path):
    email = q(run, "SELECT * FROM post_purchase_email WHERE ds = ?::DATE", DS)
    ev = purchases(run)
    day = ev[ev["event_time"].dt.date == pd.Timestamp(DS).date()]
    users = pd.concat([pd.read_parquet(f) for f in (layout(run).validated / "users").glob("*.parquet")])
    no_email = set(users.loc[~users["consent_email"].astype(bool), "user_id"])
    assert set(email["user_id"]) == set(day["user_id"]) - no_email
    owned = ev.groupby("user_id")["item_id"].agg(set)
    for row in email.itertuples():
        assert sorted(row.purchased_items) == sorted(set(day.loc[day.user_id == row.user_id, "item_id"]))
        assert not set(row.recommended_items) & owned[row.user_id]
        assert 0 < len(row.recommended_items) <= run.surfaces.email_n
    out = tmp_path / "email.csv"
    assert main(["--home", str(run.home), "-q", "export", "email", "--ds", DS, "--out", str(out)]) == 0
    rows = list(csv.DictReader(open(out, encoding="utf-8")))
    with_address = set(read_contacts(run).dropna(subset=["email"])["user_id"])  # the demo leaves some without
    assert [r["user_id"] for r in rows] == sorted(set(email["user_id"]) & with_address)
    first = email[email["user_id"].isin(with_address)].sort_values("user_id").iloc[0]
    assert rows[0]["item_1_id"] == first["recommended_items"][0] and rows[0]["purchased_items"] == "|".join(first["purchased_items"])


def test_best_sellers_and_trending_by_hand(run):
    best = q(run, "SELECT * FROM best_sellers WHERE ds = ?::DATE AND country = 'ALL' ORDER BY rank", DS)
    ev = purchases(run)
    recent = ev[ev["event_time"] >= pd.Timestamp("2024-07-01", tz="UTC") - pd.Timedelta(days=run.features.popularity_days)]
    buyers = recent.groupby("item_id")["user_id"].nunique()
    assert best.iloc[0]["buyers"] == buyers.max()
    assert best.set_index("item_id")["buyers"].to_dict() == {k: buyers[k] for k in best["item_id"]}
    trend = q(run, "SELECT * FROM trending WHERE ds = ?::DATE AND country = 'ALL' ORDER BY rank", DS)
    r = trend.iloc[0]
    week = ev[ev["event_time"] >= pd.Timestamp("2024-06-24", tz="UTC")]
    before = ev[(ev["event_time"] < pd.Timestamp("2024-06-24", tz="UTC"))
                & (ev["event_time"] >= pd.Timestamp("2024-05-27", tz="UTC"))]
    tw = week.loc[week.item_id == r["item_id"], "user_id"].nunique()
    bw = before.loc[before.item_id == r["item_id"], "user_id"].nunique() / 4
    assert r["buyers_this_week"] == tw and r["trend_score"] == pytest.approx((tw + 1) / (bw + 1))


def test_cart_recs_and_rerank_answer_from_the_tables(run, capsys):
    from pipelines.services.serving import cart_recs, rerank

    pairs = q(run, "SELECT * FROM latest_cart_cross_sell")
    a, b = pairs["item_id"].value_counts().index[:2]
    got = cart_recs(run, [a, b], n=5)
    conf = pairs[pairs.item_id.isin([a, b])].pivot_table(index="add_item_id", columns="item_id", values="confidence").fillna(0)
    expected = (1 - (1 - conf).prod(axis=1)).drop([a, b], errors="ignore").sort_values(ascending=False)
    assert got["item_id"].iloc[0] == expected.index[0]
    assert got["score"].iloc[0] == pytest.approx(expected.iloc[0])
    assert not {a, b} & set(got["item_id"])
    user = q(run, "SELECT user_id FROM latest_user_recommendations WHERE surface = 'for_you' LIMIT 1").iloc[0, 0]
    mine = q(run, "SELECT item_id FROM latest_user_recommendations WHERE user_id = ? AND surface = 'for_you' "
                  "ORDER BY rank", user)["item_id"].tolist()
    other = sorted(set(catalog(run)["item_id"]) - set(mine))[:3]
    ranked = rerank(run, user, other + [mine[0]])
    assert ranked["item_id"].iloc[0] == mine[0]  # the user's own top pick beats unrelated results
    assert main(["--home", str(run.home), "-q", "cart-recs", a, b]) == 0


def test_out_of_stock_optout_and_forget_reach_every_output(run, tmp_path):
    recs = q(run, "SELECT * FROM latest_user_recommendations")
    top_item = recs["item_id"].value_counts().index[0]
    personal = recs[recs.surface == "buy_again"]["user_id"].value_counts().index[0]
    update = tmp_path / "stock.csv"
    update.write_text(f"item_id,in_stock\n{top_item},false\n")
    home = str(run.home)
    assert main(["--home", home, "import-catalog", str(update)]) == 0
    assert main(["--home", home, "consent", personal, "--personalization", "off"]) == 0
    assert main(["--home", home, "-q", "run", "--ds", DS, "--run-id", "run-2"]) == 0
    for table in SURFACE_TABLES:
        df = q(run, f'SELECT * FROM "{table}" WHERE ds = ?::DATE', DS)
        for col in ITEM_COLUMNS.get(table, ()):
            assert top_item not in set(df[col]), (table, col)
    mine = q(run, "SELECT * FROM user_recommendations WHERE ds = ?::DATE AND user_id = ?", DS, personal)
    assert set(mine["surface"]) == {"for_you", "new_for_you"} and len(mine) == 40  # no buy_again: not personal
    assert set(mine["model"]) <= {"popular_in_country", "popularity"}
    assert q(run, "SELECT count(*) AS n FROM user_category_affinity WHERE ds = ?::DATE AND user_id = ?",
             DS, personal)["n"].iloc[0] == 0

    # Forget a customer who is in every kind of output: lists, email, affinity, landing, exports.
    email = q(run, "SELECT user_id FROM post_purchase_email WHERE ds = ?::DATE", DS)["user_id"]
    victim = sorted(set(email) & set(read_contacts(run).dropna(subset=["email"])["user_id"]))[0]
    out = tmp_path / "email.csv"
    assert main(["--home", home, "-q", "export", "email", "--ds", DS, "--out", str(out)]) == 0
    assert victim in out.read_text()
    assert main(["--home", home, "forget", victim]) == 0
    con = duckdb.connect(str(layout(run).duckdb_path), read_only=True)
    tables = con.execute("SELECT table_name FROM information_schema.columns WHERE column_name = 'user_id'").fetchall()
    for (t,) in tables:
        assert con.execute(f'SELECT count(*) FROM "{t}" WHERE user_id = ?', [victim]).fetchall()[0][0] == 0, t
    audit = con.execute("SELECT * FROM privacy_requests").df()
    con.close()
    assert len(audit) == 1 and victim not in audit.astype(str).to_string()
    # Every Parquet file, value by value (compressed pages hide strings from grep)...
    for f in run.home.rglob("*.parquet"):
        t = pq.read_table(f)
        for name in t.column_names:
            col = t.column(name)
            if str(col.type) in ("string", "large_string") or str(col.type).startswith("list<"):
                values = col.to_pylist()
                flat = itertools.chain.from_iterable(v if isinstance(v, list) else [v] for v in values)
                assert victim not in set(flat), (f, name)
    # ...and every byte of every other file under the data root, and the export.
    hits = subprocess.run(["grep", "-rl", "--binary-files=text", victim, str(run.home), str(out)],
                          capture_output=True, text=True).stdout
    assert hits == "", hits
    # The next run still works and the user stays gone.
    assert main(["--home", home, "-q", "run", "--ds", DS, "--run-id", "run-3"]) == 0
    assert q(run, "SELECT count(*) AS n FROM user_recommendations WHERE user_id = ?", victim)["n"].iloc[0] == 0
