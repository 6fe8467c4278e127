"""What a user hands in, checked: texts typed into a box, CSV files uploaded for batch
predictions.

Every bad input - an empty text, a 20,000-character paste, a CSV with the wrong
columns, a file that is too big, too wide, UTF-16, or not a CSV at all, a header that
names a column twice, a quote never closed - becomes a
:class:`~core.errors.MinbertError` whose message says what is wrong and what to do.

    readable_problem(text)                  -> why a model cannot read a text, or None:
                                               the one rule "is this text readable"
                                               (model, serving and analysis all ask it)
    check_input_text(text, what)            -> the text unchanged, or MinbertError
    check_text(text)                        -> the stripped text, or MinbertError
    read_csv_upload(raw_bytes or file)      -> DataFrame (size, encoding, shape, columns,
                                               cells checked while reading);
                                               df.attrs["warnings"]
    text_columns(df) / guess_columns(df, task)
    csv_export_bytes(df)                    -> the CSV download, formula cells neutralized
                                               (OWASP CSV injection): every export calls it

Predicting them is core/serving/predict.py.
"""
from __future__ import annotations

import csv
import io

import pandas as pd

from core.data.datasets import has_visible_text
from core.tasks import PAIR_TASKS, TASK_NAMES, canonical_task
from core.errors import DataError, MinbertError

# One text box / CSV cell of one text (sentiment, embeddings). Long texts are read whole,
# in windows of the model's max_len (core/model/windows.py); 8,000
# characters of English are ~1,650 tokens, under core.model.windows.MAX_READ_TOKENS (2,048): the
# shipped model reads one in 53 windows, 2.9 s measured on one shared CPU core
# (docs/reliability.md). A pair's texts are read every window of one against every window
# of the other: MAX_WINDOWS bounds that product (2,000 + 2,000 characters: 196 windows, 7 s).
MAX_TEXT_CHARS = 8_000
MAX_WINDOWS = 256               # windows one prediction may take (predict_one, each CSV row)
MAX_BATCH_WINDOWS = 20_000      # windows of one uploaded CSV together
MAX_CSV_MB = 20                 # default size limit of read_csv_upload (the app passes its upload limit)
MAX_BATCH_ROWS = 5_000          # rows of an uploaded CSV predicted at once
MAX_CSV_COLUMNS = 64            # columns of an uploaded CSV (a 100,000-column file took minutes to inspect)
MAX_CELL_CHARS = 4 * MAX_TEXT_CHARS   # one CSV cell; longer cells refuse the file (over MAX_TEXT_CHARS: a note)
MAX_HEADER_CHARS = 200          # one column name

# Column names tried, in order, when guessing which CSV columns hold the texts.
_SINGLE_NAMES = ("sentence", "text", "review", "sentence1", "question1", "phrase")
_PAIR_NAMES = (("sentence1", "sentence2"), ("question1", "question2"), ("text_a", "text_b"),
               ("text1", "text2"), ("a", "b"))


# ------------------------------------------------------------------ readable
def readable_problem(text) -> str | None:
    """Why a model cannot read ``text`` (a phrase to follow "the text ..."), or None when
    it can: not a string; an unpaired surrogate (e.g. "\\ud800", which cannot be encoded
    as UTF-8); nothing visible (only whitespace, control or zero-width / format
    characters, which the tokenizer drops, leaving an empty input that would still get
    a confident prediction). The one owner of this rule: the predict API
    (core.model.multitask), the serving code (core/serving/predict.py) and the attention
    maps (analysis/attention.py) all ask it."""
    if not isinstance(text, str):
        return f"must be a string, got {type(text).__name__}"
    for ch in text:
        if "\ud800" <= ch <= "\udfff":
            return (f"contains an unpaired surrogate (U+{ord(ch):04X}), which is not valid Unicode text: "
                    f"decode the input correctly (e.g. as UTF-8) first")
    if not has_visible_text(text):
        return ("is empty or has no visible characters (only whitespace, control or zero-width characters): "
                "type some words")
    return None


