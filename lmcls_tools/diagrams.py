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


def readout_paths(hidden_size: int, label_words: tuple[str, str] = (" unacceptable", " acceptable")) -> plt.Figure:
    """Notebook 7: three read-outs of one last hidden state, each ending in a log-odds of label 1.

    ``hidden_size`` is the model's width (the head sizes follow from it); ``label_words`` are the
    two words whose LM-head rows read-out (a) uses, label 0 first.
    """
    if isinstance(hidden_size, bool) or not isinstance(hidden_size, int) or hidden_size < 1:
        raise ValueError(f"hidden_size must be a positive int (the model's config.hidden_size), got {hidden_size!r}.")
    if len(label_words) != 2 or not all(isinstance(w, str) and w.strip() for w in label_words):
        raise ValueError(f"label_words must be two non-empty words, label 0 first; got {label_words!r}.")
    n, (w0, w1) = hidden_size, (repr(w) for w in label_words)
    fig, ax = canvas(12, 4.4, "three read-outs of one hidden state (orange: trains, blue: frozen)")
    box(ax, 0.1, 1.8, 1.5, 0.8, "few-shot prompt\n+ sentence", color="white")
    box(ax, 2.0, 1.7, 1.7, 1.0, "frozen 4-bit base\n+ LoRA (trains)")
    box(ax, 4.1, 1.75, 1.9, 0.9, f"hidden state at the\nlast real token\n({n:,} numbers)", color="read")
    arrow(ax, (1.6, 2.2), (2.0, 2.2))
    arrow(ax, (3.7, 2.2), (4.1, 2.2))
    paths = [(3.3, "frozen", "(a) label words: two rows of\nthe pretrained LM head", f"logit {w1}\n− logit {w0}"),
             (1.85, "trained", f"(b) linear head: Linear({n:,}, 1),\nnew, {n + 1:,} weights", "its one logit"),
             (0.4, "trained", f"(c) score: Linear({n:,}, 2),\nnew, {2 * n:,} weights", "logit 1 − logit 0")]
    for y, color, head, out in paths:
        box(ax, 6.5, y, 2.9, 0.7, head, color=color, fontsize=8)
        arrow(ax, (6.0, 2.2), (6.5, y + 0.35))
        arrow(ax, (9.4, y + 0.35), (9.8, y + 0.35))
        ax.text(9.85, y + 0.35, f"{out}\n= log-odds of label 1", va="center", fontsize=8)
    return fig
