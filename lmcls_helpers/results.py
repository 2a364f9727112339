"""Headline numbers: each notebook records them, ``make run`` prints them as one table.

Files go to ``build/results/<notebook>.json`` under the repository root (``paths.repo_root``),
whatever directory the notebook runs from.
"""

from __future__ import annotations

import json
import math
import re
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


def load_all() -> dict[str, dict[str, Any]]:
    """Every notebook's recorded numbers, by notebook stem."""
    folder = build_dir("results")
    return {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))}


def summary_table() -> str:
    """All recorded numbers as one plain-text table (what ``make run`` prints at the end)."""
    rows = []
    for notebook, values in load_all().items():
        for key, value in values.items():
            shown = f"{value:.4g}" if isinstance(value, float) else json.dumps(value) if isinstance(value, (dict, list)) else str(value)
            rows.append((notebook, key, shown))
    if not rows:
        return "(no results recorded yet)"
    widths = [max(len(r[i]) for r in rows + [("notebook", "key", "value")]) for i in range(3)]
    lines = [" | ".join(h.ljust(w) for h, w in zip(("notebook", "key", "value"), widths))]
    lines.append("-+-".join("-" * w for w in widths))
    lines += [" | ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    return "\n".join(lines)


#: What must never reach a reader's output: object reprs and stray return values that say nothing.
UNREADABLE = ("<torch._C.Generator", "<Figure size", "PosixPath(", " object at 0x", "<matplotlib.")
#: A progress bar's first frame ("scoring:   0%|          | 0/8 [00:00<?, ?it/s]"): all a static page keeps of it.
PROGRESS_FRAME = re.compile(r"\d+%\|.*\| *\d+/\d+ \[")


#: A number that prose quotes from a run: a decimal or a percentage ("0.291", "-0.66", "57.78%").
#: Plain integers are left alone: in prose they are mostly sizes and counts ("16 pads", "50 steps").
QUOTED = re.compile(r"(?<![\w.])[-−]?\d+(?:\.\d+)?%|(?<![\w.])[-−]?\d+\.\d+(?![\d])")
PRINTED = re.compile(r"[-−]?\d+(?:\.\d+)?(?:e[-+]?\d+)?%?")


def _value(token: str) -> tuple[float, int]:
    """A quoted number as (value, decimals), percentages as fractions: "57.8%" -> (0.578, 3)."""
    token = token.replace("\u2212", "-")
    percent = token.endswith("%")
    digits = token.rstrip("%")
    decimals = len(digits.split(".")[1]) if "." in digits else 0
    return (float(digits) / 100, decimals + 2) if percent else (float(digits), decimals)


#: Words that make a number a bound, not a quote ("within about 0.05", "less than 10%").
BOUND = re.compile(r"(?:within|under|below|above|over|at most|at least|less than|more than)\s+(?:about\s+)?$")


def unprinted_quotes(cells: list[dict], world: str = "tiny") -> list[tuple[int, str]]:
    """(cell index, problem) for each number a markdown sentence quotes for ``world`` but no output printed.

    Prose quotes the tiny profile's numbers ("on the tiny profile this run printed 0.291") so that a
    reader on another profile can compare. When an upstream change moves them, every cell still
    passes and the sentence goes stale. A quote matches any printed number that rounds to it (a
    fraction printed and a percentage quoted count as the same number); a bound ("within 0.05") is
    not a quote. Only a notebook executed on ``world`` is checked: other profiles print other numbers.
    """
    printed_text = "\n".join("".join(o.get("text", "")) + "".join(o.get("data", {}).get("text/plain", ""))
                              for c in cells if c["cell_type"] == "code" for o in c.get("outputs", []))
    if f"profile: {world} " not in printed_text:
        return []
    printed = {_value(t)[0] for t in PRINTED.findall(printed_text)}
    problems = []
    for index, cell in enumerate(cells):
        if cell["cell_type"] != "markdown":
            continue
        for sentence in re.split(r"(?<=[.;:!?])\s+", "".join(cell["source"]).replace("\n", " ")):
            if f"{world} profile" not in sentence:
                continue
            for match in QUOTED.finditer(sentence):
                if BOUND.search(sentence[: match.start()]):
                    continue
                value, decimals = _value(match.group())
                if not any(round(p, decimals) == round(value, decimals) for p in printed):
                    problems.append((index, f"cell {index} quotes {match.group()}, which no output printed: "
                                            f"{sentence.strip()[:140]!r}"))
    return problems


def check_executed(folder: Path, figures: Path | None = None) -> list[str]:
    """Problems in executed notebooks (``make run``): missing inline figures, machine paths, object reprs,
    progress bars, and tiny-profile numbers in the prose that the run did not print (:func:`unprinted_quotes`).

    A notebook must show at least as many PNGs inline as it saved under ``build/figures/`` (files
    named after its number, like ``02_*.png``); no output may name the checkout's absolute path.
    """
    figures = build_dir("figures") if figures is None else figures
    root = str(build_dir().parent)
    problems = []
    for path in sorted(Path(folder).glob("*.ipynb")):
        cells = json.loads(path.read_text())["cells"]
        outputs = [o for c in cells if c["cell_type"] == "code" for o in c.get("outputs", [])]
        shown = sum("image/png" in o.get("data", {}) for o in outputs)
        saved = len(list(figures.glob(f"{path.stem.split('_')[0]}_*.png")))
        if shown < saved:
            problems.append(f"{path.name}: {shown} inline figure(s) but {saved} saved under {figures.name}/")
        for o in outputs:
            text = "".join(o.get("text", "")) + "".join(o.get("data", {}).get("text/plain", ""))
            for bad in (root, *UNREADABLE):
                if bad in text:
                    problems.append(f"{path.name}: an output shows {bad!r}: {text.strip()[:120]!r}")
            if PROGRESS_FRAME.search(text):
                problems.append(f"{path.name}: an output is a progress bar's frame (is TQDM_DISABLE=1 honoured?): "
                                f"{text.strip()[:80]!r}")
        problems += [f"{path.name}: {p}" for _, p in unprinted_quotes(cells)]
    return problems


if __name__ == "__main__":
    import sys

    if sys.argv[1:2] == ["--check"]:
        found = check_executed(Path(sys.argv[2]))
        print("\n".join(found) or f"executed notebooks in {sys.argv[2]}: every figure inline, no paths or reprs, "
              "every quoted tiny-profile number printed")
        sys.exit(1 if found else 0)
    print(summary_table())
