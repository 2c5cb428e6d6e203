"""Issue 17, the event contract's explicit feedback, engagement and context columns: the gate's new
rules (each bad value quarantined under its named rule, counted), the importer's mapping, each
event's weight by hand, and on demo data with the wider signals the planted directions: a product a
user rated 1 never comes back to that user, wishlisted items rank higher for the user."""
import shutil

import duckdb
import numpy as np
import pandas as pd
import pytest

from features.feedback import weight_sql
from pipelines import constants as C
from pipelines.artifacts import layout
from pipelines.config import load_config
from pipelines.dev.demo_data import generate, import_demo
from pipelines.run import run_all
from pipelines.services.importers import ImportError_, import_events, land_frames
from pipelines.validation.gate import validate
from pipelines.validation.rules import ROW_RULES, ValidationError, encode_rules, row_rule_masks, rule_names
from tests.conftest import events_frame

DS = "2024-06-30"
DEMO = dict(seed=11, users=400, items=120, days=45, end_date=DS)
NEW_RULES = ("missing_rating", "rating_out_of_range", "empty_review", "review_too_long", "dwell_out_of_range",
             "context_too_long")


# ------------------------------------------------------------------ the row rules, row by row
def hostile_rows() -> tuple[pd.DataFrame, list[str]]:
    """Rows, and the rule(s) each breaks (by hand; "" = valid)."""
    t = f"{DS} 10:00"
    rows = [  # (event_type, rating, review_text, dwell_seconds, channel) -> expected rules
        (("rating", 4.0, None, None, None), ""),
        (("rating", None, None, None, None), "missing_rating"),
        (("rating", 0.0, None, None, None), "rating_out_of_range"),
        (("rating", 6.0, None, None, None), "rating_out_of_range"),
        (("rating", np.inf, None, None, None), "rating_out_of_range"),
        (("review", 5.0, "Lovely.", None, None), ""),
        (("review", None, "No stars given, fine.", None, None), ""),
        (("review", 2.0, "   ", None, None), "empty_review"),
        (("review", None, None, None, None), "empty_review"),
        (("review", 9.0, "x" * 20_001, None, None), "rating_out_of_range;review_too_long"),
        (("view", None, None, 45.0, "social"), ""),
        (("view", None, None, -1.0, None), "dwell_out_of_range"),
        (("view", None, None, 1e9, None), "dwell_out_of_range"),
        (("view", None, None, np.nan, None), ""),
        (("view", None, None, None, "s" * 300), "context_too_long"),
        (("add_to_wishlist", None, None, None, "email"), ""),
        (("purchase", 3.0, None, None, None), ""),
    ]
    df = events_frame([(f"u{k}", f"i{k}", r[0][0], t, 1, 1.0, None) for k, r in enumerate(rows)])
    df[C.RATING] = [r[0][1] for r in rows]
    df[C.REVIEW_TEXT] = [r[0][2] for r in rows]
    df[C.DWELL_SECONDS] = pd.array([r[0][3] for r in rows], dtype="Float64").astype(float)
    df[C.CHANNEL] = [r[0][4] for r in rows]
    return df, [r[1] for r in rows]


def test_each_bad_feedback_value_breaks_its_named_rule():
    df, expected = hostile_rows()
    masks = row_rule_masks(df, pd.Series([DS] * len(df)), DS)
    assert set(NEW_RULES) <= set(masks) and set(masks) <= set(ROW_RULES)
    codes, names = encode_rules(masks)
    got = rule_names(codes, names).fillna("").tolist()
    assert got == expected


def test_files_without_the_new_columns_break_none_of_the_new_rules():
    df = events_frame([("u1", "i1", "view", f"{DS} 10:00", 1, 1.0, None)])
    masks = row_rule_masks(df, pd.Series([DS]), DS)
    assert not any(masks[r].any() for r in NEW_RULES)


def test_a_batch_of_mostly_bad_values_fails_naming_rule_column_and_value(cfg):
    df, _ = hostile_rows()
    land_frames(cfg, "hostile-feedback", df, None, None)
    with pytest.raises(ValidationError, match=r"rating_out_of_range \(column rating\): 4 rows, e\.g\. \[\{[^]]*'rating': 0\.0"):
        validate(cfg, DS, "hostile")


