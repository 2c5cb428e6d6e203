"""The demo generator: deterministic, and the retail patterns it promises are really in the data."""
import hashlib

import pandas as pd

from pipelines.artifacts import layout
from pipelines.dev.demo_data import CONSUMABLE, generate, import_demo

ARGS = dict(users=400, items=120, days=45, end_date="2024-06-30")


def test_same_seed_same_data_other_seed_other_data():
    a, b = generate(seed=3, **ARGS), generate(seed=3, **ARGS)
    pd.testing.assert_frame_equal(a.events, b.events)
    pd.testing.assert_frame_equal(a.items, b.items)
    c = generate(seed=4, **ARGS)
    assert not a.events[["user_id", "item_id"]].equals(c.events[["user_id", "item_id"]])


def test_the_draws_are_those_of_earlier_releases():
    """Digests of the data of seed 3 (CSV text): a refactoring of the generator must keep every draw,
    in the same order. Change them only when the demo data is meant to change."""
    d = generate(seed=3, **ARGS)
    digests = {name: hashlib.sha256(getattr(d, name).to_csv(index=False).encode()).hexdigest()[:16]
               for name in ("events", "items", "users")}
    assert digests == {"events": "94092a7f8af23735", "items": "85989ab2463ef76b", "users": "bfc0bcc9eedbe0a0"}


def test_import_demo_lands_the_generated_data_once(cfg):
    first = import_demo(cfg, seed=3, users=60, items=30, days=10, end_date="2024-06-30")
    assert not first.skipped and first.items == 30 and first.users == 60 and 0 < first.partitions <= 10
    landed = pd.concat([pd.read_parquet(f) for f in sorted((layout(cfg).landing / "events").rglob("*.parquet"))])
    assert len(landed) == first.events == len(generate(seed=3, users=60, items=30, days=10, end_date="2024-06-30").events)
    assert import_demo(cfg, seed=3, users=60, items=30, days=10, end_date="2024-06-30").skipped


def test_patterns_funnel_arrivals_repeats_and_dirt():
    d = generate(seed=1, **ARGS)
    ev = d.events
    assert ev["event_time"].min() >= pd.Timestamp("2024-05-17", tz="UTC")  # 45 days ending 2024-06-30
    assert ev["event_time"].max() < pd.Timestamp("2024-07-01", tz="UTC")
    counts = ev["event_type"].value_counts()
    assert counts["view"] > counts["add_to_cart"] > 0 and counts["purchase"] > 0  # a funnel
    clean = ev.dropna(subset=["user_id"])
    # New users and new items: nobody acts before signing up, no item is seen before its release.
    first = clean.groupby("user_id")["event_time"].min().dt.date
    signup = d.users.set_index("user_id")["signup_date"]
    assert (first >= signup.reindex(first.index)).all()
    assert (signup > signup.min()).mean() > 0.15
    seen = clean.groupby("item_id")["event_time"].min().dt.date
    release = d.items.set_index("item_id")["release_date"]
    assert (seen >= release.reindex(seen.index)).all()
    # Consumables are bought again more often than other items.
    buys = clean[clean["event_type"] == "purchase"].merge(d.items[["item_id", "category"]], on="item_id")
    per_pair = buys.groupby(["user_id", "item_id", "category"]).size().rename("n").reset_index()
    per_pair["consumable"] = per_pair["category"].isin(CONSUMABLE)
    means = per_pair.groupby("consumable")["n"].mean()
    assert means[True] > means[False]
    # Sessions stay in one category, so an order with two categories can only come from a complement.
    multi = buys.groupby("order_id")["category"].nunique()
    assert (multi > 1).mean() > 0.1
    # A small share of dirty rows.
    dirty = ev["user_id"].isna() | ~ev["event_type"].isin(["view", "add_to_cart", "purchase", "return"]) \
        | (ev["price"] < 0) | (ev["quantity"] < 1)
    assert 0.001 < dirty.mean() < 0.01


def test_scale_generator_writes_one_partition_a_day_with_the_asked_counts_deterministically(tmp_path):
    import pyarrow.parquet as pq

    from pipelines.config import load_config
    from pipelines.dev.demo_scale import generate_scale

    tables = []
    for root in ("a", "b"):
        cfg = load_config(environ={}, home=tmp_path / root)
        out = generate_scale(cfg, users=500, items=120, events=9_001, days=3, end_date="2026-11-27", seed=3)
        assert out["events"] == 9_001
        parts = sorted((layout(cfg).landing / "events").glob("event_date=*/*.parquet"))
        assert [p.parent.name for p in parts] == ["event_date=2026-11-25", "event_date=2026-11-26",
                                                  "event_date=2026-11-27"]
        ev = pa_concat([pq.read_table(p) for p in parts])
        assert ev.num_rows == 9_001 and set(ev.column("event_type").to_pylist()) == {"view", "add_to_cart", "purchase"}
        assert len(set(ev.column("user_id").to_pylist())) <= 500 and len(set(ev.column("item_id").to_pylist())) <= 120
        tables.append(ev)
        again = generate_scale(cfg, users=500, items=120, events=9_001, days=3, end_date="2026-11-27", seed=3)
        assert again.get("skipped")  # the same batch lands once
    assert tables[0].equals(tables[1])


def pa_concat(tables):
    import pyarrow as pa

    return pa.concat_tables(tables)
