"""The daily interaction table's day is the event's UTC date (days since 1970-01-01, floored): an
event at 23:30 UTC is on its own day, not the next (DuckDB's ``//`` on a DOUBLE epoch does not
floor, and a cast to INTEGER rounds: every afternoon used to land on the next day)."""
from datetime import date

from pipelines.artifacts import read_daily
from pipelines.run import run_step
from pipelines.services.importers import land_frames
from tests.conftest import events_frame


def test_each_event_is_on_its_own_utc_day(cfg):
    rows = [("u1", "i1", "purchase", "2024-03-04 00:00", 1, 1.0, "o1"),
            ("u1", "i2", "purchase", "2024-03-04 11:59", 1, 1.0, "o2"),
            ("u2", "i1", "purchase", "2024-03-04 12:00", 1, 1.0, "o3"),
            ("u2", "i2", "purchase", "2024-03-05 23:30", 1, 1.0, "o4")]
    land_frames(cfg, "days", events_frame(rows), None, None)
    for step in ("validate", "features"):
        run_step(step, cfg, "2024-03-05", "days")
    d = read_daily(cfg, "2024-03-05")
    epoch = date(1970, 1, 1)
    want = sorted([(date(2024, 3, 4) - epoch).days] * 3 + [(date(2024, 3, 5) - epoch).days])
    assert sorted(d["day"].tolist()) == want


def test_the_features_sessions_equal_sessionize_on_the_validated_events(cfg):
    """The features step sorts and encodes sessions in DuckDB; features.sessions.sessionize (pandas,
    string ids) on the same validated events gives the same sessions, with ids where the feed has
    them and the 30-minute gap where a third of them are blank."""
    import numpy as np
    import pandas as pd

    from features.sessions import sessionize
    from pipelines import constants as C
    from pipelines.artifacts import layout, read_features
    from pipelines.dev.demo_data import generate
    from pipelines.session_artifacts import read_sessions

    ev = generate(seed=6, users=150, items=50, days=15, end_date="2024-03-05").events
    blank = np.random.default_rng(0).random(len(ev)) < 0.33
    ev.loc[blank, C.SESSION_ID] = None
    land_frames(cfg, "demo-sessions", ev, None, None)
    for step in ("validate", "features"):
        run_step(step, cfg, "2024-03-05", "sessions")
    f = read_features(cfg, "2024-03-05")
    valid = pd.read_parquet(layout(cfg).home / "validated" / "events")
    valid = valid[valid[C.EVENT_TYPE].isin([C.VIEW, C.ADD_TO_CART, C.PURCHASE])]
    index = pd.Series(f.items["item_idx"].to_numpy(), index=f.items["item_id"].astype(str).to_numpy())
    hs = pd.Timestamp(f.meta["holdout_start"], tz="UTC")
    for part, rows in (("train", valid[valid[C.EVENT_TIME] < hs]), ("holdout", valid[valid[C.EVENT_TIME] >= hs])):
        indptr, items = read_sessions(cfg, "2024-03-05", part)
        want_indptr, want_items = sessionize(rows, index, cfg.features.session_gap_minutes)
        assert len(indptr) > 10
        assert indptr.tolist() == want_indptr.tolist() and items.tolist() == want_items.tolist()
