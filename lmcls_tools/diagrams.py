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


def attention_under_right_padding(tokens, n_pads: int, title: str = "") -> plt.Figure:
    """Which keys each query of one right-padded row attends to (notebook 6, section 2).

    ``tokens`` are the row's token strings, pads included; its last ``n_pads`` are padding. Rows are
    queries, columns keys. The causal mask hides every later key; the attention mask hides the pads
    *as keys* only, so a pad position is still computed as a query and reads every real token. The
    last real position (red) and position -1 (blue, dashed) are outlined, as in ``plots.padding_layout``.
    """
    from matplotlib.patches import Patch, Rectangle

    tokens = [str(t) for t in tokens]
    n = len(tokens)
    if not isinstance(n_pads, int) or isinstance(n_pads, bool) or not 0 <= n_pads < n:
        raise ValueError(f"n_pads must be an int from 0 to len(tokens) - 1 = {n - 1} (a row keeps at least one real "
                         f"token), got {n_pads!r}.")
    if n > 40:
        raise ValueError(f"{n} tokens make an unreadable grid: draw one short row (at most 40 tokens).")
    real = n - n_pads
    size = min(max(0.42 * n + 3.2, 7.0), 13.0)
    fig, ax = plt.subplots(figsize=(size, 0.42 * n + 1.6), layout="constrained")
    colors = {"real": COLORS["read"], "pad": COLORS["trained"], "masked": COLORS["masked"]}
    for q in range(n):
        for k in range(q + 1):  # causal: a query sees its own and earlier positions only
            kind = "masked" if k >= real else "pad" if q >= real else "real"
            ax.add_patch(Rectangle((k - 0.5, q - 0.5), 1, 1, facecolor=colors[kind], edgecolor="white", linewidth=1))
            if kind == "masked":
                ax.text(k, q, "×", ha="center", va="center", fontsize=8, color="#777777")
    marks = [(n - 1, "tab:blue", "--", "position -1: a pad, has read it too")] if n_pads else []
    for q, color, style, label in [(real - 1, "red", "-", "last real token" + (": has read the sentence" if n_pads else
                                                                               " = position -1"))] + marks:
        ax.add_patch(Rectangle((-0.5, q - 0.5), n, 1, fill=False, edgecolor=color, linewidth=2, linestyle=style))
        ax.text(n - 0.3, q, label, ha="left", va="center", fontsize=8, color=color)
    ax.set(xlim=(-0.5, n - 0.5), ylim=(n - 0.5, -0.5), xticks=range(n), yticks=range(n),
           xlabel="key (the position attended to)", ylabel="query (the position computed)")
    short = [t if len(t) <= 8 else t[:7] + "…" for t in tokens]
    ax.set_xticklabels(short, rotation=60, ha="right", fontsize=7)
    ax.set_yticklabels([f"{t} {i}" for i, t in enumerate(short)], fontsize=7)
    ax.set_aspect("equal")
    ax.set_title(title or f"one right-padded row ({real} real tokens, {n_pads} pads): who attends to whom", fontsize=10)
    fig.legend(handles=[Patch(facecolor=colors["real"], label="a real token attends"),
                        Patch(facecolor=colors["pad"], label="a pad attends (still a query)"),
                        Patch(facecolor=colors["masked"], label="× a pad as key: masked"),
                        Patch(facecolor="white", edgecolor="#999999", label="later key: hidden by the causal mask")],
               fontsize=7, loc="outside lower center", ncol=2, frameon=False)
    return fig
