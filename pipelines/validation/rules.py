"""Row and schema rules of the validation gate (docs/validation.md).

* **schema**: ``read_event_file`` reads one landing file and fails the batch (``ValidationError``)
  when it is unreadable, lacks a required column, has a column of the wrong type, or has no rows.
* **row rules** (``ROW_RULES``), vectorised: ``row_rule_masks`` gives one mask per rule for events,
  ``reference_rule_masks`` for catalog and users batches; ``encode_rules`` and ``rule_names`` turn
  the masks into the ``;``-joined rule names stored with each quarantined row.
"""
from __future__ import annotations

import difflib
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines import constants as C
from pipelines.infra.events import EVENT_SCHEMA, UNPARSEABLE

ROW_RULES = ("null_user_id", "null_item_id", "id_too_long", "unknown_event_type", "null_event_time",
             "event_time_outside_partition", "event_time_after_ds", "event_time_before_earliest",
             "quantity_out_of_range", "negative_price", "price_out_of_range", "unparseable_value", "unknown_item",
             "missing_rating", "rating_out_of_range", "empty_review", "review_too_long", "dwell_out_of_range",
             "context_too_long", "duplicate_event", "batch_failed")
RULE_COLUMN = {
    "null_user_id": C.USER_ID, "null_item_id": C.ITEM_ID, "id_too_long": "user_id, item_id",
    "unknown_event_type": C.EVENT_TYPE, "null_event_time": C.EVENT_TIME,
    "event_time_outside_partition": C.EVENT_TIME, "event_time_after_ds": C.EVENT_TIME,
    "event_time_before_earliest": C.EVENT_TIME, "quantity_out_of_range": C.QUANTITY, "negative_price": C.PRICE,
    "price_out_of_range": C.PRICE, "unparseable_value": UNPARSEABLE, "unknown_item": C.ITEM_ID,
    "missing_rating": C.RATING, "rating_out_of_range": C.RATING, "empty_review": C.REVIEW_TEXT,
    "review_too_long": C.REVIEW_TEXT, "dwell_out_of_range": C.DWELL_SECONDS,
    "context_too_long": ", ".join(C.CONTEXT_COLUMNS),
    "duplicate_event": "user_id, item_id, event_type, event_time, order_id", "batch_failed": "(the whole batch)",
}
# Set by the gate (validation/events.py), not by a value of the row: every row of a batch that
# failed its quarantine-share judgement on an earlier night.
BATCH_FAILED = "batch_failed"
DUPLICATE_KEY = [C.USER_ID, C.ITEM_ID, C.EVENT_TYPE, C.EVENT_TIME, C.ORDER_ID]
STRING_COLUMNS = (C.USER_ID, C.ITEM_ID, C.EVENT_TYPE, C.ORDER_ID, C.SESSION_ID, C.REVIEW_TEXT, *C.CONTEXT_COLUMNS)
QUARANTINE_SCHEMA = pa.schema([
    ("ds", pa.date32()), ("run_id", pa.string()), ("event_date", pa.string()), ("rule", pa.string()),
    *[f for f in EVENT_SCHEMA if f.name != UNPARSEABLE], ("unparseable", pa.string()), ("source_file", pa.string()),
])


class ValidationError(ValueError):
    """A batch-level failure: the message names the file, the column, the rule, counts and example rows."""


# ------------------------------------------------------------------ type and schema rules
def _type_ok(column: str, t: pa.DataType) -> bool:
    if pa.types.is_null(t):
        return column not in C.REQUIRED_EVENT_COLUMNS
    if column in STRING_COLUMNS or column == UNPARSEABLE:
        return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)
    if column == C.EVENT_TIME:
        return pa.types.is_timestamp(t)
    if column == C.QUANTITY:
        return pa.types.is_integer(t)
    if column in (C.PRICE, C.RATING, C.DWELL_SECONDS):
        return pa.types.is_floating(t) or pa.types.is_integer(t)
    return True


