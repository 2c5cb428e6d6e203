"""Every hyperparameter of every registered model is settable from the config: the constructor
parameter ``p`` of model ``m`` is the setting ``m_p`` of pipelines.config.ModelSettings
(``random_state`` is the config's ``seed``), and make_model passes it on."""
import dataclasses

import pytest

from models import REGISTRY
from models.registry import make_model, model_params
from pipelines.config import ModelSettings

# The models of the package (a model that a test file registers has no settings).
MODELS = sorted(name for name, cls in REGISTRY.items() if cls.__module__.split(".")[0] == "models")


@pytest.mark.parametrize("name", MODELS)
def test_every_hyperparameter_is_a_config_setting(name):
    settings = {f.name for f in dataclasses.fields(ModelSettings)}
    missing = [f"{name}_{p}" for p in REGISTRY[name].param_names()
               if p != "random_state" and f"{name}_{p}" not in settings]
    assert not missing, f"ModelSettings lacks {missing}"


@pytest.mark.parametrize("name", MODELS)
def test_make_model_takes_every_hyperparameter_from_the_config(name, cfg):
    model = make_model(name, cfg)
    expected = {p: cfg.seed if p == "random_state" else getattr(cfg.models, f"{name}_{p}")
                for p in REGISTRY[name].param_names()}
    assert model.get_params() == model_params(name, cfg) == expected
    # The serving settings come from cfg.scale and are no hyperparameters (not in params.json).
    assert (model.block_users, model.block_cells) == (cfg.scale.score_block_users, cfg.scale.score_block_cells)
    assert not {"block_users", "block_cells"} & set(model.get_params())
