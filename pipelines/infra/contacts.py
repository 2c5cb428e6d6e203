"""The contact store: customers' email address, first name and locale (docs/privacy.md, "Contact
fields").

Contact fields arrive with ``recsys import-users`` (or the demo data) and are kept in ONE private
place, ``$RECSYS_HOME/privacy/contacts/batch-<UTC time>-<id>.parquet`` (one file per import, never
in landing, validated, features, the warehouse, the serving copy or MLflow). Only the email export
(pipelines/services/email_export.py) reads them; ``recsys forget`` rewrites these files without the
user, as it does every Parquet file under the data root.
"""
from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pyarrow as pa

from pipelines.artifacts import layout
from pipelines.config import Config
from pipelines.infra import storage

CONTACT_COLUMNS = ("email", "first_name", "locale")
# A pragmatic address check (not RFC 5322): one @, no spaces or brackets in the local part, a domain
# of dot-separated labels (letters, digits, inner hyphens) ending in a label of two or more letters.
EMAIL_RE = re.compile(r"^[^@\s<>()\[\],;:\"]+@(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.)+[A-Za-z]{2,}$")
# A language tag: en, en-GB, pt_BR, zh-Hant-TW (an underscore is written as a hyphen).
LOCALE_RE = re.compile(r"^[A-Za-z]{2,3}(?:-[A-Za-z0-9]{2,8})*$")


def contacts_dir(cfg: Config) -> Path:
    return layout(cfg).privacy_dir / "contacts"


def bad_emails(values: pd.Series) -> pd.Series:
    """True where a value is given but is not an address (empty cells mean "not stated")."""
    text = values.astype("string").str.strip()
    return text.notna() & text.ne("") & ~text.str.match(EMAIL_RE).fillna(False)


def bad_locales(values: pd.Series) -> pd.Series:
    text = values.astype("string").str.strip().str.replace("_", "-", regex=False)
    return text.notna() & text.ne("") & ~text.str.match(LOCALE_RE).fillna(False)


def normalise(df: pd.DataFrame) -> pd.DataFrame:
    """user_id plus the contact columns present, as strings; empty cells become null (not stated)."""
    out = pd.DataFrame({"user_id": df["user_id"].astype("string")})
    for col in CONTACT_COLUMNS:
        if col in df:
            text = df[col].astype("string").str.strip()
            if col == "locale":
                text = text.str.replace("_", "-", regex=False)
            out[col] = text.where(text.ne("").fillna(False), None)
    return out.dropna(subset=["user_id"])


def write_batch(cfg: Config, df: pd.DataFrame, batch_id: str) -> Path | None:
    """Store one import's contact fields (a no-op when this batch is stored already, or has no
    contact column); atomic."""
    if not any(c in df for c in CONTACT_COLUMNS) or df.empty:
        return None
    root = contacts_dir(cfg)
    if root.exists() and any(root.glob(f"batch-*-{batch_id}.parquet")):
        return None
    return storage.write_landing_table(root.parent, root.name, pa.Table.from_pandas(normalise(df), preserve_index=False),
                                      batch_id)


def read_contacts(cfg: Config) -> pd.DataFrame:
    """The latest stated value per user and contact column (later imports win where they state a
    value): user_id, email, first_name, locale (strings, null where never stated)."""
    root = contacts_dir(cfg)
    files = storage.in_import_order(root.glob("batch-*.parquet")) if root.exists() else []
    out = pd.DataFrame(columns=list(CONTACT_COLUMNS), dtype="string")
    out.index = pd.Index([], dtype="string", name="user_id")
    for f in files:
        df = pd.read_parquet(f)
        cols = [c for c in CONTACT_COLUMNS if c in df]
        if not cols:
            continue
        df = df.dropna(subset=["user_id"]).drop_duplicates("user_id", keep="last")
        df = df.set_index(df["user_id"].astype("string"))[cols].astype("string")
        out = df.combine_first(out).reindex(columns=list(CONTACT_COLUMNS))
    out.index.name = "user_id"
    return out.reset_index()
