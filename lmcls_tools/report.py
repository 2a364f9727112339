"""What ``make run`` and the notebook tests check and print after the notebooks ran.

``unprinted_quotes``: numbers that a notebook's prose quotes from a tiny-profile run but that no
output printed (the root ``conftest.py`` fails a notebook's test on them). ``check_executed``: that
check, plus inline figures, machine paths, object reprs and progress bars, over executed
notebooks. ``summary``: one line per notebook with its headline numbers, read from the
``build/results/*.json`` files that notebooks write through ``lmcls_helpers.results.record``.

``python -m lmcls_tools.report build/executed`` runs the check and prints the summary: the end of
``make run``, at most 25 lines of at most 100 characters when the check passes.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

from lmcls_helpers.paths import build_dir

WIDTH = 100
#: The numbers ``make run`` shows per notebook (by its number); a notebook not named here shows its first ones.
HEADLINES = {
    "01": ("llama3_label_ids", "llama3_prompt_tokens"),
    "02": ("fewshot_dev_mcc", "fewshot_ood_mcc", "fewshot_dev_accuracy"),
    "03": ("nf4_mean_abs_error", "fp4_mean_abs_error", "nf4_perplexity_rise"),
    "04": ("fewshot_ood_mcc", "finetuned_ood_mcc", "finetuned_gain_mcc", "resume_matches"),
    "05": ("nf4_8b_weights_gib", "estimator_max_rel_error", "t4_tutorial_step_estimated_gib"),
    "06": ("head_last_real_mcc", "head_position_minus1_mcc", "head_bug_margin_mcc"),
    "07": ("fewshot_mcc", "label_words_mcc", "head_mcc", "seqcls_mcc"),
    "08": ("words_macro_f1", "head_macro_f1", "fewshot_macro_f1_sum"),
    "09": ("words_reload_max_prob_diff", "head_cli_max_prob_diff", "lost_head_same_prediction", "merged_same_prediction"),
}


def load_all(folder: Path | None = None) -> dict[str, dict[str, Any]]:
    """Every notebook's recorded numbers, by notebook stem (from ``build/results/`` unless ``folder``)."""
    folder = build_dir("results") if folder is None else Path(folder)
    return {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))}


def _shown(value: Any) -> str | None:
    """A headline value as a few characters; None for what does not fit on a line (tables, long lists)."""
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, (bool, int, str)):
        return str(value)
    if isinstance(value, list) and len(value) <= 4 and all(isinstance(v, (int, float)) for v in value):
        return "/".join(_shown(v) for v in value)
    return None


def summary(folder: Path | None = None, width: int = WIDTH) -> list[str]:
    """One line per notebook, ``width`` characters at most: its stem, then its headline numbers as ``key value``."""
    lines, recorded = [], load_all(folder)
    column = min(30, max(map(len, recorded), default=0))
    for notebook, values in recorded.items():
        line = f"{notebook[:column]:{column}}"
        for key in HEADLINES.get(notebook.split("_")[0]) or list(values):
            shown = _shown(values.get(key))
            if shown is not None and len(line) + len(key) + len(shown) + 3 <= width:  # else the next may fit
                line += f"  {key} {shown}"
        lines.append(line)
    return lines or ["(no results recorded yet)"]


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


def unreadable_outputs(cells: list[dict]) -> list[tuple[int, str]]:
    """(cell index, problem) for each output that shows an object's repr (a Generator, a Figure) instead of a result."""
    return [(index, f"cell {index} shows {bad!r}: end the cell with a statement, or assign the value to _")
            for index, cell in enumerate(cells) if cell["cell_type"] == "code" for o in cell.get("outputs", [])
            for bad in UNREADABLE if bad in "".join(o.get("text", "")) + "".join(o.get("data", {}).get("text/plain", ""))]


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


def main(argv: list[str] | None = None) -> int:
    """Check the executed notebooks in ``argv[0]`` (default ``build/executed``), then print the summary."""
    argv = sys.argv[1:] if argv is None else argv
    executed = Path(argv[0] if argv else build_dir("executed"))
    found = check_executed(executed)
    print("\n".join(found) if found else "check: every figure inline, no paths or reprs, every quoted number printed")
    print("\n".join(summary()))
    for what, path in (("executed notebooks", executed), ("figures", build_dir("figures")),
                       ("results (JSON)", build_dir("results"))):
        try:
            path = Path(path).resolve().relative_to(Path.cwd())
        except ValueError:
            pass
        print(f"{what + ':':20}{path}/"[:WIDTH])
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
