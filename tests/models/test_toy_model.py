"""A toy recommender defined and registered in a test file: item co-occurrence (a user's score for
an item is how often it was bought together with the items the user has).

Registering it is all it takes for the shared contract (test_contract.py) to check it too: the
``toy_cooccurrence`` cases appear in ``pytest -v tests/models`` with no edit to the checks. It is
out of ``models.REGISTRY`` once collection is done (tests/models/conftest.py), so no pipeline test
sees it.
"""
import numpy as np
import scipy.sparse as sp

from models import REGISTRY, register
from models.base import Recommender
from tests.models.conftest import TEST_MODELS
from tests.models.contract import contract_cases


@register
class CooccurrenceRecommender(Recommender):
    name = "toy_cooccurrence"
    sparse = True

    def __init__(self, min_count: int = 1) -> None:
        self.min_count = min_count

    def fit(self, user_items: sp.csr_matrix, items=None) -> "CooccurrenceRecommender":
        x = (user_items.tocsr() > 0).astype(np.float32)
        pairs = (x.T @ x).tocsr()
        pairs = (pairs - sp.diags(pairs.diagonal())).tocsr()  # an item does not co-occur with itself
        pairs.data[pairs.data < self.min_count] = 0
        pairs.eliminate_zeros()
        self.cooccurrence_ = pairs.astype(np.float32)
        return self

    def sparse_scores(self, users, user_items):
        return ((user_items[users] > 0).astype(np.float32) @ self.cooccurrence_).tocsr(), None

    def score(self, users, user_items):
        return self.sparse_scores(users, user_items)[0].toarray()

    def item_vectors(self):
        return self.cooccurrence_

    def _arrays(self):
        return {"cooccurrence_": self.cooccurrence_}

    def _set_arrays(self, arrays):
        self.cooccurrence_ = arrays["cooccurrence_"]


def test_toy_counts_baskets_shared_with_the_users_items():
    # Items 0 and 1 were bought together twice, 1 and 2 once.
    ui = sp.csr_matrix(np.array([[1, 1, 0], [1, 1, 0], [0, 1, 1], [1, 0, 0]], dtype=np.float32))
    model = CooccurrenceRecommender().fit(ui)
    assert model.cooccurrence_.toarray().tolist() == [[0, 2, 0], [2, 0, 1], [0, 1, 0]]
    ids, scores = model.recommend(np.array([3]), ui, n=3, exclude=ui)
    assert ids.tolist() == [[1, 2, -1]] and scores[0, :2].tolist() == [2.0, 0.0]
    pruned = CooccurrenceRecommender(min_count=2).fit(ui)
    assert pruned.cooccurrence_.nnz == 2


def test_the_shared_contract_runs_for_the_toy():
    """The cases the contract checks are parametrised over (conftest.pytest_generate_tests) hold the
    toy beside the package's models, whichever files this run collects."""
    names = {c.name for c in contract_cases({**TEST_MODELS, **REGISTRY})}
    assert {"toy_cooccurrence", "als", "popularity"} <= names


def test_the_toy_is_out_of_the_registry_outside_the_contract_tests():
    assert "toy_cooccurrence" not in REGISTRY
