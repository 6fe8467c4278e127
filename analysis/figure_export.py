"""Plotly figures as PNG and SVG files, drawn offline with matplotlib (no browser).

    png = to_png(fig)          # bytes of a PNG (2x resolution)
    svg = to_svg(fig)          # bytes of an SVG (text, vector)

Plotly's own static export (``fig.to_image``) needs kaleido, which is not installed
here, and kaleido 1.x drives a headless Chrome. This module redraws a figure from its
data instead: bar, scatter (lines, markers, error bars), heatmap (with cell text) and
histogram traces, a 3-D scatter as its x-y view, subplots by their axis domains, axis
titles, ranges, reversed axes, categories, tick labels, line shapes and the legend. The
pictures follow the figure's data and layout, not plotly's exact styling; a trace type
it does not know is named in the picture's footer rather than dropped silently.

matplotlib's object API is used (no pyplot): no global state, safe in a server.
No Streamlit here.
"""
from __future__ import annotations

import io

import numpy as np

from core.errors import MinbertError

DPI = 100
DEFAULT_SIZE = (800, 450)   # pixels, when the layout sets none
PALETTE = ["#636efa", "#EF553B", "#00cc96", "#ab63fa", "#FFA15A", "#19d3f3", "#FF6692", "#B6E880"]
COLORSCALES = {"blues": "Blues", "reds": "Reds", "rdbu": "RdBu", "viridis": "viridis", "greens": "Greens",
               "greys": "Greys", "rdylgn": "RdYlGn"}
DASHES = {"dash": "--", "dot": ":", "dashdot": "-.", "solid": "-", "longdash": "--"}


def _matplotlib():
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:   # pragma: no cover - matplotlib comes with captum
        raise MinbertError("figure export needs matplotlib: pip install matplotlib") from None
    return Figure, FigureCanvasAgg


def _get(d, *path, default=None):
    for key in path:
        if not isinstance(d, dict) or d.get(key) is None:
            return default
        d = d[key]
    return d


def _text(value) -> str:
    """A plotly title / label as plain text (``<br>`` -> newline, other tags dropped)."""
    import re
    if isinstance(value, dict):
        value = value.get("text")
    return re.sub(r"<[^>]+>", "", str(value or "").replace("<br>", "\n"))


def _cmap(scale, reverse: bool = False):
    from matplotlib.colors import LinearSegmentedColormap
    if isinstance(scale, str):
        name = COLORSCALES.get(scale.lower(), "viridis")
        # plotly's RdBu runs red (low) -> blue (high), as matplotlib's does
        return name + ("_r" if reverse else "")
    if isinstance(scale, (list, tuple)) and scale:
        stops = [(float(s), _mpl_color(c)) for s, c in scale]
        if reverse:
            stops = [(1 - s, c) for s, c in reversed(stops)]
        return LinearSegmentedColormap.from_list("plotly", stops)
    return "viridis"


def _mpl_color(value):
    """A plotly color ("rgb(1,2,3)", "rgba(1,2,3,0.5)", "#abc", a name) for matplotlib."""
    if isinstance(value, str) and value.strip().lower().startswith("rgb"):
        parts = [float(p) for p in value[value.index("(") + 1:value.rindex(")")].split(",")]
        return tuple(p / 255 for p in parts[:3]) + ((parts[3],) if len(parts) > 3 else ())
    return value


def _axis_key(ref: str, letter: str) -> str:
    """Trace axis reference ('x', 'x2') -> layout key ('xaxis', 'xaxis2')."""
    suffix = (ref or letter)[1:]
    return f"{letter}axis{suffix}"


def _categories(values, axis: dict, known: list) -> list:
    for v in list(_get(axis, "categoryarray", default=[])) + [v for v in values if v is not None]:
        if v not in known:
            known.append(v)
    return known


def _is_categorical(values) -> bool:
    return any(isinstance(v, str) for v in values if v is not None)


