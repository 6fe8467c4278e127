"""Tables as CSV for spreadsheets, with formula cells neutralised (OWASP CSV injection).

    csv_bytes(df)      UTF-8 CSV bytes: core.data.inputs.csv_export_bytes, the project's one
                       CSV export (a text cell or column name that starts with ``=``,
                       ``+``, ``-``, ``@``, tab, carriage return or NUL gets a leading
                       ``'``; RFC 4180 quoting, CRLF rows)
    EXPORT_HELP        the sentence a download button says about it

The app's downloads (app/exports.py) and the comparison report (analysis/report.py) both
write CSV through here, so every table leaves the studio the same way.

No Streamlit here.
"""
from __future__ import annotations

from core.data.inputs import EXPORT_HELP, csv_export_bytes, neutralize_frame  # noqa: F401  (re-exported)

csv_bytes = csv_export_bytes
