"""Time every notebook on the tiny profile, cell by cell, and print the slowest cells.

    python -m benchmarks.notebook_times [--top 10] [notebooks/02_prompt_scoring.ipynb ...]

Runs each notebook in a fresh kernel from ``notebooks/`` (as nbmake does) with nbclient, records
each cell's wall time, and prints per-notebook totals and the ``--top`` slowest cells overall.
The suite budget is 5 minutes in all on 2 cores (target 3); this shows where the time goes.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

from lmcls_helpers.paths import build_dir, repo_root


def time_notebook(path: Path) -> tuple[float, list[tuple[float, int, str]]]:
    """Wall time of the whole notebook and of each code cell: (seconds, index, first line)."""
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}})
    cells = []
    start = time.perf_counter()
    with client.setup_kernel():
        for index, cell in enumerate(nb.cells):
            if cell.cell_type != "code":
                continue
            t0 = time.perf_counter()
            client.execute_cell(cell, index)
            first = next((line for line in cell.source.splitlines() if line.strip() and not line.startswith("#")), "")
            cells.append((time.perf_counter() - t0, index, first[:70]))
    return time.perf_counter() - start, cells


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", type=Path)
    parser.add_argument("--top", type=int, default=10)
    args = parser.parse_args(argv)
    paths = args.notebooks or sorted((repo_root() / "notebooks").glob("*.ipynb"))
    totals, slow = {}, []
    for path in paths:
        total, cells = time_notebook(path)
        totals[path.stem] = total
        slow += [(s, path.stem, i, src) for s, i, src in cells]
        print(f"{path.stem:32} {total:7.1f} s")
    print(f"{'all notebooks':32} {sum(totals.values()):7.1f} s\n\nslowest cells:")
    for seconds, stem, index, source in sorted(slow, reverse=True)[: args.top]:
        print(f"{seconds:7.1f} s  {stem} cell {index}: {source}")
    out = build_dir("bench", "notebook_times.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"totals": totals, "slowest": sorted(slow, reverse=True)[: args.top]}, indent=2) + "\n")
    return totals


if __name__ == "__main__":
    main()
