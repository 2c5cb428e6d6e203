"""Import batches: the quarantine share is judged per batch, a failed batch fails its own night once,
and `recsys batches`, `recsys withdraw` and `recsys restore` (docs/validation.md, "Batches")."""
import duckdb
import pandas as pd
import pyarrow.parquet as pq
import pytest

from features.interactions import build_features
from pipelines.artifacts import layout, read_features
from pipelines.cli import main
from pipelines.run import run_all
from pipelines.services.importers import import_events, land_frames
from pipelines.validation.batches import list_batches, read_ledger, restore, withdraw
from pipelines.validation.gate import ValidationError, validate
from tests.conftest import events_frame
from tests.pipelines.test_hostile_inputs import good_day

D1, D2 = "2024-06-21", "2024-06-22"


def day(d: str, n: int = 50) -> pd.DataFrame:
    ev = good_day(n)
    ev["event_time"] = ev["event_time"] + (pd.Timestamp(d) - pd.Timestamp(D1))
    return ev


def epochless(tmp_path):
    """The file of issue 14: six purchases whose times no parser reads."""
    f = tmp_path / "bad.csv"
    f.write_text("customer,sku,ts\n" + "".join(f"u{k:07d},i{k:06d},at noon on day {k}\n" for k in range(6)))
    return f


def validated_users(cfg, date_: str) -> list[str]:
    return sorted(pq.read_table(layout(cfg).validated_partition(date_) / "part.parquet").column("user_id").to_pylist())


def test_a_bad_batch_fails_its_own_night_once_then_later_nights_publish(home, tmp_path):
    land_frames(home, "good-d1", day(D1), None, None)
    bad = import_events(home, epochless(tmp_path), user_col="customer", item_col="sku", time_col="ts",
                        event_type="purchase").batch_id
    with pytest.raises(ValidationError) as err:
        validate(home, D1, "night-1")
    msg = str(err.value)
    assert f"rule quarantine_share: 6 of 6 rows (100.0%) of batch {bad}" in msg
    assert f"recsys withdraw {bad}" in msg and "fix the file and re-import it" in msg
    assert "ts='at noon on day 0'" in msg  # the raw text of the value that did not parse
    assert read_ledger(home)["batches"][bad]["status"] == "failed"
    assert not layout(home).validated_partition(D1).exists()

    land_frames(home, "good-d2", day(D2), None, None)
    out = run_all(home, D2, "night-2")
    v = out["validate"]
    # D1 (50 good rows), D2 (50) and the 6 rows of the failed batch, quarantined and not counted.
    assert (v["rows_in"], v["rows_valid"], v["rows_quarantined"]) == (106, 100, 6)
    assert v["rule_counts"]["batch_failed"] == 6
    assert any(w.startswith(f"batch {bad} failed its quarantine-share judgement on ds={D1}") for w in v["warnings"])
    con = duckdb.connect(str(layout(home).duckdb_path), read_only=True)
    assert con.execute("SELECT count(*) > 0 FROM user_recommendations WHERE ds = ?::DATE", [D2]).fetchall() == [(True,)]
    runs = con.execute("SELECT run_id, success FROM validation_runs WHERE dataset = 'events' AND run_id LIKE 'night-%' "
                       "ORDER BY run_id").fetchall()
    con.close()
    assert runs == [("night-1", False), ("night-2", True)]


def test_batches_lists_counts_and_withdraw_and_restore_change_the_next_run(home, capsys):
    keep = land_frames(home, "keep", day(D1, 40), None, None).batch_id
    extra = events_frame([(f"x{k}", f"i{k:06d}", "view", f"{D1} 11:0{k}", 1, 1.0, None) for k in range(3)]
                         + [("x9", "i999999", "view", f"{D1} 12:00", 1, 1.0, None)])  # an item not in the catalog
    drop = land_frames(home, "drop", extra, None, None).batch_id
    validate(home.replace(max_quarantine_share=0.5), D1, "r1")
    table = list_batches(home).set_index("batch")
    assert table.loc[keep, ["status", "landed", "valid", "quarantined", "event_dates"]].tolist() == \
        ["validated", 40, 40, 0, D1]
    assert table.loc[drop, ["status", "landed", "valid", "quarantined"]].tolist() == ["validated", 4, 3, 1]
    assert table.loc["demo-s2-u150-i60-d20-2024-06-20", "event_dates"] == "2024-06-01..2024-06-20"
    assert set(validated_users(home, D1)) >= {"x0", "x1", "x2"}

    assert main(["--home", str(home.home), "-q", "withdraw", "dro", "--reason", "test feed", "--by", "ops"]) == 0
    assert "batch drop withdrawn by ops" in capsys.readouterr().out
    out = validate(home, D1, "r2")
    assert out["partitions_validated"] == 1 and out["rows_in"] == 40
    assert not {"x0", "x1", "x2"} & set(validated_users(home, D1))
    build_features(home, D1, "r2")
    assert "x0" not in read_features(home, D1).users["user_id"].tolist()
    con = duckdb.connect(str(layout(home).duckdb_path), read_only=True)
    rows = con.execute("SELECT message FROM validation_runs WHERE run_id = 'r2' AND dataset = 'withdrawn_batch'"
                       ).fetchall()
    con.close()
    assert len(rows) == 1 and rows[0][0].startswith("batch drop withdrawn by ops at ") and "test feed" in rows[0][0]
    assert main(["--home", str(home.home), "-q", "batches"]) == 0
    listing = capsys.readouterr().out
    assert "drop" in listing and "withdrawn" in listing and "withdrawn by ops" in listing

    assert main(["--home", str(home.home), "-q", "withdraw", "--undo", "drop"]) == 0
    out = validate(home.replace(max_quarantine_share=0.5), D1, "r3")
    assert out["rows_in"] == 44 and {"x0", "x1", "x2"} <= set(validated_users(home, D1))
    assert list_batches(home).set_index("batch").loc[drop, "status"] == "validated"


def test_withdraw_needs_a_reason_and_a_known_batch_and_restore_rejudges_a_failed_batch(home, tmp_path):
    with pytest.raises(ValueError, match="give --reason"):
        withdraw(home, "demo", "")
    with pytest.raises(LookupError, match="no landed batch 'nope'.*recsys batches"):
        withdraw(home, "nope", "why")
    land_frames(home, "bad", events_frame([("u1", "i000001", "teleport", f"{D1} 10:00", 1, 1.0, None)]), None, None)
    with pytest.raises(ValidationError, match="of batch bad break a data rule"):
        validate(home, D1, "r1")
    assert restore(home, "bad")["history"][-1]["action"] == "rejudge"
    with pytest.raises(ValidationError, match="of batch bad break a data rule"):  # judged again: fails again
        validate(home, D1, "r2")
    assert validate(home, D1, "r3")["rule_counts"]["batch_failed"] == 1
