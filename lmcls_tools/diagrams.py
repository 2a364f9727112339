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


def lora_beside_nf4(d_in: int, d_out: int, r: int, alpha: float, compute_dtype: str = "float16",
                    block_size: int = 64) -> plt.Figure:
    """One adapted projection (notebook 4, section 3): a frozen NF4 weight beside the trainable path B·A.

    ``W`` (d_out × d_in) is stored as 4-bit codes plus one scale per ``block_size`` weights and is
    dequantized to ``compute_dtype`` on the fly for each matmul; LoRA adds ``(alpha / r) · B·A·x``
    to its output, with A (r × d_in) and B (d_out × r). Pass the notebook's own sizes.
    """
    if min(d_in, d_out, r, block_size) < 1 or alpha <= 0:
        raise ValueError(f"d_in, d_out, r and block_size must be positive integers and alpha > 0 "
                         f"(got {d_in}, {d_out}, {r}, {block_size}, {alpha}).")
    if r > min(d_in, d_out):
        raise ValueError(f"A low-rank path needs r <= min(d_in, d_out): r={r} for a {d_in} → {d_out} projection.")
    dtype = str(compute_dtype).removeprefix("torch.")
    fig, ax = canvas(10, 4.4, title=f"LoRA beside a 4-bit weight: one {d_in} → {d_out} projection, rank {r}")
    box(ax, 0.1, 1.7, 1.3, 0.9, f"x\n(…, {d_in:,})", color="white")
    # the frozen path: 4-bit storage, dequantized for each matmul and thrown away after it
    box(ax, 1.9, 3.25, 2.6, 0.95, f"W  {d_out:,} × {d_in:,}, stored as\nNF4 codes + 1 scale per {block_size}\nfrozen")
    box(ax, 5.0, 2.35, 2.2, 1.1, f"W·x\n(W dequantized to {dtype}\nfor this matmul only)", color="white", fontsize=8)
    arrow(ax, (4.5, 3.7), (5.4, 3.45), "dequantize", fontsize=7)
    arrow(ax, (1.4, 2.4), (5.0, 2.8))
    arrow(ax, (7.2, 2.9), (8.05, 2.3))
    # the trainable path: dropout, A down to r, B back up, scaled
    box(ax, 2.0, 0.35, 1.6, 1.0, f"A  {r} × {d_in:,}\n(random start)", color="trained", fontsize=8)
    box(ax, 4.0, 0.35, 1.6, 1.0, f"B  {d_out:,} × {r}\n(starts at 0)", color="trained", fontsize=8)
    box(ax, 6.0, 0.35, 1.3, 1.0, f"× α/r\n= {alpha:g}/{r}", color="white", fontsize=8)
    arrow(ax, (1.4, 1.9), (2.0, 1.0), "dropout", fontsize=7)
    arrow(ax, (3.6, 0.85), (4.0, 0.85))
    ax.text(3.8, 1.4, f"{r} numbers", ha="center", fontsize=7)
    arrow(ax, (5.6, 0.85), (6.0, 0.85))
    arrow(ax, (7.3, 0.85), (8.1, 1.95), "(α/r)·B·A·x", fontsize=8)
    box(ax, 8.05, 1.8, 0.5, 0.6, "+", color="read", fontsize=12)
    box(ax, 8.75, 1.6, 1.2, 1.0, f"h\n(…, {d_out:,})", color="white")
    arrow(ax, (8.55, 2.1), (8.75, 2.1))
    ax.text(0.1, 0.05, f"trainable: r·(d_in + d_out) = {r * (d_in + d_out):,} weights;  frozen: {d_in * d_out:,}",
            fontsize=8, color=COLORS["text"])
    return fig
