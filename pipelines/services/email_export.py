"""The post-purchase email list as a file an email platform imports (docs/privacy.md, "The email
export"): ``recsys export email`` and the nightly ``export`` step.

One record per recipient: a customer in ``post_purchase_email`` for ``ds`` whose email consent is
on when the file is built (the current flags, so an opt-out after the run is honoured) and who has
an email address in the contact store (pipelines/infra/contacts.py; the only place contact fields
are joined in). Per recommended item: title, price, URL, image URL (the catalog as of the night's
features), a customer-facing reason written with titles, never ids, and the recommendation id.

Formats: ``csv`` (flat, one column per item field), ``json`` (JSON Lines, one object per recipient
with a list of items), ``klaviyo`` (JSON Lines of Klaviyo profile objects, the shape the Bulk
Import Profiles job takes in ``profiles.data``), ``braze`` (one ``/users/track`` body,
``{"attributes": [...]}`` with the list as a nested custom attribute).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from pipelines.artifacts import features_file, latest_items, layout
from pipelines.config import Config
from pipelines.infra import storage, warehouse
from pipelines.infra.consent import opted_out
from pipelines.infra.contacts import read_contacts

log = logging.getLogger(__name__)

FORMATS = {"csv": "csv", "json": "jsonl", "klaviyo": "jsonl", "braze": "json"}  # format -> file extension
DROP_NAME = "post_purchase_email"
ITEM_FIELDS = ("id", "title", "price", "url", "image_url", "reason", "recommendation_id")

# Internal reason text (pipelines/ranking/surface_tables.py, reasons.py) -> what the customer reads.
# ``{title}`` is the title of the purchased item named in the internal reason.
_ANCHORED = [(re.compile(r"^others bought this after (?P<item>.+)$"), "Customers who bought {title} also bought"),
             (re.compile(r"^bought together with (?P<item>.+)$"), "Often bought together with {title}")]
_FIXED = {"best seller": "Popular right now", "picked for you": "Picked for you",
          "you buy this regularly": "You buy this regularly", "matches your interests": "Matches your interests",
          "new arrival": "New in", "featured": "Featured", "discovery: outside your usual categories": "Something new to discover"}
_NO_TITLE = "something you bought"


class ExportError(ValueError):
    """An export that cannot be written (no run, nobody to send to, a bad format or path)."""


@dataclass
class EmailList:
    ds: str
    run_id: str | None
    recipients: list[dict]  # one dict per recipient, format-neutral (see _recipients)
    published: int          # rows of post_purchase_email for ds
    skipped_opted_out: int  # email consent turned off since the run
    skipped_no_address: int  # consent on, but no email address in the contact store
    built_at: str


def customer_reason(reasons: pd.Series, titles: pd.Series) -> tuple[pd.Series, pd.Series]:
    """(customer-facing sentence, purchased item id named by the reason or null) per internal reason.
    Unknown texts read "Recommended for you": no internal code or item id reaches a customer."""
    text = pd.Series("Recommended for you", index=reasons.index, dtype=object)
    anchor = pd.Series(None, index=reasons.index, dtype=object)
    r = reasons.astype("string").fillna("")
    for pattern, sentence in _ANCHORED:
        item = r.str.extract(pattern)["item"]
        hit = item.notna()
        title = item[hit].map(titles).fillna(_NO_TITLE)
        text[hit] = [sentence.format(title=t) for t in title]
        anchor[hit] = item[hit]
    text[r.isin(_FIXED)] = r[r.isin(_FIXED)].map(_FIXED)
    country = r.str.extract(r"^popular in (?P<c>.+)$")["c"]
    text[country.notna()] = "Popular in " + country[country.notna()]
    return text, anchor


def _catalog(cfg: Config, ds: str) -> pd.DataFrame:
    """item_id -> title, price, url, image_url: the night's features item table (the newest one when
    that is gone)."""
    cols = ["item_id", "title", "price", "url", "image_url"]
    path = features_file(cfg, ds, "items.parquet")
    items = pd.read_parquet(path) if path.exists() else latest_items(cfg, None)
    if items is None:
        return pd.DataFrame(columns=cols).set_index("item_id")
    return items.reindex(columns=cols).set_index("item_id")


def _published(cfg: Config, ds: str) -> pd.DataFrame:
    """The ds's rows of post_purchase_email; ExportError when no night was published for ds."""
    try:
        con = warehouse.connect_readonly(cfg)
    except FileNotFoundError:
        raise ExportError(f"export email: no warehouse at {layout(cfg).duckdb_path}: run the pipeline first "
                          f"(recsys run --ds {ds})") from None
    try:
        tables = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
        ran = "model_runs" in tables and con.execute("SELECT count(*) FROM model_runs WHERE ds = ?::DATE",
                                                     [ds]).fetchall()[0][0] > 0
        if not ran or "post_purchase_email" not in tables:
            return None
        return con.execute("""SELECT user_id, run_id, purchased_items, recommended_items, reasons, recommendation_ids
                              FROM post_purchase_email WHERE ds = ?::DATE ORDER BY user_id""", [ds]).df()
    finally:
        con.close()