# ---------------------------------------------------------------- positions
class _Context:
    """What the drawers share: the layout, each axis's categories, bar groups, leftovers."""

    def __init__(self, layout: dict, data: list):
        self.layout, self.data, self.skipped = layout, data, []
        self.categories: dict[str, list] = {}
        self.bar_groups: dict[tuple, list[int]] = {}
        for i, tr in enumerate(data):
            keys = (_axis_key(tr.get("xaxis"), "x"), _axis_key(tr.get("yaxis"), "y"))
            for key, letter in zip(keys, "xy"):
                values = _values(tr, letter)
                if values is not None and _is_categorical(values):
                    _categories(values, layout.get(key) or {}, self.categories.setdefault(key, []))
            if tr.get("type") == "bar":
                self.bar_groups.setdefault(keys, []).append(i)
        named = [tr for tr in data if tr.get("name") and tr.get("showlegend") is not False]
        self.legend = layout.get("showlegend") is not False and (len(named) > 1 or any(
            tr.get("showlegend") for tr in named))

    def positions(self, values, key: str) -> np.ndarray:
        if key in self.categories:
            index = {c: i for i, c in enumerate(self.categories[key])}
            return np.array([index.get(v, np.nan) for v in values], dtype=float)
        return np.asarray([np.nan if v is None else v for v in values], dtype=float)

    def label(self, tr: dict) -> str | None:
        return tr.get("name") if self.legend and tr.get("showlegend") is not False and tr.get("name") else None


def _values(tr: dict, letter: str):
    values = tr.get(letter)
    if values is None:
        return None
    return list(np.asarray(values, dtype=object).ravel()) if not isinstance(values, list) else values


def _xy(tr: dict, ctx: _Context) -> tuple[np.ndarray, np.ndarray]:
    x, y = _values(tr, "x"), _values(tr, "y")
    n = len(y if y is not None else x or [])
    x = list(range(n)) if x is None else x
    y = list(range(n)) if y is None else y
    return (ctx.positions(x, _axis_key(tr.get("xaxis"), "x")), ctx.positions(y, _axis_key(tr.get("yaxis"), "y")))


def _color(value, i: int):
    if isinstance(value, str):
        return _mpl_color(value)
    return PALETTE[i % len(PALETTE)]


# ------------------------------------------------------------------ drawers
def _draw_scatter(ax, tr: dict, ctx: _Context, i: int, mfig) -> None:
    x, y = _xy(tr, ctx)
    mode = tr.get("mode") or ("lines" if len(x) > 20 else "lines+markers")
    marker, line = tr.get("marker") or {}, tr.get("line") or {}
    color = _color(line.get("color") or marker.get("color"), i)
    label = ctx.label(tr)
    if "lines" in mode:
        ax.plot(x, y, color=color, linestyle=DASHES.get(line.get("dash"), "-"), linewidth=line.get("width", 2),
                label=label)
        label = None
    if "markers" in mode:
        c = marker.get("color")
        size = float(np.mean(marker.get("size"))) if marker.get("size") is not None else 6.0
        if c is not None and not isinstance(c, str) and any(isinstance(v, str) for v in np.atleast_1d(c)):
            ax.scatter(x, y, color=[_mpl_color(v) for v in c], s=size ** 2, alpha=marker.get("opacity", 0.9),
                       label=label)
        elif c is not None and not isinstance(c, str) and len(np.atleast_1d(c)) == len(x):
            points = ax.scatter(x, y, c=np.asarray(c, dtype=float), cmap=_cmap(marker.get("colorscale")),
                                s=size ** 2, alpha=marker.get("opacity", 0.9), label=label)
            if marker.get("showscale"):
                mfig.colorbar(points, ax=ax).set_label(_text(_get(marker, "colorbar", "title")))
        else:
            ax.scatter(x, y, color=color, s=size ** 2, alpha=marker.get("opacity", 0.9), label=label)
    _error_bars(ax, tr, x, y, color)
    if "text" in mode and tr.get("text") is not None:
        for xi, yi, t in zip(x, y, np.atleast_1d(tr["text"])):
            ax.annotate(_text(t), (xi, yi), fontsize=7, ha="center", va="bottom")


