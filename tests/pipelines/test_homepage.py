"""The homepage surface (issue 17, item 5): campaigns imported with errors that name the file,
column and rule; hero, category and banner slots recomputed by hand on a tiny night; and on a
published demo night, the latest_ view, hero = top of for_you, discovery outside the user's
categories and banners matching the user's top category."""
from __future__ import annotations

from datetime import date

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import scipy.sparse as sp

from pipelines.artifacts import Features, layout, read_features, write_surfaces
from pipelines.infra import warehouse
from pipelines.ranking.homepage import homepage
from pipelines.ranking.rules import item_flags, load_rules
from pipelines.run import run_step
from pipelines.services.campaigns import active_campaigns, import_campaigns, read_campaigns
from pipelines.services.reading import ImportError_
from tests.conftest import BASE_DS

DS = "2024-06-20"
GOOD = ("banner_id,target_categories,target_brands,start_date,end_date,countries\n"
        "b-garden,Garden; outdoor,,2024-06-01,2024-06-30,\n"
        "b-old,kitchen,,2024-05-01,2024-05-31,france\n"
        "b-later,,acme,2024-06-21,2024-07-01,United Kingdom;france\n")


def write(tmp_path, name: str, text: str):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("body, column, rule, shown", [
    ("b1,toys,,2024-06-01,2024-06-30,\n,toys,,2024-06-01,2024-06-30,\n", "banner_id", "blank_banner_id", "line(s) [3]"),
    ("b1,toys,,2024-06-01,2024-06-30,\nb1,home,,2024-06-01,2024-06-30,\n", "banner_id", "duplicate_banner_id",
     "line(s) [2, 3]"),
    ("b1,toys,,2024-06-30,2024-06-01,\n", "end_date", "end_before_start", "['2024-06-01']"),
    ("b1,toys,,2024-13-45,2024-06-30,\n", "start_date", "invalid_date", "['2024-13-45']"),
    ("b1,toys,,2024-06-01,,\n", "end_date", "missing_date", "line(s) [2]"),
])
def test_hostile_campaign_files_are_refused_naming_file_column_and_rule(cfg, tmp_path, body, column, rule, shown):
    path = write(tmp_path, "campaigns.csv", GOOD.splitlines()[0] + "\n" + body)
    with pytest.raises(ImportError_) as err:
        import_campaigns(cfg, path)
    text = str(err.value)
    assert str(path) in text and f"column {column!r}" in text and f"rule {rule}" in text and shown in text
    assert "nothing written" in text and read_campaigns(cfg).empty


def test_campaigns_land_once_later_batches_win_and_the_night_uses_the_active_ones(cfg, tmp_path):
    with pytest.raises(ImportError_, match="rule missing_column"):
        import_campaigns(cfg, write(tmp_path, "x.csv", "banner_id,start_date\nb1,2024-06-01\n"))
    with pytest.raises(ImportError_, match=r"unknown column\(s\) \['url'\]"):
        import_campaigns(cfg, write(tmp_path, "y.csv", "banner_id,start_date,end_date,url\nb,2024-06-01,2024-06-02,u\n"))
    first = import_campaigns(cfg, write(tmp_path, "c.csv", GOOD))
    assert first.banners == 3 and not first.skipped
    assert import_campaigns(cfg, tmp_path / "c.csv").skipped  # the same file again: nothing written
    got = read_campaigns(cfg).set_index("banner_id")
    assert list(got.loc["b-garden", "target_categories"]) == ["garden", "outdoor"]
    assert list(got.loc["b-later", "countries"]) == ["united kingdom", "france"]
    assert list(got.loc["b-garden", "countries"]) == [] and list(got.loc["b-old", "target_brands"]) == []
    assert active_campaigns(cfg, DS)["banner_id"].tolist() == ["b-garden"]
    assert active_campaigns(cfg, "2024-06-21")["banner_id"].tolist() == ["b-garden", "b-later"]
    # A Parquet file with list columns; its b-garden replaces the first file's.
    table = pa.table({"banner_id": ["b-garden"], "target_categories": [["Kitchen"]], "start_date": [date(2024, 6, 1)],
                      "end_date": [date(2024, 6, 2)]})
    pq.write_table(table, tmp_path / "c.parquet")
    import_campaigns(cfg, tmp_path / "c.parquet")
    got = read_campaigns(cfg).set_index("banner_id")
    assert list(got.loc["b-garden", "target_categories"]) == ["kitchen"] and len(got) == 3
    assert active_campaigns(cfg, DS).empty


