"""Run the notebooks' own Colab cell, as Colab would, in the current (Colab-like) environment.

`make test-colab` calls this after installing ``colab/requirements.txt``. It reads the second cell
of every notebook (the profile choice and the Colab-only installs), checks that all notebooks carry
the same one, and executes it with a stand-in ``google.colab`` module, so the very code a student
runs does the installing: the cell and this test cannot drift apart. One thing is swapped: the
package is installed from this checkout instead of the repository URL, so a change is tested
before it is pushed. The installs are timed; the seconds go to ``build/colab/install.json``.

    python colab/run_install_cell.py
"""

from __future__ import annotations

import json
import sys
import time
import types
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent


def colab_cell() -> str:
    """The second cell, the same in every notebook (else a ``ValueError`` naming the one that differs)."""
    cells = {nb.stem: nbformat.read(nb, as_version=4).cells[1].source for nb in sorted((ROOT / "notebooks").glob("*.ipynb"))}
    first_stem, first = next(iter(cells.items()))
    install = first[first.index("import subprocess"):]
    for stem, source in cells.items():
        if install not in source:
            raise ValueError(f"{stem}'s Colab cell differs from {first_stem}'s: make them the same, then `make sync`.")
    return install


def main() -> None:
    sys.path.insert(0, str(ROOT))
    import lmcls_helpers

    url = f"git+https://github.com/{lmcls_helpers.REPO}.git@{lmcls_helpers.BRANCH}"
    cell = colab_cell()
    if url not in cell:
        raise ValueError(f"the Colab cell does not install {url} (lmcls_helpers.REPO): fix the cell or the constant.")
    sys.path.remove(str(ROOT))
    sys.modules["google"] = types.ModuleType("google")
    sys.modules["google.colab"] = types.ModuleType("google.colab")  # what the cell looks for
    started = time.perf_counter()
    exec(compile(cell.replace(url, str(ROOT)), "<the notebooks' Colab cell>", "exec"), {"__name__": "__main__"})
    seconds = time.perf_counter() - started
    out = ROOT / "build" / "colab" / "install.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"install_s": round(seconds, 1), "python": sys.version.split()[0]}, indent=2) + "\n")
    print(f"the notebooks' Colab cell installed its packages in {seconds:.0f} s ({out.relative_to(ROOT)})")


if __name__ == "__main__":
    main()
