"""Figures: one small, labelled figure per cell, also saved as PNG under ``build/figures/``.

Each plotting function returns the matplotlib Figure; the notebook displays it. Saving to disk
lets ``make run`` (and a reviewer) look at every figure without opening Jupyter.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from .paths import build_dir


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


def _figure(title: str = "", xlabel: str = "", ylabel: str = "", figsize=(6, 3.5)):
    """A new figure and its labelled axes, laid out tight when drawn (also after a caller resizes it)."""
    fig, ax = plt.subplots(figsize=figsize, layout="tight")
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    return fig, ax


def _tensor(values) -> np.ndarray:
    """Any tensor or array, flattened to float numbers on the CPU (detached: a model's weights may require grad)."""
    import torch

    return torch.as_tensor(values).detach().cpu().float().flatten().numpy()


def padding_layout(batch, tokenizer, marks=None, title: str = "", minus_one: bool = False) -> plt.Figure:
    """The attention mask of a padded batch as a grid of its tokens (notebooks 1, 6).

    ``marks`` (one position per row, e.g. ``last_token_index``) are outlined in red; ``minus_one``
    also outlines position -1 in blue, the position a head that reads ``[:, -1]`` sees.
    """
    from matplotlib.colors import ListedColormap

    mask = batch["attention_mask"].cpu().numpy()  # a batch may sit on the GPU
    rows, width = mask.shape
    marked = "" if marks is None else ", red box: last real token"
    fig, ax = _figure(title or f"padding side = {tokenizer.padding_side} (green: real tokens, white: padding{marked})",
                      "position in the padded batch", "row", figsize=(min(1.0 + 0.62 * width, 12), 0.45 * rows + 1.1))
    ax.imshow(mask, cmap=ListedColormap(["white", "#a1d99b"]), vmin=0, vmax=1, aspect="auto")  # 0 white, 1 green
    for r, ids in enumerate(batch["input_ids"].tolist()):
        for c, piece in enumerate(tokenizer.convert_ids_to_tokens(ids)):
            ax.text(c, r, piece if len(piece) <= 8 else piece[:7] + "…", ha="center", va="center", fontsize=7,
                    color="black" if mask[r, c] else "grey")
    for r, c in enumerate([] if marks is None else _tensor(marks).astype(int).tolist()):
        ax.add_patch(plt.Rectangle((c - 0.5, r - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=2))
        if minus_one:
            ax.add_patch(plt.Rectangle((width - 1.42, r - 0.42), 0.84, 0.84, fill=False, edgecolor="tab:blue",
                                       linewidth=2, linestyle="--"))
    ax.set(xticks=range(width), yticks=range(rows))
    return fig


def confusion_heatmap(labels, preds, class_names=("unacceptable", "acceptable"), title: str = "") -> plt.Figure:
    """Confusion matrix as a heat-map, rows true classes and columns predictions: where the errors go."""
    import seaborn as sns
    from sklearn.metrics import confusion_matrix

    fig, ax = _figure(title or "confusion matrix (counts)", figsize=(4, 3.4))
    matrix = pd.DataFrame(confusion_matrix(labels, preds, labels=list(range(len(class_names)))),  # names label the axes
                          pd.Index(class_names, name="true label"), pd.Index(class_names, name="predicted label"))
    sns.heatmap(matrix, annot=True, fmt="d", cmap="Blues", cbar=False, ax=ax)
    return fig


def histograms(data: dict, xlabel: str, ylabel: str, title: str = "", bins: int = 80, span=None,
               density: bool = False, lines=(), lines_label: str = "") -> plt.Figure:
    """Overlaid step histograms on shared bins, one per named array, so their shapes compare (notebooks 2, 3).

    ``lines`` (e.g. a threshold, or quantization levels) are drawn as dashed vertical lines.
    """
    flat = {name: _tensor(values) for name, values in data.items()}
    edges = np.histogram_bin_edges(np.concatenate(list(flat.values())), bins, span)
    fig, ax = _figure(title, xlabel, ylabel)
    for name, values in flat.items():
        ax.hist(values, bins=edges, density=density, histtype="step", linewidth=1.5, label=name)
    for i, x in enumerate(_tensor(lines)):
        ax.axvline(x, color="grey", linestyle="--", linewidth=0.8, label=lines_label if i == 0 else None)
    ax.legend(fontsize=8)
    return fig


def values_chart(values: dict, xlabel: str, title: str = "", intervals: dict | None = None, band=None,
                 band_label: str = "", reference: dict | None = None, reference_label: str = "") -> plt.Figure:
    """One bar per name with its value written on it (notebooks 2, 3).

    ``intervals`` ``{name: (low, high)}`` become error bars and ``band`` a shaded range, for contrast;
    ``reference`` values that measure something else get a panel and an x axis of their own, so the
    two are never read on one scale.
    """
    names = list(values)
    fig, axes = plt.subplots(1, 1 + bool(reference), figsize=(9, 3.5) if reference else (6, 3.5), sharey=True,
                             squeeze=False, layout="tight")
    panels = [(values, xlabel, "tab:blue", intervals or {}, "this run" if reference else title)]
    if reference:
        panels.append(({n: reference[n] for n in names if n in reference}, reference_label, "tab:grey", {},
                       "reference (not comparable)"))
        fig.suptitle(title)
    for ax, (shown, label, color, spans, panel_title) in zip(axes[0], panels):
        err = np.array([[shown[n] - spans[n][0], spans[n][1] - shown[n]] for n in shown]).T if spans else None
        ax.barh([names.index(n) for n in shown], list(shown.values()), xerr=err, color=color, capsize=4,
                label="paired 95% interval" if spans else None)
        for n, v in shown.items():  # beside the bar and its error bar, not on them
            ax.annotate(f"{v:.3f}", (max(v, 0, spans[n][1] if spans else 0), names.index(n)), xytext=(3, 0),
                        textcoords="offset points", va="center", fontsize=8)
        ax.axvline(0, color="black", linewidth=0.8)
        ax.set(xlabel=label, title=panel_title, xmargin=0.2)
    if band is not None:
        axes[0][0].axvspan(*band, color="tab:orange", alpha=0.25, zorder=0, label=band_label or "95% interval")
    if band is not None or intervals:
        axes[0][0].legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.2))  # below: the axes keep their width
    axes[0][0].set_yticks(range(len(names)), names, fontsize=8)
    axes[0][0].invert_yaxis()
    return fig


