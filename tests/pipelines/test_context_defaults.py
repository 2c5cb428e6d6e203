"""context_defaults (lists for visitors without history, per channel, landing page, device and
country) recomputed by hand from planted events, and `recsys context-recs` combining published
lists by hand (issue 17, item 4)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import scipy.sparse as sp

from pipelines.artifacts import Features, layout
from pipelines.cli import main
from pipelines.infra import warehouse
from pipelines.ranking.context_tables import context_defaults
from pipelines.services.context_recs import context_recs

DS = "2024-06-20"
ITEMS = pd.DataFrame({"item_id": ["a1", "a2", "a3", "b1", "b2", "b3", "x"],
                      "category_key": ["garden"] * 3 + ["kitchen"] * 3 + ["garden"],
                      "active": True, "in_stock": [True] * 6 + [False]})
USERS = pd.DataFrame({"user_id": ["s1", "s2", "s3", "q1", "q2", "q3", "o1"],
                      "country": ["United Kingdom"] * 3 + [" france"] * 3 + ["United Kingdom"],
                      "personalized": [True] * 6 + [False]})
SOCIAL = ("social", "garden", "mobile")
SEARCH = ("search", "kitchen", "desktop")
NONE = (None, None, None)
# (user, item, event type, (channel, landing page, device), day): social visitors buy garden, search
# visitors kitchen. o1 opted out of personalisation; the April event is outside the 30 days.
EVENTS = [
    ("s1", "a1", "purchase", ("social", "Garden", "mobile")), ("s1", "a2", "purchase", SOCIAL),
    ("s1", "b1", "view", (" Social ", "garden", "mobile")), ("s1", "x", "purchase", SOCIAL),
    ("s2", "a1", "purchase", SOCIAL), ("s2", "a2", "purchase", SOCIAL), ("s2", "x", "purchase", SOCIAL),
    ("s3", "a1", "purchase", SOCIAL), ("s3", "a3", "view", SOCIAL),
    ("q1", "b1", "purchase", SEARCH), ("q1", "b2", "purchase", SEARCH), ("q1", "a1", "view", SEARCH),
    ("q2", "b1", "purchase", SEARCH), ("q2", "b2", "purchase", SEARCH), ("q2", "b2", "return", NONE),
    ("q3", "b1", "purchase", SEARCH), ("q3", "b3", "view", ("paid", "kitchen", "desktop")),
    ("o1", "b3", "purchase", SOCIAL),
]


def write_events(cfg, rows, day: str, context: bool = True) -> None:
    df = pd.DataFrame({"user_id": [r[0] for r in rows], "item_id": [r[1] for r in rows],
                       "event_type": [r[2] for r in rows],
                       "event_time": pd.Timestamp(f"{day} 12:00", tz="UTC"), "quantity": 1, "price": 1.0})
    if context:
        for k, col in enumerate(("channel", "landing_page", "device")):
            df[col] = pd.Series([r[3][k] for r in rows], dtype="string")
    path = layout(cfg).validated_partition(day) / "part.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), path)


def features() -> Features:
    users = USERS.assign(user_idx=range(len(USERS)))
    items = ITEMS.assign(item_idx=range(len(ITEMS)))
    empty = sp.csr_matrix((len(users), len(items)), dtype=np.float32)
    return Features(users, items, empty, empty, pd.DataFrame(columns=["user_idx", "item_idx"]), {})


@pytest.fixture
def planted(cfg):
    cfg = cfg.replace(context_n=4, context_prior=2.0, context_days=30)
    write_events(cfg, EVENTS, "2024-06-19")
    write_events(cfg, [("s1", "b3", "purchase", SOCIAL)], "2024-04-01")
    return cfg, context_defaults(cfg, DS, features())


def lists(df: pd.DataFrame) -> dict[tuple[str, str], list[str]]:
    return {k: g.sort_values("rank")["item_id"].tolist() for k, g in df.groupby(["context", "value"])}


def test_channel_defaults_differ_by_channel_as_planted(planted):
    cfg, df = planted
    got = lists(df)
    # Weights: purchase 8, view 1, return -8 (config event_weights), per (user, item, value), clipped at 0.
    w = cfg.features.event_weights
    assert (w["purchase"], w["view"], w["return"]) == (8.0, 1.0, -8.0)
    # Overall (every event of the window but o1's): a1 3x8+1, b1 1+3x8, a2 16, x 16, b2 8+(8-8), a3 1, b3 1.
    p = {"a1": 25 / 92, "b1": 25 / 92, "a2": 16 / 92, "x": 16 / 92, "b2": 8 / 92, "a3": 1 / 92, "b3": 1 / 92}
    # social: a1 24, a2 16, x 16, b1 1, a3 1 (58); search: b1 24, b2 16 (the return has no channel), a1 1 (41).
    # score = (w + 2 p) / (W + 2); x is out of stock; at most 2 of 4 items from one category.
    assert got[("channel", "social")] == ["a1", "a2", "b1", "b2"]
    assert got[("channel", "search")] == ["b1", "b2", "a1", "a2"]
    social = df[(df.context == "channel") & (df.value == "social")].set_index("item_id")["score"]
    search = df[(df.context == "channel") & (df.value == "search")].set_index("item_id")["score"]
    assert social["a1"] == pytest.approx((24 + 2 * p["a1"]) / 60)
    assert social["b2"] == pytest.approx((0 + 2 * p["b2"]) / 60)
    assert search["b1"] == pytest.approx((24 + 2 * p["b1"]) / 43)
    assert search["a2"] == pytest.approx((0 + 2 * p["a2"]) / 43)
    # One view from "paid": its list is nearly the overall one, with its own item first.
    assert got[("channel", "paid")] == ["b3", "a1", "b1", "a2"]
    paid = df[(df.context == "channel") & (df.value == "paid")].set_index("item_id")["score"]
    assert paid["b3"] == pytest.approx((1 + 2 * p["b3"]) / 3) and paid["a1"] == pytest.approx(2 * p["a1"] / 3)
    # Values trimmed and lower-cased: "Garden" and " Social " are the same lists.
    assert got[("landing_page", "garden")] == got[("channel", "social")]
    assert got[("device", "mobile")] == got[("channel", "social")]
    assert got[("device", "desktop")][:2] == ["b1", "b2"]
    overall = df[df.context == "all"].set_index("item_id")["score"]
    assert got[("all", "all")] == ["a1", "b1", "a2", "b2"] and overall["b2"] == pytest.approx(p["b2"])
    reasons = df.groupby(["context", "value"])["reason"].first()
    assert reasons[("channel", "social")] == "popular with visitors from social"
    assert reasons[("landing_page", "garden")] == "popular with visitors landing on garden"
    assert reasons[("device", "mobile")] == "popular on mobile"
    assert reasons[("all", "all")] == "popular with shoppers"


def test_country_lists_and_the_rules(planted):
    _, df = planted
    got = lists(df)
    assert set(df.loc[df.context == "country", "value"]) == {"united kingdom", "france"}
    # The UK's visitors are the social ones (all their events); France's the search ones, return included.
    assert got[("country", "united kingdom")] == got[("channel", "social")]
    assert got[("country", "france")][:2] == ["b1", "b2"]
    france = df[(df.context == "country") & (df.value == "france")].set_index("item_id")["score"]
    assert france["b2"] == pytest.approx((8 + 2 * 8 / 92) / (8 + 24 + 1 + 1 + 2))
    reasons = df.groupby(["context", "value"])["reason"].first()
    assert reasons[("country", "united kingdom")] == "popular in United Kingdom"
    assert reasons[("country", "france")] == "popular in france"
    # The out-of-stock item never appears, however often it was bought; caps hold; ranks are 1..n.
    assert "x" not in set(df["item_id"])
    cats = ITEMS.set_index("item_id")["category_key"]
    assert df.assign(c=df["item_id"].map(cats)).groupby(["context", "value", "c"]).size().max() <= 2
    assert (df.groupby(["context", "value"])["rank"].apply(lambda r: sorted(r) == list(range(1, len(r) + 1)))).all()


def test_files_without_context_columns_give_country_and_overall_lists_only(cfg):
    write_events(cfg, [(u, i, t, NONE) for u, i, t, _ in EVENTS[:4]], "2024-06-19", context=False)
    df = context_defaults(cfg, DS, features())
    assert set(df["context"]) == {"country", "all"}
    assert lists(df)[("all", "all")][:2] == ["a1", "a2"]
    write_events(cfg, [], "2024-06-19", context=False)
    assert context_defaults(cfg, "2024-01-01", features()).empty  # no event in the window


def publish_defaults(cfg, rows) -> None:
    df = pd.DataFrame(rows, columns=["context", "value", "rank", "item_id", "score", "reason"])
    df.insert(0, "run_id", "hand")
    df.insert(0, "ds", pd.Timestamp(DS).date())
    table = pa.Table.from_pandas(df, preserve_index=False).cast(pa.schema(
        [("ds", pa.date32()), ("run_id", pa.string()), ("context", pa.string()), ("value", pa.string()),
         ("rank", pa.int32()), ("item_id", pa.string()), ("score", pa.float64()), ("reason", pa.string())]))
    warehouse.publish_tables(layout(cfg).duckdb_path, layout(cfg).parquet_root, DS, {"context_defaults": table})


HAND = [("channel", "social", 1, "a1", 0.4, "popular with visitors from social"),
        ("channel", "social", 2, "a2", 0.2, "popular with visitors from social"),
        ("landing_page", "garden", 1, "a2", 0.5, "popular with visitors landing on garden"),
        ("landing_page", "garden", 2, "c1", 0.25, "popular with visitors landing on garden"),
        ("device", "mobile", 1, "b1", 0.9, "popular on mobile"),
        ("all", "all", 1, "a1", 0.3, "popular with shoppers"), ("all", "all", 2, "z", 0.2, "popular with shoppers"),
        ("all", "all", 3, "a2", 0.1, "popular with shoppers"), ("all", "all", 4, "b1", 0.05, "popular with shoppers")]


def test_context_recs_combines_the_given_contexts_by_hand(cfg, capsys):
    publish_defaults(cfg, HAND)
    recs, unknown = context_recs(cfg, {"channel": " Social", "landing_page": "garden", "device": "tablet",
                                       "country": None}, n=5)
    # Each list scaled by its top score: social a1 1, a2 .5; garden a2 1, c1 .5; summed per item; the
    # reason of the larger part; then the overall list (in its order) fills with score 0.
    assert recs.to_dict("list") == {
        "rank": [1, 2, 3, 4, 5], "item_id": ["a2", "a1", "c1", "z", "b1"],
        "score": pytest.approx([1.5, 1.0, 0.5, 0.0, 0.0]),
        "reason": ["popular with visitors landing on garden", "popular with visitors from social",
                   "popular with visitors landing on garden", "popular with shoppers", "popular with shoppers"]}
    assert unknown == ["device=tablet"]
    # No known value: the overall list, scaled.
    recs, unknown = context_recs(cfg, {"channel": "tiktok"}, n=3)
    assert recs["item_id"].tolist() == ["a1", "z", "a2"] and unknown == ["channel=tiktok"]
    assert recs["score"].tolist() == pytest.approx([1.0, 2 / 3, 1 / 3])
    # The command line: the unknown value named on stderr, the answer on stdout.
    assert main(["--home", str(cfg.home), "-q", "context-recs", "--channel", "social", "--landing", "garden",
                 "--device", "mobile", "-n", "2"]) == 0
    out, err = capsys.readouterr()
    rows = [line.split()[1] for line in out.splitlines()[1:]]
    assert rows == ["a2", "a1"] and err == ""  # a1 1.0 and b1 1.0 (mobile's top): the tie goes by item id
    assert main(["--home", str(cfg.home), "-q", "context-recs", "--device", "tablet"]) == 0
    assert "no published list for: device=tablet" in capsys.readouterr().err
