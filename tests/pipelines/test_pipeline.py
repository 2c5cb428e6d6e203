"""The whole nightly run in-process on demo data: tables, MLflow champion, rerun, catalog rules."""
import json

import duckdb
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from pipelines.artifacts import layout, mlflow_uri, read_features
from pipelines.dev.demo_data import import_demo
from pipelines.run import run_all
from pipelines.services.importers import land_frames

DS = "2024-06-30"


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    from pipelines.config import load_config

    cfg = load_config(environ={}, home=tmp_path_factory.mktemp("pipe") / "var")
    import_demo(cfg, seed=5, users=300, items=90, days=40, end_date=DS)
    # A later catalog batch deactivates one popular item: it must vanish from every list.
    land_frames(cfg, "zz-catalog-update", pd.DataFrame(columns=["user_id", "item_id", "event_type", "event_time"])
                .astype({"event_time": "datetime64[ns, UTC]"}),
                pd.DataFrame({"item_id": ["i000000"], "title": ["Retired item"], "active": [False]}), None)
    first = run_all(cfg, DS, "run-1")
    return cfg, first


def warehouse(cfg, sql, *params):
    con = duckdb.connect(str(layout(cfg).duckdb_path), read_only=True)
    try:
        return con.execute(sql, list(params)).df()
    finally:
        con.close()


def valid_events(cfg) -> pd.DataFrame:
    """Read from the validated files with pandas, independently of the features step."""
    files = sorted((layout(cfg).validated / "events").glob("event_date=*/part.parquet"))
    ev = pd.concat([pq.read_table(f).to_pandas() for f in files])
    return ev[ev["event_time"] < pd.Timestamp("2024-07-01", tz="UTC")]


def test_every_user_with_history_gets_twenty_distinct_ranked_items(demo_run):
    cfg, _ = demo_run
    recs = warehouse(cfg, "SELECT * FROM user_recommendations WHERE ds = ?::DATE", DS)
    assert set(recs["surface"]) == {"for_you", "new_for_you", "buy_again"}
    for surface, part in recs[recs["surface"] != "buy_again"].groupby("surface"):
        per_user = part.groupby("user_id").agg(n=("item_id", "size"), distinct=("item_id", "nunique"),
                                              ranks=("rank", lambda r: sorted(r) == list(range(1, 21))))
        assert set(per_user.index) == set(valid_events(cfg)["user_id"]), surface
        assert (per_user["n"] == 20).all() and (per_user["distinct"] == 20).all() and per_user["ranks"].all()
    assert recs["run_id"].unique().tolist() == ["run-1"]
    assert "i000000" not in set(recs["item_id"])
    # Each source list keeps its own order: within (user, surface, model), scores never rise with rank.
    ordered = recs.sort_values(["user_id", "surface", "model", "rank"])
    assert (ordered.groupby(["user_id", "surface", "model"])["score"].diff().dropna() <= 1e-6).all()


def test_new_for_you_never_repeats_what_the_user_has_touched(demo_run):
    cfg, _ = demo_run
    recs = warehouse(cfg, "SELECT user_id, item_id FROM user_recommendations WHERE surface = 'new_for_you'")
    seen = valid_events(cfg)[["user_id", "item_id"]].drop_duplicates()
    # Interactions whose weights cancel out (bought then returned) are not "touched" any more.
    overlap = recs.merge(seen, on=["user_id", "item_id"])
    full = read_features(cfg, DS)
    users = full.users.set_index("user_id")["user_idx"]
    items = full.items.set_index("item_id")["item_idx"]
    dense = full.full.toarray()
    weights = dense[users.loc[overlap["user_id"]].to_numpy(), items.loc[overlap["item_id"]].to_numpy()]
    assert len(recs) > 0 and (weights == 0).all()


def test_search_results_are_what_the_candidates_report(demo_run):
    cfg, first = demo_run
    summary = json.loads((layout(cfg).eval_dir(DS) / "summary.json").read_text())
    assert summary["search"], "the default budget leaves room for trials on this small data"
    for name, params in summary["params"].items():
        best = max((t for t in summary["search"] if t["model"] == name), key=lambda t: t["ndcg"])
        assert best["params"] == params and best["improved"]
        assert summary["metrics"][name]["ndcg_at_10"] == pytest.approx(best["ndcg"])
    for t in summary["search"]:  # a trial that did not win left the candidate's figure above its own
        if not t["improved"]:
            assert summary["metrics"][t["model"]]["ndcg_at_10"] >= t["ndcg"]