def line_chart(lines: dict, ylabel: str, title: str = "", xlabel: str = "optimizer step", hlines: dict | None = None,
               span=None, log2x: bool = False) -> plt.Figure:
    """Named ``(x, y[, plot kwargs])`` series, dashed levels ``hlines`` and a shaded ``(start, end, label)`` span."""
    fig, ax = _figure(title, xlabel, ylabel)
    for label, (x, y, *style) in lines.items():
        ax.plot(x, y, label=label, **{"marker": "o", "markersize": 4, **(style[0] if style else {})})
    for label, value in (hlines or {}).items():
        ax.axhline(value, color="grey", linestyle="--", linewidth=1, label=label)
    if span is not None:
        ax.axvspan(span[0], span[1], color="tab:orange", alpha=0.2, label=span[2])
    if log2x:
        ax.set_xscale("log", base=2)
        ax.set_xticks(list(x), [str(n) for n in x])
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # outside: hides no point
    return fig


def levels_on_normal_cdf(levels: dict, z_at_one: float, title: str = "") -> plt.Figure:
    """4-bit levels placed on the normal CDF (notebook 3): evenly spaced heights = equal share of a bell curve.

    ``z_at_one`` is how many standard deviations the level 1.0 stands for.
    """
    from scipy.stats import norm

    fig, ax = _figure(title or "NF4 climbs the bell curve in equal steps, FP4 does not",
                      "level (fraction of the block's absmax)", "share of N(0, 1) below the level")
    x = np.linspace(-1, 1, 201)
    ax.plot(x, norm.cdf(x * z_at_one), color="lightgrey", label=f"normal CDF, 1.0 = {z_at_one:.2f} σ")
    for i, ((name, values), marker) in enumerate(zip(levels.items(), "os^")):
        v = _tensor(values).astype(float)
        dots = ax.scatter(v, norm.cdf(v * z_at_one), marker=marker, s=28, zorder=3, label=f"{name} levels")
        ax.scatter(np.full(len(v), -1.08 - 0.06 * i), norm.cdf(v * z_at_one), marker="_", s=60,
                   color=dots.get_facecolor())
    ax.legend(fontsize=8, loc="lower right")
    return fig