# ------------------------------------------------------------------ a tiny night by hand
ITEMS = pd.DataFrame({"item_id": ["g1", "g2", "k1", "k2", "t1", "h1"],
                      "category_key": ["garden", "garden", "kitchen", "kitchen", "toys", "home"],
                      "brand": ["Acme", "Acme", "Chef", "other", "fun", "fun"], "active": True, "in_stock": True,
                      "promotion": [False, True, False, False, False, False]})
USERS = pd.DataFrame({"user_idx": range(4), "user_id": ["u1", "u2", "u3", "u4"],
                      "country": ["United Kingdom", " France", "United Kingdom", "Mars"], "personalized": True})
# u1: garden 6 of 8 (Acme 6, Chef 2); u2: kitchen 4 of 4 (Chef 3); u3 and u4: no history.
FULL = sp.csr_matrix(np.array([[4, 2, 2, 0, 0, 0], [0, 0, 3, 1, 0, 0], [0] * 6, [0] * 6], np.float32))


def recs_table() -> pa.Table:
    rows = [("for_you", "u1", r + 1, i, "als", "picked for you") for r, i in enumerate(["g1", "k1", "g2", "t1", "h1"])]
    rows += [("for_you", "u2", r + 1, i, "als", "picked for you") for r, i in enumerate(["k1", "t1", "g1", "h1"])]
    rows += [("for_you", "u3", 1, "t1", "popular_in_country", "popular in United Kingdom"),
             ("new_for_you", "u1", 1, "h1", "als", "picked for you")]
    return pa.table(dict(zip(["surface", "user_id", "rank", "item_id", "model", "reason"], map(list, zip(*rows)))))


DEFAULTS = pd.DataFrame([("country", "united kingdom", 1, "g2", 0.5, "popular in United Kingdom"),
                         ("country", "united kingdom", 2, "h1", 0.3, "popular in United Kingdom"),
                         ("country", "united kingdom", 3, "t1", 0.2, "popular in United Kingdom"),
                         ("all", "all", 1, "k1", 0.4, "popular with shoppers"),
                         ("all", "all", 2, "g1", 0.3, "popular with shoppers"),
                         ("all", "all", 3, "t1", 0.1, "popular with shoppers")],
                        columns=["context", "value", "rank", "item_id", "score", "reason"])


def campaigns(*names: str) -> pd.DataFrame:
    rows = {"b-garden": (["garden"], [], []), "b-kitchen-fr": (["kitchen"], [], ["france"]),
            "b-chef": ([], ["chef"], []), "b-general": ([], [], [])}
    return pd.DataFrame([(n, *rows[n][:2], date(2024, 6, 1), date(2024, 6, 30), rows[n][2]) for n in names],
                        columns=["banner_id", "target_categories", "target_brands", "start_date", "end_date", "countries"])


@pytest.fixture
def night(cfg):
    cfg = cfg.replace(homepage_hero_n=3, homepage_categories=1)
    best = pd.DataFrame({"country": "ALL", "rank": [1, 2, 3, 4], "item_id": ["g1", "k1", "h1", "t1"], "buyers": 1,
                         "units": 1.0, "revenue": 1.0})
    write_surfaces(cfg, DS, {"best_sellers": best})
    f = Features(USERS, ITEMS.assign(item_idx=range(6)), FULL, FULL, pd.DataFrame(columns=["user_idx", "item_idx"]), {})
    return cfg, f


def build(cfg, f, camps: pd.DataFrame) -> pd.DataFrame:
    [path] = homepage(cfg, DS, "hand", f, recs_table(), pa.Table.from_pandas(DEFAULTS), camps)
    return pd.read_parquet(path)


def slots(df: pd.DataFrame, slot: str, col: str) -> dict[str, list]:
    part = df[df.slot_type == slot].sort_values(["user_id", "position"])
    return {u: g[col].tolist() for u, g in part.groupby("user_id")}


