"""A backfill (a ds older than the aliases' ds) logs its runs and registers its version but never
moves ``champion`` or ``challenger`` onto older data; the newest ds (or a rerun of it) still does."""
import mlflow

from pipelines.artifacts import mlflow_uri, read_selection
from pipelines.run import run_step
from tests.conftest import BASE_DS

OLDER = "2024-06-19"
UP_TO_SELECT = ("validate", "features", "train", "evaluate", "rank", "select")


def aliases(client, name):
    return {a: client.get_model_version_by_alias(name, a) for a in ("champion", "challenger")}


def test_a_backfill_never_moves_an_alias_onto_older_data(home):
    client = mlflow.MlflowClient(tracking_uri=mlflow_uri(home), registry_uri=mlflow_uri(home))
    name = home.gate.registered_model
    before = aliases(client, name)
    assert {mv.tags["ds"] for mv in before.values()} == {BASE_DS}

    for step in UP_TO_SELECT:
        out = run_step(step, home, OLDER, "backfill-1")

    # Logged and registered, tagged as a backfill, but both aliases stay where they were.
    assert out["backfill"] is True and out["promoted"] is False
    assert out["champion_version"] == str(before["champion"].version)
    after = aliases(client, name)
    assert {a: mv.version for a, mv in after.items()} == {a: mv.version for a, mv in before.items()}
    mv = client.get_model_version(name, out["model_version"])
    assert mv.version not in {m.version for m in before.values()}
    assert mv.tags["ds"] == OLDER and mv.tags["backfill"] == "true"
    note = f"backfill of {OLDER}: aliases stay on ds {BASE_DS}"
    assert note in mv.tags["backfill_reason"] and out["reason"].startswith(note)
    assert mv.description.startswith(f"ds {OLDER}, candidate {out['challenger']} (NDCG@10 ")
    assert mv.description.endswith(f"; gate: backfill, no alias moved: {out['reason']}")
    assert "newer data" not in out["reason"]  # older data is never called newer
    run = client.get_run(out["mlflow_run_id"])
    assert run.data.tags["ds"] == OLDER and run.data.tags["backfill"] == "true"
    assert run.data.tags["gate_decision"] == "backfill" and note in run.data.tags["gate_reason"]
    assert read_selection(home, OLDER)["backfill"] is True
    versions = client.search_model_versions(f"name = '{name}'")
    assert [v.version for v in versions if v.tags.get("ds") == OLDER] == [mv.version]

    # A rerun of the aliases' own ds behaves as before: the gate's decision moves the aliases.
    again = run_step("select", home, BASE_DS, "rerun-1")
    assert again["backfill"] is False
    now = aliases(client, name)
    assert str(now["challenger"].version) == again["model_version"]
    expected = again["model_version"] if again["promoted"] else str(before["champion"].version)
    assert str(now["champion"].version) == again["champion_version"] == expected
    assert client.get_run(again["mlflow_run_id"]).data.tags["backfill"] == "false"
    if before["champion"].tags["model"] == again["challenger"]:
        # Same model type on the same ds: promoted, and worded as a rerun, not as newer data.
        assert again["promoted"] and "a rerun of ds" in again["reason"] and "newer data" not in again["reason"]