def test_similar_items_and_model_runs(demo_run):
    cfg, first = demo_run
    sim = warehouse(cfg, "SELECT * FROM similar_items WHERE ds = ?::DATE", DS)
    assert "i000000" not in set(sim["item_id"]) | set(sim["similar_item_id"])
    assert (sim["item_id"] != sim["similar_item_id"]).all()
    assert sim.groupby("item_id")["rank"].max().max() == cfg.ranking.similar_items_n
    # The demo catalog has categories: a content neighbour shares the anchor's category (the
    # co-interaction ones may cross it).
    cat = warehouse(cfg, "SELECT item_id, category FROM items WHERE ds = ?::DATE", DS).set_index("item_id")["category"]
    content = sim[sim["content_score"] > 0]
    assert len(content) > 100 and (cat[content["item_id"]].to_numpy() == cat[content["similar_item_id"]].to_numpy()).all()
    crossing = sim[cat[sim["item_id"]].to_numpy() != cat[sim["similar_item_id"]].to_numpy()]
    assert len(crossing) and (crossing["content_score"] == 0).all() and (crossing["itemknn_score"] > 0).all()
    everything = warehouse(cfg, "SELECT * FROM model_runs WHERE ds = ?::DATE", DS)
    runs = everything[(everything["protocol"] == "holdout") & (everything["segment"] == "returning")]
    assert set(runs["model"]) == set(cfg.models.candidates)
    ranker = everything[everything["protocol"] == "ranker_window"]
    assert set(ranker["task"]) == {"all", "new"} and "hybrid" in set(ranker["model"])
    new_users = everything[everything["segment"] == "new"]
    assert set(new_users["model"]) == {"popularity", "trending", "popular_in_country"}
    # The report of the run exists and names tonight's champion.
    report = (cfg.home / "reports" / f"ds={DS}" / "report.html").read_text()
    assert first["select"]["champion"] in report and "Popularity bias" in report
    ndcg = runs[runs["metric"] == "ndcg_at_10"].set_index("model")["value"]
    assert ndcg.idxmax() == first["select"]["champion"] == first["evaluate"]["best_model"]
    assert ndcg.max() == pytest.approx(first["evaluate"]["best_ndcg"])


