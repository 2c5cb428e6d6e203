"""Recommenders behind one contract (models.base.Recommender), registered by name (models.registry).

Importing the package imports every model module, so ``REGISTRY`` is complete.
"""
from models import als, bpr, buy_again, content, ease, itemknn, lightgcn, popularity, sasrec, two_tower  # noqa: F401  (they register)
from models.base import Recommender
from models.registry import REGISTRY, load_model, make_model, register

__all__ = ["Recommender", "REGISTRY", "load_model", "make_model", "register"]