def _error_bars(ax, tr: dict, x, y, color) -> None:
    """A trace's ``error_x`` / ``error_y`` arrays (plus, and minus when asymmetric)."""
    for letter in "xy":
        err = tr.get(f"error_{letter}") or {}
        if err.get("array") is not None:
            plus = np.asarray(err["array"], dtype=float)
            minus = np.asarray(err["arrayminus"] if err.get("arrayminus") is not None else plus, dtype=float)
            ax.errorbar(x, y, fmt="none", ecolor=_color(err.get("color"), 0) if err.get("color") else color,
                        capsize=3, **{f"{letter}err": [minus, plus]})


def _draw_bar(ax, tr: dict, ctx: _Context, i: int, mfig) -> None:
    x, y = _xy(tr, ctx)
    keys = (_axis_key(tr.get("xaxis"), "x"), _axis_key(tr.get("yaxis"), "y"))
    group = ctx.bar_groups.get(keys, [i])
    grouped = (ctx.layout.get("barmode") or "group") == "group" and len(group) > 1
    along = y if tr.get("orientation") == "h" else x
    steps = np.diff(np.unique(along[np.isfinite(along)]))
    unit = float(steps.min()) if steps.size else 1.0       # plotly's bar slot: the closest spacing
    width = 0.8 * unit / len(group) if grouped else 0.8 * unit
    offset = (group.index(i) - (len(group) - 1) / 2) * width if grouped else 0.0
    marker = tr.get("marker") or {}
    c = marker.get("color")
    color = [_mpl_color(v) for v in c] if isinstance(c, (list, tuple, np.ndarray)) else _color(c, i)
    if tr.get("orientation") == "h":
        ax.barh(y + offset, x, height=width, color=color, label=ctx.label(tr))
        _error_bars(ax, tr, x, y + offset, "#444444")
    else:
        ax.bar(x + offset, y, width=width, color=color, label=ctx.label(tr))
        _error_bars(ax, tr, x + offset, y, "#444444")


def _draw_heatmap(ax, tr: dict, ctx: _Context, i: int, mfig) -> None:
    z = np.asarray(tr.get("z"), dtype=float)
    z = z[None, :] if z.ndim == 1 else z
    x = ctx.positions(_values(tr, "x") or list(range(z.shape[1])), _axis_key(tr.get("xaxis"), "x"))
    y = ctx.positions(_values(tr, "y") or list(range(z.shape[0])), _axis_key(tr.get("yaxis"), "y"))
    zmin, zmax = tr.get("zmin"), tr.get("zmax")
    if tr.get("zmid") is not None and zmax is None:
        span = np.nanmax(np.abs(z - tr["zmid"]))
        zmin, zmax = tr["zmid"] - span, tr["zmid"] + span
    step_x = (x[-1] - x[0]) / (len(x) - 1) if len(x) > 1 else 1.0
    step_y = (y[-1] - y[0]) / (len(y) - 1) if len(y) > 1 else 1.0
    extent = (x[0] - step_x / 2, x[-1] + step_x / 2, y[0] - step_y / 2, y[-1] + step_y / 2)
    im = ax.imshow(z, origin="lower", extent=extent, aspect="auto", interpolation="nearest",
                   cmap=_cmap(tr.get("colorscale"), bool(tr.get("reversescale"))), vmin=zmin, vmax=zmax)
    if tr.get("showscale") is not False:
        mfig.colorbar(im, ax=ax).set_label(_text(_get(tr, "colorbar", "title")))
    text = tr.get("text")
    if text is not None and tr.get("texttemplate") and z.size <= 900:
        cells = np.asarray(text, dtype=object).reshape(z.shape)
        for r in range(z.shape[0]):
            for c in range(z.shape[1]):
                ax.text(x[0] + c * step_x, y[0] + r * step_y, _text(cells[r, c]), ha="center", va="center",
                        fontsize=7 if z.size > 100 else 9)


