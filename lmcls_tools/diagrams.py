"""Pictures of mechanisms: what happens inside a step, drawn where a student first needs it.

The figures in ``lmcls_helpers.plots`` show data a notebook measured; these show how a mechanism
works (which position is read, what the mask hides, where a weight's bits go). They are course
material, not tools a classifier needs, so they live here beside the other course tooling. Each
function returns a matplotlib figure; a notebook shows it with ``plots.show(fig, name)``, which
also saves it under ``build/figures/``. Where a drawing can use the notebook's own values (its
tokens, its weights) it takes them as arguments, so the picture and the printed numbers agree.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

#: One palette for every diagram: what is frozen, what trains, what is read, what is masked.
COLORS = {"frozen": "#c9d6e8", "trained": "#f4b183", "read": "#a9d18e", "masked": "#d9d9d9", "text": "#222222"}


def canvas(width: float, height: float, title: str = "") -> tuple[plt.Figure, plt.Axes]:
    """A blank drawing area in data units (1 unit ~ 1 inch), no axes shown."""
    fig, ax = plt.subplots(figsize=(width, height))
    ax.set_xlim(0, width)
    ax.set_ylim(0, height)
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=11)
    return fig, ax


def box(ax: plt.Axes, x: float, y: float, w: float, h: float, text: str = "", color: str = "frozen",
        fontsize: float = 9, **text_kw) -> None:
    """A rounded box with centred text; ``color`` is a key of :data:`COLORS` or any matplotlib colour."""
    ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.02,rounding_size=0.06",
                                facecolor=COLORS.get(color, color), edgecolor="#555555", linewidth=0.8))
    if text:
        ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=fontsize, color=COLORS["text"], **text_kw)


def arrow(ax: plt.Axes, start: tuple[float, float], end: tuple[float, float], text: str = "",
          color: str = "#555555", fontsize: float = 8) -> None:
    """An arrow from ``start`` to ``end``, with an optional label at its middle."""
    ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=10, color=color, linewidth=1))
    if text:
        ax.text((start[0] + end[0]) / 2, (start[1] + end[1]) / 2, text, ha="center", va="bottom", fontsize=fontsize)