def build(cfg: Config, ds: str, allow_empty: bool = False) -> EmailList:
    """The recipients of ``ds`` (see the module docstring). Raises ExportError when ds has no
    published run, or nobody to send to, unless ``allow_empty``."""
    built_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    df = _published(cfg, ds)
    if df is None:
        if not allow_empty:
            raise ExportError(f"export email: no published run for ds={ds} in {layout(cfg).duckdb_path}; run it first "
                              f"(recsys run --ds {ds}), or give --allow-empty to write an empty file")
        return EmailList(ds, None, [], 0, 0, 0, built_at)
    published = len(df)
    df = df[~df["user_id"].isin(opted_out(cfg, "consent_email"))]
    after_consent = len(df)
    df = df.merge(read_contacts(cfg), on="user_id", how="left")
    df = df[df["email"].notna()]
    out = EmailList(ds, str(df["run_id"].iloc[0]) if len(df) else None, _recipients(cfg, ds, df, built_at),
                    published, published - after_consent, after_consent - len(df), built_at)
    if not out.recipients and not allow_empty:
        raise ExportError(f"export email: ds={ds} has 0 recipients ({published} customers in post_purchase_email, "
                          f"{out.skipped_opted_out} opted out of email since the run, {out.skipped_no_address} without "
                          "an email address); nothing written; give --allow-empty to write an empty file")
    return out


def _recipients(cfg: Config, ds: str, df: pd.DataFrame, built_at: str) -> list[dict]:
    """One format-neutral dict per recipient; the item fields come from one long frame (vectorised)."""
    if df.empty:
        return []
    cat = _catalog(cfg, ds)
    titles = cat["title"].dropna()
    long = df[["user_id", "recommended_items", "reasons", "recommendation_ids"]].explode(
        ["recommended_items", "reasons", "recommendation_ids"]).dropna(subset=["recommended_items"])
    long["reason"], long["anchor"] = customer_reason(long["reasons"], titles)
    meta = cat.reindex(long["recommended_items"])
    long["title"], long["url"], long["image_url"] = (meta[c].to_numpy() for c in ("title", "url", "image_url"))
    long["price"] = pd.to_numeric(meta["price"], errors="coerce").to_numpy()
    long = long.rename(columns={"recommended_items": "id", "recommendation_ids": "recommendation_id"})
    clean = long[list(ITEM_FIELDS)].astype(object).where(long[list(ITEM_FIELDS)].notna(), None)
    items = clean.assign(user_id=long["user_id"].to_numpy()).groupby("user_id", sort=False)
    lists = {u: g.drop(columns="user_id").to_dict("records") for u, g in items}
    # The purchase the email is about: the one item 1's reason names, else the first bought that day.
    first_anchor = long.drop_duplicates("user_id").set_index("user_id")["anchor"]
    out = []
    for row in df.itertuples(index=False):
        bought = list(row.purchased_items)
        anchor = first_anchor.get(row.user_id)
        anchor = anchor if anchor in bought else (bought[0] if bought else None)
        out.append({"email": row.email, "first_name": _text(row.first_name), "locale": _text(row.locale),
                    "user_id": row.user_id, "ds": ds, "run_id": row.run_id,
                    "purchased_item_id": anchor, "purchased_item_title": _text(titles.get(anchor)),
                    "purchased_items": bought, "items": lists.get(row.user_id, []),
                    "consent_email": True, "built_at": built_at})
    return out


def _text(v):
    return None if v is None or pd.isna(v) else str(v)


# ------------------------------------------------------------------ the formats
def _csv(lst: EmailList, path: Path) -> None:
    n = max((len(r["items"]) for r in lst.recipients), default=0)
    head = ["email", "first_name", "locale", "user_id", "ds", "run_id", "purchased_item_id", "purchased_item_title",
            "purchased_items"]
    cols = head + [f"item_{k}_{f}" for k in range(1, n + 1) for f in ITEM_FIELDS] + ["consent_email", "built_at"]
    rows = []
    for r in lst.recipients:
        flat = {c: r[c] for c in head} | {"purchased_items": "|".join(r["purchased_items"]),
                                          "consent_email": "true", "built_at": r["built_at"]}
        for k, item in enumerate(r["items"], 1):
            flat.update({f"item_{k}_{f}": item[f] for f in ITEM_FIELDS})
        rows.append(flat)
    pd.DataFrame(rows, columns=cols).to_csv(path, index=False, na_rep="")


def _json_lines(lst: EmailList, path: Path) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        for r in lst.recipients:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")


