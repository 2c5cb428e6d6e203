"""Import batches: how the gate judged each one, and withdrawals (docs/validation.md, "Batches").

A batch is what one import landed: its events files ``landing/events/event_date=*/batch-<id>.parquet``
and, from the same import, catalog and users files ``landing/{items,users}/batch-<stamp>-<id>.parquet``.
Landing files are never modified; the ledger (``Layout.batch_ledger``, JSON) says per batch id:

* ``status``: ``validated`` or ``failed`` once the gate judged it (no entry: pending); ``judged``:
  the ds, run and counts of that judgement and, for a failure, its message;
* ``partitions``: ``{event_date: [rows, valid, quarantined]}`` as last validated;
* ``withdrawn``: null, or who withdrew it, when and why; ``history``: every withdraw and restore.

A withdrawn batch is left out of every later run (its partitions are validated again without it);
``restore`` brings it back, and also clears a ``failed`` judgement so the next run judges it again.
"""
from __future__ import annotations

import getpass
import re
from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines import constants as C
from pipelines.artifacts import layout
from pipelines.config import Config
from pipelines.infra import storage

PENDING, VALIDATED, FAILED, WITHDRAWN = "pending", "validated", "failed", "withdrawn"
_STAMP = re.compile(r"^batch-\d{8}T\d{12}-")
REFERENCE = ("items", "users")


def batch_of(file: Path | str) -> str:
    """The batch id in a landing file name: ``batch-<id>.parquet`` (events) or
    ``batch-<UTC stamp>-<id>.parquet`` (catalog, users)."""
    name = Path(file).name
    return _STAMP.sub("", name).removeprefix("batch-").removesuffix(".parquet")


def read_ledger(cfg: Config) -> dict:
    path = layout(cfg).batch_ledger
    return storage.read_json(path) if path.exists() else {"batches": {}}


def write_ledger(cfg: Config, ledger: dict) -> None:
    storage.write_json(ledger, layout(cfg).batch_ledger)


def ids_with(ledger: dict, status: str) -> set[str]:
    """Batch ids withdrawn (``WITHDRAWN``) or judged ``VALIDATED`` / ``FAILED``."""
    if status == WITHDRAWN:
        return {b for b, e in ledger["batches"].items() if e.get("withdrawn")}
    return {b for b, e in ledger["batches"].items() if e.get("status") == status}


def record_judgements(cfg: Config, ds: str, run_id: str, judged: dict[str, dict], counts: dict | None) -> None:
    """Write the gate's verdicts (``{batch: {status, rows, errors, message}}``) and, after a run that
    published, each batch's counts per validated partition (``{batch: {date: [rows, valid, q]}}``)."""
    ledger = read_ledger(cfg)
    for b, verdict in judged.items():
        entry = ledger["batches"].setdefault(b, {})
        entry["status"] = verdict.pop("status")
        entry["judged"] = {"ds": ds, "run_id": run_id, **verdict}
    for b, parts in (counts or {}).items():
        ledger["batches"].setdefault(b, {}).setdefault("partitions", {}).update(parts)
    write_ledger(cfg, ledger)


def landed(cfg: Config) -> dict[str, dict]:
    """Every landed batch: its datasets, files, event dates, rows and landing time."""
    out: dict[str, dict] = defaultdict(lambda: {"datasets": set(), "files": [], "dates": [], "rows": 0,
                                                "landed_at": None})
    root = layout(cfg).landing
    found = [("events", f) for f in sorted(root.glob(f"events/{C.EVENT_DATE}=*/batch-*.parquet"))]
    found += [(d, f) for d in REFERENCE for f in storage.landing_files(root, d)]
    for dataset, f in found:
        b = out[batch_of(f)]
        b["datasets"].add(dataset)
        b["files"].append(f)
        if dataset == "events":
            b["dates"].append(f.parent.name.split("=", 1)[1])
            try:
                b["rows"] += pq.ParquetFile(f).metadata.num_rows
            except (OSError, pa.ArrowException):
                pass  # the gate names an unreadable file
        when = datetime.fromtimestamp(f.stat().st_mtime, timezone.utc)
        b["landed_at"] = min(b["landed_at"] or when, when)
    return dict(out)


def status_of(entry: dict) -> str:
    return WITHDRAWN if entry.get("withdrawn") else entry.get("status", PENDING)