def code_usage(codes: dict, levels: dict, title: str = "") -> plt.Figure:
    """How often each level is used, levels sorted by value (notebook 3); ``codes`` are 0..15 per weight."""
    fig, ax = _figure(title or "how often each of the 16 levels is used",
                      "level, from most negative (0) to most positive (15)", "weights using it (%)")
    shares = {name: np.bincount(_tensor(codes[name]).astype(int), minlength=16)[np.argsort(_tensor(levels[name]))]
              for name in codes}
    pd.DataFrame({name: 100 * c / c.sum() for name, c in shares.items()}).plot.bar(ax=ax, width=0.8, rot=0)
    ax.axhline(100 / 16, color="grey", linestyle="--", linewidth=1, label="1/16 each")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return fig


def score_strips(scores: dict, labels, class_names=("label 0", "label 1"), title: str = "") -> plt.Figure:
    """One row of dots per model: each example's logit, coloured by its true label (notebook 6)."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(0)  # vertical jitter only, so the figure is the same every run
    fig, ax = _figure(title, "head logit (> 0 predicts label 1)")
    for row, values in enumerate(scores.values()):
        for cls, color in zip((0, 1), ("tab:red", "tab:blue")):
            pick = labels == cls
            ax.scatter(np.asarray(values)[pick], row + 0.18 * (cls - 0.5) + rng.uniform(-0.07, 0.07, pick.sum()), s=6,
                       alpha=0.5, color=color, label=class_names[cls] if row == 0 else None)
    ax.axvline(0, color="grey", linestyle="--", linewidth=1)
    ax.set_yticks(range(len(scores)), list(scores))
    ax.legend(fontsize=8, loc="lower right", markerscale=2)
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


def _stacked_barh(ax, frame: pd.DataFrame, xlabel: str, colors=None) -> None:
    """Horizontal stacked bars, one per row of ``frame`` (first row on top), one segment per column."""
    frame.fillna(0.0).plot.barh(stacked=True, ax=ax, width=0.8, color=colors, legend=False, xlabel=xlabel)
    ax.invert_yaxis()


def memory_phases(rows: list[dict], capacity_gib: float | None = None, capacity_label: str = "",
                  title: str = "", ymax: float | None = None) -> plt.Figure:
    """Stacked bars per phase from ``memory.phase_segments`` rows, with the device's capacity as a line (notebook 5).

    Bars under 1 GiB (the tiny profile) are drawn in MiB. ``ymax`` (GiB) fixes the scale, so that two
    GPUs' figures compare at a glance; a capacity above it is named at the top instead of drawn.
    """
    phases = list(dict.fromkeys(r["phase"] for r in rows))  # segments stack in each phase's own order
    top = max(sum(r["GiB"] for r in rows if r["phase"] == p) for p in phases)
    unit, scale = ("MiB", 1024) if top < 1 and capacity_gib is None else ("GiB", 1)
    fig, ax = _figure(title, "", f"{unit} (2**{30 if unit == 'GiB' else 20} bytes)")
    bottom, seen = dict.fromkeys(phases, 0.0), set()
    for r in rows:  # bottom-up within each phase; a segment named once in the legend
        ax.bar(r["phase"].replace("_", " "), r["GiB"] * scale, bottom=bottom[r["phase"]], width=0.6, edgecolor="white",
               linewidth=0.5, label=None if r["segment"] in seen else r["segment"],
               color=PHASE_COLORS.get(r["segment"], "#DD8452"))
        seen.add(r["segment"])
        bottom[r["phase"]] += r["GiB"] * scale
    label = capacity_label or (f"capacity {capacity_gib:.1f} GiB" if capacity_gib is not None else "")
    if capacity_gib is not None and (ymax is None or capacity_gib <= ymax):
        ax.axhline(capacity_gib, color="red", linestyle="--", linewidth=1.2, label=label)
    elif capacity_gib is not None:
        ax.annotate(f"{label}: above this scale", (0.99, 0.97), xycoords="axes fraction", ha="right", va="top",
                    fontsize=7, color="red")
    if ymax is not None or capacity_gib is not None:  # room for the legend above the capacity line
        ax.set_ylim(0, (ymax if ymax is not None else 1.45 * max(capacity_gib, top)) * scale)
    ax.tick_params(axis="x", labelsize=7, labelrotation=20)
    ax.legend(fontsize=7, loc="upper left")
    return fig


def _capacity_labels(capacities: dict | None, limit: float) -> dict:
    """GPU capacities below ``limit``, as {GiB: "name / name"} (cards with the same capacity share a line)."""
    caps = capacities or {}
    return {cap: " / ".join(g for g, c in caps.items() if c == cap)
            for cap in dict.fromkeys(caps.values()) if cap < limit}


def memory_components(estimates: dict, capacities: dict | None = None, title: str = "",
                      xmax: float | None = None) -> plt.Figure:
    """Horizontal stacked bars, one per configuration, from ``memory.estimate_*`` dicts (GiB per component).

    ``capacities`` (name -> GiB) are drawn as vertical lines: a bar that crosses a line does not fit that GPU.
    ``xmax`` fixes the axis (the explorer keeps it still while the sliders move).
    """
    fig, ax = _figure(figsize=(7.5, max(2.6, 0.45 * len(estimates) + 1.7)))
    frame = pd.DataFrame.from_dict(estimates, orient="index").reindex(columns=list(MEMORY_COLORS))
    frame = frame.loc[:, (frame > 0).any()]
    _stacked_barh(ax, frame.rename(columns=lambda c: c.replace("_", " ")), "GiB at the peak (estimated)",
                  [MEMORY_COLORS[c] for c in frame])
    xmax = xmax or 1.6 * frame.sum(axis=1).max()
    shown = _capacity_labels(capacities, xmax)
    for cap in shown:
        ax.axvline(cap, color="red", linestyle="--", linewidth=1)
    ax.secondary_xaxis("top").set_xticks(list(shown), list(shown.values()), fontsize=7, color="red", rotation=30,
                                         ha="left")
    ax.set_xlim(0, xmax)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return fig


def fits_heatmap(headroom, tight_gib: float = 1.0, title: str = "") -> plt.Figure:
    """GiB left per configuration (rows) and GPU (columns): red does not fit, amber is tight, green fits (notebook 5)."""
    import seaborn as sns
    from matplotlib.colors import BoundaryNorm, ListedColormap

    fig, ax = _figure(figsize=(6.5, 0.42 * len(headroom) + 1.4))
    sns.heatmap(headroom, annot=True, fmt=".1f", cmap=ListedColormap(["#E07B7B", "#F2C85B", "#7BC47F"]), cbar=False,
                norm=BoundaryNorm([-1e9, 0, tight_gib, 1e9], 3), ax=ax, linewidths=0.5, annot_kws={"fontsize": 7})
    ax.set(xlabel=f"GPU (cells: GiB left; red < 0 does not fit, amber < {tight_gib:g} is tight)", ylabel="",
           title=title or "memory left after a training step")
    ax.tick_params(labelsize=7)
    return fig


def measured_branches(grid: dict, table, title: str = "") -> plt.Figure:
    """A grid file's unpadded AdamW steps against micro-batch size: peak GiB (dots measured, lines estimated)
    and seconds per step, one colour per recipe (notebook 5). ``table``: ``memory.grid_table(grid)``, same rows."""
    fig, (mem, sec) = plt.subplots(1, 2, figsize=(10, 3.6), layout="tight")
    recipes = {}
    for r, (_, row) in zip(grid["grid"], table.iterrows()):
        if not (r["padded"] or r["optimizer"] != "adamw" or r.get("upcast_fp32")):
            name = ("tutorial loss" if r["logits"] == "all" else "label logits") + " + checkpointing" * r["checkpointing"]
            spread = r.get("all_step_s", [r["step_s"]])
            recipes.setdefault(name, []).append((r["batch_size"], row["measured GiB"], row["estimated GiB"],
                                                 r["step_s"], r["step_s"] - min(spread), max(spread) - r["step_s"]))
    for i, (name, points) in enumerate(recipes.items()):
        b, measured, estimated, seconds, low, high = zip(*sorted(points))
        mem.plot(b, estimated, color=f"C{i}", linewidth=1, label=name)
        mem.plot(b, measured, "o", color=f"C{i}", markersize=5)
        sec.errorbar(b, seconds, yerr=[low, high], fmt="o-", color=f"C{i}", markersize=5, capsize=3, label=name)
    for ax in (mem, sec):
        ax.set_xscale("log", base=2)
        ax.set(xticks=[4, 8, 16, 32], xticklabels=["4", "8", "16", "32"],
               xlabel="micro-batch (rows of 86 tokens; log scale)")
    mem.set_ylabel("GiB at the peak (dots measured, lines estimated)")
    sec.set(ylabel="seconds per training step\n(median of 3; bars: min to max)", ylim=(0, None))
    mem.legend(fontsize=7, loc="upper left")
    sec.legend(fontsize=7, loc="lower right")
    fig.suptitle(title)
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
    import io

    from IPython.display import Image, display

    from .memory import estimate_training_memory

    settings = {"batch_size": 8, "seq_len": 86, "lora_r": 8, "grad_checkpointing": False, "logits": "all",
                "optimizer": "adamw", "double_quant": False, **defaults}

    def draw(values: dict):
        """The figure as a PNG image: displays the same under every backend (a Figure under Agg shows its repr)."""
        est = estimate_training_memory(config, **values)
        fig = memory_components({"this setting": est}, capacities, xmax=1.08 * max(capacities.values()),
                                title=f"peak {est['total']:.1f} GiB: batch {values['batch_size']}, seq {values['seq_len']}")
        fig.savefig(buffer := io.BytesIO(), format="png", dpi=100, bbox_inches="tight")
        plt.close(fig)
        return Image(data=buffer.getvalue(), format="png")

    import ipywidgets as w  # a dependency: Colab ships version 7, which display_widget speaks
    controls = {"batch_size": w.IntSlider(value=settings["batch_size"], min=1, max=64, description="batch"),
                "seq_len": w.IntSlider(value=settings["seq_len"], min=16, max=2048, step=16, description="seq len"),
                "lora_r": w.IntSlider(value=settings["lora_r"], min=1, max=128, description="LoRA r"),
                "grad_checkpointing": w.Checkbox(value=settings["grad_checkpointing"], description="checkpointing"),
                "logits": w.ToggleButtons(options=["all", "label"], value=settings["logits"], description="logits"),
                "optimizer": w.ToggleButtons(options=["adamw", "adamw8bit"], value=settings["optimizer"], description="Adam"),
                "double_quant": w.Checkbox(value=settings["double_quant"], description="double quant")}
    display_widget(w.VBox(list(controls.values())),
                   "(sliders: open the notebook in Jupyter or Colab to move them; the figure shows the defaults)")
    handle = display(draw(settings), display_id=True)

    def redraw(_change) -> None:
        handle.update(draw({**settings, **{k: c.value for k, c in controls.items()}}))

    for c in controls.values():
        c.observe(redraw, names="value")
