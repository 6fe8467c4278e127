"""Tables as CSV for spreadsheets, with formula cells neutralised (OWASP CSV injection).

    csv_bytes(df)      UTF-8 CSV bytes; a text cell (or column name) that starts with
                       ``=``, ``+``, ``-``, ``@``, tab or carriage return gets a leading
                       ``'`` so a spreadsheet shows it as text instead of running it
    neutraliser()      (function, where it comes from)

The project's one neutraliser is expected in core/inputs.py or core/predict.py (the
Predict page's CSV export; another engineer adds it): when core has it under one of
:data:`NEUTRALISER_NAMES` it is used, else the same rule is applied here
(:func:`neutralise_here`). The app's downloads (app/exports.py) and the comparison
report (analysis/report.py) both write CSV through :func:`csv_bytes`.

No Streamlit here.
"""
from __future__ import annotations

import importlib

import pandas as pd

NEUTRALISER_NAMES = ("neutralize_csv", "neutralise_csv", "neutralize_formulas", "neutralise_formulas",
                     "neutralize_cells", "neutralise_cells", "csv_safe", "safe_csv")
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def neutralise_here(df: pd.DataFrame) -> pd.DataFrame:
    """The OWASP rule on every text cell and column name of ``df`` (numbers stay numbers)."""
    def fix(value):
        return "'" + value if isinstance(value, str) and value.startswith(FORMULA_START) else value
    out = df.copy()
    out.columns = [fix(str(c)) for c in out.columns]
    for column in out.columns:
        if out[column].dtype == object or pd.api.types.is_string_dtype(out[column]):
            out[column] = out[column].map(fix)
    return out


def neutraliser():
    """(function, "module.name"): core's neutraliser when it exists, else :func:`neutralise_here`."""
    for module in ("core.inputs", "core.predict"):
        try:
            mod = importlib.import_module(module)
        except ImportError:   # pragma: no cover - core is always importable
            continue
        for name in NEUTRALISER_NAMES:
            fn = getattr(mod, name, None)
            if callable(fn):
                return fn, f"{module}.{name}"
    return neutralise_here, "analysis.csv_export.neutralise_here"


def csv_bytes(df: pd.DataFrame) -> bytes:
    """``df`` as UTF-8 CSV bytes, formula cells neutralised. Core's neutraliser may
    return a frame or the CSV text: both work."""
    fn, _ = neutraliser()
    safe = fn(df)
    if isinstance(safe, pd.DataFrame):
        # CRLF rows (RFC 4180): then a cell holding a carriage return or a newline is quoted
        return safe.to_csv(index=False, lineterminator="\r\n").encode("utf-8")
    return safe.encode("utf-8") if isinstance(safe, str) else bytes(safe)
