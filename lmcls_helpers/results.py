"""Headline numbers: each notebook records them, ``make run`` prints them (``lmcls_tools.report``).

Files go to ``build/results/<notebook>.json`` under the repository root (``paths.repo_root``),
whatever directory the notebook runs from.
"""

from __future__ import annotations

import json
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


def _item(value: Any) -> Any:
    """numpy / torch scalars as plain numbers, for ``json.dumps``; nothing else is a result."""
    if hasattr(value, "item") and callable(value.item):
        return value.item()
    raise TypeError(f"Cannot record a {type(value).__name__}; record numbers, strings, lists or dicts.")


def record(key: str, value: Any, notebook: str | None = None) -> Any:
    """Store ``value`` under ``key`` for the current notebook (see :func:`start`) and return it."""
    notebook = notebook or _current.get("notebook")
    if notebook is None:
        raise ValueError("No notebook named yet: call results.start('<notebook stem>') first.")
    path = results_path(notebook)
    data = json.loads(path.read_text()) if path.exists() else {}
    try:  # through JSON and back: numpy / torch scalars become numbers, keys strings, NaN an error
        data[key] = json.loads(json.dumps(value, default=_item, allow_nan=False))
    except ValueError as err:
        raise ValueError(f"Refusing to record {key!r} ({err}): a non-finite number means something upstream went wrong.") from err
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    return value
