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
