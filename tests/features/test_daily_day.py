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
