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


def readout(tokens, logits, label_words, attention_mask=None, shown: int = 6,
            title: str = "The read-out: two logits at the last real position") -> plt.Figure:
    """Prompt tokens -> last real position -> final norm -> two LM-head rows -> two logits -> P(label) (notebook 2).

    ``tokens`` are one row's pieces (``tokenizer.convert_ids_to_tokens``), pads included;
    ``attention_mask`` (1 = real, 0 = pad) marks the pads, none if omitted. ``logits`` are the
    label words' logits at the last real position, in label order, so the picture shows the
    notebook's own numbers. Only the last ``shown`` tokens are drawn, after a "…".
    """
    import math  # here, not at the top: this function was appended after the shared primitives
    tokens, logits, words = [str(t) for t in tokens], [float(v) for v in logits], [str(w) for w in label_words]
    mask = [1] * len(tokens) if attention_mask is None else [int(m) for m in attention_mask]
    if not tokens or len(mask) != len(tokens) or 1 not in mask:
        raise ValueError(f"{len(tokens)} tokens and a mask of {len(mask)}: pass one row's tokens with a mask of the "
                         "same length that marks at least one real token (1).")
    if not 2 <= len(words) <= 4 or len(logits) != len(words):
        raise ValueError(f"{len(logits)} logits for {len(words)} label words: pass one logit per label word, 2 to 4 of them.")
    last = max(i for i, m in enumerate(mask) if m)
    start = max(0, len(tokens) - shown)
    exps = [math.exp(v - max(logits)) for v in logits]
    probs = [e / sum(exps) for e in exps]
    fig, ax = canvas(10, 3.5, title)
    ax.text(0.1, 3.3, f"prompt: {sum(mask)} tokens" + (f", {len(mask) - sum(mask)} pads" if 0 in mask else ""),
            fontsize=9, va="center")
    x = 0.1
    if start:
        ax.text(x + 0.3, 2.75, "…", ha="center", va="center", fontsize=12)
        x += 0.6
    width = min(1.3, (9.8 - x) / (len(tokens) - start))
    centre = None
    for i in range(start, len(tokens)):
        kind = "read" if i == last else ("frozen" if mask[i] else "masked")
        box(ax, x, 2.45, width - 0.1, 0.6, tokens[i] if mask[i] else f"{tokens[i]}\n(pad)", color=kind,
            fontsize=8 if mask[i] else 6)
        ax.text(x + (width - 0.1) / 2, 2.3, f"position {i}", ha="center", va="center", fontsize=7)
        if i == last:
            centre = x + (width - 0.1) / 2
        x += width
    steps = [(0.1, "hidden state\nat that position"), (2.1, "final norm"), (4.1, "2 rows of\nthe LM head")]
    if centre is not None:
        arrow(ax, (centre, 2.2), (1.0, 1.72), "last real position")
    else:
        ax.text(1.0, 1.9, f"last real position {last} (not drawn)", ha="center", fontsize=8)
    for k, (left, text) in enumerate(steps):
        box(ax, left, 1.0, 1.7, 0.7, text, color="read" if k == 0 else "frozen")
        if k < len(steps) - 1:
            arrow(ax, (left + 1.72, 1.35), (left + 2.08, 1.35))
    height = 1.9 / len(words)
    for k, (word, value, p) in enumerate(zip(words, logits, probs)):
        y = 2.05 - (k + 1) * height
        arrow(ax, (5.82, 1.35), (6.08, y + height / 2))
        box(ax, 6.1, y + 0.05, 1.7, height - 0.1, f"{word!r}\nlogit {value:.2f}", color="read", fontsize=8)
        arrow(ax, (7.82, y + height / 2), (8.18, y + height / 2))
        box(ax, 8.2, y + 0.05, 1.6, height - 0.1, f"P = {p:.3f}", color="white", fontsize=9)
    ax.text(9.0, 2.08, "softmax over\nthe label logits", ha="center", va="bottom", fontsize=7)
    return fig
