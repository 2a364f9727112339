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


def nf4_block(block, levels) -> plt.Figure:
    """One block of weights through NF4 (notebook 3, section 2): scaled by its absmax, rounded, stored, restored.

    ``block`` holds one block's weights (bitsandbytes: 64), ``levels`` the 16 sorted NF4 levels. Top: the
    weights and ±absmax. Middle: each weight / absmax, moved to the nearest level (a grey tick), labelled with
    its 4-bit code. Bottom: the dequantized weight (code's level × absmax) minus the original.
    """
    import numpy as np

    w = np.asarray(block, dtype=np.float64).ravel()
    lv = np.asarray(levels, dtype=np.float64).ravel()
    if lv.size != 16 or np.any(np.diff(lv) <= 0):
        raise ValueError(f"levels must be the 16 NF4 levels in increasing order, got {lv.size} values.")
    if w.size == 0 or not np.any(w):
        raise ValueError("block must hold at least one nonzero weight (its absmax is the scale).")
    absmax = np.abs(w).max()
    scaled = w / absmax
    codes = np.searchsorted((lv[1:] + lv[:-1]) / 2, scaled, side="left")  # as torch.bucketize: midpoints below
    error = lv[codes] * absmax - w
    x = np.arange(w.size)
    fig, axes = plt.subplots(3, 1, figsize=(10, 7.2), sharex=True, gridspec_kw={"height_ratios": [1, 2.2, 1]})
    top, mid, low = axes
    top.bar(x, w, color=COLORS["frozen"], edgecolor="#555555", linewidth=0.4)
    for sign in (1, -1):
        top.axhline(sign * absmax, color="#c0504d", linestyle="--", linewidth=0.8)
    top.text(w.size - 0.5, -absmax, f"±absmax = {absmax:.3g}", ha="right", va="top", fontsize=8, color="#c0504d")
    top.set_ylim(-1.6 * absmax, 1.3 * absmax)
    top.set_ylabel("weight")
    top.set_title(f"1. the block's {w.size} weights, one scale: absmax", fontsize=10, loc="left")
    for level in lv:
        mid.axhline(level, color=COLORS["read"], linewidth=0.7)
    mid.vlines(x, scaled, lv[codes], color="#888888", linewidth=0.8)
    mid.scatter(x, scaled, s=12, color="#1f4e79", zorder=3, label="weight / absmax")
    mid.scatter(x, lv[codes], s=12, marker="_", color="#c0504d", zorder=3, label="nearest NF4 level")
    for i, (xi, code) in enumerate(zip(x, codes)):
        mid.text(xi, lv[code] + (0.035 if i % 2 else -0.035), str(code), ha="center", va="center", fontsize=5.5)
    mid.set_yticks(lv)
    mid.set_yticklabels([f"{v:+.2f}" for v in lv], fontsize=6)
    mid.set_ylim(-1.1, 1.1)
    mid.set_ylabel("scaled weight (16 levels)")
    mid.legend(loc="upper left", fontsize=7, ncol=2, framealpha=0.9)
    mid.set_title("2. divide by absmax, round to the nearest of 16 levels: the number at each is its 4-bit code",
                  fontsize=10, loc="left")
    low.bar(x, error, color=COLORS["trained"], edgecolor="#555555", linewidth=0.4)
    low.axhline(0, color="#555555", linewidth=0.6)
    low.set_ylabel("error")
    low.set_xlabel("position in the block")
    low.set_title(f"3. dequantized (level × absmax) − original: mean |error| {np.abs(error).mean():.3g}",
                  fontsize=10, loc="left")
    fig.tight_layout()
    return fig


def memory_over_step(estimate, num_layers: int, title: str = "") -> plt.Figure:
    """Memory rising and falling over one training step (notebook 5), drawn from the estimator's own terms.

    ``estimate`` is :func:`lmcls_helpers.memory.estimate_training_memory`'s dict (GiB per component and
    ``total``). The weights, LoRA, optimizer state and workspaces stay resident; the activations grow block by
    block through the forward pass; the logits appear at the loss, where the stack reaches the estimated peak;
    backward frees the activations block by block while it makes the LoRA gradients; the optimizer step
    updates the weights and ``zero_grad(set_to_none=True)`` frees the gradients.
    """
    import numpy as np

    needed = ("quantized_weights", "weights_16bit", "lora_weights", "optimizer_state", "activations", "logits",
              "workspace", "total")
    missing = [k for k in needed if k not in estimate]
    if missing:
        raise ValueError(f"estimate lacks {missing}: pass memory.estimate_training_memory(...)'s result.")
    if num_layers < 1:
        raise ValueError(f"num_layers must be at least 1, got {num_layers}.")
    e = {k: float(estimate[k]) for k in needed}
    resident = e["quantized_weights"] + e["weights_16bit"] + e["lora_weights"] + e["optimizer_state"] + e["workspace"]
    L = num_layers
    up, down = np.arange(L + 1) / L, 1 - np.arange(L + 1) / L  # share of the activations kept, block by block
    t = np.concatenate([np.arange(L + 1), [L, L + 1], L + 1 + np.arange(L + 1), [2 * L + 1.5, 2 * L + 2.5]])
    activations = np.concatenate([up, [1.0, 1.0], down, [0.0, 0.0]]) * e["activations"]
    logits = np.concatenate([np.zeros(L + 1), [1.0, 1.0], np.zeros(L + 3)]) * e["logits"]
    grads = np.concatenate([np.zeros(L + 3), up, [1.0, 0.0]]) * e["lora_weights"]  # fp32, one per LoRA value
    layers = [(f"weights, LoRA, optimizer state, workspaces: {resident:.2f} GiB", np.full_like(t, resident),
               COLORS["frozen"]),
              (f"activations kept for backward: up to {e['activations']:.2f} GiB", activations, COLORS["trained"]),
              (f"logits and the loss's tensors: {e['logits']:.2f} GiB", logits, "#c0504d"),
              (f"LoRA gradients: up to {e['lora_weights']:.2f} GiB", grads, COLORS["read"])]
    fig, ax = plt.subplots(figsize=(9, 4))
    bottom = np.zeros_like(t)
    for label, values, color in layers:
        ax.fill_between(t, bottom, bottom + values, step=None, color=color, label=label, linewidth=0)
        bottom = bottom + values
    ax.axhline(e["total"], color="#555555", linestyle="--", linewidth=0.8)
    ax.text(0.2, e["total"], f"estimated peak {e['total']:.2f} GiB", va="bottom", fontsize=8)
    ax.set_xticks([0, L / 2, L + 0.5, L + 1 + L / 2, 2 * L + 2])
    ax.set_xticklabels(["start", f"forward\nblocks 1 → {L}", "loss",
                        f"backward\nblocks {L} → 1", "optimizer\nstep"], fontsize=8)
    ax.set_ylabel("GiB allocated")
    ax.set_ylim(0, 1.25 * e["total"])
    ax.set_title(title or "memory over one training step", fontsize=11)
    ax.legend(loc="upper right", fontsize=7, framealpha=0.9)
    ax.set_xlim(-0.5, 2 * L + 3)
    fig.tight_layout()
    return fig


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
