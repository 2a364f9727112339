"""How pytest shares two cores: one torch thread per worker, the longest files first (issue 16).

pyproject.toml runs the suite on up to four xdist workers (two on a 2-core machine), one file per
worker at a time. Two workers that each ask torch for every core fight over them and both slow
down many times over, so each worker, and every notebook kernel it starts, gets one thread. And
since a file cannot be split between workers, the suite ends when its longest file ends: the
notebooks (the later ones train more) go out first, the unit tests fill in around them.
"""

from __future__ import annotations

import os
from pathlib import Path

import lmcls_helpers  # noqa: F401  first: it pins torch's and MKL's CPU code path, for workers and kernels too


def pytest_configure(config) -> None:
    if os.environ.get("PYTEST_XDIST_WORKER"):  # a worker process; its notebook kernels inherit the variable
        os.environ["OMP_NUM_THREADS"] = "1"
        import torch

        torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items) -> None:
    """Notebooks before unit tests, and among notebooks the highest number first."""
    notebooks = sorted({item.path.name for item in items if item.path.suffix == ".ipynb"}, reverse=True)
    rank = {name: i for i, name in enumerate(notebooks)}
    items.sort(key=lambda item: rank.get(item.path.name, len(notebooks)))  # stable: unit tests keep their order


def pytest_sessionstart(session) -> None:
    """nbmake checks that a notebook runs; we also check that its prose quotes what it printed,
    and that its recorded numbers meet its profile's expectations.

    A sentence like "on the tiny profile this run printed 0.291" goes stale, with every cell still
    passing, when an upstream change moves the number. ``lmcls_tools.report.unprinted_quotes`` finds such
    quotes in the executed notebook, and the notebook's test fails on them like on a failing cell.
    Then ``tests/expectations.py`` reads what the notebook recorded (``build/results/<stem>.json``)
    and fails it where a number misses the bound set for the profile it ran under (``LMCLS_PROFILE``).
    """
    try:
        from nbmake.nb_result import NotebookError
        from nbmake.nb_run import NotebookRun
    except ImportError:  # nbmake not installed: no notebooks to check
        return
    if getattr(NotebookRun.execute, "checks_prose", False):
        return
    execute = NotebookRun.execute

    def execute_and_check_prose(self):
        result = execute(self)
        if result.error is None:
            from lmcls_tools.report import unprinted_quotes, unreadable_outputs

            stale = unprinted_quotes(result.nb.cells) + unreadable_outputs(result.nb.cells)
            if stale:
                summary = f"{len(stale)} number(s) in the prose that the run did not print, or unreadable output(s)"
                trace = "\n".join(p for _, p in stale) + "\nUpdate the prose in nbs_src/ to the run's numbers."
                result.error = NotebookError(summary=summary, trace=trace, failing_cell_index=stale[0][0])
        if result.error is None:
            missed = _expectations().unmet(Path(self.filename).stem, os.environ.get("LMCLS_PROFILE") or "tiny")
            if missed:
                summary = f"{len(missed)} recorded number(s) missed this profile's expectations"
                trace = "\n".join(m for _, m in missed) + "\nThe bounds are in tests/expectations.py."
                result.error = NotebookError(summary=summary, trace=trace,
                                             failing_cell_index=_recording_cell(result.nb.cells, missed[0][0]))
        return result

    def _expectations():
        """``tests/expectations.py``, loaded by path: under ``pytest notebooks`` alone (``make test-colab``)
        the name ``tests`` is not importable as a package."""
        import importlib.util
        import sys

        if "lmcls_expectations" not in sys.modules:
            path = Path(__file__).parent / "tests" / "expectations.py"
            spec = importlib.util.spec_from_file_location("lmcls_expectations", path)
            sys.modules[spec.name] = importlib.util.module_from_spec(spec)  # before running it: dataclasses look it up
            spec.loader.exec_module(sys.modules[spec.name])
        return sys.modules["lmcls_expectations"]

    def _recording_cell(cells, key: str) -> int:
        """The first code cell that names ``key`` in quotes (where it is recorded), else the last cell."""
        for index, cell in enumerate(cells):
            if cell["cell_type"] == "code" and any(f"{q}{key}{q}" in "".join(cell["source"]) for q in "\"'"):
                return index
        return len(cells) - 1

    execute_and_check_prose.checks_prose = True
    NotebookRun.execute = execute_and_check_prose