def test_the_gate_quarantines_and_counts_them(cfg):
    df, expected = hostile_rows()
    good = events_frame([(f"g{k}", f"i{k % 7}", "view", f"{DS} 11:{k % 60:02d}", 1, 1.0, None) for k in range(200)])
    land_frames(cfg, "hostile-feedback", pd.concat([df, good], ignore_index=True), None, None)
    res = validate(cfg, DS, "hostile")
    want = pd.Series([r for e in expected for r in e.split(";") if e]).value_counts().to_dict()
    assert {r: res["rule_counts"][r] for r in want} == want
    assert res["rows_in"] == len(df) + len(good) and res["rows_quarantined"] == sum(1 for e in expected if e)
    con = duckdb.connect(str(layout(cfg).duckdb_path), read_only=True)
    q = con.execute("SELECT user_id, rule, rating, review_text, dwell_seconds FROM quarantined_events ORDER BY user_id").df()
    valid = con.execute("SELECT count(*) FROM read_parquet(?)",
                        [str(layout(cfg).validated_partition(DS) / "part.parquet")]).fetchone()[0]
    con.close()
    by_user = dict(zip(q["user_id"], q["rule"]))
    assert by_user == {f"u{k}": e for k, e in enumerate(expected) if e}
    assert valid == sum(1 for e in expected if not e) + len(good)
    # The bad values are kept as landed, for the operator to see.
    assert q.set_index("user_id").loc["u12", "dwell_seconds"] == 1e9


# ------------------------------------------------------------------ weights, by hand
def test_each_event_weighs_as_documented(cfg):
    con = duckdb.connect()
    con.execute("""CREATE TABLE ev AS SELECT * FROM (VALUES
        ('view', NULL, NULL), ('view', NULL, 30.0), ('view', NULL, 90.0), ('view', NULL, 300.0), ('view', NULL, 3.0),
        ('add_to_wishlist', NULL, NULL), ('rating', 1.0, NULL), ('rating', 5.0, NULL), ('rating', 3.0, NULL),
        ('review', NULL, NULL), ('review', 5.0, NULL), ('review', 2.0, NULL), ('purchase', 1.0, 500.0))
        t(event_type, rating, dwell_seconds)""")
    got = [r[0] for r in con.execute(f"SELECT {weight_sql(cfg)} FROM ev").fetchall()]
    # view 1 x dwell factor (30 s = 1, 90 s = 3, 300 s capped at 3, 3 s floored at 0.25); wishlist 4;
    # rating 0 + 2 x (stars - 3); review 1 + the same; a purchase's rating and dwell are ignored.
    assert got == pytest.approx([1.0, 1.0, 3.0, 3.0, 0.25, 4.0, -4.0, 4.0, 0.0, 1.0, 5.0, -1.0, 8.0])


# ------------------------------------------------------------------ the importer
def test_import_maps_types_ratings_reviews_dwell_and_context(cfg, tmp_path):
    f = tmp_path / "feed.csv"
    f.write_text("cust,sku,ts,kind,stars,text,secs,dev,src,page\n"
                 f"1,A,{DS}T10:00:00Z,fav,,,,Mobile ,Social,Garden\n"
                 f"1,B,{DS}T10:01:00Z,stars,2,,,app,email,home\n"
                 f"2,A,{DS}T10:02:00Z,comment,5,Great!,,desktop,search,search\n"
                 f"2,B,{DS}T10:03:00Z,view,,,12.5,, ,\n"
                 f"2,C,{DS}T10:04:00Z,view,,,abc,,,\n")
    res = import_events(cfg, f, user_col="cust", item_col="sku", time_col="ts", event_type_col="kind",
                        event_type_map={"fav": "add_to_wishlist", "stars": "rating", "comment": "review"},
                        rating_col="stars", review_col="text", dwell_col="secs", device_col="dev",
                        channel_col="src", landing_col="page")
    assert res.events == 5
    landed = pd.read_parquet(layout(cfg).landing / "events" / f"event_date={DS}")
    landed = landed.sort_values(C.EVENT_TIME).reset_index(drop=True)
    assert landed[C.EVENT_TYPE].tolist() == ["add_to_wishlist", "rating", "review", "view", "view"]
    assert np.isnan(landed[C.RATING].iloc[0])
    assert landed[C.RATING].iloc[1:3].tolist() == [2.0, 5.0]
    assert landed[C.REVIEW_TEXT].iloc[2] == "Great!"
    assert landed[C.DWELL_SECONDS].iloc[3] == 12.5 and np.isnan(landed[C.DWELL_SECONDS].iloc[4])
    assert landed["_unparseable"].iloc[4] == "secs='abc'"  # quarantined by the gate as unparseable_value
    assert landed[C.DEVICE].tolist()[:3] == ["mobile", "app", "desktop"]
    assert landed[C.CHANNEL].tolist()[:3] == ["social", "email", "search"] and pd.isna(landed[C.CHANNEL].iloc[3])
    assert landed[C.LANDING_PAGE].tolist()[:3] == ["garden", "home", "search"]
    with pytest.raises(ImportError_, match="'favourite' .* is not one of"):
        import_events(cfg, f, user_col="cust", item_col="sku", time_col="ts", event_type_col="kind",
                      event_type_map={"fav": "favourite"})


