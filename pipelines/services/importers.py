"""Bring data into the landing zone: any CSV/Parquet event file, UCI Online Retail, catalog and
users updates (the demo data generators in pipelines/dev/ land through ``land_frames`` too).

Landing files are immutable: each import writes new files named after a digest of the input and
the column mapping, so importing the same file twice is a no-op instead of a duplicate.
A wrong column name fails before anything is written.
"""
from __future__ import annotations

import codecs
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines import constants as C
from pipelines.artifacts import layout
from pipelines.config import Config
from pipelines.infra import storage
from pipelines.infra.consent import drop_forgotten
from pipelines.infra.events import UNPARSEABLE, events_to_arrow
from pipelines.infra.parsing import parse_bool

log = logging.getLogger(__name__)


class ImportError_(ValueError):
    """Bad input for an import: the message names the file and the column."""


@dataclass(frozen=True)
class ImportResult:
    batch_id: str
    events: int
    partitions: int
    items: int
    users: int
    skipped: bool = False

    def summary(self) -> str:
        if self.skipped:
            return f"batch {self.batch_id} was imported before; nothing written"
        return (f"batch {self.batch_id}: {self.events} events in {self.partitions} daily partitions, "
                f"{self.items} catalog rows, {self.users} user rows")


def land_frames(cfg: Config, batch_id: str, events: pd.DataFrame, items: pd.DataFrame | None,
                users: pd.DataFrame | None) -> ImportResult:
    """Land canonical events (and optional catalog and users rows) as one batch; a no-op when the
    batch was landed before. Forgotten users are dropped first."""
    if storage.landing_batch_exists(layout(cfg).landing, "events", batch_id):
        return ImportResult(batch_id, 0, 0, 0, 0, skipped=True)

    events = drop_forgotten(cfg, events)
    users = drop_forgotten(cfg, users) if users is not None else None
    table = events_to_arrow(events)
    parts = storage.write_landing_events(layout(cfg).landing, table, batch_id)
    if items is not None and len(items):
        storage.write_landing_table(layout(cfg).landing, "items", pa.Table.from_pandas(items, preserve_index=False), batch_id)
    if users is not None and len(users):
        storage.write_landing_table(layout(cfg).landing, "users", pa.Table.from_pandas(users, preserve_index=False), batch_id)
    res = ImportResult(batch_id, table.num_rows, len(parts), 0 if items is None else len(items),
                       0 if users is None else len(users))
    log.info("landed %s", res.summary())
    return res


def _read_any(path: Path, columns: Sequence[str] | None = None, encoding: str = "utf-8") -> pd.DataFrame:
    """Read CSV, Parquet or Excel; every failure becomes an ImportError_ that names the file."""
    suffix = path.suffix.lower()
    try:
        if suffix in (".parquet", ".pq"):
            return pd.read_parquet(path, columns=list(columns) if columns else None)
        if suffix in (".csv", ".txt", ".tsv"):
            return pd.read_csv(path, usecols=list(columns) if columns else None, sep="\t" if suffix == ".tsv" else ",",
                               dtype=str, keep_default_na=True, encoding=encoding)
        if suffix in (".xlsx", ".xls"):
            return pd.read_excel(path, usecols=list(columns) if columns else None)
    except UnicodeDecodeError as exc:
        raise _encoding_error(path, encoding, exc) from exc
    except pd.errors.EmptyDataError as exc:
        raise ImportError_(f"{path}: the file is empty (no header, no rows); nothing written") from exc
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise ImportError_(f"{path}: cannot be read as {suffix.lstrip('.')} ({exc}); nothing written") from exc
    raise ImportError_(f"{path}: unsupported file type {suffix!r}; use .csv, .parquet or .xlsx")


def _columns_of(path: Path, encoding: str = "utf-8") -> list[str]:
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        try:
            return list(pq.read_schema(path).names)
        except (OSError, pa.ArrowException) as exc:
            raise ImportError_(f"{path}: cannot be read as Parquet ({exc}); nothing written") from exc
    if suffix in (".csv", ".txt", ".tsv"):
        try:
            return list(pd.read_csv(path, nrows=0, sep="\t" if suffix == ".tsv" else ",", encoding=encoding).columns)
        except UnicodeDecodeError as exc:
            raise _encoding_error(path, encoding, exc) from exc
        except pd.errors.EmptyDataError as exc:
            raise ImportError_(f"{path}: the file is empty (no header, no rows); nothing written") from exc
    return list(_read_any(path).columns)


def _encoding_error(path: Path, encoding: str, exc: UnicodeDecodeError) -> "ImportError_":
    """Name the byte and line of the first undecodable character of the file (pandas reports
    offsets within its own read buffer, which mean nothing to the user)."""
    decoder, offset, line = codecs.getincrementaldecoder(encoding)(), 0, 1
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            try:
                text = decoder.decode(chunk)
            except UnicodeDecodeError as err:
                bad_line = line + chunk[: err.start].count(b"\n")
                return ImportError_(f"{path}: not valid {encoding} text at byte {offset + err.start} (line "
                                    f"{bad_line}: {err.reason}); pass --encoding with the file's "
                                    f"encoding (e.g. latin-1); nothing written")
            offset += len(chunk)
            line += text.count("\n")
    return ImportError_(f"{path}: not valid {encoding} text ({exc.reason}); pass --encoding with the file's "
                        f"encoding (e.g. latin-1); nothing written")