def check_input_text(text, what: str = "text") -> str:
    """``text`` unchanged if a model can read it (:func:`readable_problem`), else
    :class:`MinbertError` naming ``what``."""
    problem = readable_problem(text)
    if problem is not None:
        raise MinbertError(f"{what} {problem}")
    return text


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
def read_csv_upload(raw, max_mb: float = MAX_CSV_MB, max_rows: int = MAX_BATCH_ROWS,
                    max_columns: int = MAX_CSV_COLUMNS, max_cell_chars: int = MAX_CELL_CHARS) -> pd.DataFrame:
    """Parse an uploaded CSV (comma, tab, semicolon or bar separated), from bytes or a
    binary file object (e.g. Streamlit's UploadedFile).

    Limits are enforced while reading: at most ``max_mb`` MB are read from a file
    object, parsing stops at row ``max_rows + 1``, a header of more than ``max_columns``
    columns or a cell of more than ``max_cell_chars`` characters refuses the file. A
    header that names a column twice is refused; a quote that is never closed is
    reported with its line (it would swallow every later row into one cell); rows that
    span several lines are named in a warning. Text that is not valid UTF-8 is never
    rejected silently nor turned into mojibake: a few invalid bytes are replaced by
    U+FFFD, a file that is mostly not UTF-8 is read as Latin-1, a UTF-16 / UTF-32 file is
    refused with "save it as UTF-8"; ``df.attrs["warnings"]`` holds sentences to show."""
    raw, from_file = _upload_bytes(raw, max_mb)
    limit = int(max_mb * 2**20)
    if len(raw) > limit:
        size = f"more than {max_mb:g}" if from_file else f"{len(raw) / 2**20:.1f}"
        raise DataError(f"the file is {size} MB; the limit is {max_mb:g} MB: split it into smaller files")
    if not raw.strip():
        raise DataError("the file is empty: upload a CSV with a header row and one text per row")
    _refuse_wide_encodings(raw)
    if b"\x00" in raw[:4096]:
        raise DataError("this is not a text file (it contains binary data): upload a .csv file")
    text, warnings = _decode(raw)
    delimiter = _delimiter(text)
    header, rows, spans = _parse_rows(text, delimiter, max_rows, max_columns, max_cell_chars)
    width = len(header)
    for i, fields in enumerate(rows):
        if len(fields) > width:
            raise DataError(f"the file could not be read as CSV: data row {i + 1} (line {spans[i][0]}) has "
                            f"{len(fields)} fields where the header has {width}: quote texts that contain the "
                            f"separator {delimiter!r}")
        if len(fields) < width:
            fields.extend([""] * (width - len(fields)))
    multi = [f"{a}-{b}" for a, b in spans if b > a]
    if multi:
        warnings.append(f"{len(multi)} row(s) span several lines (lines {', '.join(multi[:5])}"
                        f"{' ...' if len(multi) > 5 else ''}): a quoted text with line breaks. If that was "
                        f"not meant, a quote there is missing its closing partner and rows were merged.")
    names = [h or f"Unnamed: {j}" for j, h in enumerate(header)]
    df = pd.DataFrame(rows, columns=pd.Index(names, dtype=object), dtype=object) if rows else \
        pd.DataFrame(columns=names)
    df = df.loc[:, [c for c in df.columns if c and not str(c).startswith("Unnamed:")] or list(df.columns)]
    if df.shape[1] == 0 or len(df) == 0:
        raise DataError("the file has a header but no rows: add one text (or pair) per row")
    df.attrs["warnings"] = warnings
    return df


def _upload_bytes(raw, max_mb: float) -> tuple[bytes, bool]:
    """(the upload's bytes, read at most to the limit + 1; whether it came from a file)."""
    limit = int(max_mb * 2**20)
    if isinstance(raw, (bytes, bytearray, memoryview)):
        return bytes(raw), False
    if hasattr(raw, "read"):
        data = raw.read(limit + 1)
        if not isinstance(data, (bytes, bytearray)):
            raise DataError("the upload could not be read as bytes: upload a .csv file")
        return bytes(data), True
    raise DataError(f"expected the file's bytes, got {type(raw).__name__}: upload a .csv file")


_SAVE_AS_UTF8 = ("save it as UTF-8 and upload it again (Excel: File > Save As > 'CSV UTF-8'; LibreOffice: "
                 "Save As > Text CSV, character set Unicode (UTF-8))")


def _refuse_wide_encodings(raw: bytes) -> None:
    """UTF-16 / UTF-32 text (with a byte-order mark, or ASCII with every other byte NUL):
    a DataError that says so, not "binary"."""
    boms = {b"\x00\x00\xfe\xff": "UTF-32", b"\xff\xfe\x00\x00": "UTF-32", b"\xff\xfe": "UTF-16",
            b"\xfe\xff": "UTF-16"}
    for bom, name in boms.items():
        if raw.startswith(bom):
            raise DataError(f"this file is {name} text, not UTF-8: {_SAVE_AS_UTF8}")
    head = raw[:4096]
    if len(head) >= 4:
        even, odd = head[0::2], head[1::2]
        for nuls, other in ((even, odd), (odd, even)):
            if nuls.count(0) > 0.9 * len(nuls) and other.count(0) < 0.1 * len(other):
                raise DataError(f"this file looks like UTF-16 text (every other byte is zero), not UTF-8: "
                                f"{_SAVE_AS_UTF8}")


