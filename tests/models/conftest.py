"""The shared model contract (test_contract.py) runs over every registered model, whatever the
order in which pytest collects the test files.

* A test that takes ``contract_case`` is parametrised over ``contract_cases`` of the registry, after
  every ``tests/models/test_*.py`` module is imported, so a model that a test file defines and
  ``@register``s gets every contract check with no edit to the checks. ``@pytest.mark.model_tags(t)``
  keeps a check to the models whose tag ``t`` is true.
* Models registered by test files leave ``models.REGISTRY`` once collection is done (no pipeline
  test sees them); the ``contract_model`` fixture registers its model again for the test's time.
"""
from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from models import REGISTRY
from tests.models.contract import contract_cases

_HERE = Path(__file__).resolve().parent
_PACKAGE = __name__.rpartition(".")[0]
# Models registered by test files (name -> class), taken out of REGISTRY after collection.
TEST_MODELS: dict[str, type] = {}


def is_test_model(cls: type) -> bool:
    """Defined outside the ``models`` package (in a test file)."""
    return cls.__module__.split(".")[0] != "models"


def pytest_configure(config):
    config.addinivalue_line("markers", "model_tags(*tags): a contract check for the models whose tags "
                                       "(Recommender class attributes) are all true")


def _import_test_modules() -> None:
    """Import every test module here, so each model a test file registers is in REGISTRY (pytest
    imports them under the same names, so each runs once)."""
    if not _PACKAGE:
        raise RuntimeError("tests/models must be collected as a package (tests/__init__.py, tests/models/__init__.py)")
    for path in sorted(_HERE.glob("test_*.py")):
        importlib.import_module(f"{_PACKAGE}.{path.stem}")


def pytest_generate_tests(metafunc):
    if "contract_case" not in metafunc.fixturenames:
        return
    _import_test_modules()
    tags = [t for mark in metafunc.definition.iter_markers("model_tags") for t in mark.args]
    cases = [c for c in contract_cases({**TEST_MODELS, **REGISTRY}) if c.tagged(*tags)]
    metafunc.parametrize("contract_case", cases, ids=[c.id for c in cases])


def pytest_collection_finish(session):
    for name, cls in list(REGISTRY.items()):
        if is_test_model(cls):
            TEST_MODELS[name] = REGISTRY.pop(name)


@pytest.fixture
def contract_model(contract_case, monkeypatch):
    """A fresh, unfitted instance of the case's model; its class is registered for the test."""
    monkeypatch.setitem(REGISTRY, contract_case.name, contract_case.cls)
    return contract_case.make()
