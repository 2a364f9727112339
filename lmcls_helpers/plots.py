"""Figures: one small, labelled figure per cell, also saved as PNG under ``build/figures/``.

Each plotting function returns the matplotlib Figure; the notebook displays it. Saving to disk
lets ``make run`` (and a reviewer) look at every figure without opening Jupyter.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt

from .paths import build_dir

SMALL = (6, 3.5)


def savefig(fig: plt.Figure, name: str) -> Path:
    """Save ``fig`` as ``build/figures/<name>.png`` (name like '02_confusion') and return the path."""
    path = build_dir("figures", f"{name}.png")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return path


def show(fig: plt.Figure, name: str) -> None:
    """Save ``fig`` (see :func:`savefig`), then display that PNG inline and close the figure.

    Displaying the saved PNG, not relying on a backend, is why figures appear in every executed
    notebook: ``make run`` and nbmake set ``MPLBACKEND=Agg``, under which ``plt.show()`` draws
    nothing. Closing the figure stops an inline backend (Jupyter, Colab) from drawing it twice.
    Returns None, so a cell ending in ``plots.show(...)`` echoes nothing.
    """
    from IPython.display import Image, display

    path = savefig(fig, name)
    plt.close(fig)
    display(Image(data=path.read_bytes(), format="png"))

def padding_layout(batch, tokenizer, marks=None, title: str = "") -> plt.Figure:
    """The attention mask of a padded batch as a grid, each cell labelled with its token (notebook 1).

    ``marks`` (one position per row, e.g. ``last_token_index``) are outlined in red.
    """
    import numpy as np
    from matplotlib.colors import ListedColormap

    mask = batch["attention_mask"].numpy()
    pieces = [tokenizer.convert_ids_to_tokens(row) for row in batch["input_ids"].tolist()]
    fig, ax = plt.subplots(figsize=(min(1.0 + 0.62 * mask.shape[1], 12), 0.45 * len(mask) + 1.1))
    ax.imshow(mask, cmap=ListedColormap(["white", "#a1d99b"]), vmin=0, vmax=1, aspect="auto")  # 0 white, 1 green
    for r, row in enumerate(pieces):
        for c, piece in enumerate(row):
            short = piece if len(piece) <= 8 else piece[:7] + "…"
            ax.text(c, r, short, ha="center", va="center", fontsize=7, color="black" if mask[r, c] else "grey")
    for r, c in enumerate([] if marks is None else list(marks)):
        ax.add_patch(plt.Rectangle((c - 0.5, r - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=2))
    ax.set_xticks(np.arange(mask.shape[1]))
    ax.set_yticks(np.arange(len(mask)))
    ax.set_xlabel("position in the padded batch")
    ax.set_ylabel("row")
    marked = "" if marks is None else ", red box: last real token"
    ax.set_title(title or f"padding side = {tokenizer.padding_side} (green: real tokens, white: padding{marked})")
    fig.tight_layout()
    return fig


def confusion_heatmap(labels, preds, class_names=("unacceptable", "acceptable"), title: str = "") -> plt.Figure:
    """Confusion matrix as a seaborn heat-map: rows are true classes, columns predictions (notebook 2)."""
    import seaborn as sns
    from sklearn.metrics import confusion_matrix

    matrix = confusion_matrix(labels, preds, labels=list(range(len(class_names))))
    fig, ax = plt.subplots(figsize=(4, 3.4))
    sns.heatmap(matrix, annot=True, fmt="d", cmap="Blues", cbar=False, ax=ax,
                xticklabels=class_names, yticklabels=class_names)
    ax.set_xlabel("predicted label")
    ax.set_ylabel("true label")
    ax.set_title(title or "confusion matrix (counts)")
    fig.tight_layout()
    return fig


def score_histogram(probs, labels, class_names=("unacceptable", "acceptable"), title: str = "") -> plt.Figure:
    """Histogram of P(acceptable) for each true class: how separable the two classes are (notebook 2)."""
    import numpy as np
    import seaborn as sns

    labels = np.asarray(labels)
    fig, ax = plt.subplots(figsize=SMALL)
    frame = {"P(acceptable)": np.asarray(probs), "true label": [class_names[y] for y in labels]}
    sns.histplot(frame, x="P(acceptable)", hue="true label", bins=20, binrange=(0, 1), ax=ax,
                 hue_order=list(class_names), element="step", stat="count")
    ax.axvline(0.5, color="grey", linestyle="--", linewidth=1)
    ax.set_xlabel("P(' acceptable') from the two label logits")
    ax.set_ylabel("sentences")
    ax.set_title(title or "score distribution per true class")
    fig.tight_layout()
    return fig


def bar_chart(values: dict, xlabel: str, title: str, reference: dict | None = None,
              reference_label: str = "reference") -> plt.Figure:
    """Horizontal bars, one per named value (notebook 2).

    ``reference`` values that measure something else (another model, split or method) get a panel
    of their own with its own x axis, labelled ``reference_label``, so the two are never read on
    one scale and no legend can hide a marker.
    """
    names = list(values)
    if not reference:
        fig, ax = plt.subplots(figsize=SMALL)
        axes = [ax]
    else:
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.5), sharey=True)
    axes[0].barh(names, [values[n] for n in names], color="tab:blue")
    axes[0].axvline(0, color="black", linewidth=0.8)
    axes[0].set_xlabel(xlabel)
    axes[0].invert_yaxis()
    if reference:
        shown = [n for n in names if n in reference]
        axes[1].barh(shown, [reference[n] for n in shown], color="tab:grey")
        for n in shown:
            axes[1].text(reference[n], names.index(n), f" {reference[n]:.3f}", va="center", fontsize=8)
        axes[1].set_xlim(0, max(reference[n] for n in shown) * 1.25)
        axes[1].set_xlabel(reference_label)
        axes[0].set_title("this run", fontsize=10)
        axes[1].set_title("reference (not comparable)", fontsize=10)
        fig.suptitle(title)
    else:
        axes[0].set_title(title)
    fig.tight_layout()
    return fig


def levels_on_normal_cdf(levels: dict, z_at_one: float, title: str = "") -> plt.Figure:
    """4-bit levels placed on the normal CDF (notebook 3): evenly spaced heights = equal share of a bell curve.

    ``z_at_one`` is how many standard deviations the level 1.0 stands for.
    """
    import torch

    x = torch.linspace(-1, 1, 201, dtype=torch.float64)
    fig, ax = plt.subplots(figsize=SMALL)
    ax.plot(x, torch.special.ndtr(x * z_at_one), color="lightgrey", label=f"normal CDF, 1.0 = {z_at_one:.2f} σ")
    for (name, values), marker in zip(levels.items(), "os^"):
        v = torch.as_tensor(values, dtype=torch.float64)
        p = torch.special.ndtr(v * z_at_one)
        line = ax.scatter(v, p, marker=marker, s=28, zorder=3, label=f"{name} levels")
        ax.scatter(torch.full_like(p, -1.08 - 0.06 * list(levels).index(name)), p, marker="_", s=60, color=line.get_facecolor())
    ax.set_xlabel("level (fraction of the block's absmax)")
    ax.set_ylabel("share of N(0, 1) below the level")
    ax.set_title(title or "NF4 climbs the bell curve in equal steps, FP4 does not")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def code_usage(codes: dict, levels: dict, title: str = "") -> plt.Figure:
    """How often each level is used, levels sorted by value (notebook 3); ``codes`` are 0..15 per weight."""
    import numpy as np
    import torch

    fig, ax = plt.subplots(figsize=SMALL)
    width = 0.8 / len(codes)
    for i, name in enumerate(codes):
        order = torch.as_tensor(levels[name]).argsort()
        counts = torch.bincount(torch.as_tensor(codes[name]).flatten().long(), minlength=16)[order]
        ax.bar(np.arange(16) + (i - (len(codes) - 1) / 2) * width, 100 * counts / counts.sum(), width, label=name)
    ax.axhline(100 / 16, color="grey", linestyle="--", linewidth=1, label="1/16 each")
    ax.set_xticks(range(16))
    ax.set_xlabel("level, from most negative (0) to most positive (15)")
    ax.set_ylabel("weights using it (%)")
    ax.set_title(title or "how often each of the 16 levels is used")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def scaled_weights_under_levels(scaled: dict, levels, title: str = "") -> plt.Figure:
    """Histograms of block-scaled weights (each in [-1, 1]) with the 16 levels as lines (notebook 3).

    Densities, so that matrices of different sizes compare; the taller the peak at 0, the more
    weights share the few levels near zero.
    """
    import torch

    fig, ax = plt.subplots(figsize=SMALL)
    for name, w in scaled.items():
        ax.hist(torch.as_tensor(w).detach().float().flatten().numpy(), bins=101, range=(-1, 1), density=True,
                histtype="step", linewidth=1.5, label=name)
    for i, level in enumerate(torch.as_tensor(levels).tolist()):
        ax.axvline(level, color="grey", linewidth=0.6, linestyle=":", label="NF4 levels" if i == 0 else None)
    ax.set_xlabel("weight / absmax of its block of 64")
    ax.set_ylabel("density")
    ax.set_title(title or "block-scaled weights under the 16 NF4 levels")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def error_histogram(errors: dict, xlabel: str, title: str = "") -> plt.Figure:
    """Overlaid histograms of quantization errors, one per data type (notebook 3)."""
    import torch

    flat = {name: torch.as_tensor(e).detach().float().flatten() for name, e in errors.items()}
    edge = max(e.abs().max().item() for e in flat.values())
    fig, ax = plt.subplots(figsize=SMALL)
    for name, e in flat.items():
        ax.hist(e.numpy(), bins=80, range=(-edge, edge), histtype="step", linewidth=1.5,
                label=f"{name}: mean |error| {e.abs().mean():.2e}")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("weights")
    ax.set_title(title or "dequantized minus original weight")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def stacked_gib(parts: dict, measured: float | None = None, title: str = "",
                measured_label: str = "measured NF4") -> plt.Figure:
    """Horizontal stacked bars: GiB per model part for each storage format (``{format: {part: GiB}}``).

    ``measured_label`` says where the dashed line's figure comes from (measured here, or shipped).
    """
    fig, ax = plt.subplots(figsize=SMALL)
    names = list(parts)
    kinds = list(dict.fromkeys(k for p in parts.values() for k in p))
    left = [0.0] * len(names)
    for kind in kinds:
        widths = [parts[n].get(kind, 0.0) for n in names]
        ax.barh(names, widths, left=left, label=kind)
        left = [a + b for a, b in zip(left, widths)]
    if measured is not None:
        ax.axvline(measured, color="black", linestyle="--", linewidth=1, label=f"{measured_label}: {measured:.2f} GiB")
    ax.invert_yaxis()
    ax.set_xlabel("GiB (2**30 bytes)")
    ax.set_title(title)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig


def metric_by_precision(
    values: dict,
    ylabel: str,
    title: str = "",
    band: tuple[float, float] | None = None,
    band_label: str = "",
    intervals: dict | None = None,
) -> plt.Figure:
    """One point per precision, with optional error bars ``{name: (low, high)}`` (e.g. a paired bootstrap)
    and a shaded band (e.g. one model's own interval, for contrast) (notebook 3)."""
    fig, ax = plt.subplots(figsize=SMALL)
    names = list(values)
    if band is not None:
        ax.axhspan(*band, color="tab:orange", alpha=0.25, zorder=0, label=band_label or "95% interval")
    if intervals:
        ax.axhline(0, color="grey", linewidth=0.8, zorder=1)
        low = [values[n] - intervals[n][0] for n in names]
        high = [intervals[n][1] - values[n] for n in names]
        ax.errorbar(names, [values[n] for n in names], yerr=[low, high], fmt="none", ecolor="tab:blue",
                    capsize=4, zorder=2, label="paired 95% interval")
    ax.scatter(names, [values[n] for n in names], color="tab:blue", s=50, zorder=3, label="this run")
    offset, align = ((6, 3), "left") if intervals else ((0, 7), "center")  # beside the error bar, not on it
    for i, n in enumerate(names):
        ax.annotate(f"{values[n]:.3f}", (i, values[n]), textcoords="offset points", xytext=offset, ha=align, fontsize=8)
    ax.legend(fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.tick_params(axis="x", labelsize=8)
    fig.tight_layout()
    return fig


def lr_schedule(lrs, warmup_steps: int, title: str = "") -> plt.Figure:
    """Learning rate per optimizer step, warm-up shaded (notebook 4)."""
    fig, ax = plt.subplots(figsize=SMALL)
    ax.plot(range(1, len(lrs) + 1), lrs, color="tab:blue")
    ax.axvspan(0, warmup_steps, color="tab:orange", alpha=0.2, label=f"warm-up ({warmup_steps} steps)")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("learning rate")
    ax.set_title(title or "linear warm-up, then linear decay to zero")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def learning_curves(steps, train_loss, val_steps, val_loss, title: str = "") -> plt.Figure:
    """Training loss per optimizer step (thin line) and validation loss at each validation (notebook 4)."""
    fig, ax = plt.subplots(figsize=SMALL)
    ax.plot(steps, train_loss, color="tab:blue", alpha=0.35, linewidth=1, label="training loss (per step)")
    ax.plot(val_steps, val_loss, "o-", color="tab:green", label="validation loss")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("cross-entropy of the label word (nats)")
    ax.set_title(title or "learning curves")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def metric_curve(steps, values, ylabel: str, reference: float | None = None, reference_label: str = "",
                 title: str = "") -> plt.Figure:
    """One metric at each validation, with an optional horizontal reference such as a baseline (notebook 4)."""
    fig, ax = plt.subplots(figsize=SMALL)
    ax.plot(steps, values, "o-", color="tab:purple", label=ylabel)
    if reference is not None:
        ax.axhline(reference, color="grey", linestyle="--", linewidth=1, label=reference_label or "reference")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def two_reads_layout(batch, tokenizer, last, title: str = "") -> plt.Figure:
    """:func:`padding_layout` with the last real token in red and position -1 in blue (notebook 6)."""
    fig = padding_layout(batch, tokenizer, marks=last, title=title)
    ax = fig.axes[0]
    width = batch["attention_mask"].shape[1]
    for r in range(batch["attention_mask"].shape[0]):
        ax.add_patch(plt.Rectangle((width - 1.42, r - 0.42), 0.84, 0.84, fill=False, edgecolor="tab:blue",
                                   linewidth=2, linestyle="--"))
    return fig


def score_strips(scores: dict, labels, class_names=("label 0", "label 1"), title: str = "") -> plt.Figure:
    """One row of dots per model: each example's logit, coloured by its true label (notebook 6)."""
    import numpy as np

    labels = np.asarray(labels)
    rng = np.random.default_rng(0)  # vertical jitter only, so the figure is the same every run
    fig, ax = plt.subplots(figsize=SMALL)
    for row, values in enumerate(scores.values()):
        values = np.asarray(values)
        for cls, color in zip((0, 1), ("tab:red", "tab:blue")):
            pick = labels == cls
            ax.scatter(values[pick], row + 0.18 * (cls - 0.5) + rng.uniform(-0.07, 0.07, pick.sum()), s=6, alpha=0.5,
                       color=color, label=class_names[cls] if row == 0 else None)
    ax.axvline(0, color="grey", linestyle="--", linewidth=1)
    ax.set_yticks(range(len(scores)))
    ax.set_yticklabels(list(scores))
    ax.set_xlabel("head logit (> 0 predicts label 1)")
    ax.set_title(title)
    ax.legend(fontsize=8, loc="lower right", markerscale=2)
    fig.tight_layout()
    return fig


def score_vs_pads(curves: dict, title: str = "") -> plt.Figure:
    """Score against the number of pad tokens after a text; ``curves`` maps (read, example) to scores (notebook 6)."""
    fig, ax = plt.subplots(figsize=SMALL)
    reads = list(dict.fromkeys(read for read, _ in curves))
    for (read, example), values in curves.items():
        style = "-" if reads.index(read) else "--"
        ax.plot(range(len(values)), values, style, marker="o", markersize=3, color=f"C{example}",
                label=f"{read}, sentence {example}")
    ax.set_xlabel("pad tokens after the sentence")
    ax.set_ylabel("head logit")
    ax.set_title(title)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    return fig


def sample_efficiency(table, title: str = "", ylabel: str = "dev MCC", reference: dict | None = None) -> plt.Figure:
    """One line per method: a metric against the number of training examples, log-scaled (notebook 7).

    ``reference`` maps a label to a value drawn as a dashed horizontal line (e.g. an untrained baseline).
    """
    fig, ax = plt.subplots(figsize=SMALL)
    for name in table.columns:
        ax.plot(table.index, table[name], marker="o", label=name)
    for name, value in (reference or {}).items():
        ax.axhline(value, color="grey", linestyle="--", linewidth=1, label=name)
    ax.set_xscale("log", base=2)
    ax.set_xticks(list(table.index))
    ax.set_xticklabels([str(n) for n in table.index])
    ax.set_xlabel("training examples available (log scale)")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


#: One colour per memory component (notebook 5), the same in every memory figure.
MEMORY_COLORS = {
    "quantized_weights": "#4C72B0", "weights_16bit": "#8FAADC", "lora_weights": "#DD8452", "gradients": "#C44E52",
    "optimizer_state": "#937860", "activations": "#55A868", "logits": "#DA8BC3", "workspace": "#8C8C8C",
}


#: Segment colours of :func:`memory_phases`: tensors in blues, what is not a tensor in yellow and greys.
PHASE_COLORS = {
    "tensors alive after the phase": "#4C72B0", "tensors at the peak": "#2F4B7C", "extra tensors at the peak": "#8FAADC",
    "reserved by PyTorch, not in tensors": "#CCB974", "allocator cache + CUDA context": "#8C8C8C",
    "CUDA context and others": "#8C8C8C", "driver's count (tensors, cache, CUDA context)": "#B0B0B0",
}


def _phase_label(phase: str) -> str:
    """A measured phase's name as a tick label; the tutorial's recipe is called the tutorial's (notebook 5)."""
    return phase.replace("seed", "tutorial").replace("_", " ")


def memory_phases(rows: list[dict], capacity_gib: float | None = None, capacity_label: str = "",
                  title: str = "", ymax: float | None = None) -> plt.Figure:
    """Stacked bars per phase from ``memory.phase_segments`` rows, with the device's capacity as a line (notebook 5).

    Bars under 1 GiB (the tiny profile) are drawn in MiB. ``ymax`` (GiB) fixes the scale, so that two
    GPUs' figures compare at a glance; a capacity above it is named at the top instead of drawn.
    """
    phases = list(dict.fromkeys(r["phase"] for r in rows))
    totals = {p: sum(r["GiB"] for r in rows if r["phase"] == p) for p in phases}
    unit, scale = ("MiB", 1024) if max(totals.values()) < 1 and capacity_gib is None else ("GiB", 1)
    fig, ax = plt.subplots(figsize=SMALL)
    bottom, seen = dict.fromkeys(phases, 0.0), set()
    for r in rows:  # bottom-up within each phase
        label = None if r["segment"] in seen else r["segment"]
        seen.add(r["segment"])
        x = phases.index(r["phase"])
        ax.bar(x, r["GiB"] * scale, bottom=bottom[r["phase"]], width=0.6, label=label,
               color=PHASE_COLORS.get(r["segment"], "#DD8452"), edgecolor="white", linewidth=0.5)
        bottom[r["phase"]] += r["GiB"] * scale
    label = capacity_label or (f"capacity {capacity_gib:.1f} GiB" if capacity_gib is not None else "")
    if capacity_gib is not None and (ymax is None or capacity_gib <= ymax):
        ax.axhline(capacity_gib, color="red", linestyle="--", linewidth=1.2, label=label)
    elif capacity_gib is not None:
        ax.annotate(f"{label}: above this scale", (0.99, 0.97), xycoords="axes fraction", ha="right", va="top",
                    fontsize=7, color="red")
    if ymax is not None:
        ax.set_ylim(0, ymax * scale)
    elif capacity_gib is not None:
        ax.set_ylim(0, 1.45 * max(capacity_gib, *totals.values()) * scale)  # room for the legend above the line
    ax.set_xticks(range(len(phases)), [_phase_label(p) for p in phases], fontsize=7, rotation=20)
    ax.set_ylabel(f"{unit} (2**{30 if unit == 'GiB' else 20} bytes)")
    ax.set_title(title)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    return fig


def _capacity_labels(capacities: dict | None, limit: float) -> dict:
    """GPU capacities below ``limit``, as {GiB: "name / name"} (cards with the same capacity share a line)."""
    shown: dict = {}
    for gpu, cap in (capacities or {}).items():
        if cap < limit:
            shown[cap] = f"{shown[cap]} / {gpu}" if cap in shown else gpu
    return shown


def memory_components(estimates: dict, capacities: dict | None = None, title: str = "",
                      xmax: float | None = None) -> plt.Figure:
    """Horizontal stacked bars, one per configuration, from ``memory.estimate_*`` dicts (GiB per component).

    ``capacities`` (name -> GiB) are drawn as vertical lines: a bar that crosses a line does not fit that GPU.
    ``xmax`` fixes the axis (the explorer keeps it still while the sliders move).
    """
    names = list(estimates)
    fig, ax = plt.subplots(figsize=(7.5, max(2.6, 0.45 * len(names) + 1.7)))
    left = [0.0] * len(names)
    for comp, color in MEMORY_COLORS.items():
        widths = [estimates[n].get(comp, 0.0) for n in names]
        if any(w > 0 for w in widths):
            ax.barh(names, widths, left=left, color=color, label=comp.replace("_", " "))
            left = [a + b for a, b in zip(left, widths)]
    xmax = xmax or 1.6 * max(left)
    shown = _capacity_labels(capacities, xmax)
    for cap in shown:
        ax.axvline(cap, color="red", linestyle="--", linewidth=1)
    top_axis = ax.secondary_xaxis("top")
    top_axis.set_xticks(list(shown), list(shown.values()), fontsize=7, color="red", rotation=30, ha="left")
    ax.set_xlim(0, xmax)
    ax.invert_yaxis()
    ax.set_xlabel("GiB at the peak (estimated)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    return fig


def fits_heatmap(headroom, tight_gib: float = 1.0, title: str = "") -> plt.Figure:
    """GiB left per configuration (rows) and GPU (columns): red does not fit, amber is tight, green fits (notebook 5)."""
    import seaborn as sns
    from matplotlib.colors import BoundaryNorm, ListedColormap

    cmap = ListedColormap(["#E07B7B", "#F2C85B", "#7BC47F"])
    norm = BoundaryNorm([-1e9, 0, tight_gib, 1e9], cmap.N)
    fig, ax = plt.subplots(figsize=(6.5, 0.42 * len(headroom) + 1.4))
    sns.heatmap(headroom, annot=True, fmt=".1f", cmap=cmap, norm=norm, cbar=False, ax=ax, linewidths=0.5,
                annot_kws={"fontsize": 7})
    ax.set_xlabel(f"GPU (cells: GiB left; red < 0 does not fit, amber < {tight_gib:g} is tight)")
    ax.set_ylabel("")
    ax.set_title(title or "memory left after a training step")
    ax.tick_params(labelsize=7)
    fig.tight_layout()
    return fig


def memory_sweep(curves: dict, capacities: dict | None = None, xlabel: str = "batch size",
                 title: str = "") -> plt.Figure:
    """Estimated peak GiB against one knob, one line per setting, GPU capacities as horizontal lines."""
    fig, ax = plt.subplots(figsize=SMALL)
    for label, (xs, ys) in curves.items():
        ax.plot(xs, ys, marker="o", markersize=3, label=label)
    for cap, name in _capacity_labels(capacities, 1.3 * max(max(ys) for _, ys in curves.values())).items():
        ax.axhline(cap, color="red", linestyle="--", linewidth=0.8)
        ax.annotate(name, (1, cap), xycoords=("axes fraction", "data"), ha="right", va="bottom", fontsize=7, color="red")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("GiB at the peak (estimated)")
    ax.set_title(title)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    return fig


def measured_branches(grid: dict, table, title: str = "") -> plt.Figure:
    """A grid file's unpadded AdamW steps against micro-batch size: peak GiB (dots measured, lines estimated)
    and seconds per step, one colour per recipe (notebook 5). ``table``: ``memory.grid_table(grid)``, same rows."""
    fig, (mem, sec) = plt.subplots(1, 2, figsize=(10, 3.6))
    recipes = {}
    for r, (_, row) in zip(grid["grid"], table.iterrows()):
        if r["padded"] or r["optimizer"] != "adamw" or r.get("upcast_fp32"):
            continue
        name = ("tutorial loss" if r["logits"] == "all" else "label logits") + " + checkpointing" * r["checkpointing"]
        spread = r.get("all_step_s", [r["step_s"]])
        recipes.setdefault(name, []).append((r["batch_size"], row["measured GiB"], row["estimated GiB"], r["step_s"],
                                             r["step_s"] - min(spread), max(spread) - r["step_s"]))
    for i, (name, points) in enumerate(recipes.items()):
        b, measured, estimated, seconds, low, high = zip(*sorted(points))
        color = f"C{i}"
        mem.plot(b, estimated, color=color, linewidth=1, label=name)
        mem.plot(b, measured, "o", color=color, markersize=5)
        sec.errorbar(b, seconds, yerr=[low, high], fmt="o-", color=color, markersize=5, capsize=3, label=name)
    for ax in (mem, sec):
        ax.set_xscale("log", base=2)
        ax.set_xticks([4, 8, 16, 32], ["4", "8", "16", "32"])
        ax.set_xlabel("micro-batch (rows of 86 tokens; log scale)")
    mem.set_ylabel("GiB at the peak (dots measured, lines estimated)")
    sec.set_ylabel("seconds per training step\n(median of 3; bars: min to max)")
    sec.set_ylim(0, None)
    mem.legend(fontsize=7, loc="upper left")
    sec.legend(fontsize=7, loc="lower right")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def estimate_vs_measured(table, title: str = "") -> plt.Figure:
    """Measured and estimated memory per phase side by side, from ``memory.compare`` (notebook 5)."""
    import numpy as np

    scale, unit = (1024, "MiB") if table["measured GiB"].max() < 1 else (1, "GiB")
    y = np.arange(len(table))
    fig, ax = plt.subplots(figsize=SMALL)
    ax.barh(y - 0.2, table["measured GiB"] * scale, 0.4, label="measured", color="#4C72B0")
    ax.barh(y + 0.2, table["estimated GiB"] * scale, 0.4, label="estimated", color="#DD8452")
    for i, ratio in enumerate(table["estimated / measured"]):
        ax.annotate(f"{ratio:.3f}", (table["estimated GiB"].iloc[i] * scale, y[i] + 0.2), fontsize=7, va="center",
                    xytext=(3, 0), textcoords="offset points")
    ax.set_yticks(y, [_phase_label(p) for p in table.index], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlim(0, 1.35 * max(table["measured GiB"].max(), table["estimated GiB"].max()) * scale)
    ax.set_xlabel(f"{unit} (numbers: estimated / measured)")
    ax.set_title(title)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig


def display_widget(widget, note: str) -> None:
    """Show ``widget`` live where a frontend can render it, and ``note`` as its text on a static page.

    Written out by hand rather than through ``_repr_mimebundle_``, which only ipywidgets 8 has:
    Colab ships ipywidgets 7, and both speak version 2 of the widget view format.
    """
    from IPython.display import display

    view = {"version_major": 2, "version_minor": 0, "model_id": widget.model_id}
    display({"application/vnd.jupyter.widget-view+json": view, "text/plain": note}, raw=True)


def memory_explorer(config, capacities: dict, **defaults) -> None:
    """Sliders over ``memory.estimate_training_memory``'s knobs above a figure that they redraw (notebook 5).

    The figure is an ordinary output, updated in place: without a widget frontend (a rendered
    notebook, nbconvert) the defaults' figure still shows, and the sliders print a one-line note.
    """
    from IPython.display import display

    from .memory import estimate_training_memory

    settings = {"batch_size": 8, "seq_len": 86, "lora_r": 8, "grad_checkpointing": False, "logits": "all",
                "optimizer": "adamw", "double_quant": False, **defaults}

    def draw(values: dict):
        """The figure as a PNG image: displays the same under every backend (a Figure under Agg shows its repr)."""
        import io

        from IPython.display import Image

        est = estimate_training_memory(config, **values)
        fig = memory_components({"this setting": est}, capacities, xmax=1.08 * max(capacities.values()),
                                title=f"peak {est['total']:.1f} GiB: batch {values['batch_size']}, seq {values['seq_len']}")
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
        plt.close(fig)
        return Image(data=buffer.getvalue(), format="png")

    try:
        import ipywidgets as w
    except ImportError:
        display(draw(settings))
        return
    controls = {
        "batch_size": w.IntSlider(value=settings["batch_size"], min=1, max=64, description="batch"),
        "seq_len": w.IntSlider(value=settings["seq_len"], min=16, max=2048, step=16, description="seq len"),
        "lora_r": w.IntSlider(value=settings["lora_r"], min=1, max=128, description="LoRA r"),
        "grad_checkpointing": w.Checkbox(value=settings["grad_checkpointing"], description="checkpointing"),
        "logits": w.ToggleButtons(options=["all", "label"], value=settings["logits"], description="logits"),
        "optimizer": w.ToggleButtons(options=["adamw", "adamw8bit"], value=settings["optimizer"], description="Adam"),
        "double_quant": w.Checkbox(value=settings["double_quant"], description="double quant"),
    }
    box = w.VBox(list(controls.values()))
    display_widget(box, "(sliders: open the notebook in Jupyter or Colab to move them; the figure shows the defaults)")
    handle = display(draw(settings), display_id=True)

    def redraw(_change) -> None:
        handle.update(draw({**settings, **{k: c.value for k, c in controls.items()}}))

    for c in controls.values():
        c.observe(redraw, names="value")
