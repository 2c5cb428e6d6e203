"""Bring data into the landing zone: any CSV/Parquet event file, UCI Online Retail, catalog and
users updates (the demo data generators in pipelines/dev/ land through ``land_frames`` too).

Landing files are immutable: each import writes new files named after a digest of the input and
the column mapping, so importing the same file twice is a no-op instead of a duplicate.
A wrong column name fails before anything is written.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import pyarrow as pa

from pipelines import constants as C
from pipelines.artifacts import layout
from pipelines.config import Config
from pipelines.infra import contacts, storage
from pipelines.infra.consent import drop_forgotten
from pipelines.infra.events import UNPARSEABLE, events_to_arrow
from pipelines.infra.parsing import (
    EPOCH_UNITS,
    id_text,
    parse_bool,
    parse_dates,
    parse_times,
    parse_whole,
)
from pipelines.services.reading import (
    ImportError_,
    columns_of,
    existing_file,
    read_any,
    read_rows,
    refuse_bad,
    unparseable,
)

__all__ = ["ImportError_", "ImportResult", "import_catalog", "import_events", "import_online_retail",
           "import_users", "land_frames"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImportResult:
    batch_id: str
    events: int
    partitions: int
    items: int
    users: int
    skipped: bool = False
    contacts: int = 0  # users whose contact fields went to the private contact store

    def summary(self) -> str:
        if self.skipped:
            return f"batch {self.batch_id} was imported before; nothing written"
        return (f"batch {self.batch_id}: {self.events} events in {self.partitions} daily partitions, "
                f"{self.items} catalog rows, {self.users} user rows"
                + (f" (contact fields of {self.contacts} users kept apart, in the private contact store)"
                   if self.contacts else ""))


def land_frames(cfg: Config, batch_id: str, events: pd.DataFrame, items: pd.DataFrame | None,
                users: pd.DataFrame | None, user_contacts: pd.DataFrame | None = None) -> ImportResult:
    """Land canonical events (and optional catalog and users rows) as one batch; a no-op when the
    batch was landed before. Forgotten users are dropped first. ``user_contacts`` (user_id, email,
    first_name, locale) go to the private contact store, never to the landing zone."""
    if storage.landing_batch_exists(layout(cfg).landing, "events", batch_id):
        return ImportResult(batch_id, 0, 0, 0, 0, skipped=True)

    events = drop_forgotten(cfg, events)
    users = drop_forgotten(cfg, users) if users is not None else None
    if user_contacts is not None:
        contacts.write_batch(cfg, drop_forgotten(cfg, user_contacts), batch_id)
    table = events_to_arrow(events)
    parts = storage.write_landing_events(layout(cfg).landing, table, batch_id)
    if items is not None and len(items):
        storage.write_landing_table(layout(cfg).landing, "items", pa.Table.from_pandas(items, preserve_index=False), batch_id)
    if users is not None and len(users):
        storage.write_landing_table(layout(cfg).landing, "users", pa.Table.from_pandas(users, preserve_index=False), batch_id)
    res = ImportResult(batch_id, table.num_rows, len(parts), 0 if items is None else len(items),
                       0 if users is None else len(users), contacts=0 if user_contacts is None else len(user_contacts))
    log.info("landed %s", res.summary())
    return res


def import_events(cfg: Config, path: str | Path, *, user_col: str, item_col: str, time_col: str,
                  time_format: str | None = None, event_type: str | None = None,
                  event_type_col: str | None = None, quantity_col: str | None = None,
                  price_col: str | None = None, title_col: str | None = None,
                  order_col: str | None = None, session_col: str | None = None,
                  rating_col: str | None = None, review_col: str | None = None, dwell_col: str | None = None,
                  device_col: str | None = None, channel_col: str | None = None, landing_col: str | None = None,
                  event_type_map: dict[str, str] | None = None, encoding: str = "utf-8") -> ImportResult:
    """Map a user's CSV/Parquet file onto the canonical event columns and land it.

    Times: ``time_format`` ``epoch_s`` / ``epoch_ms`` (Unix seconds or milliseconds), a strftime
    format, or none: each row in any ISO 8601 form, or epochs when every value is a number in a
    plausible epoch range (``pipelines.infra.parsing.detect_epoch``). Ids from a float column are
    their integer text; a quantity must be a whole number (``1.5`` is kept as raw text, never
    rounded, and quarantined by the gate). ``event_type_map`` renames raw event type values (``fav``
    -> ``add_to_wishlist``); ratings and dwell times are numbers (raw text kept for the gate when not);
    device, channel and landing page are lower-cased and trimmed."""
    path = existing_file(path, "import-events")
    if (event_type is None) == (event_type_col is None):
        raise ImportError_("give exactly one of --event-type TYPE or --event-type-col COLUMN")
    type_map = {str(k).strip().lower(): v for k, v in (event_type_map or {}).items()}
    for t in [event_type] * (event_type is not None) + list(type_map.values()):
        if t not in C.EVENT_TYPES:
            raise ImportError_(f"event type {t!r} (--event-type or --event-type-map) is not one of {list(C.EVENT_TYPES)}")
    mapping = {C.USER_ID: user_col, C.ITEM_ID: item_col, C.EVENT_TIME: time_col, C.EVENT_TYPE: event_type_col,
               C.QUANTITY: quantity_col, C.PRICE: price_col, "title": title_col, C.ORDER_ID: order_col,
               C.SESSION_ID: session_col, C.RATING: rating_col, C.REVIEW_TEXT: review_col,
               C.DWELL_SECONDS: dwell_col, C.DEVICE: device_col, C.CHANNEL: channel_col, C.LANDING_PAGE: landing_col}
    wanted = {k: v for k, v in mapping.items() if v}
    available = columns_of(path, encoding)
    missing = [f"{v!r} (for {k})" for k, v in wanted.items() if v not in available]
    if missing:
        raise ImportError_(f"{path}: column(s) {', '.join(missing)} not found; the file has columns {available}")
    raw = read_rows(path, columns=sorted(set(wanted.values())), encoding=encoding)
    times, used = parse_times(raw[time_col], time_format)
    out = pd.DataFrame({
        C.USER_ID: id_text(raw[user_col]),
        C.ITEM_ID: id_text(raw[item_col]),
        C.EVENT_TYPE: raw[event_type_col].astype("string").str.strip().str.lower().replace(type_map)
        if event_type_col else event_type,
        C.EVENT_TIME: times,
        C.QUANTITY: parse_whole(raw[quantity_col]) if quantity_col else 1,
        C.PRICE: pd.to_numeric(raw[price_col], errors="coerce") if price_col else np.nan,
        C.ORDER_ID: id_text(raw[order_col]) if order_col else None,
        C.SESSION_ID: id_text(raw[session_col]) if session_col else None,
        **_optional_columns(raw, wanted),
    })
    if used in EPOCH_UNITS and not time_format:
        log.info("%s: column %r read as Unix %s (every value a number in that range)", path, time_col,
                 "seconds" if used == "epoch_s" else "milliseconds")
    # Keep what could not be parsed, so validation quarantines it with the original text.
    flags = unparseable(raw[time_col], out[C.EVENT_TIME], time_col)
    if flags.ne("").any():
        log.warning("%s: column %r has %d unparseable times (e.g. %s); they land with a null time and the raw "
                    "text, and validation quarantines them", path, time_col, int(flags.ne("").sum()),
                    raw.loc[flags.ne(""), time_col].head(3).tolist())
    for canon, col in ((C.QUANTITY, quantity_col), (C.PRICE, price_col), (C.RATING, rating_col),
                       (C.DWELL_SECONDS, dwell_col)):
        if col:
            extra = unparseable(raw[col], out[canon], col)
            flags = flags.where(extra == "", flags.where(flags == "", flags + ";") + extra)
    out[UNPARSEABLE] = flags.where(flags != "", None)
    items = None
    if title_col:
        items = (pd.DataFrame({"item_id": out[C.ITEM_ID], "title": raw[title_col].astype("string")})
                 .dropna().drop_duplicates("item_id", keep="last").reset_index(drop=True))
        items["active"] = True
    extra = repr(sorted(wanted.items())) + encoding + (time_format or "") + (repr(sorted(type_map.items())) if type_map else "")
    return land_frames(cfg, storage.file_digest(path, extra=extra), out, items, None)


def _optional_columns(raw: pd.DataFrame, wanted: dict[str, str]) -> dict[str, pd.Series]:
    """The explicit-feedback, engagement and context columns the import maps (docs/data-contract.md):
    rating and dwell time as numbers (null where not a number: the caller keeps the raw text), the
    review text as given, device / channel / landing page lower-cased and trimmed (blank: null)."""
    out = {}
    for canon in (C.RATING, C.DWELL_SECONDS):
        if canon in wanted:
            out[canon] = pd.to_numeric(raw[wanted[canon]], errors="coerce")
    if C.REVIEW_TEXT in wanted:
        out[C.REVIEW_TEXT] = raw[wanted[C.REVIEW_TEXT]].astype("string")
    for canon in C.CONTEXT_COLUMNS:
        if canon in wanted:
            v = raw[wanted[canon]].astype("string").str.strip().str.lower()
            out[canon] = v.where(v != "")
    return out


# Stock codes of the UCI file that are not products (postage, fees, manual adjustments, samples).
NON_PRODUCT_CODES = {"POST", "DOT", "M", "BANK CHARGES", "C2", "AMAZONFEE", "S", "D", "CRUK", "PADS", "B", "m",
                     "DCGSSBOY", "DCGSSGIRL", "GIFT_0001_10", "GIFT_0001_20", "GIFT_0001_30", "GIFT_0001_40",
                     "GIFT_0001_50"}


def is_product_code(codes: pd.Series) -> pd.Series:
    """Online Retail products have a five-digit code, optionally with a letter suffix."""
    return codes.str.match(r"^\d{5}") & ~codes.isin(NON_PRODUCT_CODES)


def import_online_retail(cfg: Config, path: str | Path) -> ImportResult:
    """Adapt the UCI Online Retail columns: invoices are orders, 'C' invoices are returns.

    * user_id: CustomerID as an integer string (null stays null and is quarantined by validation);
    * event_type: ``return`` for invoices starting with 'C' (quantity made positive), else ``purchase``;
    * event_time: InvoiceDate is UK local time, converted to UTC;
    * catalog: the most frequent Description per StockCode; non-product codes (POST, M, ...) are
      landed with ``active = false`` so they are never recommended;
    * users: the most frequent Country per customer.
    """
    path = existing_file(path, "import-online-retail")
    need = ["InvoiceNo", "StockCode", "Description", "Quantity", "InvoiceDate", "UnitPrice", "CustomerID", "Country"]
    available = columns_of(path)
    missing = [c for c in need if c not in available]
    if missing:
        raise ImportError_(f"{path}: Online Retail column(s) {missing} not found; the file has columns {available}")
    raw = read_rows(path, columns=need)
    invoice = raw["InvoiceNo"].astype("string").str.strip()
    is_return = invoice.str.upper().str.startswith("C")
    qty = parse_whole(raw["Quantity"])
    cust = id_text(pd.to_numeric(raw["CustomerID"], errors="coerce"))
    when = pd.to_datetime(raw["InvoiceDate"], errors="coerce")
    when = when.dt.tz_localize("Europe/London", ambiguous="NaT", nonexistent="shift_forward").dt.tz_convert("UTC")
    code = raw["StockCode"].astype("string").str.strip().str.upper()
    events = pd.DataFrame({
        C.USER_ID: cust,
        C.ITEM_ID: code,
        C.EVENT_TYPE: np.where(is_return, C.RETURN, C.PURCHASE),
        C.EVENT_TIME: when,
        C.QUANTITY: qty.where(~is_return, qty.abs()),
        C.PRICE: pd.to_numeric(raw["UnitPrice"], errors="coerce"),
        C.ORDER_ID: invoice,
        C.SESSION_ID: None,
    })
    desc = raw["Description"].astype("string").str.strip()
    titled = pd.DataFrame({"item_id": code, "title": desc, "price": events[C.PRICE]}).dropna(subset=["item_id"])
    top_title = (titled.dropna(subset=["title"]).groupby(["item_id", "title"]).size().rename("n").reset_index()
                 .sort_values(["item_id", "n", "title"], ascending=[True, False, True]).drop_duplicates("item_id"))
    prices = titled[titled["price"] > 0].groupby("item_id")["price"].median()
    items = pd.DataFrame({"item_id": sorted(titled["item_id"].unique())})
    items = items.merge(top_title[["item_id", "title"]], on="item_id", how="left")
    items["price"] = items["item_id"].map(prices)
    items["active"] = is_product_code(items["item_id"]).fillna(False).astype(bool)
    users = (pd.DataFrame({"user_id": cust, "country": raw["Country"].astype("string")}).dropna()
             .groupby(["user_id", "country"]).size().rename("n").reset_index()
             .sort_values(["user_id", "n"], ascending=[True, False]).drop_duplicates("user_id")
             .drop(columns="n").reset_index(drop=True))
    batch_id = "online-retail-" + storage.file_digest(path)
    return land_frames(cfg, batch_id, events, items, users)


def _read_reference(path: str | Path, key: str, known: Sequence[str], encoding: str,
                    command: str) -> tuple[Path, pd.DataFrame]:
    """A catalog or users file with its key column and only known columns, or a clear error; a
    file with a header and no rows is refused."""
    path = existing_file(path, command)
    df = read_any(path, encoding=encoding)
    if key not in df:
        raise ImportError_(f"{path}: rule missing_column: column {key!r} is required; the file has {list(df.columns)}")
    unknown = [c for c in df.columns if c not in known and c != key]
    if unknown:
        raise ImportError_(f"{path}: unknown column(s) {unknown}; known: {key}, {sorted(c for c in known if c != key)}")
    if df.empty:
        raise ImportError_(f"{path}: the file has a header ({list(df.columns)}) but no rows; nothing written")
    df[key] = id_text(df[key])
    return path, df


CATALOG_UPDATE_COLUMNS = {"in_stock": "bool", "active": "bool", "promotion": "bool", "repeatable": "bool",
                          "margin": "float", "price": "float", "title": "str", "description": "str",
                          "category": "str", "brand": "str", "url": "url", "image_url": "url"}
URL_RE = r"^https?://[^\s/?#]+\.[^\s/?#]+(?:[/?#]\S*)?$"


def import_catalog(cfg: Config, path: str | Path, encoding: str = "utf-8") -> ImportResult:
    """Land a catalog update (CSV or Parquet): ``item_id`` plus any of in_stock, active, promotion,
    repeatable (true/false), margin (share of price, 0..1), price, title, description, category,
    brand. Columns left out keep their earlier values (features.interactions.load_catalog)."""
    path, df = _read_reference(path, "item_id", list(CATALOG_UPDATE_COLUMNS), encoding, "import-catalog")
    out = pd.DataFrame({"item_id": df["item_id"]})
    for col in df.columns.drop("item_id"):
        kind = CATALOG_UPDATE_COLUMNS[col]
        raw = df[col]
        if kind == "bool":
            val, bad = parse_bool(raw)
        elif kind == "float":
            val = pd.to_numeric(raw, errors="coerce")
            bad = (raw.notna() & val.isna()) | (val.notna() & ~np.isfinite(val.astype("float64")))
            if col == "margin":
                bad |= val.notna() & ~val.between(0, 1)
        elif kind == "url":
            # Links go into customers' emails: absolute http(s) only, no spaces (empty = not stated).
            val = raw.astype("string").str.strip()
            val = val.where(val.ne("").fillna(False), None)
            bad = val.notna() & ~val.str.match(URL_RE).fillna(False)
        else:
            val, bad = raw.astype("string"), pd.Series(False, index=raw.index)
        refuse_bad(path, col, f"invalid_{kind}" + (" (0..1)" if col == "margin" else "")
                   + (" (absolute http:// or https:// link)" if kind == "url" else ""), raw, bad)
        out[col] = val
    if out["item_id"].isna().any():
        raise ImportError_(f"{path}: column 'item_id': rule null_item_id: {int(out['item_id'].isna().sum())} empty id(s)")
    batch_id = "catalog-" + storage.file_digest(path)
    if storage.landing_batch_exists(layout(cfg).landing, "items", batch_id):
        return ImportResult(batch_id, 0, 0, 0, 0, skipped=True)
    storage.write_landing_table(layout(cfg).landing, "items", pa.Table.from_pandas(out, preserve_index=False), batch_id)
    return ImportResult(batch_id, 0, 0, len(out), 0)


def import_users(cfg: Config, path: str | Path, encoding: str = "utf-8") -> ImportResult:
    """Land a users file (CSV or Parquet): ``user_id`` plus any of country, signup_date,
    consent_personalization, consent_email (true/false), interests, and the contact fields email,
    first_name, locale. Later files win per user and column; consent flags take effect at the next
    run (docs/privacy.md). A signup_date that is not a real date (``2026-13-45``), an email that is
    not an address or a locale that is not a language tag (``en-GB``) refuses the file, naming
    column, rule and lines. Contact fields go to the private contact store
    (pipelines/infra/contacts.py), never to the landing zone."""
    path, df = _read_reference(path, "user_id", C.USER_COLUMNS + contacts.CONTACT_COLUMNS, encoding, "import-users")
    out = df.copy()
    for col in ("consent_personalization", "consent_email"):
        if col in out:
            val, bad = parse_bool(out[col])
            refuse_bad(path, col, "invalid_bool", out[col], bad)
            out[col] = val
    if "signup_date" in out:
        when, bad = parse_dates(out["signup_date"])
        refuse_bad(path, "signup_date", "invalid_date (YYYY-MM-DD)", out["signup_date"], bad)
        out["signup_date"] = pd.Series([None if pd.isna(t) else t.date() for t in when], index=out.index, dtype=object)
    for col in ("country", "interests"):
        if col in out:
            out[col] = out[col].astype("string")
    if "email" in out:
        refuse_bad(path, "email", "invalid_email (name@domain.tld)", out["email"], contacts.bad_emails(out["email"]))
    if "locale" in out:
        refuse_bad(path, "locale", "invalid_locale (a language tag such as en or en-GB)", out["locale"],
                   contacts.bad_locales(out["locale"]))

    out = drop_forgotten(cfg, out)
    batch_id = "users-" + storage.file_digest(path)
    if storage.landing_batch_exists(layout(cfg).landing, "users", batch_id):
        return ImportResult(batch_id, 0, 0, 0, 0, skipped=True)
    # The contact store first: the landing file is what marks the import done (a rerun after a crash
    # in between stores nothing twice: write_batch skips a stored batch).
    n_contacts = len(out) if contacts.write_batch(cfg, out, batch_id) else 0
    users = out.drop(columns=[c for c in contacts.CONTACT_COLUMNS if c in out])
    storage.write_landing_table(layout(cfg).landing, "users", pa.Table.from_pandas(users, preserve_index=False), batch_id)
    return ImportResult(batch_id, 0, 0, 0, len(out), contacts=n_contacts)
