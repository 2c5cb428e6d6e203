"""A/B testing: deterministic assignment, power analysis against statsmodels, the analysis on
simulated outcomes with a known lift (interval coverage, A/A false positives, SRM), and the
experiment arms in the published lists."""
import functools
import hashlib
import math
import os
import subprocess
import sys
from datetime import date

import pandas as pd
import pytest

from pipelines.artifacts import layout
from pipelines.dev.ab_sim import simulate
from pipelines.services.ab import (
    Experiment,
    Variant,
    analyse,
    assign,
    bucket,
    plan_means,
    plan_proportions,
    srm,
)

EXP = Experiment("exp-1", (Variant("control", 0.5), Variant("treatment", 0.5, "challenger")),
                 date(2026, 1, 1), date(2026, 1, 31), salt="exp-1")


def test_bucket_is_sha256_of_salt_and_user_computed_by_hand():
    for user in ("12347", "u0000001", "ÅSA-ü"):
        digest = hashlib.sha256(f"exp-1:{user}".encode("utf-8")).hexdigest()
        assert bucket("exp-1", [user])[0] == int(digest[:15], 16) / 16 ** 15


def test_assignment_is_identical_across_processes_and_hash_seeds():
    users = [f"user{k}" for k in range(2000)]
    here = assign(EXP, users)["variant"].tolist()
    code = ("import sys; from datetime import date; from pipelines.services.ab import *; "
            "e = Experiment('exp-1', (Variant('control', 0.5), Variant('treatment', 0.5, 'challenger')), "
            "date(2026, 1, 1), date(2026, 1, 31), salt='exp-1'); "
            "print(','.join(assign(e, [f'user{k}' for k in range(2000)])['variant']))")
    for seed in ("0", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
        assert out.stdout.strip().split(",") == here
    # Golden values, the same on every machine: the first ten users' arms.
    assert here[:10] == [("control" if bucket("exp-1", [f"user{k}"])[0] < 0.5 else "treatment") for k in range(10)]


def test_arm_shares_for_100000_users_are_within_the_binomial_range():
    exp = Experiment("shares", (Variant("a", 0.45), Variant("b", 0.45), Variant("holdout", 0.10, "none")),
                     date(2026, 1, 1), date(2026, 1, 31), salt="s1")
    n = 100_000
    counts = assign(exp, [f"c{k}" for k in range(n)])["variant"].value_counts()
    for v in exp.variants:
        sd = math.sqrt(n * v.share * (1 - v.share))
        assert abs(counts[v.name] - n * v.share) < 4 * sd, (v.name, counts[v.name])


@pytest.mark.parametrize("baseline,mde,alpha,power", [(0.02, 0.05, 0.05, 0.8), (0.10, 0.02, 0.05, 0.9),
                                                      (0.005, 0.10, 0.01, 0.8), (0.30, -0.05, 0.05, 0.8)])
def test_plan_for_proportions_matches_statsmodels_to_the_user(baseline, mde, alpha, power):
    from statsmodels.stats.power import NormalIndPower
    from statsmodels.stats.proportion import proportion_effectsize

    h = proportion_effectsize(baseline * (1 + mde), baseline)
    expected = math.ceil(NormalIndPower().solve_power(effect_size=h, alpha=alpha, power=power, ratio=1.0))
    plan = plan_proportions(baseline, mde, alpha, power, daily_users=20_000)
    assert plan.users_per_arm == expected
    assert plan.days == math.ceil(2 * expected / 20_000)


@pytest.mark.parametrize("mean,sd,mde", [(2.5, 12.0, 0.03), (40.0, 55.0, 0.05), (1.0, 1.0, 0.02)])
def test_plan_for_means_matches_statsmodels_to_the_user(mean, sd, mde):
    from statsmodels.stats.power import NormalIndPower

    expected = math.ceil(NormalIndPower().solve_power(effect_size=mde * mean / sd, alpha=0.05, power=0.8))
    assert plan_means(mean, sd, mde).users_per_arm == expected


def test_the_cli_prints_the_plan(capsys):
    from pipelines.cli import main

    assert main(["-q", "ab", "plan", "--baseline-rate", "0.02", "--mde", "0.05", "--daily-users", "10000"]) == 0
    out = capsys.readouterr().out
    assert "users per arm: 315,161" in out and "64 days" in out


def test_the_cli_simulates_imports_and_reports_an_experiment(tmp_path, monkeypatch, capsys):
    from pipelines.cli import main
    from pipelines.config import load_config

    exp_file = tmp_path / "exp.yaml"
    exp_file.write_text("experiments:\n  - id: exp-1\n    start: 2026-01-01\n    end: 2026-01-31\n    variants:\n"
                        "      - {name: control, share: 0.5}\n      - {name: treatment, share: 0.5, lists: challenger}\n")
    monkeypatch.setenv("RECSYS_EXPERIMENTS_FILE", str(exp_file))
    home, sim = tmp_path / "var", tmp_path / "sim.csv"
    assert main(["--home", str(home), "-q", "ab", "simulate", "--experiment", "exp-1", "--users", "2000",
                 "--days", "3", "--out", str(sim)]) == 0
    assert main(["--home", str(home), "-q", "import-outcomes", str(sim)]) == 0
    assert main(["--home", str(home), "-q", "ab", "report", "--ds", "2026-01-03"]) == 0
    out = capsys.readouterr().out
    report = layout(load_config(environ={}, home=home)).ab_report("2026-01-03")
    assert "landed " in out and f"experiments ['exp-1']: 18 rows in ab_results; report {report}" in out
    assert "<h2>exp-1</h2>" in report.read_text()


@functools.lru_cache(maxsize=None)
def _simulated(lift: float, first: int, stop: int) -> pd.DataFrame:
    """Every metric's analysis of each simulated experiment (seeds first..stop-1), computed once and
    shared by the tests that read different metrics of the same simulations."""
    return pd.concat([analyse(EXP, *simulate(EXP, 4000, seed=s, lift={"treatment": lift})).assign(seed=s)
                      for s in range(first, stop)], ignore_index=True)


def run_many(lift: float, seeds: range, metric: str) -> pd.DataFrame:
    every = _simulated(lift, seeds.start, seeds.stop)
    return every[every["metric"] == metric].reset_index(drop=True)


@pytest.mark.parametrize("metric", ["revenue_per_visitor", "conversion"])
def test_the_95_percent_interval_covers_a_known_5_percent_lift_93_to_97_percent_of_the_time(metric):
    r = run_many(0.05, range(1000), metric)
    coverage = ((r["lift_low"] <= 0.05) & (0.05 <= r["lift_high"])).mean()
    assert 0.93 <= coverage <= 0.97, coverage
    # And the estimates centre on the truth.
    assert abs(r["lift"].mean() - 0.05) < 0.01


def test_aa_tests_reject_at_the_nominal_rate():
    r = run_many(0.0, range(5000, 5600), "conversion")
    share = (r["p_value"] < 0.05).mean()
    assert 0.03 <= share <= 0.07, share


def test_an_injected_52_48_split_on_a_50_50_design_is_flagged():
    a, o = simulate(EXP, 100_000, seed=7, srm_shift=0.04)  # 4% of control moved: about 48/52
    counts = a["variant"].value_counts()
    assert 0.515 < counts["treatment"] / len(a) < 0.525
    res = analyse(EXP, a, o)
    assert res["srm_flag"].all() and res["srm_p_value"].iloc[0] < 1e-6
    a, o = simulate(EXP, 100_000, seed=7)
    assert not analyse(EXP, a, o)["srm_flag"].any()
    # By hand: 52,000 vs 48,000 against 50/50 is chi-square 320.
    p, flag = srm({"control": 48_000, "treatment": 52_000}, {"control": 0.5, "treatment": 0.5})
    from scipy import stats

    assert flag and p == pytest.approx(stats.chi2.sf(320.0, 1))


def test_lift_and_interval_by_hand_on_a_tiny_case():
    from pipelines.services.ab import compare

    # Control mean 0.10 (var of the mean 0.0001), treatment 0.12 (0.0001): lift 20%,
    # se = sqrt(0.0001 / 0.01 + 0.0144 * 0.0001 / 0.0001) = sqrt(0.01 + 0.0144) = 0.1562.
    r = compare(0.10, 0.0001, 0.12, 0.0001)
    assert r["lift"] == pytest.approx(0.2)
    se = math.sqrt(0.01 + 0.0144)
    assert r["lift_low"] == pytest.approx(0.2 - 1.959964 * se, rel=1e-5)
    assert r["p_value"] == pytest.approx(2 * (1 - 0.9213504), rel=1e-4)  # z = 0.02 / sqrt(0.0002) = 1.4142


def test_published_lists_carry_the_experiment_and_each_arm_gets_its_own_lists(tmp_path):

    import duckdb

    from pipelines.config import load_config
    from pipelines.dev.demo_data import import_demo
    from pipelines.run import run_all

    ds = "2024-06-30"
    (tmp_path / "exp.yaml").write_text(
        "experiments:\n  - id: arms\n    start: 2024-06-01\n    end: 2024-07-31\n    surfaces: [for_you, new_for_you]\n"
        "    variants:\n      - {name: control, share: 0.4, lists: current}\n"
        "      - {name: popular, share: 0.4, lists: popularity}\n      - {name: holdout, share: 0.2, lists: none}\n")
    cfg = load_config(environ={}, home=tmp_path / "var").replace(experiments_file=str(tmp_path / "exp.yaml"), search_budget_seconds=0)
    import_demo(cfg, seed=5, users=200, items=60, days=30, end_date=ds)
    run_all(cfg, ds, "r1")
    con = duckdb.connect(str(layout(cfg).duckdb_path), read_only=True)
    recs = con.execute("SELECT * FROM user_recommendations").df()
    assigned = con.execute("SELECT * FROM ab_assignments").df()
    con.close()
    users = sorted(assigned["user_id"])
    expected = assign(load_exp(cfg), users).set_index("user_id")["variant"]
    assert assigned.set_index("user_id")["variant"].sort_index().equals(expected.sort_index())
    personal = recs[recs.surface.isin(["for_you", "new_for_you"])]
    by_variant = personal.groupby("variant")["user_id"].nunique()
    holdout = set(expected[expected == "holdout"].index)
    assert holdout and not holdout & set(personal["user_id"])  # no recommendations for the holdout
    assert by_variant["control"] == (expected == "control").sum() and by_variant["popular"] == (expected == "popular").sum()
    popular = personal[personal.variant == "popular"]
    assert set(popular["model"]) <= {"popular_in_country", "popularity", "discovery"}
    assert (personal.set_index("user_id")["variant"] == expected.reindex(personal["user_id"]).to_numpy()).all()
    assert recs["recommendation_id"].is_unique and recs["recommendation_id"].str.startswith("20240630-").all()
    assert recs.loc[recs.surface == "buy_again", "experiment_id"].isna().all()  # not in the experiment's surfaces


def load_exp(cfg):
    from pipelines.services.ab import load_experiments

    return load_experiments(cfg).experiments[0]


def test_experiment_file_errors_are_clear(tmp_path):

    from pipelines.config import load_config
    from pipelines.services.ab import ExperimentError, load_experiments

    cfg = load_config(environ={}, home=tmp_path)
    f = tmp_path / "e.yaml"
    f.write_text("experiments:\n  - id: x\n    start: 2024-01-01\n    end: 2024-02-01\n"
                 "    variants: [{name: a, share: 0.6}, {name: b, share: 0.6}]\n")
    with pytest.raises(ExperimentError, match="shares sum to 1.2"):
        load_experiments(cfg.replace(experiments_file=str(f)))
    f.write_text("experiments:\n  - id: x\n    start: 2024-01-01\n    end: 2024-02-01\n"
                 "    variants: [{name: a, share: 0.5}, {name: b, share: 0.5, lists: magic}]\n")
    with pytest.raises(ExperimentError, match="unknown lists"):
        load_experiments(cfg.replace(experiments_file=str(f)))


def test_import_outcomes_rejects_bad_rows_with_file_column_rule_and_lines(tmp_path):
    from pipelines.config import load_config
    from pipelines.services.ab_report import import_outcomes
    from pipelines.services.importers import ImportError_

    cfg = load_config(environ={}, home=tmp_path / "var")
    f = tmp_path / "o.csv"
    f.write_text("user_id,event_type,event_time,revenue\nu1,impression,2024-01-01T10:00:00Z,\n"
                 "u2,purchase,2024-01-01T11:00:00Z,\nu3,purchase,2024-01-01T12:00:00Z,12.5\n")
    with pytest.raises(ImportError_, match=r"'revenue': rule purchase_without_valid_revenue: 1 row.*\[3\]"):
        import_outcomes(cfg, f)
    f.write_text("user_id,event_type,event_time\nu1,view,2024-01-01T10:00:00Z\n")
    with pytest.raises(ImportError_, match="'event_type': rule unknown_event_type"):
        import_outcomes(cfg, f)
    assert not (layout(cfg).landing / "outcomes").exists()


def test_roi_turns_the_lift_into_revenue_by_hand():
    from scipy import stats

    from pipelines.services.ab import roi

    res = pd.DataFrame([{"metric": "revenue_per_visitor", "variant": "treatment", "mean_control": 2.0,
                         "lift": 0.05, "lift_low": 0.01, "lift_high": 0.09}])
    e = roi(res, daily_visitors=10_000, days=30, cost=20_000)
    # Base revenue 2.0 x 10,000 x 30 = 600,000; impact 5% = 30,000 (6,000 to 54,000); net 10,000.
    assert e["revenue_impact"] == pytest.approx(30_000) and e["impact_low"] == pytest.approx(6_000)
    assert e["net"] == pytest.approx(10_000) and e["net_high"] == pytest.approx(34_000)
    se = 48_000 / (2 * 1.959964)
    assert e["p_impact_exceeds_cost"] == pytest.approx(stats.norm.sf((20_000 - 30_000) / se), rel=1e-4)