def _draw_histogram(ax, tr: dict, ctx: _Context, i: int, mfig) -> None:
    x = np.asarray(tr.get("x"), dtype=float)
    ax.hist(x[np.isfinite(x)], bins=int(tr.get("nbinsx") or 30), color=_color((tr.get("marker") or {}).get("color"), i),
            alpha=0.75, label=ctx.label(tr))


DRAWERS = {"scatter": _draw_scatter, "scattergl": _draw_scatter, "scatter3d": _draw_scatter, "bar": _draw_bar,
           "heatmap": _draw_heatmap, "histogram": _draw_histogram}


# ------------------------------------------------------------------- frame
MARGINS = (64, 56, 24, 64)     # left, bottom, right, top of the plotting area, in pixels


def _plot_box(width: float, height: float, ctx: "_Context", layout: dict) -> tuple:
    """The plotting area as figure fractions: fixed pixel margins, the left one widened
    for long category / tick labels on a y axis (a forest plot's row names)."""
    labels = [str(c) for key, cats in ctx.categories.items() if key.startswith("yaxis") for c in cats]
    labels += [str(t) for key, axis in layout.items() if key.startswith("yaxis") and isinstance(axis, dict)
               for t in (axis.get("ticktext") or [])]
    longest = max((len(_text(t)) for t in labels), default=0)
    left = min(0.45 * width, max(MARGINS[0], 14 + 6.2 * longest))
    return (left / width, MARGINS[1] / height, 1 - MARGINS[2] / width, 1 - MARGINS[3] / height)


def _box(layout: dict, xkey: str, ykey: str, plot_box: tuple) -> list[float]:
    x0, x1 = _get(layout, xkey, "domain", default=[0, 1])
    y0, y1 = _get(layout, ykey, "domain", default=[0, 1])
    left, bottom, right, top = plot_box
    w, h = right - left, top - bottom
    return [left + x0 * w, bottom + y0 * h, (x1 - x0) * w, (y1 - y0) * h]


def _style(ax, layout: dict, xkey: str, ykey: str, ctx: _Context) -> None:
    for key, letter in ((xkey, "x"), (ykey, "y")):
        axis = layout.get(key) or {}
        set_label, set_lim = getattr(ax, f"set_{letter}label"), getattr(ax, f"set_{letter}lim")
        set_label(_text(axis.get("title")), fontsize=9)
        if key in ctx.categories:
            cats = ctx.categories[key]
            getattr(ax, f"set_{letter}ticks")(range(len(cats)), [_text(c) for c in cats])
        elif axis.get("tickvals") is not None and axis.get("ticktext") is not None:
            getattr(ax, f"set_{letter}ticks")(list(axis["tickvals"]), [_text(t) for t in axis["ticktext"]])
        if axis.get("range") is not None and key not in ctx.categories:
            set_lim(*axis["range"])
        if axis.get("autorange") == "reversed":
            getattr(ax, f"invert_{letter}axis")()
        if axis.get("showticklabels") is False:
            ax.tick_params(axis=letter, labelbottom=False, labelleft=False)
        if axis.get("tickangle") not in (None, 0):
            ax.tick_params(axis=letter, labelrotation=-float(axis["tickangle"]))
        ax.tick_params(axis=letter, labelsize=8)


def _shapes(mfig, layout: dict, axes: dict) -> None:
    from matplotlib.lines import Line2D
    from matplotlib.transforms import blended_transform_factory
    for shape in layout.get("shapes") or []:
        if shape.get("type") != "line":
            continue
        xref, yref = str(shape.get("xref", "x")), str(shape.get("yref", "y"))
        xkey = _axis_key(xref.split()[0] if xref != "paper" else "x", "x")
        ykey = _axis_key(yref.split()[0] if yref != "paper" else "y", "y")
        ax = axes.get((xkey, ykey)) or next(iter(axes.values()), None)
        if ax is None:
            continue
        tx = ax.transAxes if ("domain" in xref or xref == "paper") else ax.transData
        ty = ax.transAxes if ("domain" in yref or yref == "paper") else ax.transData
        line = shape.get("line") or {}
        ax.add_line(Line2D([shape["x0"], shape["x1"]], [shape["y0"], shape["y1"]],
                           transform=blended_transform_factory(tx, ty), color=line.get("color", "grey"),
                           linestyle=DASHES.get(line.get("dash"), "-"), linewidth=line.get("width", 1)))


