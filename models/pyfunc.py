"""MLflow pyfunc wrapper so the registered champion can be loaded and served with mlflow.pyfunc.

Logged as "models from code" (``models/pyfunc_entry.py``), so nothing is pickled: the model's own
files travel as artifacts and the list length comes from ``model_config["n"]``.
``predict`` takes a DataFrame with a ``user_id`` column (string) and returns one row per (user, rank):
``user_id`` (string), ``rank`` (int64, from 1), ``item_id`` (string), ``score`` (float32); users
unknown to the model get no rows. The registered version's signature says the same
(pipelines/evaluation/night_log.py: ``signature``).
"""
from __future__ import annotations

import warnings

import mlflow.pyfunc

from models import load_model

# MLflow nudges towards a type-hinted predict() when the class is defined; our input is a plain
# frame of user ids, and a loose hint only trades this warning for another one.
warnings.filterwarnings("ignore", message=r".*Add type hints to the `predict` method.*", category=UserWarning)


class RecommenderPyfunc(mlflow.pyfunc.PythonModel):
    def __init__(self, n: int = 20) -> None:
        self.n = n

    def load_context(self, context):
        import pandas as pd

        self.n = int((context.model_config or {}).get("n", self.n))

        self.model = load_model(context.artifacts["model"])
        self.users = pd.read_parquet(context.artifacts["users"])
        self.items = pd.read_parquet(context.artifacts["items"], columns=["item_idx", "item_id", "active"])
        import scipy.sparse as sp

        self.user_items = sp.load_npz(context.artifacts["user_items"]).tocsr()

    def predict(self, context, model_input, params=None):
        import numpy as np
        import pandas as pd

        idx = pd.Index(self.users["user_id"]).get_indexer(model_input["user_id"].astype(str))
        known = idx >= 0
        inactive = np.flatnonzero(~self.items["active"].to_numpy(dtype=bool))
        ids, scores = self.model.recommend(idx[known], self.user_items, self.n, filter_items=inactive)
        out = pd.DataFrame({
            "user_id": np.repeat(model_input["user_id"].astype(str).to_numpy()[known], self.n),
            "rank": np.tile(np.arange(1, self.n + 1), int(known.sum())),
            "item_id": self.items["item_id"].to_numpy()[ids.ravel().clip(0)],
            "score": np.asarray(scores, dtype=np.float32).ravel(),
        })
        return out[ids.ravel() >= 0].reset_index(drop=True)
