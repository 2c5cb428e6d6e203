"""What the events gate counts while it streams the pending partitions chunk by chunk
(validation/events.py): rows, rule counts, per batch its rows, errors, files and a few example rows
per rule, per (batch, partition) the accounting, and the rule codes of every row for the write pass.
The batch verdicts (``judge``) come from these totals once every chunk was read, so a batch whose
rows span several chunks is judged on all of them, as if the gate had read everything at once."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from pipelines import constants as C
from pipelines.artifacts import layout
from pipelines.config import Config
from pipelines.validation import batches
from pipelines.validation.rules import BATCH_FAILED, RULE_COLUMN, UNPARSEABLE

EXAMPLES = 3


def examples(df: pd.DataFrame, mask: np.ndarray, n: int = EXAMPLES, rule: str = "") -> list[dict]:
    """A few rows, with the raw text of what the importer could not parse (``_unparseable``) and the
    value of the rule's own column when it is one of the optional ones (rating, review text, ...)."""
    base = (C.USER_ID, C.ITEM_ID, C.EVENT_TYPE, C.EVENT_TIME, C.QUANTITY, C.PRICE)
    extra = [c for c in RULE_COLUMN.get(rule, "").split(", ") if c in df and c not in base]
    rows = df.loc[mask, [*base, *extra, UNPARSEABLE, "_source_file"]].head(n).copy()
    rows[C.EVENT_TIME] = rows[C.EVENT_TIME].astype(str)
    return [{k: (None if pd.isna(v) else (v[:80] + "..." if isinstance(v, str) and len(v) > 80 else v))
             for k, v in r.items() if not (k == UNPARSEABLE and pd.isna(v))} for r in rows.to_dict("records")]


def _codes(column: pd.Series) -> tuple[np.ndarray, list]:
    """(a code per row, the distinct values): a categorical's own, else factorised."""
    if isinstance(column.dtype, pd.CategoricalDtype):
        return column.cat.codes.to_numpy(), list(column.cat.categories)
    codes, names = pd.factorize(column, use_na_sentinel=False)
    return codes, list(names)


@dataclass
class Tally:
    exempt: set[str]
    rows_in: int = 0
    quarantined: int = 0
    names: list[str] = field(default_factory=list)
    rule_counts: Counter = field(default_factory=Counter)
    batch_rows: Counter = field(default_factory=Counter)
    batch_errors: Counter = field(default_factory=Counter)
    failed_rows: Counter = field(default_factory=Counter)
    rule_rows: Counter = field(default_factory=Counter)          # (batch, rule) -> rows
    rule_examples: dict = field(default_factory=dict)            # (batch, rule) -> example rows
    error_files: dict = field(default_factory=dict)              # batch -> files with error rows
    counts: dict = field(default_factory=dict)                   # batch -> partition -> [in, valid, quarantined]
    codes: list = field(default_factory=list)                    # per chunk: the rule bits of each row (int32)

    def add(self, df: pd.DataFrame, masks: dict[str, np.ndarray], codes: np.ndarray, names: list[str]) -> None:
        """One chunk: its rows in read order, one mask per rule, the encoded rule bits."""
        self.names = names
        bad = codes != 0
        exempt_bits = sum(1 << names.index(r) for r in (*self.exempt, BATCH_FAILED) if r in names)
        errors = bad & ((codes & ~exempt_bits) != 0)
        self.rows_in += len(df)
        self.quarantined += int(bad.sum())
        self.codes.append(codes.astype(np.int32))
        # Batches, files and partitions as codes (the gate's chunks carry them as categoricals).
        b, batch_names = _codes(df["_batch"])
        files, file_names = _codes(df["_source_file"])
        parts, part_names = _codes(df["_partition"])
        nb = len(batch_names)

        def per_batch(mask: np.ndarray | None = None) -> dict:
            n = np.bincount(b if mask is None else b[mask], minlength=nb)
            return {batch_names[k]: int(n[k]) for k in np.flatnonzero(n)}

        self.rule_counts.update({r: int(m.sum()) for r, m in masks.items()})
        self.batch_rows.update(per_batch())
        self.batch_errors.update(per_batch(errors))
        self.failed_rows.update(per_batch(masks[BATCH_FAILED]))
        for key in np.unique(b[errors].astype(np.int64) * len(file_names) + files[errors]):
            self.error_files.setdefault(batch_names[key // len(file_names)], set()).add(file_names[key % len(file_names)])
        for r, m in masks.items():
            if r in self.exempt or r == BATCH_FAILED or not m.any():
                continue
            for bb, n in per_batch(m).items():
                self.rule_rows[(bb, r)] += n
                have = self.rule_examples.setdefault((bb, r), [])
                if len(have) < EXAMPLES:
                    have += examples(df, m & (b == batch_names.index(bb)), EXAMPLES - len(have), rule=r)
        cell = b.astype(np.int64) * len(part_names) + parts
        rows = np.bincount(cell, minlength=nb * len(part_names))
        quarantined = np.bincount(cell[bad], minlength=nb * len(part_names))
        for key in np.flatnonzero(rows):
            c = self.counts.setdefault(batch_names[key // len(part_names)], {}).setdefault(
                part_names[key % len(part_names)], [0, 0, 0])
            n, q = int(rows[key]), int(quarantined[key])
            c[0], c[1], c[2] = c[0] + n, c[1] + n - q, c[2] + q

    def judge(self, cfg: Config, ledger: dict) -> dict[str, dict]:
        """The verdict on each batch not judged before: ``failed`` when more than
        ``max_quarantine_share`` of its rows read by this run break a data rule, else ``validated``."""
        before = batches.ids_with(ledger, batches.VALIDATED) | batches.ids_with(ledger, batches.FAILED)
        limit = cfg.validation.max_quarantine_share
        verdicts: dict[str, dict] = {}
        for b in sorted(self.batch_rows):
            if b in before:
                continue
            n, e = int(self.batch_rows[b]), int(self.batch_errors[b])
            if e / n <= limit:
                verdicts[b] = {"status": batches.VALIDATED, "rows": n, "errors": e}
                continue
            files = sorted(self.error_files.get(b, ()))
            detail = "; ".join(f"{r} (column {RULE_COLUMN[r]}): {self.rule_rows[(b, r)]} rows, e.g. "
                               f"{self.rule_examples[(b, r)]}" for r in self.names if (b, r) in self.rule_rows)
            msg = (f"rule quarantine_share: {e} of {n} rows ({e / n:.1%}) of batch {b} break a data rule, above the "
                   f"limit of {limit:.0%} (config max_quarantine_share) in {len(files)} file(s) under "
                   f"{layout(cfg).landing_events}: {files[:5]}; by rule: {detail}. Batch {b} is now marked failed: "
                   f"this run fails, later runs quarantine its rows (rule batch_failed) with a warning and go on; run "
                   f"`recsys withdraw {b} --reason TEXT` to exclude this batch, or fix the file and re-import it")
            verdicts[b] = {"status": batches.FAILED, "rows": n, "errors": e, "message": msg}
        return verdicts

    def failed_batch_warnings(self, ledger: dict) -> list[str]:
        out = []
        for b in sorted(self.failed_rows):
            j = ledger["batches"][b].get("judged", {})
            out.append(f"batch {b} failed its quarantine-share judgement on ds={j.get('ds')} (run {j.get('run_id')}): "
                       f"its {self.failed_rows[b]} rows read by this run are quarantined (rule batch_failed); run "
                       f"`recsys withdraw {b} --reason TEXT` to exclude this batch, or fix the file and re-import it")
        return out
