"""The canonical event schema of the landing zone (docs/data-contract.md) and the Arrow conversion
every importer (and the demo data generators) lands events with."""
from __future__ import annotations

import pandas as pd
import pyarrow as pa

from pipelines import constants as C

# Set by the importers: "column='raw value'" for values they could not parse (validation quarantines the row).
UNPARSEABLE = "_unparseable"

CANONICAL_SCHEMA = pa.schema([
    (C.USER_ID, pa.string()), (C.ITEM_ID, pa.string()), (C.EVENT_TYPE, pa.string()),
    (C.EVENT_TIME, pa.timestamp("us", tz="UTC")), (C.QUANTITY, pa.int64()), (C.PRICE, pa.float64()),
    (C.ORDER_ID, pa.string()), (C.SESSION_ID, pa.string()),
    (C.RATING, pa.float64()), (C.REVIEW_TEXT, pa.string()), (C.DWELL_SECONDS, pa.float64()),
    (C.DEVICE, pa.string()), (C.CHANNEL, pa.string()), (C.LANDING_PAGE, pa.string()),
])
# The landing schema of a batch with values that could not be parsed.
EVENT_SCHEMA = CANONICAL_SCHEMA.append(pa.field(UNPARSEABLE, pa.string()))


def events_to_arrow(events: pd.DataFrame) -> pa.Table:
    """Canonical events as an Arrow table of the landing schema: missing columns become nulls, the
    ``_unparseable`` column is kept when the importer set it."""
    schema = EVENT_SCHEMA if UNPARSEABLE in events else CANONICAL_SCHEMA
    cols = {}
    for f in schema:
        s = events[f.name] if f.name in events else pd.Series([None] * len(events))
        if pa.types.is_string(f.type):
            s = s.astype(object).where(s.notna(), None)
        cols[f.name] = pa.array(s, type=f.type, from_pandas=True)
    return pa.table(cols, schema=schema)
