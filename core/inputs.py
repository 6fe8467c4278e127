"""What a user hands in, checked: texts typed into a box, CSV files uploaded for batch
predictions.

Every bad input - an empty text, a 20,000-character paste, a CSV with the wrong
columns, a file that is too big or not a CSV at all - becomes a
:class:`~core.errors.MinbertError` whose message says what is wrong and what to do.

    check_text(text)                        -> the stripped text, or MinbertError
    read_csv_upload(raw_bytes or file)      -> DataFrame (size, encoding, shape checked
                                               while reading); df.attrs["warnings"]
    text_columns(df) / guess_columns(df, task)

Predicting them is core/predict.py.
"""
from __future__ import annotations

import csv
import io

import pandas as pd

from core.data import PAIR_TASKS, TASK_NAMES, canonical_task
from core.errors import DataError, MinbertError
from core.model import check_input_text

MAX_TEXT_CHARS = 2_000          # per text box / CSV cell
MAX_CSV_MB = 20                 # default size limit of read_csv_upload (the app passes its upload limit)
MAX_BATCH_ROWS = 5_000          # rows of an uploaded CSV predicted at once

# Column names tried, in order, when guessing which CSV columns hold the texts.
_SINGLE_NAMES = ("sentence", "text", "review", "sentence1", "question1", "phrase")
_PAIR_NAMES = (("sentence1", "sentence2"), ("question1", "question2"), ("text_a", "text_b"),
               ("text1", "text2"), ("a", "b"))


def check_text(text, what: str = "text", max_chars: int = MAX_TEXT_CHARS) -> str:
    """The text, stripped. :class:`MinbertError` for: not a string (``None`` counts as
    empty), an empty text, a text longer than ``max_chars``, an unpaired surrogate, or
    a text with no visible characters (only control / zero-width characters)."""
    if text is None:
        raise MinbertError(f"the {what} is empty: type a sentence")
    if not isinstance(text, str):
        raise MinbertError(f"the {what} must be text (a string), got {type(text).__name__}")
    text = text.strip()
    if not text:
        raise MinbertError(f"the {what} is empty: type a sentence")
    if len(text) > max_chars:
        raise MinbertError(f"the {what} is {len(text):,} characters long; the limit is {max_chars:,} "
                           f"characters: shorten it")
    return check_input_text(text, f"the {what}")


# ------------------------------------------------------------------------ CSV
def read_csv_upload(raw, max_mb: float = MAX_CSV_MB, max_rows: int = MAX_BATCH_ROWS) -> pd.DataFrame:
    """Parse an uploaded CSV (comma, tab, semicolon or bar separated), from bytes or a
    binary file object (e.g. Streamlit's UploadedFile).

    Limits are enforced while reading: at most ``max_mb`` MB are read from a file
    object, and parsing stops at row ``max_rows + 1``. Text that is not valid UTF-8 is
    never rejected silently nor turned into mojibake: a few invalid bytes are replaced
    by U+FFFD, a file that is mostly not UTF-8 is read as Latin-1, and either way
    ``df.attrs["warnings"]`` holds a sentence to show the user (empty list otherwise)."""
    limit = int(max_mb * 2**20)
    from_file = hasattr(raw, "read")
    if isinstance(raw, (bytes, bytearray, memoryview)):
        raw = bytes(raw)
    elif hasattr(raw, "read"):
        raw = raw.read(limit + 1)
        if not isinstance(raw, (bytes, bytearray)):
            raise DataError("the upload could not be read as bytes: upload a .csv file")
        raw = bytes(raw)
    else:
        raise DataError(f"expected the file's bytes, got {type(raw).__name__}: upload a .csv file")
    if len(raw) > limit:
        size = f"more than {max_mb:g}" if from_file else f"{len(raw) / 2**20:.1f}"
        raise DataError(f"the file is {size} MB; the limit is {max_mb:g} MB: split it into smaller files")
    if not raw.strip():
        raise DataError("the file is empty: upload a CSV with a header row and one text per row")
    if b"\x00" in raw[:4096]:
        raise DataError("this is not a text file (it contains binary data): upload a .csv file")
    text, warnings = _decode(raw)
    delimiter = _delimiter(text)
    rows: list[list[str]] = []
    try:
        reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
        header = next(reader, None)
        for fields in reader:
            if not any(f.strip() for f in fields):
                continue   # blank line
            rows.append(fields)
            if len(rows) > max_rows:   # stop here: the rest of the file is never parsed
                raise DataError(f"the file has more than {max_rows:,} rows; the limit is {max_rows:,} rows "
                                f"per upload (CPU inference): split it, or run `python -m core.evaluate` "
                                f"for whole data sets")
    except csv.Error as e:
        raise DataError(f"the file could not be read as CSV (line {reader.line_num}: {e}): "
                        f"use comma-separated columns with a header row") from None
    if not header or not any(h.strip() for h in header):
        raise DataError("the file has no header row: put column names (e.g. sentence) on the first line")
    header = [h.strip() for h in header]
    width = len(header)
    for i, fields in enumerate(rows):
        if len(fields) > width:
            raise DataError(f"the file could not be read as CSV: data row {i + 1} has {len(fields)} fields "
                            f"where the header has {width}: quote texts that contain the separator "
                            f"{delimiter!r}")
        if len(fields) < width:
            fields.extend([""] * (width - len(fields)))
    names = [h or f"Unnamed: {j}" for j, h in enumerate(header)]
    df = pd.DataFrame(rows, columns=pd.Index(names, dtype=object), dtype=object) if rows else \
        pd.DataFrame(columns=names)
    df = df.loc[:, [c for c in df.columns if c and not str(c).startswith("Unnamed:")] or list(df.columns)]
    if df.shape[1] == 0 or len(df) == 0:
        raise DataError("the file has a header but no rows: add one text (or pair) per row")
    df.attrs["warnings"] = warnings
    return df


