"""Charts of the agents' reports (``relance report``, the workspace's dashboard) as SVG, with matplotlib.

Only matplotlib's object API (:class:`matplotlib.figure.Figure`, no pyplot: no global figure state,
safe in the web server's threads) and its SVG backend. Text is drawn as paths: the SVG needs no
font and looks the same on every machine and on paper. :func:`data_uri` embeds it in a page
(``<img src="data:image/svg+xml;base64,…">``): the HTML file stays self-contained and the
workspace's Content-Security-Policy (``img-src 'self' data:``) accepts it. Colours: the Okabe–Ito
palette, distinguishable with the common colour-vision deficiencies.
"""
from __future__ import annotations

import base64
import io
from typing import Sequence

COLOURS = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")
_METADATA = {"Creator": None, "Date": None, "Format": None, "Type": None}  # no date, no URL: same input, same file


def _figure(width: float = 7.5, height: float = 3.4):
    import matplotlib

    matplotlib.rcParams["svg.hashsalt"] = "relance"  # stable ids in the SVG (set once; same value every time)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    ax.spines[["top", "right"]].set_visible(False)
    ax.grid(axis="y", color="#dddddd", linewidth=0.8)
    ax.set_axisbelow(True)
    return fig, ax


def _finish(fig, ax, labels: Sequence[str], title: str, ylabel: str, legend: bool) -> str:
    ax.set_title(title, loc="left", fontsize=12, fontweight="bold")
    ax.set_ylabel(ylabel, fontsize=10)
    ax.set_xticks(range(len(labels)), labels, fontsize=9, rotation=45 if len(labels) > 8 else 0,
                  ha="right" if len(labels) > 8 else "center")
    ax.tick_params(axis="y", labelsize=9)
    if legend:
        ax.legend(fontsize=9, frameon=False, loc="upper left", bbox_to_anchor=(1, 1))
    out = io.BytesIO()
    fig.savefig(out, format="svg", metadata=_METADATA)
    return out.getvalue().decode("utf-8")


def bars(labels: Sequence[str], series: Sequence[tuple[str, Sequence[float]]], title: str, ylabel: str,
         stacked: bool = True) -> str:
    """A bar chart, one bar per label, its series stacked (or side by side); returns the SVG text."""
    fig, ax = _figure()
    bottom = [0.0] * len(labels)
    width = 0.8 if stacked else 0.8 / max(1, len(series))
    for i, (name, values) in enumerate(series):
        values = [v or 0 for v in values]
        if stacked:
            ax.bar(range(len(labels)), values, width, bottom=bottom, label=name, color=COLOURS[i % len(COLOURS)])
            bottom = [b + v for b, v in zip(bottom, values)]
        else:
            offsets = [x - 0.4 + width * (i + 0.5) for x in range(len(labels))]
            ax.bar(offsets, values, width, label=name, color=COLOURS[i % len(COLOURS)])
    ax.yaxis.get_major_locator().set_params(integer=True)
    return _finish(fig, ax, labels, title, ylabel, legend=len(series) > 1)


def lines(labels: Sequence[str], series: Sequence[tuple[str, Sequence[float | None]]], title: str, ylabel: str,
          percent: bool = False, target: tuple[float, str] | None = None) -> str:
    """One line per series (a missing value leaves a gap; a lone point is drawn as a dot); ``percent``:
    values are fractions shown as 0–100 %; ``target``: a dashed horizontal line and its label."""
    fig, ax = _figure()
    markers = ("o", "s", "^", "D", "v")
    for i, (name, values) in enumerate(series):
        ys = [float("nan") if v is None else (v * 100 if percent else v) for v in values]
        ax.plot(range(len(labels)), ys, label=name, color=COLOURS[i % len(COLOURS)], linewidth=2,
                marker=markers[i % len(markers)], markersize=4)
    if target is not None:
        ax.axhline(target[0], color="#3a3a3a", linestyle="--", linewidth=1, label=target[1])
    if percent:
        ax.set_ylim(0, 105)
        ax.yaxis.set_major_formatter(lambda v, _pos: f"{v:.0f} %")
    else:
        ax.set_ylim(bottom=0)
    return _finish(fig, ax, labels, title, ylabel, legend=True)


def data_uri(svg: str) -> str:
    """``data:image/svg+xml;base64,…``: the chart inside the page, nothing to fetch."""
    return "data:image/svg+xml;base64," + base64.b64encode(svg.encode("utf-8")).decode("ascii")