def _unparseable(raw: pd.Series, parsed: pd.Series, column: str) -> pd.Series:
    """"column='raw'" where a value was given but could not be parsed, else empty; keeps the raw text."""
    bad = raw.notna() & parsed.isna() & (raw.astype("string").str.strip() != "")
    return pd.Series(np.where(bad, column + "='" + raw.astype("string").fillna("").str.slice(0, 200) + "'", ""),
                     index=raw.index)


def _parse_time(values: pd.Series, fmt: str | None, path: Path, column: str) -> pd.Series:
    """Parse to UTC. Naive times are taken as UTC; unparseable values become null (quarantined later)."""
    if pd.api.types.is_datetime64_any_dtype(values):
        ts = values
    else:
        ts = pd.to_datetime(values, format=fmt, errors="coerce", utc=True)
    if getattr(ts.dt, "tz", None) is None:
        ts = ts.dt.tz_localize("UTC")
    else:
        ts = ts.dt.tz_convert("UTC")
    bad = ts.isna() & values.notna()
    if bad.any():
        log.warning("%s: column %r has %d unparseable times (e.g. %s); they land with a null time and the raw "
                    "text, and validation quarantines them", path, column, int(bad.sum()), values[bad].head(3).tolist())
    return ts


def import_events(cfg: Config, path: str | Path, *, user_col: str, item_col: str, time_col: str,
                  time_format: str | None = None, event_type: str | None = None,
                  event_type_col: str | None = None, quantity_col: str | None = None,
                  price_col: str | None = None, title_col: str | None = None,
                  order_col: str | None = None, session_col: str | None = None,
                  encoding: str = "utf-8") -> ImportResult:
    """Map a user's CSV/Parquet file onto the canonical event columns and land it."""
    path = Path(path)
    if not path.exists():
        raise ImportError_(f"{path}: file not found")
    if (event_type is None) == (event_type_col is None):
        raise ImportError_("give exactly one of --event-type TYPE or --event-type-col COLUMN")
    if event_type is not None and event_type not in C.EVENT_TYPES:
        raise ImportError_(f"--event-type {event_type!r} is not one of {list(C.EVENT_TYPES)}")
    mapping = {C.USER_ID: user_col, C.ITEM_ID: item_col, C.EVENT_TIME: time_col, C.EVENT_TYPE: event_type_col,
               C.QUANTITY: quantity_col, C.PRICE: price_col, "title": title_col, C.ORDER_ID: order_col,
               C.SESSION_ID: session_col}
    wanted = {k: v for k, v in mapping.items() if v}
    available = _columns_of(path, encoding)
    missing = [f"{v!r} (for {k})" for k, v in wanted.items() if v not in available]
    if missing:
        raise ImportError_(f"{path}: column(s) {', '.join(missing)} not found; the file has columns {available}")
    raw = _read_any(path, columns=sorted(set(wanted.values())), encoding=encoding)
    if raw.empty:
        raise ImportError_(f"{path}: the file has a header ({available}) but no rows; nothing written")
    out = pd.DataFrame({
        C.USER_ID: raw[user_col].astype("string").str.strip(),
        C.ITEM_ID: raw[item_col].astype("string").str.strip(),
        C.EVENT_TYPE: raw[event_type_col].astype("string").str.strip().str.lower() if event_type_col else event_type,
        C.EVENT_TIME: _parse_time(raw[time_col], time_format, path, time_col),
        C.QUANTITY: pd.to_numeric(raw[quantity_col], errors="coerce").round().astype("Int64") if quantity_col else 1,
        C.PRICE: pd.to_numeric(raw[price_col], errors="coerce") if price_col else np.nan,
        C.ORDER_ID: raw[order_col].astype("string") if order_col else None,
        C.SESSION_ID: raw[session_col].astype("string") if session_col else None,
    })
    # Keep what could not be parsed, so validation quarantines it with the original text.
    flags = _unparseable(raw[time_col], out[C.EVENT_TIME], time_col)
    for canon, col in ((C.QUANTITY, quantity_col), (C.PRICE, price_col)):
        if col:
            extra = _unparseable(raw[col], out[canon], col)
            flags = flags.where(extra == "", flags.where(flags == "", flags + ";") + extra)
    out[UNPARSEABLE] = flags.where(flags != "", None)
    items = None
    if title_col:
        items = (pd.DataFrame({"item_id": out[C.ITEM_ID], "title": raw[title_col].astype("string")})
                 .dropna().drop_duplicates("item_id", keep="last").reset_index(drop=True))
        items["active"] = True
    batch_id = storage.file_digest(path, extra=repr(sorted(wanted.items())) + encoding)
    return land_frames(cfg, batch_id, out, items, None)


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
    path = Path(path)
    if not path.exists():
        raise ImportError_(f"{path}: file not found")
    need = ["InvoiceNo", "StockCode", "Description", "Quantity", "InvoiceDate", "UnitPrice", "CustomerID", "Country"]
    available = _columns_of(path)
    missing = [c for c in need if c not in available]
    if missing:
        raise ImportError_(f"{path}: Online Retail column(s) {missing} not found; the file has columns {available}")
    raw = _read_any(path, columns=need)
    if raw.empty:
        raise ImportError_(f"{path}: the file has a header but no rows; nothing written")
    invoice = raw["InvoiceNo"].astype("string").str.strip()
    is_return = invoice.str.upper().str.startswith("C")
    qty = pd.to_numeric(raw["Quantity"], errors="coerce").round().astype("Int64")
    cust = pd.to_numeric(raw["CustomerID"], errors="coerce").astype("Int64").astype("string")
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


