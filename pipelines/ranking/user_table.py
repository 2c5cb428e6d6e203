"""The ``user_recommendations`` rows of the score step: rectangular lists -> long rows -> one Arrow
table, its text columns as dictionaries over per-night vocabularies (users, items, sources,
reasons) and its recommendation ids combined from per-value key hashes."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import numpy as np
import pandas as pd
import pyarrow as pa

from pipelines import constants as C
from pipelines.infra.hashing import (
    combine_key_hashes,
    key_hashes,
    recommendation_id_array,
)
from pipelines.ranking.reasons import SourceVocabulary, reason_codes, reason_texts
from pipelines.ranking.rules import Lists

USER_RECS_SCHEMA = pa.schema([
    ("recommendation_id", pa.string()), ("ds", pa.date32()), ("run_id", pa.string()), ("surface", pa.string()),
    ("user_id", pa.string()), ("rank", pa.int32()), ("item_id", pa.string()), ("score", pa.float32()),
    ("model", pa.string()), ("reason", pa.string()), ("experiment_id", pa.string()), ("variant", pa.string())])
USER_RECS_ORDER = "surface, user_id, rank"
SURFACES = sorted([C.SURFACE_FOR_YOU, "new_for_you", "buy_again"])  # the categories of column surface


def long_rows(users: np.ndarray, surface: str, lists: Lists) -> pd.DataFrame:
    """Rectangular lists of one surface -> long rows (surface, row, user_idx, rank, item_idx,
    utility, source), row-major."""
    keep = lists.ids >= 0
    r, c = np.nonzero(keep)
    return pd.DataFrame({
        "surface": pd.Categorical.from_codes(np.full(len(r), SURFACES.index(surface), np.int8), SURFACES),
        "row": r, "user_idx": users[r], "rank": (c + 1).astype(np.int32), "item_idx": lists.ids[keep],
        "utility": lists.utility[keep], "source": lists.src[keep]})


def _text(codes: np.ndarray, values: pa.Array) -> pa.Array:
    return pa.DictionaryArray.from_arrays(pa.array(codes.astype(np.int32)), values).cast(pa.string())


@dataclass(frozen=True)
class TableEncoder:
    """Per night: the vocabularies of the text columns and the hash of every key value (user, item,
    surface, rank), computed once; ``table`` encodes a chunk's rows."""
    ds: str
    run_id: str
    vocab: SourceVocabulary
    country_of_user: np.ndarray
    user_ids: pa.Array
    item_ids: pa.Array
    reasons: pa.Array
    hashes: dict[str, np.ndarray]

    @classmethod
    def build(cls, ds: str, run_id: str, vocab: SourceVocabulary, user_ids: np.ndarray, item_ids: np.ndarray,
              country_of_user: np.ndarray, country_names, top_n: int) -> TableEncoder:
        hashes = {"user": key_hashes(user_ids), "item": key_hashes(item_ids), "surface": key_hashes(SURFACES),
                  "rank": key_hashes(range(top_n + 1))}  # ranks 1..top_n
        return cls(ds, run_id, vocab, country_of_user, pa.array(user_ids, pa.string()), pa.array(item_ids, pa.string()),
                   pa.array(reason_texts(country_names), pa.string()), hashes)

    def table(self, out: pd.DataFrame) -> pa.Table:
        """Rows (surface, user_idx, rank, item_idx, utility, source, owned, experiment_id, variant) ->
        the user_recommendations table."""
        u, i = out["user_idx"].to_numpy(np.int64), out["item_idx"].to_numpy(np.int64)
        src = out["source"].to_numpy(np.int32)
        reason = reason_codes(self.vocab, src, out["owned"].to_numpy(bool), u, self.country_of_user)
        surface_codes = out["surface"].cat.codes.to_numpy(np.int32)
        rank = out["rank"].to_numpy(np.int32)
        rows = len(out)
        h = self.hashes
        ids = recommendation_id_array(self.ds, hashes=combine_key_hashes(
            [h["surface"][surface_codes], h["user"][u], h["rank"][rank], h["item"][i]]))
        return pa.table({
            "recommendation_id": ids, "ds": pa.repeat(pa.scalar(date.fromisoformat(self.ds), pa.date32()), rows),
            "run_id": pa.repeat(pa.scalar(self.run_id, pa.string()), rows),
            "surface": _text(surface_codes, pa.array(SURFACES, pa.string())), "user_id": _text(u, self.user_ids),
            "rank": pa.array(rank), "item_id": _text(i, self.item_ids),
            "score": pa.array(out["utility"].to_numpy(np.float32)),
            "model": _text(src, pa.array(self.vocab.names, pa.string())), "reason": _text(reason, self.reasons),
            "experiment_id": pa.array(out["experiment_id"].to_numpy(object), pa.string(), from_pandas=True),
            "variant": pa.array(out["variant"].to_numpy(object), pa.string(), from_pandas=True)},
            schema=USER_RECS_SCHEMA)
