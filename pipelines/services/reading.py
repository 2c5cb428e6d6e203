"""Reading the files people import: CSV, Parquet or Excel, with errors that name the file.

Every failure of an import is an ``ImportError_`` whose message names the file (and the column,
rule and example lines where there are some), and nothing is written by an import that fails.
"""
from __future__ import annotations

import codecs
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq


class ImportError_(ValueError):
    """Bad input for an import: the message names the file and the column."""


def existing_file(path: str | Path, command: str = "import-events") -> Path:
    """The path of one readable file, or a one-line error: not found, or a directory."""
    path = Path(path)
    if path.is_dir():
        raise ImportError_(f"{path}: is a directory; give one file: each file is its own batch, e.g. "
                           f"`for f in {path}/*.csv; do recsys {command} \"$f\" ...; done`; nothing written")
    if not path.exists():
        raise ImportError_(f"{path}: file not found")
    return path


def read_any(path: Path, columns: Sequence[str] | None = None, encoding: str = "utf-8") -> pd.DataFrame:
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
    except (UnicodeDecodeError, LookupError, pd.errors.EmptyDataError) as exc:
        raise text_read_error(path, encoding, exc) from exc
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise ImportError_(f"{path}: cannot be read as {suffix.lstrip('.')} ({exc}); nothing written") from exc
    raise ImportError_(f"{path}: unsupported file type {suffix!r}; use .csv, .parquet or .xlsx")


def read_rows(path: Path, columns: Sequence[str] | None = None, encoding: str = "utf-8") -> pd.DataFrame:
    """``read_any``, refusing a file with a header but no rows."""
    df = read_any(path, columns, encoding)
    if df.empty:
        raise ImportError_(f"{path}: the file has a header ({list(df.columns)}) but no rows; nothing written")
    return df


def columns_of(path: Path, encoding: str = "utf-8") -> list[str]:
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        try:
            return list(pq.read_schema(path).names)
        except (OSError, pa.ArrowException) as exc:
            raise ImportError_(f"{path}: cannot be read as Parquet ({exc}); nothing written") from exc
    if suffix in (".csv", ".txt", ".tsv"):
        try:
            return list(pd.read_csv(path, nrows=0, sep="\t" if suffix == ".tsv" else ",", encoding=encoding).columns)
        except (UnicodeDecodeError, LookupError, pd.errors.EmptyDataError) as exc:
            raise text_read_error(path, encoding, exc) from exc
    return list(read_any(path).columns)


def text_read_error(path: Path, encoding: str, exc: Exception) -> ImportError_:
    """The one-line error for a text file that cannot be decoded or holds nothing."""
    if isinstance(exc, UnicodeDecodeError):
        return encoding_error(path, encoding, exc)
    if isinstance(exc, pd.errors.EmptyDataError):
        return ImportError_(f"{path}: the file is empty (no header, no rows); nothing written")
    return ImportError_(f"{path}: unknown encoding {encoding!r} ({exc}); nothing written")


def encoding_error(path: Path, encoding: str, exc: UnicodeDecodeError) -> ImportError_:
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


def unparseable(raw: pd.Series, parsed: pd.Series, column: str) -> pd.Series:
    """"column='raw'" where a value was given but could not be parsed, else empty; keeps the raw text."""
    bad = (raw.notna() & parsed.isna() & (raw.astype("string").str.strip() != "")).fillna(False).to_numpy(bool)
    return pd.Series(np.where(bad, column + "='" + raw.astype("string").fillna("").str.slice(0, 200) + "'", ""),
                     index=raw.index)


def refuse_bad(path: Path, column: str, rule: str, raw: pd.Series, bad: pd.Series) -> None:
    """Raise naming the file, column, rule, count, example values and their lines (1-based, after
    the header line), when any cell is bad."""
    bad = bad.fillna(False).to_numpy(bool) if hasattr(bad, "fillna") else np.asarray(bad, bool)
    if bad.any():
        lines = (np.flatnonzero(bad)[:5] + 2).tolist()
        raise ImportError_(f"{path}: column {column!r}: rule {rule}: {int(bad.sum())} bad value(s), e.g. "
                           f"{raw[bad].head(5).tolist()} on line(s) {lines}; nothing written")