def _annotations(mfig, layout: dict, plot_box: tuple) -> None:
    left, bottom, right, top = plot_box
    for note in layout.get("annotations") or []:
        if note.get("xref") == "paper" and note.get("yref") == "paper" and note.get("text"):
            mfig.text(left + note["x"] * (right - left), bottom + note["y"] * (top - bottom) + 0.01,
                      _text(note["text"]), ha="center", va="bottom", fontsize=9)


def _decode(node):
    """``to_dict()`` output with plotly's typed arrays (``{"dtype", "bdata", "shape"}``,
    base64 bytes) turned back into numpy arrays, recursively."""
    import base64
    if isinstance(node, dict):
        if "bdata" in node and "dtype" in node:
            array = np.frombuffer(base64.b64decode(node["bdata"]), dtype=np.dtype(node["dtype"]))
            shape = node.get("shape")
            if shape:
                array = array.reshape([int(s) for s in str(shape).split(",")])
            return array
        return {k: _decode(v) for k, v in node.items()}
    if isinstance(node, (list, tuple)):
        return [_decode(v) for v in node]
    return node


def render(fig):
    """A matplotlib Figure drawn from a plotly figure (or its ``to_dict()``)."""
    Figure, Canvas = _matplotlib()
    spec = _decode(fig.to_dict() if hasattr(fig, "to_dict") else dict(fig))
    layout, data = spec.get("layout") or {}, list(spec.get("data") or [])
    width = layout.get("width") or DEFAULT_SIZE[0]
    height = layout.get("height") or DEFAULT_SIZE[1]
    mfig = Figure(figsize=(width / DPI, height / DPI), dpi=DPI)
    Canvas(mfig)
    ctx, axes = _Context(layout, data), {}
    box = _plot_box(width, height, ctx, layout)
    for i, tr in enumerate(data):
        kind = tr.get("type") or "scatter"
        keys = (_axis_key(tr.get("xaxis"), "x"), _axis_key(tr.get("yaxis"), "y"))
        if keys not in axes:
            axes[keys] = mfig.add_axes(_box(layout, *keys, box))
        if kind not in DRAWERS:
            ctx.skipped.append(kind)
            continue
        DRAWERS[kind](axes[keys], tr, ctx, i, mfig)
    if not axes:
        axes[("xaxis", "yaxis")] = mfig.add_axes(_box(layout, "xaxis", "yaxis", box))
    for (xkey, ykey), ax in axes.items():
        _style(ax, layout, xkey, ykey, ctx)
        if ctx.legend and ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8, title=_text(_get(layout, "legend", "title")) or None, loc="best")
    _shapes(mfig, layout, axes)
    _annotations(mfig, layout, box)
    mfig.suptitle(_text(layout.get("title")), fontsize=11)
    notes = ([f"not drawn: {', '.join(sorted(set(ctx.skipped)))} trace(s)"] if ctx.skipped else []) + (
        ["3-D scatter shown as its x-y view"] if any(tr.get("type") == "scatter3d" for tr in data) else [])
    if notes:
        mfig.text(0.01, 0.005, "; ".join(notes), fontsize=7, color="grey", ha="left", va="bottom")
    return mfig


def _save(fig, fmt: str, scale: float = 1.0) -> bytes:
    import matplotlib
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "minbert"}):   # SVG text stays text
        mfig = render(fig)
        buf = io.BytesIO()
        mfig.savefig(buf, format=fmt, dpi=DPI * scale, metadata={"Date": None} if fmt == "svg" else None)
    return buf.getvalue()


def to_png(fig, scale: float = 2.0) -> bytes:
    """The figure as PNG bytes, ``scale`` x the layout's pixel size."""
    return _save(fig, "png", scale)


def to_svg(fig) -> bytes:
    """The figure as SVG bytes (vector; labels kept as text, so they can be searched and edited)."""
    return _save(fig, "svg")
