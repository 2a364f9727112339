"""Headline numbers: each notebook records them, ``make run`` prints them (``lmcls_build.report``).

Files go to ``build/results/<notebook>.json`` under the repository root (``paths.repo_root``),
whatever directory the notebook runs from.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from .paths import build_dir

_current: dict[str, str] = {}


def start(notebook: str) -> Path:
    """Name the notebook whose numbers follow (its file stem) and clear its old results."""
    if not notebook or "/" in notebook or notebook.endswith(".ipynb"):
        raise ValueError(f"Give the notebook's stem, like '02_prompt_scoring', not {notebook!r}.")
    _current["notebook"] = notebook
    path = results_path(notebook)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("{}\n")
    return path


def results_path(notebook: str) -> Path:
    return build_dir("results", f"{notebook}.json")


def _plain(value: Any) -> Any:
    """Make numpy / torch scalars and nested containers JSON-ready; NaN is an error, not a result."""
    if hasattr(value, "item") and callable(value.item):
        value = value.item()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"Refusing to record a non-finite number ({value}); something upstream went wrong.")
    if not isinstance(value, (str, int, float, bool, type(None))):
        raise ValueError(f"Cannot record a {type(value).__name__}; record numbers, strings, lists or dicts.")
    return value


def record(key: str, value: Any, notebook: str | None = None) -> Any:
    """Store ``value`` under ``key`` for the current notebook (see :func:`start`) and return it."""
    notebook = notebook or _current.get("notebook")
    if notebook is None:
        raise ValueError("No notebook named yet: call results.start('<notebook stem>') first.")
    path = results_path(notebook)
    data = json.loads(path.read_text()) if path.exists() else {}
    data[key] = _plain(value)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    return value