def test_hero_is_the_top_of_for_you_and_users_without_history_get_the_context_defaults(night):
    cfg, f = night
    df = build(cfg, f, campaigns())
    assert slots(df, "hero", "item_id") == {"u1": ["g1", "k1", "g2"], "u2": ["k1", "t1", "g1"],
                                            "u3": ["g2", "h1", "t1"],  # only fallback rows: the UK's defaults
                                            "u4": ["k1", "g1", "t1"]}  # no list for Mars: the overall one
    # Promotion weight 0.1 (default rules): g2 at rank 3 scores 0.5 x 1.1, below k1's 1 / log2(3).
    assert slots(df, "hero", "score")["u1"] == pytest.approx([1.0, 1 / np.log2(3), 0.5 * 1.1])
    assert slots(df, "hero", "reason")["u3"] == ["popular in United Kingdom"] * 3
    assert slots(df, "hero", "category")["u1"] == ["garden", "kitchen", "garden"]
    assert (df["ds"].astype(str) == DS).all() and (df["run_id"] == "hand").all()
    assert df[df.slot_type == "banner"].empty  # no campaign: no banner row


def test_a_stronger_promotion_lifts_a_promoted_item_into_a_higher_hero_slot(night, tmp_path):
    cfg, f = night
    rules = tmp_path / "rules.yaml"
    rules.write_text("boosts:\n  promotion_weight: 0.5\n")
    df = build(cfg.replace(rules_file=str(rules)), f, campaigns())
    # g2 (promoted): 0.5 x 1.5 = 0.75 > k1's 0.631: it takes the second hero slot.
    assert slots(df, "hero", "item_id")["u1"] == ["g1", "g2", "k1"]
    assert slots(df, "hero", "score")["u1"] == pytest.approx([1.0, 0.75, 1 / np.log2(3)])


def test_categories_with_a_discovery_category_the_user_never_touched(night):
    cfg, f = night
    df = build(cfg, f, campaigns())
    # Best sellers' categories in order: garden, kitchen, home, toys. u1 touched garden and kitchen.
    assert slots(df, "category", "category") == {"u1": ["garden", "home"], "u2": ["kitchen", "garden"],
                                                 "u3": ["garden"], "u4": ["kitchen"]}
    assert slots(df, "category", "score")["u1"] == pytest.approx([0.75, 0.0])
    assert slots(df, "category", "reason")["u1"] == ["you often shop garden", "something new to discover"]
    assert slots(df, "category", "reason")["u3"] == ["popular in United Kingdom"]
    two = build(cfg.replace(homepage_categories=2), f, campaigns())
    assert slots(two, "category", "category")["u1"] == ["garden", "kitchen", "home"]


def test_the_homepage_banner_matches_the_users_top_category(night):
    cfg, f = night
    df = build(cfg, f, campaigns("b-garden", "b-kitchen-fr", "b-chef", "b-general"))
    banner = df[df.slot_type == "banner"].set_index("user_id")
    assert banner["banner_id"].to_dict() == {"u1": "b-garden", "u2": "b-kitchen-fr", "u3": "b-general",
                                             "u4": "b-general"}
    # u1: garden 0.75 beats Chef 0.25 (b-kitchen-fr runs in France only); u2: kitchen 1.0 beats Chef 0.75.
    assert banner["score"].to_dict() == pytest.approx({"u1": 0.75, "u2": 1.0, "u3": 1.0, "u4": 1.0})
    assert banner.loc["u1", "category"] == "garden" and banner.loc["u2", "category"] == "kitchen"
    assert banner.loc["u1", "reason"] == "matches your interest in garden" and banner.loc["u3", "reason"] == "for everyone"
    assert (banner["position"] == 1).all() and banner["item_id"].isna().all()
    # No general campaign: the best-covering one (garden: 6 of all 12 weight; Chef: 5 of 12).
    df = build(cfg, f, campaigns("b-garden", "b-chef", "b-kitchen-fr"))
    banner = df[df.slot_type == "banner"].set_index("user_id")
    assert banner.loc[["u3", "u4"], "banner_id"].tolist() == ["b-garden", "b-garden"]
    assert banner.loc["u3", "score"] == pytest.approx(0.5)
    # Only the French campaign: nothing for the others.
    df = build(cfg, f, campaigns("b-kitchen-fr"))
    assert df.loc[df.slot_type == "banner", "user_id"].tolist() == ["u2"]


# ------------------------------------------------------------------ a published demo night
def q(cfg, sql: str, *params) -> pd.DataFrame:
    con = warehouse.connect_readonly(cfg)
    try:
        return con.execute(sql, list(params)).df()
    finally:
        con.close()