def read_event_file(path: Path) -> pa.Table:
    """Read one landing file and check its schema; raise ValidationError naming file, column and rule."""
    try:
        table = pq.read_table(path)
    except Exception as exc:  # truncated, corrupt or not Parquet at all
        raise ValidationError(f"{path}: rule unreadable_file: cannot be read as Parquet ({exc})") from exc
    names = table.column_names
    missing = [c for c in C.REQUIRED_EVENT_COLUMNS if c not in names]
    if missing:
        hints = []
        for c in missing:
            close = difflib.get_close_matches(c, [n for n in names if n not in C.EVENT_COLUMNS], n=1, cutoff=0.5)
            hints.append(f"{c!r}" + (f" (renamed to {close[0]!r}?)" if close else ""))
        raise ValidationError(f"{path}: rule missing_column: required column(s) {', '.join(hints)} missing; "
                              f"the file has columns {names}")
    wrong = [f"{c!r} is {table.schema.field(c).type}" for c in names
             if c in EVENT_SCHEMA.names and not _type_ok(c, table.schema.field(c).type)]
    if wrong:
        examples = table.slice(0, 3).to_pylist()
        raise ValidationError(f"{path}: rule wrong_type: column {', '.join(wrong)}; expected "
                              + ", ".join(f"{c} {EVENT_SCHEMA.field(c).type}" for c in names if c in EVENT_SCHEMA.names)
                              + f"; first rows: {examples}")
    if table.num_rows == 0:
        raise ValidationError(f"{path}: rule empty_file: the file has its header (columns {names}) but no rows")
    cols = {}
    for f in EVENT_SCHEMA:
        if f.name in names:
            cols[f.name] = table.column(f.name).cast(f.type)
        else:
            cols[f.name] = pa.nulls(table.num_rows, f.type)
    return pa.table(cols, schema=EVENT_SCHEMA)


# ------------------------------------------------------------------ row rules
def _day(name) -> np.datetime64:
    try:
        return np.datetime64(str(name), "D")
    except ValueError:
        return np.datetime64("NaT", "D")