def _klaviyo(lst: EmailList, path: Path) -> None:
    """Klaviyo profile objects (JSON:API ``type: profile``), one per line: batch up to 10,000 of them
    into ``data.attributes.profiles.data`` of POST /api/profile-bulk-import-jobs (an upsert by email)."""
    with open(path, "w", encoding="utf-8") as fh:
        for r in lst.recipients:
            props = {"recsys_ds": r["ds"], "recsys_run_id": r["run_id"], "recsys_locale": r["locale"],
                     "recsys_purchased_item_title": r["purchased_item_title"], "recsys_recommendations": r["items"],
                     "recsys_consent_email": True, "recsys_built_at": r["built_at"]}
            attrs = {"email": r["email"], "external_id": r["user_id"], "first_name": r["first_name"], "properties": props}
            fh.write(json.dumps({"type": "profile", "attributes": attrs}, ensure_ascii=False) + "\n")


def _braze(lst: EmailList, path: Path) -> None:
    """A Braze /users/track body: user attribute objects keyed by ``external_id`` with the standard
    ``email``, ``first_name``, ``language`` and the list as the nested custom attribute
    ``recsys_post_purchase`` (the API takes 75 attribute objects per request: the sender splits)."""
    attrs = [{"external_id": r["user_id"], "email": r["email"], "first_name": r["first_name"],
              "language": r["locale"].split("-")[0].lower() if r["locale"] else None,
              "recsys_post_purchase": {"ds": r["ds"], "run_id": r["run_id"], "locale": r["locale"],
                                       "purchased_item_title": r["purchased_item_title"], "items": r["items"],
                                       "consent_email": True, "built_at": r["built_at"]}} for r in lst.recipients]
    path.write_text(json.dumps({"attributes": attrs}, ensure_ascii=False, indent=1), encoding="utf-8")


WRITERS = {"csv": _csv, "json": _json_lines, "klaviyo": _klaviyo, "braze": _braze}


def check_format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise ExportError(f"export email: format {fmt!r} is not one of {sorted(FORMATS)}")
    return fmt


def write_file(lst: EmailList, fmt: str, out: Path) -> str:
    """Write the list atomically (temp file beside it, then one rename); returns its sha256."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        WRITERS[check_format(fmt)](lst, tmp)
        digest = sha256_of(tmp)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return digest


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _record(cfg: Config, lst: EmailList, fmt: str, out: Path) -> None:
    """Every export written goes into exports/manifest.jsonl: ``recsys forget`` scrubs each listed file."""
    manifest = layout(cfg).exports_manifest
    manifest.parent.mkdir(parents=True, exist_ok=True)
    with open(manifest, "a", encoding="utf-8") as fh:
        fh.write(json.dumps({"kind": "email", "format": fmt, "ds": lst.ds, "path": str(out.resolve()),
                             "rows": len(lst.recipients), "written_at": lst.built_at}) + "\n")


def export_email(cfg: Config, ds: str, out: Path, fmt: str = "csv", allow_empty: bool = False) -> EmailList:
    """``recsys export email``: the list of ds written to ``out`` in ``fmt``, recorded for forget."""
    check_format(fmt)
    lst = build(cfg, ds, allow_empty)
    write_file(lst, fmt, Path(out))
    _record(cfg, lst, fmt, Path(out))
    return lst


# ------------------------------------------------------------------ the drop folder (nightly step)
def drop_dir(cfg: Config, ds: str) -> Path:
    """The day's folder in the drop folder. Outside the data root (marketing's mount), so not an
    artifact of pipelines/artifacts.py; Hive-style ``ds=`` naming like the data root's partitions."""
    return Path(cfg.serving.export_dir).expanduser() / "email" / ("ds=" + ds)


def manifest_of(lst: EmailList, fmt: str, path: Path, digest: str) -> dict:
    return {"ds": lst.ds, "run_id": lst.run_id, "format": fmt, "file": path.name, "rows": len(lst.recipients),
            "published": lst.published, "skipped_opted_out": lst.skipped_opted_out,
            "skipped_no_address": lst.skipped_no_address, "sha256": digest, "built_at": lst.built_at}


def drop(cfg: Config, ds: str, run_id: str | None = None) -> dict:
    """Write the day's file to ``<export_dir>/email/ds=<ds>/post_purchase_email.<ext>`` and then its
    ``manifest.json`` (both atomic; the manifest last, so a manifest always describes a whole file).
    A day with no recipient gets an empty file and a manifest saying rows 0."""
    fmt = check_format(cfg.serving.export_format)
    lst = build(cfg, ds, allow_empty=True)
    if run_id and lst.run_id and lst.run_id != run_id:
        raise ExportError(f"export ds={ds}: the published list belongs to run {lst.run_id}, not {run_id}")
    lst.run_id = lst.run_id or run_id
    target = drop_dir(cfg, ds)
    path = target / f"{DROP_NAME}.{FORMATS[fmt]}"
    for old in target.glob(f"{DROP_NAME}.*"):  # another format of an earlier run of this ds
        if old != path:
            old.unlink()
    manifest = manifest_of(lst, fmt, path, write_file(lst, fmt, path))
    storage.write_json(manifest, target / "manifest.json")
    _record(cfg, lst, fmt, path)
    log.info("export ds=%s: %d recipients -> %s (%s)", ds, manifest["rows"], path, manifest)
    return manifest
