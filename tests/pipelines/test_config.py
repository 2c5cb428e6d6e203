
import pytest

from pipelines.artifacts import layout
from pipelines.config import SECTION_OF, load_config


def test_precedence_defaults_yaml_env_override(tmp_path):
    y = tmp_path / "recsys.yaml"
    y.write_text("als_factors: 16\nseed: 7\ncandidates: [popularity, als]\nevent_weights: {view: 0.5}\n")
    env = {"RECSYS_CONFIG": str(y), "RECSYS_SEED": "9", "RECSYS_HOME": str(tmp_path / "h")}
    cfg = load_config(environ=env, top_n=5)
    assert cfg.models.als_factors == 16          # from YAML
    assert cfg.seed == 9                  # env beats YAML
    assert cfg.ranking.top_n == 5                 # explicit override beats all
    assert cfg.models.candidates == ("popularity", "als")
    assert cfg.features.event_weights["view"] == 0.5 and cfg.features.event_weights["purchase"] == 8.0  # merged with defaults
    assert cfg.home == (tmp_path / "h").resolve() and cfg.home.is_absolute()
    assert layout(cfg).duckdb_path == cfg.home / "warehouse" / "recsys.duckdb"


def test_relative_home_becomes_absolute(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    assert load_config(environ={}).home == tmp_path / "var"


def test_bad_values_name_the_key(tmp_path):
    with pytest.raises(ValueError, match="als_factors='many'"):
        load_config(environ={"RECSYS_ALS_FACTORS": "many"})
    y = tmp_path / "bad.yaml"
    y.write_text("als_factor: 3\n")
    with pytest.raises(ValueError, match=r"unknown keys \['als_factor'\]"):
        load_config(environ={"RECSYS_CONFIG": str(y)})


def test_sectioned_yaml_and_flat_keys_mix(tmp_path):
    y = tmp_path / "recsys.yaml"
    y.write_text("models:\n  bpr_learning_rate: 0.02\n  candidates: [popularity, bpr]\n"
                 "scale: {publish_shards: 3, task_retries: 0}\ngate_margin: 0.05\n")
    cfg = load_config(environ={"RECSYS_CONFIG": str(y), "RECSYS_PUBLISH_SHARDS": "4"})
    assert cfg.models.bpr_learning_rate == 0.02 and cfg.models.candidates == ("popularity", "bpr")
    assert cfg.scale.publish_shards == 4 and cfg.scale.task_retries == 0   # env beats YAML, per field
    assert cfg.gate.gate_margin == 0.05
    # The untouched settings of a section keep their defaults.
    assert cfg.models.bpr_factors == 64 and cfg.scale.score_chunk_users == 25_000


def test_a_key_under_the_wrong_section_fails(tmp_path):
    y = tmp_path / "bad.yaml"
    y.write_text("scale:\n  als_factors: 3\n")
    with pytest.raises(ValueError, match=r"unknown keys \['scale.als_factors'\]"):
        load_config(environ={"RECSYS_CONFIG": str(y)})


def test_replace_routes_flat_names_to_their_sections():
    cfg = load_config(environ={})
    changed = cfg.replace(gate_margin=0.2, top_n=7, seed=3)
    assert (changed.gate.gate_margin, changed.ranking.top_n, changed.seed) == (0.2, 7, 3)
    assert (cfg.gate.gate_margin, cfg.ranking.top_n, cfg.seed) == (0.01, 20, 42)   # frozen: the original stays
    assert changed.models is cfg.models                                           # other sections shared
    with pytest.raises(ValueError, match="unknown setting 'gate_margn'"):
        cfg.replace(gate_margn=1)
    # Every setting has exactly one section, and flat() lists each of them once.
    assert set(cfg.flat()) == set(SECTION_OF) | {"home", "seed"}