def list_batches(cfg: Config) -> pd.DataFrame:
    """One row per landed batch: rows landed (events), valid and quarantined as last validated,
    status, event dates, landing time, and the judgement or withdrawal."""
    ledger = read_ledger(cfg)["batches"]
    rows = []
    for b, info in sorted(landed(cfg).items(), key=lambda kv: (kv[1]["landed_at"], kv[0])):
        entry = ledger.get(b, {})
        parts = entry.get("partitions", {})
        dates = sorted(d for d in info["dates"])
        w = entry.get("withdrawn") or {}
        j = entry.get("judged")
        note = (f"withdrawn by {w['by']} at {w['at']}: {w['reason']}" if w else
                f"judged on ds={j['ds']}: {j['errors']} of {j['rows']} rows broke a data rule" if j else "")
        rows.append({"batch": b, "datasets": ",".join(sorted(info["datasets"])), "status": status_of(entry),
                     "landed": info["rows"], "valid": sum(p[1] for p in parts.values()),
                     "quarantined": sum(p[2] for p in parts.values()),
                     "event_dates": f"{dates[0]}..{dates[-1]}" if len(dates) > 1 else (dates[0] if dates else "-"),
                     "landed_at": info["landed_at"].strftime("%Y-%m-%d %H:%M:%S"), "note": note})
    return pd.DataFrame(rows, columns=["batch", "datasets", "status", "landed", "valid", "quarantined",
                                       "event_dates", "landed_at", "note"])


def resolve(cfg: Config, batch: str) -> str:
    """A landed batch id, given in full or by a unique prefix; else a LookupError naming the choices."""
    ids = sorted(landed(cfg))
    if batch in ids:
        return batch
    hits = [b for b in ids if b.startswith(batch)]
    if len(hits) == 1:
        return hits[0]
    shown = ", ".join(hits or ids[:20]) or "none"
    raise LookupError(f"no landed batch {batch!r}" + (" (ambiguous)" if hits else "")
                      + f"; batches: {shown} (`recsys batches` lists them)")


def _now() -> str:
    # A command's record of when it ran; the steps never read the clock.
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _who(by: str | None) -> str:
    if by:
        return by
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def withdraw(cfg: Config, batch: str, reason: str, by: str | None = None) -> dict:
    """Exclude a batch from every later run (nothing is deleted). Returns its ledger entry."""
    if not reason or not reason.strip():
        raise ValueError("withdraw: give --reason (why the batch is excluded; it is kept in the ledger)")
    b = resolve(cfg, batch)
    ledger = read_ledger(cfg)
    entry = ledger["batches"].setdefault(b, {})
    if entry.get("withdrawn"):
        raise ValueError(f"batch {b} is already withdrawn ({entry['withdrawn']['at']}); `recsys restore {b}` undoes it")
    entry["withdrawn"] = {"by": _who(by), "at": _now(), "reason": reason.strip()}
    entry.setdefault("history", []).append({"action": "withdraw", **entry["withdrawn"]})
    write_ledger(cfg, ledger)
    return {"batch": b, **entry}


def restore(cfg: Config, batch: str, by: str | None = None, reason: str = "") -> dict:
    """Undo a withdrawal, or clear a ``failed`` judgement (the next run judges the batch again)."""
    b = resolve(cfg, batch)
    ledger = read_ledger(cfg)
    entry = ledger["batches"].get(b, {})
    if not entry.get("withdrawn") and entry.get("status") != FAILED:
        raise ValueError(f"batch {b} is {status_of(entry)}: neither withdrawn nor failed; nothing to restore")
    action = "restore" if entry.get("withdrawn") else "rejudge"
    entry["withdrawn"] = None
    if entry.get("status") == FAILED:
        entry.pop("status")
        entry.pop("judged", None)
    entry.setdefault("history", []).append({"action": action, "by": _who(by), "at": _now(), "reason": reason})
    ledger["batches"][b] = entry
    write_ledger(cfg, ledger)
    return {"batch": b, **entry}


def withdrawn_records(cfg: Config, ds: str, run_id: str, report: Path) -> list[dict]:
    """One ``validation_runs`` row per withdrawn batch (dataset ``withdrawn_batch``): who, when and
    why, in ``message``; rows_in = rows_valid = rows_quarantined = 0, as nothing of it was read."""
    ledger = read_ledger(cfg)["batches"]
    return [{"ds": ds, "run_id": run_id, "dataset": "withdrawn_batch", "rows_in": 0, "rows_valid": 0,
             "rows_quarantined": 0, "success": True, "partitions": len(e.get("partitions", {})), "rule_counts": {},
             "warnings": "", "message": f"batch {b} withdrawn by {e['withdrawn']['by']} at {e['withdrawn']['at']}: "
             f"{e['withdrawn']['reason']}; excluded from this run", "data_docs": report.as_uri()}
            for b, e in sorted(ledger.items()) if e.get("withdrawn")]
