"""The night's MLflow record, read back from the real store of the ``baseline`` night: the registered
version's signature, input example and description; the parent run's stable ``serving.*`` metrics
(no per-candidate metric on it); each nested run's candidate metrics; the training dataset input.
Expected values come from the step outputs on disk (evaluation parquet, features), read here."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from urllib.parse import unquote, urlparse

import mlflow
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from mlflow.models import Model

from pipelines.artifacts import layout, mlflow_uri, read_selection
from tests.conftest import BASE_DS

HEADLINE = ("ndcg", "precision", "recall", "map", "hit_rate", "coverage")


@pytest.fixture(scope="module")
def record(baseline):
    cfg = baseline
    client = mlflow.MlflowClient(tracking_uri=mlflow_uri(cfg), registry_uri=mlflow_uri(cfg))
    selection = read_selection(cfg, BASE_DS)
    return cfg, client, selection, client.get_run(selection["mlflow_run_id"])


def holdout_metrics(cfg, model: str) -> dict:
    """The evaluate step's metrics of ``model`` on the returning users, from its parquet."""
    table = pd.read_parquet(cfg.home / "eval" / f"ds={BASE_DS}" / "metrics.parquet")
    rows = table[(table["model"] == model) & (table["segment"] == "returning")]
    return dict(zip(rows["metric"], rows["value"]))


def test_the_version_has_a_signature_an_input_example_and_a_description(record):
    cfg, client, selection, _ = record
    name = cfg.gate.registered_model
    mv = client.get_model_version(name, selection["model_version"])
    assert [v.version for v in client.search_model_versions(f"name = '{name}'")] == [mv.version]  # the only one
    logged = client.get_logged_model(mv.source.removeprefix("models:/"))
    path = unquote(urlparse(logged.artifact_location).path)
    model = Model.load(path)
    assert model.signature.inputs.input_names() == ["user_id"]
    assert model.signature.outputs.input_names() == ["user_id", "rank", "item_id", "score"]
    example = model.load_input_example(path)
    assert list(example.columns) == model.signature.inputs.input_names() and len(example) == 3
    users = pd.read_parquet(cfg.home / "features" / f"ds={BASE_DS}" / "users.parquet")
    assert set(example["user_id"]) <= set(users["user_id"])
    # The example recommends: top_n rows per user, in the columns and types the signature names.
    pred = mlflow.pyfunc.load_model(path).predict(example)
    assert len(pred) == 3 * cfg.ranking.top_n
    assert list(pred.columns) == model.signature.outputs.input_names()
    assert pred["rank"].dtype == np.int64 and pred["score"].dtype == np.float32
    assert pred["user_id"].tolist() == np.repeat(example["user_id"], cfg.ranking.top_n).tolist()
    # The description names the ds, the candidate and the gate's decision (a first night: promoted).
    assert selection["promoted"] is True and selection["backfill"] is False
    assert mv.description.startswith(f"ds {BASE_DS}, candidate {selection['challenger']} (NDCG@10 ")
    assert f"gate: promoted: {selection['reason']}" in mv.description
    assert "models:/recsys_recommender@champion" in client.get_registered_model(name).description
    exp = client.get_experiment_by_name(cfg.gate.mlflow_experiment)
    assert "serving.ndcg_at_10" in exp.tags["mlflow.note.content"]


def test_the_parent_run_has_stable_serving_metrics_and_no_per_candidate_ones(record):
    cfg, client, selection, run = record
    expected = holdout_metrics(cfg, selection["champion"])
    step = int(np.datetime64(BASE_DS, "D").astype("int64"))  # days since 1970-01-01
    for m in HEADLINE:
        history = client.get_metric_history(run.info.run_id, f"serving.{m}_at_10")
        assert [(h.step, h.value) for h in history] == [(step, pytest.approx(expected[f"{m}_at_10"]))]
    assert run.data.metrics["serving.eval_users"] == expected["users"]
    challenger = holdout_metrics(cfg, selection["challenger"])
    assert run.data.metrics["challenger.ndcg_at_10"] == pytest.approx(challenger["ndcg_at_10"])
    assert not [k for k in run.data.metrics if k.split(".")[0] in cfg.models.candidates]
    assert run.data.tags["mlflow.note.content"].startswith(f"Serving {selection['champion']}; ds {BASE_DS}")


def test_each_nested_run_holds_its_candidates_metrics(record):
    cfg, client, _, run = record
    children = client.search_runs([run.info.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{run.info.run_id}'")
    by_candidate = {c.data.tags["candidate"]: c for c in children if c.data.tags.get("candidate") in
                    cfg.models.candidates}
    assert sorted(by_candidate) == sorted(cfg.models.candidates)
    for name, child in by_candidate.items():
        expected = holdout_metrics(cfg, name)
        assert child.data.metrics == pytest.approx(expected), name


def test_the_training_data_is_the_runs_dataset_input(record):
    cfg, _, _, run = record
    [inp] = run.inputs.dataset_inputs
    tags = {t.key: t.value for t in inp.tags}
    full = layout(cfg).features_dir(BASE_DS) / "full.npz"
    matrix = sp.load_npz(full)
    assert tags["mlflow.data.context"] == "training" and tags["ds"] == BASE_DS
    assert (tags["users"], tags["items"], tags["interactions"]) == tuple(str(n) for n in (*matrix.shape, matrix.nnz))
    assert inp.dataset.digest == hashlib.sha256(Path(full).read_bytes()).hexdigest()[:32]
    assert json.loads(inp.dataset.profile)["num_rows"] == matrix.nnz
    assert json.loads(inp.dataset.source)["uri"] == str(full)
    assert inp.dataset.name == f"interactions_{BASE_DS}"
