"""Empty windows, samples and segments (issue 14): the whole nightly run in-process on tiny edge data
sets, where the recent windows hold nothing, one event sits far before the rest, or there is a single
user or a single item. Every night must publish, and what it publishes is checked against values
computed here by hand from the events."""
from __future__ import annotations

import json
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

from models import load_model
from pipelines.artifacts import layout, read_features
from pipelines.config import load_config
from pipelines.run import run_all, run_step
from pipelines.services.importers import land_frames
from pipelines.steps import STEPS
from tests.conftest import events_frame

LAST = "2024-03-20"  # the last day of the base events


def base_rows(users: int, items: int, days: int = 24) -> list[tuple]:
    """A deterministic little shop: user u buys item (u + d) % items on every third day d, starting
    at day u % 3, in orders of one or two lines."""
    rows, end = [], pd.Timestamp(LAST)
    for u in range(users):
        for d in range(u % 3, days, 3):
            day = (end - pd.Timedelta(days=days - 1 - d)).strftime("%Y-%m-%d 10:00")
            order = f"o{u}-{d}"
            rows.append((f"u{u}", f"i{(u + d) % items}", "purchase", day, 1, 2.0, order))
            if (u + d) % 2 and items > 1:
                rows.append((f"u{u}", f"i{(u + d + 1) % items}", "purchase", day, 2, 3.0, order))
            rows.append((f"u{u}", f"i{(u * 7 + d) % items}", "view", day, 1, None, None))
    return rows


def best_sellers_by_hand(rows: list[tuple]) -> list[str]:
    """All-time best sellers: distinct buyers, then units, then item id."""
    ev = pd.DataFrame(rows, columns=["user_id", "item_id", "event_type", "t", "quantity", "price", "order_id"])
    p = ev[ev["event_type"] == "purchase"]
    g = p.groupby("item_id").agg(buyers=("user_id", "nunique"), units=("quantity", "sum")).reset_index()
    return g.sort_values(["buyers", "units", "item_id"], ascending=[False, False, True])["item_id"].tolist()


CASES = {
    "single_user": dict(rows=base_rows(1, 6)),
    "single_item": dict(rows=base_rows(6, 1)),
}


def warehouse(cfg, sql: str, *params) -> pd.DataFrame:
    con = duckdb.connect(str(layout(cfg).duckdb_path), read_only=True)
    try:
        return con.execute(sql, list(params)).df()
    finally:
        con.close()


def edge_config(tmp_path, rows: list[tuple]):
    cfg = load_config(environ={}, home=tmp_path / "var").replace(search_budget_seconds=0, ranker_window_days=7)
    land_frames(cfg, "edge", events_frame(rows), None, None)
    return cfg


def check_lists(cfg, ds: str, rows: list[tuple], published: dict) -> pd.DataFrame:
    """Every user with an event gets a full for_you list of distinct known items; returns the rows."""
    recs = warehouse(cfg, "SELECT * FROM user_recommendations WHERE ds = ?::DATE", ds)
    items = {r[1] for r in rows}
    assert published["user_recommendations"] == len(recs)
    for surface in ("for_you", "new_for_you"):
        part = recs[recs["surface"] == surface]
        assert set(part["item_id"]) <= items
        assert (part.groupby("user_id")["item_id"].nunique() == part.groupby("user_id").size()).all()
    for_you = recs[recs["surface"] == "for_you"].groupby("user_id").size()
    assert set(for_you.index) == {r[0] for r in rows}
    assert (for_you == min(cfg.ranking.top_n, len(items))).all()
    return recs


def best_sellers(cfg, ds: str) -> list[str]:
    return warehouse(cfg, "SELECT item_id FROM best_sellers WHERE ds = ?::DATE AND country = 'ALL' ORDER BY rank",
                     ds)["item_id"].tolist()


def hybrid_summary(cfg, ds: str) -> dict:
    return json.loads((layout(cfg).eval_dir(ds) / "hybrid_summary.json").read_text())


@pytest.mark.parametrize("case", list(CASES))
def test_a_first_night_publishes_with_one_user_or_one_item(case, tmp_path):
    """A fresh data root (the warehouse tables are created by this night, some of them empty)."""
    rows = CASES[case]["rows"]
    cfg = edge_config(tmp_path, rows)
    out = run_all(cfg, LAST, "edge-run")
    recs = check_lists(cfg, LAST, rows, out["publish"]["rows"])
    assert best_sellers(cfg, LAST) == best_sellers_by_hand(rows)[:cfg.surfaces.fallback_n]
    if case == "single_item":
        assert recs[recs["surface"] == "new_for_you"].empty  # every user bought the only item
        assert out["publish"]["rows"]["frequently_bought_together"] == 0
        assert out["publish"]["rows"]["complete_the_look"] == 0


