"""The models package imports every model module, so REGISTRY is complete whoever imports it first
(sizes, cycles and local imports of every package: tests/test_architecture.py)."""
import ast
from pathlib import Path

from models import REGISTRY

INIT = Path(__file__).resolve().parents[2] / "models" / "__init__.py"


def test_the_package_imports_every_model_module():
    tree = ast.parse(INIT.read_text())
    imported = {f"models.{a.name}" for node in tree.body if isinstance(node, ast.ImportFrom) and node.module == "models"
                for a in node.names}
    registered = {cls.__module__ for cls in REGISTRY.values() if cls.__module__.split(".")[0] == "models"}
    assert registered and registered <= imported
