"""The app's one owner of downloads: every figure as PNG and SVG, every table as CSV.

    show_figure(fig, "confusion-sst", key="er_conf")   # st.plotly_chart + PNG / SVG buttons
    figure_downloads(fig, "confusion-sst", key="er_conf")   # the buttons only
    show_table(df, "disagreements", key="er_dis", ...)  # st.dataframe + a CSV button
    table_download(df, "disagreements", key="er_dis")   # the button only
    csv_export_bytes(df)                                # what the CSV button sends (core.data.inputs)

Figures: plotly's static export needs kaleido (not installed; kaleido 1.x drives a
headless Chrome), so the images are drawn offline with matplotlib from the figure's
data (analysis/figure_export.py). They are made only when the button is pressed (a
deferred download: pages do not pay for them on every rerun).

Tables: CSV through the formula-cell neutraliser (OWASP CSV injection: a cell starting
with ``=``, ``+``, ``-``, ``@``, tab or carriage return is prefixed with ``'`` so a
spreadsheet shows it as text): :func:`core.data.inputs.csv_export_bytes`, which is
core.data.inputs.csv_export_bytes, the project's one CSV export.
"""
from __future__ import annotations

import re

import pandas as pd
import streamlit as st

from core.data.inputs import EXPORT_HELP, csv_export_bytes

CSV_HELP = "CSV (UTF-8). " + EXPORT_HELP
IMAGE_HELP = "Drawn offline from the figure's data with matplotlib (no browser): the same numbers, plainer styling."


def file_stem(name: str) -> str:
    """A file name made from ``name`` (letters, digits, ``-``, ``_``, ``.``)."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", str(name)).strip("-.")
    return stem[:120] or "export"


def figure_downloads(fig, name: str, key: str) -> None:
    """PNG and SVG download buttons for a plotly figure (drawn on click)."""
    from analysis.figure_export import to_png, to_svg
    stem = file_stem(name)
    with st.container(horizontal=True, gap="small"):
        st.download_button("PNG", lambda: to_png(fig), file_name=f"{stem}.png", mime="image/png",
                           key=f"{key}_png", on_click="ignore", type="tertiary", icon=":material/image:",
                           help=IMAGE_HELP)
        st.download_button("SVG", lambda: to_svg(fig), file_name=f"{stem}.svg", mime="image/svg+xml",
                           key=f"{key}_svg", on_click="ignore", type="tertiary", icon=":material/draw:",
                           help=IMAGE_HELP)


def show_figure(fig, name: str, key: str, **chart_kwargs):
    """``st.plotly_chart(fig, key=key, ...)`` with the PNG / SVG buttons under it;
    returns what ``st.plotly_chart`` returns (its selection with ``on_select``)."""
    chart_kwargs.setdefault("width", "stretch")
    event = st.plotly_chart(fig, key=key, **chart_kwargs)
    figure_downloads(fig, name, key)
    return event


def table_download(df: pd.DataFrame, name: str, key: str, label: str = "CSV") -> None:
    """A CSV download button for ``df`` (neutralised; built on click)."""
    st.download_button(label, lambda: csv_export_bytes(df), file_name=f"{file_stem(name)}.csv", mime="text/csv",
                       key=f"{key}_csv", on_click="ignore", type="tertiary", icon=":material/download:",
                       help=CSV_HELP)


def show_table(df: pd.DataFrame, name: str, key: str, export: pd.DataFrame | None = None, **frame_kwargs):
    """``st.dataframe(df, key=key, ...)`` with a CSV button under it (``export``: the
    frame to download when it differs from the one shown); returns the dataframe's
    selection state with ``on_select``."""
    frame_kwargs.setdefault("hide_index", True)
    frame_kwargs.setdefault("width", "stretch")
    event = st.dataframe(df, key=key, **frame_kwargs)
    table_download(df if export is None else export, name, key)
    return event