def _decode(raw: bytes) -> tuple[str, list[str]]:
    """(text, warnings): UTF-8 (a BOM is dropped); a few invalid bytes replaced by
    U+FFFD with a warning naming the lines (the file has valid UTF-8 characters too, so
    it is UTF-8 with a few damaged bytes); a file without any valid multi-byte UTF-8
    character is read as Latin-1, with a warning."""
    try:
        return raw.decode("utf-8-sig"), []
    except UnicodeDecodeError:
        pass
    text = raw.decode("utf-8-sig", errors="replace")
    bad = text.count("\ufffd") - raw.decode("utf-8-sig", errors="ignore").count("\ufffd")
    lines = [i + 1 for i, line in enumerate(text.splitlines()) if "\ufffd" in line]
    valid_utf8 = any(ord(c) > 127 for c in raw.decode("utf-8-sig", errors="ignore"))
    if not valid_utf8:   # no valid multi-byte character at all: a Latin-1 / Windows file
        return raw.decode("latin-1"), [
            "The file is not UTF-8; it was read as Latin-1 (Windows Western European). Check that "
            "accented letters look right, or save the file as UTF-8 and upload it again."]
    where = ", ".join(map(str, lines[:5])) + (" ..." if len(lines) > 5 else "")
    return text, [f"{bad} byte(s) of the file are not valid UTF-8 and were replaced by \ufffd "
                  f"(line{'s' if len(lines) > 1 else ''} {where}); save the file as UTF-8 to keep "
                  f"those characters."]


def _delimiter(text: str) -> str:
    """The field separator among comma, tab, semicolon and bar (comma if unclear)."""
    try:
        return csv.Sniffer().sniff(text[:65_536], delimiters=",\t;|").delimiter
    except csv.Error:
        return ","


def text_columns(df: pd.DataFrame) -> list[str]:
    """Columns that hold text (not only numbers / ids), in file order."""
    cols = []
    for c in df.columns:
        values = df[c].astype(str).str.strip()
        values = values[values != ""]
        if len(values) and not pd.to_numeric(values, errors="coerce").notna().all():
            cols.append(c)
    return cols


def guess_columns(df: pd.DataFrame, task: str) -> list[str]:
    """The text column(s) a task most likely reads: by name, else the first text columns.
    Raises :class:`DataError` when the file has too few text columns."""
    task = canonical_task(task)
    need = 2 if task in PAIR_TASKS else 1
    texts = text_columns(df)
    lower = {c.lower(): c for c in df.columns}
    if need == 1:
        for name in _SINGLE_NAMES:
            if name in lower and lower[name] in texts:
                return [lower[name]]
    else:
        for a, b in _PAIR_NAMES:
            if a in lower and b in lower:
                return [lower[a], lower[b]]
    if len(texts) < need:
        found = ", ".join(map(str, df.columns)) or "none"
        wanted = "two text columns (one sentence of each pair)" if need == 2 else "a text column"
        raise DataError(
            f"{TASK_NAMES[task]} needs {wanted}, "
            f"but the file has {len(texts)} text column(s) (columns: {found}). "
            + ("Use a header such as sentence1,sentence2." if need == 2 else "Use a header such as sentence."))
    return texts[:need]
