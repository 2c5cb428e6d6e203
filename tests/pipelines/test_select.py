"""The champion/challenger gate, case by case."""

import pytest

from pipelines.config import load_config
from pipelines.evaluation.gate import gate


def m(ndcg, cov=0.3):
    return {"ndcg_at_10": ndcg, "coverage_at_10": cov}


CFG = load_config(environ={}).replace(gate_margin=0.05, gate_coverage_tolerance=0.10)
METRICS = {"popularity": m(0.10, 0.01), "buy_again": m(0.30), "als": m(0.28), "ease": m(0.33, 0.30), "bpr": m(0.36, 0.20)}


@pytest.mark.parametrize("challenger,current,promote,why", [
    ("ease", None, True, "first champion"),
    ("ease", "ease", True, "refitted on newer data"),
    ("ease", "knn_gone", True, "no longer a candidate"),
    ("ease", "als", True, "beats champion als 0.2800 by at least 5%"),          # 0.33 >= 0.28 * 1.05 and >= 0.30 * 1.05
    ("als", "buy_again", False, "does not beat baseline buy_again"),           # 0.28 < 0.30 * 1.05
    ("bpr", "ease", False, "coverage 0.200 is below champion ease 0.300"),      # 0.36 >= 0.33*1.05 but coverage drops 33%
])
def test_gate(challenger, current, promote, why):
    ok, reason = gate(METRICS, challenger, current, CFG)
    assert ok is promote and why in reason


def test_a_small_gain_does_not_move_the_alias():
    metrics = {**METRICS, "ease": m(0.33), "itemknn": m(0.34)}  # 0.34 < 0.33 * 1.05
    ok, reason = gate(metrics, "itemknn", "ease", CFG)
    assert not ok and "does not beat champion ease 0.3300 by 5%" in reason
