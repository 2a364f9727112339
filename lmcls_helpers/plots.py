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


def padding_layout(batch, tokenizer, marks=None, title: str = "") -> plt.Figure:
    """The attention mask of a padded batch as a grid, each cell labelled with its token (notebook 1).

    ``marks`` (one position per row, e.g. ``last_token_index``) are outlined in red.
    """
    import numpy as np

    mask = batch["attention_mask"].numpy()
    pieces = [tokenizer.convert_ids_to_tokens(row) for row in batch["input_ids"].tolist()]
    fig, ax = plt.subplots(figsize=(min(1.0 + 0.62 * mask.shape[1], 12), 0.45 * len(mask) + 1.1))
    ax.imshow(mask, cmap="Greens", vmin=-0.6, vmax=1.4, aspect="auto")
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
    ax.set_title(title or f"padding side = {tokenizer.padding_side} (green: real tokens, white: padding)")
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


def bar_chart(values: dict, xlabel: str, title: str, reference: dict | None = None) -> plt.Figure:
    """Horizontal bars, one per named value, optionally with reference values as markers (notebook 2)."""
    names = list(values)
    fig, ax = plt.subplots(figsize=SMALL)
    ax.barh(names, [values[n] for n in names], color="tab:blue", label="this run")
    if reference:
        ref = [(i, reference[n]) for i, n in enumerate(names) if n in reference]
        ax.scatter([v for _, v in ref], [i for i, _ in ref], color="tab:red", marker="D", zorder=3, label="reference")
        ax.legend(loc="lower right", fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    fig.tight_layout()
    return fig