def test_mlflow_run_and_champion_alias(demo_run):
    cfg, first = demo_run
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=mlflow_uri(cfg), registry_uri=mlflow_uri(cfg))
    mv = client.get_model_version_by_alias(cfg.gate.registered_model, "champion")
    assert str(mv.version) == first["select"]["model_version"]
    assert mv.tags["ds"] == DS and mv.tags["model"] == first["select"]["champion"]
    run = client.get_run(first["select"]["mlflow_run_id"])
    assert run.data.tags["ds"] == DS and run.data.tags["run_id"] == "run-1"
    # The serving model's headline metrics sit on the parent run under stable names (the first night's
    # champion is tonight's best); each candidate's own metrics are on its nested run.
    assert first["select"]["champion"] == first["evaluate"]["best_model"]
    assert run.data.metrics["serving.ndcg_at_10"] == pytest.approx(first["evaluate"]["best_ndcg"])
    assert run.data.metrics["published.user_recommendations"] == first["publish"]["rows"]["user_recommendations"]
    assert run.data.metrics["validation.rows_in"] == first["validate"]["rows_in"]
    # The night's Data Docs are attached to the run and linked from a tag.
    docs = [a.path for a in client.list_artifacts(run.info.run_id, "validation")]
    assert {"validation/report.html", "validation/summary.json", "validation/data_docs"} <= set(docs)
    assert [a.path for a in client.list_artifacts(run.info.run_id, "validation/data_docs")].count(
        "validation/data_docs/index.html") == 1
    assert run.data.tags["data_docs"].endswith("/validation/report.html")
    # One parent run per night, a nested run per candidate and one for the hybrid.
    children = client.search_runs([run.info.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{run.info.run_id}'")
    assert sorted(c.data.tags["candidate"] for c in children) == sorted([*cfg.models.candidates, "hybrid"])
    assert run.data.tags["gate_decision"] == "promote" and "first champion" in run.data.tags["gate_reason"]
    # The registered model loads through MLflow and recommends like the published table.
    model = mlflow.pyfunc.load_model(f"models:/{cfg.gate.registered_model}@champion")
    users = warehouse(cfg, "SELECT DISTINCT user_id FROM user_recommendations ORDER BY 1 LIMIT 3")["user_id"]
    pred = model.predict(pd.DataFrame({"user_id": users}))
    assert len(pred) == 3 * cfg.ranking.top_n


def test_rerun_replaces_the_ds_with_the_same_counts(demo_run):
    cfg, first = demo_run
    second = run_all(cfg, DS, "run-2")
    assert second["publish"]["rows"] == first["publish"]["rows"]
    counts = warehouse(cfg, "SELECT run_id, count(*) AS n FROM user_recommendations GROUP BY ALL")
    assert counts["run_id"].tolist() == ["run-2"]
    assert counts["n"].tolist() == [first["publish"]["rows"]["user_recommendations"]]
    assert second["select"]["champion"] == first["select"]["champion"]  # same data, same seed
    # Same model type again: the gate moves the alias to the version refitted tonight.
    assert second["select"]["promoted"] and second["select"]["champion_version"] == second["select"]["model_version"]


def test_gate_keeps_the_alias_when_the_challenger_is_not_better_enough(demo_run):
    cfg, _ = demo_run

    import mlflow

    client = mlflow.MlflowClient(tracking_uri=mlflow_uri(cfg), registry_uri=mlflow_uri(cfg))
    before = client.get_model_version_by_alias(cfg.gate.registered_model, "champion")
    # Pretend the champion is the popularity model and ask for an impossible 1000% gain.
    client.set_model_version_tag(cfg.gate.registered_model, before.version, "model", "popularity")
    strict = cfg.replace(gate_margin=10.0)
    out = run_all(strict, DS, "run-3")["select"]
    assert out["promoted"] is False and "does not beat" in out["reason"]
    after = client.get_model_version_by_alias(cfg.gate.registered_model, "champion")
    assert after.version == before.version  # the alias did not move
    assert client.get_model_version_by_alias(cfg.gate.registered_model, "challenger").version == int(out["model_version"])
    assert out["champion"] == "popularity"  # tonight's lists come from the champion's model type
    run = client.get_run(out["mlflow_run_id"])
    assert run.data.tags["gate_decision"] == "keep"
    description = client.get_model_version(cfg.gate.registered_model, out["model_version"]).description
    assert description.endswith(f"; gate: kept champion popularity: {out['reason']}")


def test_three_user_shards_publish_exactly_the_single_shard_lists(demo_run):

    from pipelines.infra.hashing import shard_of
    from pipelines.run import run_step

    cfg, _ = demo_run
    before = warehouse(cfg, "SELECT * FROM user_recommendations WHERE ds = ?::DATE", DS)
    sharded = cfg.replace(publish_shards=3)
    run_id = before["run_id"].iloc[0]  # the same run, its lists recomputed in three shards
    out = run_step("score", sharded, DS, run_id)
    assert out["shards"] == 3 and out["rows"] == len(before)
    users = pd.Series(sorted(before["user_id"].unique()))
    counts = np.bincount(shard_of(users.to_numpy(), 3), minlength=3)
    assert (counts > 0).all()  # every shard has users
    run_step("publish", sharded, DS, run_id)
    after = warehouse(cfg, "SELECT * FROM user_recommendations WHERE ds = ?::DATE", DS)
    keys = ["surface", "user_id", "rank"]
    pd.testing.assert_frame_equal(before.sort_values(keys).reset_index(drop=True),
                                  after.sort_values(keys).reset_index(drop=True))


def test_the_search_tunes_only_candidates_near_the_best_and_warm_starts_als(demo_run, tmp_path, caplog):
    """search_min_share: a candidate below that share of the best candidate's NDCG gets no trial. The
    shares come from an evaluate run without search (the candidates' own figures); the threshold is
    put between two candidates' shares. ALS trials with the candidate's factors or fewer start from
    its holdout fit (fewer: its truncation, models/als.py); those with more factors do not."""
    import logging
    import shutil

    from pipelines.evaluation.search import SEARCH_SPACE
    from pipelines.run import run_step

    cfg, _ = demo_run

    def evaluate(name, **settings):
        home = tmp_path / name / "var"
        shutil.copytree(cfg.home, home)
        c = cfg.replace(home=home, **settings)
        run_step("evaluate", c, DS, name)
        return json.loads((layout(c).eval_dir(DS) / "summary.json").read_text())

    plain = evaluate("plain", search_budget_seconds=0.0)["metrics"]
    best = max(m["ndcg_at_10"] for m in plain.values())
    share = {n: plain[n]["ndcg_at_10"] / best for n in plain if SEARCH_SPACE.get(n)}
    assert len(share) >= 2 and "als" in share
    low, high = sorted(set(share.values()))[:2]
    threshold = (low + high) / 2
    tuned = evaluate("tuned", search_budget_seconds=600.0, search_min_share=threshold)
    tried = {t["model"] for t in tuned["search"]}
    assert tried == {n for n, s in share.items() if s >= threshold}
    assert tried != set(share)  # the threshold left one out
    with caplog.at_level(logging.INFO, logger="pipelines.evaluation.search"):
        every = evaluate("every", search_budget_seconds=600.0, search_min_share=0.0)
    assert {t["model"] for t in every["search"]} == set(share)
    warm = [r.getMessage() for r in caplog.records if "starts from the candidate's holdout fit" in r.getMessage()]
    at_most = [a for a in SEARCH_SPACE["als"] if a.get("factors", cfg.models.als_factors) <= cfg.models.als_factors]
    assert len(at_most) < len(SEARCH_SPACE["als"])  # one trial has more factors: a cold fit
    assert at_most and len(warm) == len(at_most) and all(str(a) in " ".join(warm) for a in at_most)
