"""Parsing of the values retailers' files carry: flags written as words."""
from __future__ import annotations

import pandas as pd

TRUE_WORDS = ("true", "1", "yes", "y", "t", "on")
FALSE_WORDS = ("false", "0", "no", "n", "f", "off")


def parse_bool(values: pd.Series) -> tuple[pd.Series, pd.Series]:
    """(booleans with NA for empty cells, mask of cells that are neither empty nor a true/false word)."""
    s = values.astype("string").str.strip().str.lower()
    val = pd.Series(pd.NA, index=values.index, dtype="boolean")
    val[s.isin(TRUE_WORDS).fillna(False).to_numpy(bool)] = True
    val[s.isin(FALSE_WORDS).fillna(False).to_numpy(bool)] = False
    return val, s.notna() & (s != "") & val.isna()