# ------------------------------------------------------------------ planted directions on demo data
@pytest.fixture(scope="module")
def night(tmp_path_factory):
    cfg = load_config(environ={}, home=tmp_path_factory.mktemp("signals") / "var")
    import_demo(cfg, **DEMO, signals=True)
    run_all(cfg, DS, "signals-1")
    return cfg


def lists(cfg) -> pd.DataFrame:
    con = duckdb.connect(str(layout(cfg).duckdb_path), read_only=True)
    try:
        return con.execute("SELECT user_id, item_id, surface, rank FROM latest_user_recommendations").df()
    finally:
        con.close()


def copy_of(cfg, tmp_path, **environ):
    target = tmp_path / "var"
    shutil.copytree(cfg.home, target)
    return load_config(environ=environ, home=target)


def test_the_demo_quarantines_its_planted_bad_values_by_rule(night):
    ev = generate(**DEMO, signals=True).events
    con = duckdb.connect(str(layout(night).duckdb_path), read_only=True)
    counts = dict(con.execute("SELECT rule, count(*) FROM quarantined_events GROUP BY rule").fetchall())
    con.close()
    rating, dwell = ev[C.RATING], ev[C.DWELL_SECONDS]
    bad_rating = int((rating.notna() & ~rating.between(1, 5)).sum())
    bad_review = int(((ev[C.EVENT_TYPE] == C.REVIEW_EVENT) & ev[C.REVIEW_TEXT].fillna("").str.strip().eq("")).sum())
    bad_dwell = int((dwell.notna() & ~dwell.between(0, 14_400)).sum())
    assert bad_rating and bad_review and bad_dwell
    assert counts.get("rating_out_of_range", 0) == bad_rating
    assert counts.get("empty_review", 0) == bad_review
    assert counts.get("dwell_out_of_range", 0) == bad_dwell


def latest_dislikes(events: pd.DataFrame) -> set[tuple[str, str]]:
    """(user, item) whose latest rating is 2 stars or fewer, from the raw events with pandas."""
    r = events[events[C.EVENT_TYPE].isin([C.RATING_EVENT, C.REVIEW_EVENT]) & events[C.RATING].between(1, 5)
               & events[C.USER_ID].notna()]
    r = r[~(r[C.EVENT_TYPE].eq(C.REVIEW_EVENT) & r[C.REVIEW_TEXT].fillna("").str.strip().eq(""))]
    last = r.sort_values(C.EVENT_TIME, kind="stable").groupby([C.USER_ID, C.ITEM_ID])[C.RATING].last()
    return set(last[last <= 2].index)


def test_no_list_shows_a_user_an_item_they_disliked(night):
    disliked = latest_dislikes(generate(**DEMO, signals=True).events)
    recs = lists(night)
    meta = pd.read_json(layout(night).features_dir(DS) / "meta.json", typ="series")
    assert len(disliked) >= 3 and meta["disliked_pairs"] == len(disliked)
    assert not set(zip(recs["user_id"], recs["item_id"])) & disliked


def test_an_item_rated_one_star_does_not_come_back(night, tmp_path):
    """A repeatable item in a user's buy_again list: after a one-star rating it is on none of the
    user's lists; with the exclusion off (dislike_max_rating 0) it stays on buy_again."""
    recs = lists(night)
    row = recs[recs["surface"] == "buy_again"].sort_values(["rank", "user_id"]).iloc[0]
    user, item = row["user_id"], row["item_id"]
    rating = events_frame([(user, item, "rating", f"{DS} 21:00", 1, None, None)]).assign(**{C.RATING: 1.0})
    on, off = copy_of(night, tmp_path / "on"), copy_of(night, tmp_path / "off", RECSYS_DISLIKE_MAX_RATING="0")
    for cfg in (on, off):
        land_frames(cfg, "one-star", rating, None, None)
        run_all(cfg, DS, "signals-2")
    mine_on = lists(on).query("user_id == @user")
    mine_off = lists(off).query("user_id == @user")
    assert item not in set(mine_on["item_id"]) and len(mine_on)
    assert item in set(mine_off.query("surface == 'buy_again'")["item_id"])