def row_rule_masks(df: pd.DataFrame, partition_date: pd.Series, ds: str | None = None,
                   catalog_ids: pd.Index | None = None, max_id_length: int = 256,
                   max_quantity: int = 100_000, *, max_price: float = 1_000_000.0,
                   earliest_event_date: str = "1990-01-01", max_dwell_seconds: float = 14_400.0,
                   max_review_length: int = 20_000,
                   duplicate_scope: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """One boolean mask per row rule (``batch_failed`` aside): True where the row breaks the rule.
    Vectorised. ``duplicate_scope``: the rows among which duplicates are looked for (all rows by
    default; the gate leaves out the rows of failed batches, so a fixed re-import is not a copy)."""
    def text(col):
        return df[col].astype("string")

    def blank(col):
        s = text(col)
        return (s.isna() | (s.str.strip() == "")).to_numpy(dtype=bool)

    etime = pd.to_datetime(df[C.EVENT_TIME], utc=True)
    day = etime.dt.tz_localize(None).to_numpy().astype("datetime64[D]")
    # Each partition name once (any year 0001..9999): event_date=unknown and the like are NaT.
    part = pd.Series(partition_date)
    if isinstance(part.dtype, pd.CategoricalDtype):  # the gate's chunks: each name once already
        codes, names = part.cat.codes.to_numpy(), part.cat.categories.to_numpy(dtype=object)
    else:
        codes, names = pd.factorize(part.astype(object), use_na_sentinel=True)
    days = np.array([_day(n) for n in names] + [np.datetime64("NaT", "D")], dtype="datetime64[D]")
    pday = days[np.where(codes < 0, len(names), codes)]
    qty = pd.to_numeric(df[C.QUANTITY], errors="coerce")
    price = pd.to_numeric(df[C.PRICE], errors="coerce")
    lengths = np.maximum(text(C.USER_ID).str.len().fillna(0).to_numpy(), text(C.ITEM_ID).str.len().fillna(0).to_numpy())
    has_time = ~np.isnat(day)
    masks = {
        "null_user_id": blank(C.USER_ID),
        "null_item_id": blank(C.ITEM_ID),
        "id_too_long": lengths > max_id_length,
        "unknown_event_type": (~df[C.EVENT_TYPE].isin(C.EVENT_TYPES)).to_numpy(dtype=bool),
        "null_event_time": ~has_time,
        "event_time_outside_partition": has_time & (day != pday),
        "event_time_after_ds": has_time & (day > np.datetime64(ds, "D")) if ds else np.zeros(len(df), bool),
        "event_time_before_earliest": has_time & (day < np.datetime64(earliest_event_date, "D")),
        "quantity_out_of_range": (qty.notna() & ((qty < 1) | (qty > max_quantity))).to_numpy(dtype=bool),
        "negative_price": (price.notna() & (price < 0)).to_numpy(dtype=bool),
        "price_out_of_range": (price.notna() & (~np.isfinite(price) | (price > max_price))).to_numpy(dtype=bool),
        "unparseable_value": (text(UNPARSEABLE).fillna("") != "").to_numpy(dtype=bool) if UNPARSEABLE in df
        else np.zeros(len(df), bool),
        "unknown_item": (~df[C.ITEM_ID].isin(catalog_ids)).to_numpy(dtype=bool) & ~blank(C.ITEM_ID)
        if catalog_ids is not None and len(catalog_ids) else np.zeros(len(df), bool),
        **feedback_rule_masks(df, max_id_length, max_dwell_seconds, max_review_length),
    }
    # Later copies of the same (user, item, type, time, order) are duplicates; the first one stays.
    if duplicate_scope is None or duplicate_scope.all():
        masks["duplicate_event"] = df.duplicated(subset=DUPLICATE_KEY, keep="first").to_numpy(dtype=bool)
    else:
        masks["duplicate_event"] = np.zeros(len(df), bool)
        masks["duplicate_event"][duplicate_scope] = df.loc[duplicate_scope].duplicated(
            subset=DUPLICATE_KEY, keep="first").to_numpy(dtype=bool)
    return masks


def feedback_rule_masks(df: pd.DataFrame, max_context_length: int = 256, max_dwell_seconds: float = 14_400.0,
                        max_review_length: int = 20_000) -> dict[str, np.ndarray]:
    """The rules of the explicit-feedback, engagement and context columns (absent columns break none):
    a rating event without a rating; a rating (any event) outside [1, 5] or not finite; a review event
    whose text is empty or blank, or longer than ``max_review_length``; a dwell time that is negative,
    not finite or above ``max_dwell_seconds``; a device, channel or landing page longer than
    ``max_context_length``."""
    n = len(df)
    etype = df[C.EVENT_TYPE].astype("string") if C.EVENT_TYPE in df else pd.Series(pd.NA, index=df.index, dtype="string")

    def number(col):
        return pd.to_numeric(df[col], errors="coerce").to_numpy(dtype=float) if col in df else np.full(n, np.nan)

    rating, dwell = number(C.RATING), number(C.DWELL_SECONDS)
    review = df[C.REVIEW_TEXT].astype("string") if C.REVIEW_TEXT in df else pd.Series(pd.NA, index=df.index, dtype="string")
    blank_review = (review.isna() | (review.str.strip() == "")).to_numpy(dtype=bool)
    is_review = (etype == C.REVIEW_EVENT).fillna(False).to_numpy(dtype=bool)
    rated = ~np.isnan(rating)
    context = np.zeros(n, bool)
    for col in C.CONTEXT_COLUMNS:
        if col in df:
            context |= df[col].astype("string").str.len().fillna(0).to_numpy() > max_context_length
    return {
        "missing_rating": (etype == C.RATING_EVENT).fillna(False).to_numpy(dtype=bool) & ~rated,
        "rating_out_of_range": rated & ~((rating >= C.RATING_MIN) & (rating <= C.RATING_MAX)),
        "empty_review": is_review & blank_review,
        "review_too_long": review.str.len().fillna(0).to_numpy() > max_review_length,
        "dwell_out_of_range": ~np.isnan(dwell) & ~((dwell >= 0) & (dwell <= max_dwell_seconds)),
        "context_too_long": context,
    }


def encode_rules(masks: dict[str, np.ndarray]) -> tuple[np.ndarray, list[str]]:
    """Bit set of broken rules per row (bit i = i-th rule of ``masks``)."""
    names = list(masks)
    n = len(next(iter(masks.values()))) if masks else 0
    codes = np.zeros(n, dtype=np.int64)
    for i, r in enumerate(names):
        codes |= masks[r].astype(np.int64) << i
    return codes, names


def rule_names(codes: np.ndarray, names: list[str]) -> pd.Series:
    """';'-joined rule names per code; each distinct code is spelled out once."""
    lookup = {c: ";".join(n for i, n in enumerate(names) if c >> i & 1) for c in np.unique(codes).tolist()}
    return pd.Series(codes).map(lookup).astype("string")


def reference_rule_masks(df: pd.DataFrame, key: str) -> dict[str, np.ndarray]:
    """Row rules of a catalog (``key`` item_id) or users (user_id) batch: null or blank id, an id
    repeated later in the batch (the last row stays), negative price."""
    ids = df[key].astype("string")
    masks = {f"null_{key}": (ids.isna() | (ids.str.strip() == "")).to_numpy(bool),
             f"duplicate_{key}": ids.duplicated(keep="last").to_numpy(bool) & ids.notna().to_numpy(bool)}
    if "price" in df:
        p = pd.to_numeric(df["price"], errors="coerce")
        masks["negative_price"] = (p.notna() & (p < 0)).to_numpy(bool)
    return masks