def test_published_homepage_on_a_demo_night(home, tmp_path):
    f = read_features(home, BASE_DS)
    cats = sorted(f.items["category_key"].astype(str).unique())
    body = "banner_id,target_categories,start_date,end_date\n" + "".join(
        f"b-{c},{c},{BASE_DS},{BASE_DS}\n" for c in cats)
    import_campaigns(home, write(tmp_path, "campaigns.csv", body))
    run_step("publish", home, BASE_DS, "baseline")
    hp = q(home, "SELECT * FROM latest_homepage")
    assert set(hp["ds"].astype(str)) == {BASE_DS}
    assert len(hp) == q(home, "SELECT count(*) AS n FROM homepage WHERE ds = ?::DATE", BASE_DS)["n"].iloc[0]
    fy = q(home, "SELECT user_id, rank, item_id, model FROM latest_user_recommendations WHERE surface = 'for_you'")
    personal = set(fy.loc[~fy["model"].isin(["popular_in_country", "popularity"]), "user_id"])
    assert personal and set(hp["user_id"]) == set(f.users["user_id"])
    # Hero: the top of for_you re-scored with the rules' boosts (recomputed here from the catalog).
    rules = load_rules(home)
    flags = item_flags(f.items, rules)
    factor = flags["review_factor"].to_numpy() if "review_factor" in flags else 1.0  # the review rule's demotion
    boost = pd.Series((1 + rules.margin_weight * flags["margin"] + rules.promotion_weight * flags["promotion"]).to_numpy()
                      * factor, index=f.items["item_id"].to_numpy())
    mine = fy[fy.user_id.isin(personal)].assign(s=lambda d: d["item_id"].map(boost) / np.log2(d["rank"] + 1))
    mine = mine.sort_values(["user_id", "s", "rank"], ascending=[True, False, True])
    expected = mine.groupby("user_id").head(home.surfaces.homepage_hero_n).groupby("user_id")["item_id"].agg(list)
    hero = hp[hp.slot_type == "hero"].sort_values(["user_id", "position"]).groupby("user_id")["item_id"].agg(list)
    assert hero.loc[expected.index].to_dict() == expected.to_dict()
    # Discovery: a category the user never interacted with; the others are their top categories.
    aff = q(home, "SELECT user_id, rank, category FROM latest_user_category_affinity")
    touched = pd.Series((f.full.astype(bool) @ sp.csr_matrix(
        (np.ones(len(f.items)), (np.arange(len(f.items)), pd.factorize(f.items["category_key"])[0])))).tolil().rows,
        index=f.users["user_id"])
    names = pd.factorize(f.items["category_key"])[1]
    disc = hp[(hp.slot_type == "category") & (hp.reason == "something new to discover")]
    assert len(disc) and all(c not in {names[k] for k in touched[u]} for u, c in zip(disc.user_id, disc.category))
    top = aff[aff["rank"] <= home.surfaces.homepage_categories].sort_values(["user_id", "rank"])
    featured = hp[(hp.slot_type == "category") & (hp.reason != "something new to discover")
                  & hp.user_id.isin(set(aff.user_id))].sort_values(["user_id", "position"])
    assert featured.groupby("user_id")["category"].agg(list).to_dict() == top.groupby("user_id")["category"].agg(list).to_dict()
    # The banner matches the user's top category (one campaign per category, everywhere).
    banner = hp[hp.slot_type == "banner"].set_index("user_id")
    first = aff[aff["rank"] == 1].set_index("user_id")["category"]
    assert len(first) and (banner.loc[first.index, "category"] == first).all()
    assert (banner.loc[first.index, "banner_id"] == "b-" + first).all()
    # No unavailable item in context_defaults or the hero slots.
    unavailable = set(f.items.loc[~flags["available"].to_numpy(), "item_id"])
    cd = q(home, "SELECT * FROM latest_context_defaults")
    assert len(cd) and not set(cd["item_id"]) & unavailable and not set(hp["item_id"].dropna()) & unavailable
    with duckdb.connect(str(layout(home).duckdb_path), read_only=True) as con:
        comment = con.execute("SELECT comment FROM duckdb_tables() WHERE table_name = 'homepage'").fetchall()[0][0]
    assert comment.startswith("Each user's homepage slots")