def test_an_old_event_and_a_ds_after_the_data_do_not_stop_the_nights(tmp_path):
    """Issue 14: one purchase dated long before the rest, then a ds long after the last event (with a
    champion from the night before): every night publishes; the hybrid is skipped with its reason; the gate keeps
    the champion when nothing can be evaluated; the fallbacks are the all-time best sellers."""
    rows = base_rows(8, 12)
    cfg = edge_config(tmp_path, rows)
    old = [("old", "i3", "purchase", "2022-06-01 09:00", 1, 2.0, "o-old")]
    land_frames(cfg, "old-event", events_frame(old), None, None)
    first = again = run_all(cfg, LAST, "night-1")
    recs = check_lists(cfg, LAST, rows + old, again["publish"]["rows"])
    mine = recs[recs["user_id"] == "old"]
    # One purchase of i3, long ago: new_for_you never shows it and holds every other item; buy_again
    # lists it (items are repeatable by default).
    new_for_you = mine[mine["surface"] == "new_for_you"]["item_id"].tolist()
    assert "i3" not in new_for_you and len(new_for_you) == 11
    assert mine[mine["surface"] == "buy_again"]["item_id"].tolist() == ["i3"]

    far = "2030-01-01"
    later = run_all(cfg, far, "night-far", allow_future=True)
    check_lists(cfg, far, rows + old, later["publish"]["rows"])
    # Nothing in the last popularity_days: best sellers over all history, counted here by hand.
    assert best_sellers(cfg, far) == best_sellers_by_hand(rows + old)[:cfg.surfaces.fallback_n]
    summary = hybrid_summary(cfg, far)
    assert set(summary["skipped"]) == {"all", "new"} and summary["ndcg"] == {}
    assert later["evaluate"]["eval_users"] == 0
    assert later["publish"]["rows"]["trending"] == 0 and later["publish"]["rows"]["post_purchase_email"] == 0
    assert not later["select"]["promoted"] and "no evaluation tonight" in later["select"]["reason"]
    assert later["select"]["champion"] == first["select"]["champion"]
    # The popularity fallback (users without history or country) counts all-time distinct buyers too.
    pop = load_model(layout(cfg).model(far, "popularity"))
    ev = pd.DataFrame(rows + old, columns=["user_id", "item_id", "event_type", "t", "quantity", "price", "order_id"])
    buyers = ev[ev["event_type"] == "purchase"].groupby("item_id")["user_id"].nunique()
    item_ids = read_features(cfg, far).items["item_id"]
    assert np.floor(pop.scores_).tolist() == buyers.reindex(item_ids, fill_value=0).astype(float).tolist()


def test_a_ds_before_the_first_event_builds_an_empty_night(tmp_path):
    """No event up to ds: empty features, nothing to learn or evaluate, empty lists, no crash
    (publish writes the empty tables and the report says there is nothing to show)."""
    cfg = edge_config(tmp_path, base_rows(30, 12))
    out = {name: run_step(name, cfg, "2024-01-15", "early") for name in STEPS}
    assert out["features"]["events"] == 0 and out["features"]["users"] == 0
    assert out["evaluate"]["eval_users"] == 0
    assert set(out["rank"]["skipped"]) == {"all", "new"}
    assert out["score"]["rows"] == 0
    assert all(v == 0 for v in out["surfaces"]["rows"].values())
    published = out["publish"]["rows"]
    assert published["user_recommendations"] == 0 and published["best_sellers"] == 0
    assert "No items or recommendations on this night." in Path(out["publish"]["report"]).read_text()
    # The first night with rows publishes into the tables the empty night created: an empty table
    # never fixes the types (it once typed the email lists as text and broke every later publish).
    later = run_all(cfg, LAST, "first-real")
    assert later["publish"]["rows"]["post_purchase_email"] > 0
    types = dict(warehouse(cfg, "SELECT column_name, data_type FROM information_schema.columns "
                                "WHERE table_name = 'post_purchase_email'").itertuples(index=False))
    assert types["recommended_items"] == "VARCHAR[]" and types["scores"] == "DOUBLE[]"
    assert types["recommendation_ids"] == "VARCHAR[]"
    email = warehouse(cfg, "SELECT * FROM latest_post_purchase_email")
    assert set(email["ds"].astype(str)) == {LAST} and len(email) == later["publish"]["rows"]["post_purchase_email"]