def _parse_rows(text: str, delimiter: str, max_rows: int, max_columns: int,
                max_cell_chars: int) -> tuple[list[str], list[list[str]], list[tuple[int, int]]]:
    """(header, data rows, (first line, last line) of each row). Stops at row
    ``max_rows + 1``; DataError for too many columns, an oversized cell, a repeated
    column name, or a quote left open at the end of the file (named by its line)."""
    lines = list(io.StringIO(text, newline=""))
    pos = 0

    def feed():
        nonlocal pos
        while pos < len(lines):
            pos += 1
            yield lines[pos - 1]
    reader = csv.reader(feed(), delimiter=delimiter)
    header, rows, spans = None, [], []
    start = 1
    try:
        for fields in reader:
            span = (start, pos)
            start = pos + 1
            _check_cells(fields, span, max_cell_chars, MAX_HEADER_CHARS if header is None else max_cell_chars)
            if header is None:
                header = _check_header(fields, max_columns)
                continue
            if not any(f.strip() for f in fields):
                continue   # blank line
            if pos == len(lines) and span[1] > span[0] and _open_quote_at_end(lines[span[0] - 1:], delimiter):
                raise DataError(f"line {span[0]}: a quote (\") opens a text that is never closed, so every later "
                                f"line ({span[1] - span[0]} of them) would be read into that one cell: close the "
                                f"quote, or remove it (quotes are only needed around texts that contain the "
                                f"separator {delimiter!r})")
            rows.append(fields)
            spans.append(span)
            if len(rows) > max_rows:   # stop here: the rest of the file is never parsed
                raise DataError(f"the file has more than {max_rows:,} rows; the limit is {max_rows:,} rows "
                                f"per upload (CPU inference): split it, or run `python -m core.evaluate` "
                                f"for whole data sets")
    except csv.Error as e:
        if "field larger than field limit" in str(e):
            raise DataError(f"line {start}: a cell runs on for more than {csv.field_size_limit():,} characters: "
                            f"a quote (\") there is probably never closed; close it or remove it") from None
        raise DataError(f"the file could not be read as CSV (line {start}: {e}): use comma-separated columns "
                        f"with a header row; a cell may hold at most {max_cell_chars:,} characters") from None
    if not header or not any(h for h in header):
        raise DataError("the file has no header row: put column names (e.g. sentence) on the first line")
    return header, rows, spans


def _check_cells(fields: list[str], span: tuple[int, int], max_cell_chars: int, cap: int) -> None:
    for j, f in enumerate(fields):
        if len(f) > cap:
            what = "column name" if cap == MAX_HEADER_CHARS else "cell"
            raise DataError(f"line {span[0]}, column {j + 1}: a {what} of {len(f):,} characters; the limit is "
                            f"{cap:,}: shorten it (or check for a quote that is never closed)")


def _check_header(fields: list[str], max_columns: int) -> list[str]:
    if len(fields) > max_columns:
        raise DataError(f"the file has {len(fields):,} columns; the limit is {max_columns}: keep the text "
                        f"column(s) and an id column, and remove the others")
    header = [h.strip() for h in fields]
    seen: dict[str, int] = {}
    for j, name in enumerate(header):
        if not name:
            continue
        key = name.casefold()
        if key in seen:
            raise DataError(f"the header names the column {name!r} twice (columns {seen[key] + 1} and {j + 1}): "
                            f"give every column its own name")
        seen[key] = j
    return header


def _open_quote_at_end(lines: list[str], delimiter: str) -> bool:
    """Whether the record starting at ``lines[0]`` runs to the end of the file inside a
    quote (the lenient reader would return it as one cell without complaint)."""
    try:
        for _ in csv.reader(lines, delimiter=delimiter, strict=True):
            pass
    except csv.Error as e:
        return "unexpected end of data" in str(e)
    return False


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


# --------------------------------------------------------------------- export
# OWASP, "CSV Injection": a cell that begins with one of these is read by spreadsheet
# programs as a formula (=HYPERLINK(...), =cmd|...); NUL per ASVS 5.0 requirement 1.2.10.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "\x00")
EXPORT_HELP = ("Cells that begin with = + - @, a tab or a carriage return are written with a leading ' so "
               "that a spreadsheet shows them as text instead of running them as formulas (OWASP: CSV "
               "injection); the ' is not part of the text.")


def neutralize_cell(value):
    """``value`` as a spreadsheet must show it: a string that begins (after any leading
    spaces) with one of ``FORMULA_STARTS`` gets a leading single quote; anything else is
    returned unchanged (numbers stay numbers)."""
    if not isinstance(value, str) or not value:
        return value
    first = value.lstrip(" ")[:1] or value[:1]
    if value[0] in FORMULA_STARTS or first in FORMULA_STARTS:
        return "'" + value
    return value


def neutralize_frame(df: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``df`` with every text cell and column name passed through
    :func:`neutralize_cell` (numeric columns untouched)."""
    out = df.copy()
    out.columns = [neutralize_cell(str(c)) for c in out.columns]
    for j in range(out.shape[1]):
        col = out.iloc[:, j]
        if col.dtype == object or pd.api.types.is_string_dtype(col.dtype):
            out.iloc[:, j] = col.map(neutralize_cell)
    return out


def csv_export_bytes(df: pd.DataFrame, **to_csv) -> bytes:
    """The one CSV export for people: ``df`` neutralized (:func:`neutralize_frame`), as
    UTF-8 bytes, quoted as RFC 4180 needs. Every download of a table goes through here."""
    to_csv.setdefault("index", False)
    to_csv.setdefault("lineterminator", "\r\n")   # RFC 4180; and a cell holding a lone CR gets quoted
    return neutralize_frame(df).to_csv(**to_csv).encode("utf-8")
