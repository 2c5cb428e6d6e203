"""Parsing of the values retailers' files carry: flags written as words, times in any ISO 8601 form
or as Unix epochs, ids that a float column turned into ``12347.0``, whole-number quantities.

Every parser is vectorised and never guesses silently: a value it cannot read becomes null, and the
importer keeps the raw text (``_unparseable``) so that the validation gate quarantines the row.
"""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

TRUE_WORDS = ("true", "1", "yes", "y", "t", "on")
FALSE_WORDS = ("false", "0", "no", "n", "f", "off")

# Unix epochs: seconds or milliseconds since 1970-01-01 UTC (``--time-format epoch_s|epoch_ms``).
EPOCH_UNITS = {"epoch_s": "s", "epoch_ms": "ms"}
# Detection: every given value is a number, all of them inside one of these ranges (both are
# 1973-03-03 .. 2286-11-20, so a value can only be read one way). Anything else is not detected.
EPOCH_RANGES = {"epoch_s": (1e8, 1e10), "epoch_ms": (1e11, 1e13)}
TIME_RESOLUTION = "datetime64[us, UTC]"


def parse_bool(values: pd.Series) -> tuple[pd.Series, pd.Series]:
    """(booleans with NA for empty cells, mask of cells that are neither empty nor a true/false word)."""
    s = values.astype("string").str.strip().str.lower()
    val = pd.Series(pd.NA, index=values.index, dtype="boolean")
    val[s.isin(TRUE_WORDS).fillna(False).to_numpy(bool)] = True
    val[s.isin(FALSE_WORDS).fillna(False).to_numpy(bool)] = False
    return val, s.notna() & (s != "") & val.isna()


def given(values: pd.Series) -> pd.Series:
    """True where a cell holds something (not null, not blank)."""
    return (values.notna() & (values.astype("string").str.strip() != "").fillna(False)).astype(bool)


def _numbers(values: pd.Series) -> pd.Series:
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        return values.astype("float64")
    return pd.to_numeric(values.astype("string").str.strip(), errors="coerce").astype("float64")


def detect_epoch(values: pd.Series) -> str | None:
    """``epoch_s`` or ``epoch_ms`` when every given value is a number inside one plausible range
    (``EPOCH_RANGES``), else None (the values are read as ISO 8601 text)."""
    if pd.api.types.is_datetime64_any_dtype(values):
        return None
    has = given(values)
    if not has.any():
        return None
    num = _numbers(values)[has]
    if num.isna().any():
        return None
    for fmt, (lo, hi) in EPOCH_RANGES.items():
        if ((num >= lo) & (num < hi)).all():
            return fmt
    return None


def parse_times(values: pd.Series, fmt: str | None = None) -> tuple[pd.Series, str]:
    """Times as UTC timestamps (microseconds), and the format used.

    * a timestamp column: naive times are taken as UTC, zoned ones converted;
    * ``epoch_s`` / ``epoch_ms`` (given, or detected by ``detect_epoch``): numbers since 1970 UTC;
    * another ``fmt``: a strftime format, applied to every row;
    * none: each row in any ISO 8601 form (``2024-06-21``, ``2024-06-21 10:00``,
      ``2024-06-21T10:00:00.5Z``, ``...+05:30``), offsets converted to UTC, naive times taken as UTC;
      rows that are not ISO 8601 get one more try with the format pandas infers from the first of them.
    Values that do not parse become NaT.
    """
    if pd.api.types.is_datetime64_any_dtype(values):
        ts = values.dt.tz_localize("UTC") if values.dt.tz is None else values.dt.tz_convert("UTC")
        return ts.astype(TIME_RESOLUTION), "timestamp"
    fmt = fmt or detect_epoch(values)
    if fmt in EPOCH_UNITS:
        num = _numbers(values)
        limit = 2.5e11 * (1000 if fmt == "epoch_ms" else 1)  # about year 9900: beyond it, unparseable
        num = num.where(num.abs() < limit)
        ts = pd.to_datetime(num, unit=EPOCH_UNITS[fmt], utc=True, errors="coerce")
        return ts.astype(TIME_RESOLUTION), fmt
    text = values.astype("string").str.strip()
    if fmt:
        return pd.to_datetime(text, format=fmt, utc=True, errors="coerce").astype(TIME_RESOLUTION), fmt
    ts = pd.to_datetime(text, format="ISO8601", utc=True, errors="coerce").astype(TIME_RESOLUTION)
    rest = (ts.isna() & given(values)).to_numpy(bool)
    if rest.any():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "could not infer format": the rows stay NaT, that is the answer
            try:
                other = pd.to_datetime(text[rest], utc=True, errors="coerce").astype(TIME_RESOLUTION)
            except (ValueError, OverflowError, TypeError):
                other = pd.Series(pd.NaT, index=text.index[rest], dtype=TIME_RESOLUTION)
        ts[rest] = other
    return ts, "ISO8601"


def id_text(values: pd.Series) -> pd.Series:
    """Ids as trimmed text. A float column (Parquet or Excel integers with nulls) gives its whole
    numbers as integer text (``12347``, not ``12347.0``), the same id a CSV file spells."""
    if pd.api.types.is_float_dtype(values):
        v = values.astype("float64")
        whole = (v.notna() & np.isfinite(v) & (v == np.floor(v)) & (v.abs() < 2**63)).to_numpy(bool)
        out = v.astype("string")
        out[whole] = v[whole].astype("int64").astype("string")
        return out
    if pd.api.types.is_bool_dtype(values):
        return values.astype("string")
    return values.astype("string").str.strip()


def parse_whole(values: pd.Series) -> pd.Series:
    """Whole numbers (nullable Int64). A value that is not a finite whole number (``1.5``, ``inf``,
    ``abc``) becomes null: it is never rounded; the importer keeps its raw text for the gate."""
    num = _numbers(values)
    whole = num.notna() & np.isfinite(num) & (num == np.floor(num)) & (num.abs() < 2**53)
    return num.where(whole).astype("Int64")


def parse_dates(values: pd.Series) -> tuple[pd.Series, pd.Series]:
    """(dates as ``datetime64`` at midnight, mask of given cells that are not a real calendar date in
    ISO 8601 form, e.g. ``2026-13-45``)."""
    if pd.api.types.is_datetime64_any_dtype(values):
        return values, pd.Series(False, index=values.index)
    d = pd.to_datetime(values.astype("string").str.strip(), format="ISO8601", errors="coerce")
    return d, given(values) & d.isna()