def _read_reference(path: str | Path, key: str, known: Sequence[str]) -> tuple[Path, pd.DataFrame]:
    """A catalog or users file with its key column and only known columns, or a clear error."""
    path = Path(path)
    if not path.exists():
        raise ImportError_(f"{path}: file not found")
    df = _read_any(path)
    if key not in df:
        raise ImportError_(f"{path}: rule missing_column: column {key!r} is required; the file has {list(df.columns)}")
    unknown = [c for c in df.columns if c not in known and c != key]
    if unknown:
        raise ImportError_(f"{path}: unknown column(s) {unknown}; known: {key}, {sorted(c for c in known if c != key)}")
    return path, df


CATALOG_UPDATE_COLUMNS = {"in_stock": "bool", "active": "bool", "promotion": "bool", "repeatable": "bool",
                          "margin": "float", "price": "float", "title": "str", "description": "str",
                          "category": "str", "brand": "str"}


def import_catalog(cfg: Config, path: str | Path) -> ImportResult:
    """Land a catalog update (CSV or Parquet): ``item_id`` plus any of in_stock, active, promotion,
    repeatable (true/false), margin (share of price, 0..1), price, title, description, category,
    brand. Columns left out keep their earlier values (features.interactions.load_catalog)."""
    path, df = _read_reference(path, "item_id", list(CATALOG_UPDATE_COLUMNS))
    out = pd.DataFrame({"item_id": df["item_id"].astype("string").str.strip()})
    for col in df.columns.drop("item_id"):
        kind = CATALOG_UPDATE_COLUMNS[col]
        raw = df[col]
        if kind == "bool":
            val, bad = parse_bool(raw)
        elif kind == "float":
            val = pd.to_numeric(raw, errors="coerce")
            bad = raw.notna() & val.isna()
            if col == "margin":
                bad |= val.notna() & ~val.between(0, 1)
        else:
            val, bad = raw.astype("string"), pd.Series(False, index=raw.index)
        if bad.any():
            rows = (np.flatnonzero(bad.to_numpy())[:5] + 2).tolist()  # 1-based, after the header line
            raise ImportError_(f"{path}: column {col!r}: rule invalid_{kind}"
                               f"{' (0..1)' if col == 'margin' else ''}: {int(bad.sum())} bad value(s), e.g. "
                               f"{raw[bad].head(5).tolist()} on line(s) {rows}; nothing written")
        out[col] = val
    if out["item_id"].isna().any():
        raise ImportError_(f"{path}: column 'item_id': rule null_item_id: {int(out['item_id'].isna().sum())} empty id(s)")
    batch_id = "catalog-" + storage.file_digest(path)
    if storage.landing_batch_exists(layout(cfg).landing, "items", batch_id):
        return ImportResult(batch_id, 0, 0, 0, 0, skipped=True)
    storage.write_landing_table(layout(cfg).landing, "items", pa.Table.from_pandas(out, preserve_index=False), batch_id)
    return ImportResult(batch_id, 0, 0, len(out), 0)


def import_users(cfg: Config, path: str | Path) -> ImportResult:
    """Land a users file (CSV or Parquet): ``user_id`` plus any of country, signup_date,
    consent_personalization, consent_email (true/false), interests. Later files win per user and
    column; consent flags take effect at the next run (docs/privacy.md)."""
    path, df = _read_reference(path, "user_id", C.USER_COLUMNS)
    out = df.copy()
    out["user_id"] = out["user_id"].astype("string").str.strip()
    for col in ("consent_personalization", "consent_email"):
        if col in out:
            val, bad = parse_bool(out[col])
            if bad.any():
                raise ImportError_(f"{path}: column {col!r}: rule invalid_bool: {int(bad.sum())} bad value(s), e.g. "
                                   f"{out.loc[bad, col].head(5).tolist()}; nothing written")
            out[col] = val
    for col in ("country", "interests"):
        if col in out:
            out[col] = out[col].astype("string")

    out = drop_forgotten(cfg, out)
    batch_id = "users-" + storage.file_digest(path)
    if storage.landing_batch_exists(layout(cfg).landing, "users", batch_id):
        return ImportResult(batch_id, 0, 0, 0, 0, skipped=True)
    storage.write_landing_table(layout(cfg).landing, "users", pa.Table.from_pandas(out, preserve_index=False), batch_id)
    return ImportResult(batch_id, 0, 0, 0, len(out))