def test_wishlisted_items_rank_higher_for_the_user(night, tmp_path):
    """Over every (user, item) wishlisted and not bought: more of them on the user's for_you list, and
    higher, than in the same night with the wishlist weight at 0."""
    ev = generate(**DEMO, signals=True).events
    bought = set(zip(*ev.loc[ev[C.EVENT_TYPE] == C.PURCHASE, [C.USER_ID, C.ITEM_ID]].T.values))
    wished = set(zip(*ev.loc[ev[C.EVENT_TYPE] == C.ADD_TO_WISHLIST, [C.USER_ID, C.ITEM_ID]].T.values)) - bought
    off = copy_of(night, tmp_path, RECSYS_EVENT_WEIGHTS="add_to_wishlist=0")
    run_all(off, DS, "signals-no-wishlist")

    def reach(cfg) -> tuple[int, float]:
        fy = lists(cfg).query("surface == 'for_you'")
        rank = {(u, i): r for u, i, r in zip(fy["user_id"], fy["item_id"], fy["rank"])}
        hits = [rank[p] for p in wished if p in rank]
        return len(hits), float(np.sum(1.0 / np.asarray(hits, float)))

    (n_on, rr_on), (n_off, rr_off) = reach(night), reach(off)
    assert len(wished) > 20
    assert n_on > n_off and rr_on > rr_off


def test_items_with_strongly_negative_reviews_are_demoted(night, tmp_path):
    """Items whose reviews (VADER, called here directly on the raw texts) average below -0.5 over 3 or
    more reviews: placed lower on the users' for_you lists than in the same night with the rule off."""
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    ev = generate(**DEMO, signals=True).events
    rev = ev[(ev[C.EVENT_TYPE] == C.REVIEW_EVENT) & ev[C.REVIEW_TEXT].fillna("").str.strip().ne("")
             & ev[C.USER_ID].notna() & ev[C.RATING].between(1, 5)].drop_duplicates(
                 [C.USER_ID, C.ITEM_ID, C.EVENT_TIME])
    vader = SentimentIntensityAnalyzer()
    score = rev[C.REVIEW_TEXT].map(lambda t: vader.polarity_scores(t)["compound"])
    per_item = score.groupby(rev[C.ITEM_ID]).agg(["mean", "size"])
    poor = set(per_item[(per_item["mean"] < -0.5) & (per_item["size"] >= 3)].index)
    assert poor
    rules = tmp_path / "rules.yaml"
    rules.write_text("reviews:\n  min_reviews: 3\n  demote_below: -0.5\n  demote_factor: 1.0\n")
    off = copy_of(night, tmp_path / "off", RECSYS_RULES_FILE=str(rules))
    run_all(off, DS, "signals-no-review-rule")

    def weight(cfg) -> float:
        fy = lists(cfg).query("surface == 'for_you'")
        return float((1.0 / fy.loc[fy["item_id"].isin(poor), "rank"]).sum())

    assert weight(night) < weight(off)


def test_channel_defaults_follow_the_demo_plant(night):
    """The demo plants fashion and beauty visits on social, garden and kitchen ones on search
    (pipelines/dev/demo_signals.py): each channel's default list leans to its categories."""
    con = duckdb.connect(str(layout(night).duckdb_path), read_only=True)
    d = con.execute("""SELECT c.value, i.category FROM latest_context_defaults c JOIN latest_items i USING (item_id)
                       WHERE c.context = 'channel' AND c.rank <= 10""").df()
    con.close()
    share = {v: g["category"].isin(cats).mean() for v, g in d.groupby("value")
             for cats in [("fashion", "beauty") if v == "social" else ("garden", "kitchen")] if v in ("social", "search")}
    social, search = d[d["value"] == "social"], d[d["value"] == "search"]
    assert len(social) == 10 and len(search) == 10
    assert share["social"] > search["category"].isin(["fashion", "beauty"]).mean()
    assert share["search"] > social["category"].isin(["garden", "kitchen"]).mean()
