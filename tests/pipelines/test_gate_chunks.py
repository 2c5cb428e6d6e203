"""The gate streams the pending partitions in chunks (validation_chunk_rows, issue 18): the same
rules, the same accounting, the same quarantine and validated files, and the same batch verdicts as
one pass over everything; a batch spanning chunks is judged on all its rows."""
import shutil

import pyarrow.parquet as pq
import pytest

from pipelines.artifacts import layout, read_validation_summary
from pipelines.config import load_config
from pipelines.dev.demo_data import import_demo
from pipelines.services.importers import land_frames
from pipelines.validation.events import _chunks, _parts
from pipelines.validation.gate import validate
from pipelines.validation.outcome import Outcome
from pipelines.validation.rules import ValidationError
from tests.conftest import events_frame

DS = "2024-06-20"


def zone(cfg) -> dict:
    """Every validated and quarantined row, per partition, as sorted records (file bytes differ by
    Parquet metadata only)."""
    out = {}
    for root in (layout(cfg).home / "validated" / "events", layout(cfg).home / "quarantine"):
        for f in sorted(root.rglob("part.parquet")):
            df = pq.read_table(f).to_pandas().drop(columns=["run_id"], errors="ignore")
            out[str(f.relative_to(cfg.home))] = sorted(map(repr, df.to_dict("records")))
    return out


@pytest.fixture(scope="module")
def landed(tmp_path_factory):
    cfg = load_config(environ={}, home=tmp_path_factory.mktemp("chunks") / "var")
    import_demo(cfg, seed=4, users=200, items=60, days=20, end_date=DS, signals=True)
    return cfg


def test_chunked_gate_equals_one_pass(landed, tmp_path):
    runs = {}
    for name, rows, sample in (("one", 10_000_000, 10_000_000), ("chunks", 200, 50)):
        home = tmp_path / name
        shutil.copytree(landed.home, home)
        cfg = load_config(environ={"RECSYS_VALIDATION_CHUNK_ROWS": str(rows),
                                   "RECSYS_EXPECTATION_SAMPLE_ROWS": str(sample)}, home=home)
        runs[name] = (cfg, validate(cfg, DS, "same-run"))
    (one, a), (chunked, b) = runs["one"], runs["chunks"]
    parts = _parts(sorted((layout(chunked).landing_events).glob("event_date=*")), set(), Outcome("events"))
    assert len(_chunks(parts, 200)) > 5 and len(_chunks(parts, 10_000_000)) == 1
    assert a["rows_quarantined"] > 0 and a["rule_counts"]["duplicate_event"] > 0
    assert {k: a[k] for k in ("rows_in", "rows_valid", "rows_quarantined", "rule_counts")} == \
        {k: b[k] for k in ("rows_in", "rows_valid", "rows_quarantined", "rule_counts")}
    assert zone(one) == zone(chunked)
    # The suite saw every row of the one pass; a sample of 50 rows per chunk of the other.
    ge = {n: read_validation_summary(c, DS)["great_expectations"]["events"] for n, (c, _) in runs.items()}
    not_null = [r for r in ge["one"] if r["expectation"] == "expect_column_values_to_not_be_null"]
    assert not_null and all(r["element_count"] == a["rows_in"] for r in not_null)
    counts = [r["element_count"] for r in ge["chunks"] if r["expectation"] == "expect_column_values_to_not_be_null"]
    assert counts and set(counts) == {50}
    manifests = [sorted((layout(c).home / "validated" / "events").glob("event_date=*/_manifest.json")) for c in (one, chunked)]
    assert len(manifests[0]) == 20 and [p.read_bytes() for p in manifests[0]] == [p.read_bytes() for p in manifests[1]]


def test_a_batch_spanning_chunks_is_judged_on_all_its_rows(cfg):
    """Day 1: 3 bad rows of 10; day 2: 0 of 40. Alone, day 1 is 30% bad (over the 10% limit); the
    batch is 3 of 50 = 6%: validated, whatever the chunks."""
    rows = [(f"u{k}", f"i{k}", "view", f"2024-06-19 10:{k:02d}", 1, -1.0 if k < 3 else 1.0, None) for k in range(10)]
    rows += [(f"u{k}", f"i{k}", "view", f"2024-06-20 10:{k:02d}", 1, 1.0, None) for k in range(40)]
    land_frames(cfg, "spanning", events_frame(rows), None, None)
    small = cfg.replace(validation_chunk_rows=5)
    res = validate(small, DS, "span")
    assert (res["rows_in"], res["rows_quarantined"], res["rule_counts"]["negative_price"]) == (50, 3, 3)
    # And a batch over the limit in total fails naming its rows, also when read in chunks.
    bad = [(f"b{k}", f"i{k}", "view", f"2024-06-19 11:{k:02d}", 1, -1.0, None) for k in range(6)]
    bad += [(f"b{k}", f"i{k}", "view", f"2024-06-20 11:{k:02d}", 1, 1.0, None) for k in range(4)]
    land_frames(cfg, "mostly-bad", events_frame(bad), None, None)
    with pytest.raises(ValidationError, match=r"6 of 10 rows \(60\.0%\) of batch mostly-bad.*negative_price \(column price\): 6 rows"):
        validate(small, DS, "span-2")
