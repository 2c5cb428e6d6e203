
import pytest

from pipelines.artifacts import layout
from pipelines.config import load_config


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
