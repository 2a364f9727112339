"""Every notebook has its py:percent twin, they agree, and the committed .ipynb is clean."""

import re
from pathlib import Path

import jupytext
import nbformat
import pytest

import lmcls_helpers

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
TWINS = sorted((ROOT / "nbs_src").glob("*.py"))


def test_there_are_notebooks():
    assert NOTEBOOKS, "notebooks/ is empty"


def test_every_notebook_has_a_twin_and_back():
    assert [p.stem for p in NOTEBOOKS] == [p.stem for p in TWINS], "run `make sync` (jupytext --sync nbs_src/*.py)"


@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_and_twin_agree(nb_path):
    twin = jupytext.read(ROOT / "nbs_src" / f"{nb_path.stem}.py")
    nb = nbformat.read(nb_path, as_version=4)
    ours = [(c.cell_type, c.source.strip()) for c in nb.cells]
    theirs = [(c.cell_type, c.source.strip()) for c in twin.cells]
    assert ours == theirs, f"{nb_path.name} differs from nbs_src/{nb_path.stem}.py: run `make sync`"


@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_notebook_is_clean(nb_path):
    nb = nbformat.read(nb_path, as_version=4)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [], f"cell {i} of {nb_path.name} has outputs: strip them"
            assert cell.execution_count is None, f"cell {i} of {nb_path.name} has an execution count"
        assert set(cell.metadata) <= {"tags"}, f"cell {i} of {nb_path.name} carries metadata {set(cell.metadata)}"
    assert set(nb.metadata) <= {"kernelspec", "jupytext"}, f"{nb_path.name} notebook metadata: {set(nb.metadata)}"
    assert "widgets" not in nb.metadata


@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_opens_with_its_badge_and_install(nb_path):
    nb = nbformat.read(nb_path, as_version=4)
    first, install = nb.cells[0], nb.cells[1]
    assert first.cell_type == "markdown" and first.source.startswith("# ")
    assert lmcls_helpers.colab_badge(nb_path.stem) in first.source, f"{nb_path.name}: badge disagrees with lmcls_helpers.REPO"
    assert lmcls_helpers.REPO in install.source and "google.colab" in install.source
    for line in install.source.splitlines():
        if "git+https://github.com/" in line:
            assert f"git+https://github.com/{lmcls_helpers.REPO}.git@{lmcls_helpers.BRANCH}" in line


def test_readme_badges_agree_with_the_repository_constant():
    readme = (ROOT / "README.md").read_text()
    urls = re.findall(r"https://colab\.research\.google\.com/github/[^)\s\"]+", readme)
    assert urls, "README has no Colab badges"
    for url in urls:
        stem = url.rsplit("/", 1)[-1].removesuffix(".ipynb")
        assert url == lmcls_helpers.colab_url(stem), f"README badge {url} disagrees with lmcls_helpers.REPO"
    for nb_path in NOTEBOOKS:
        assert lmcls_helpers.colab_url(nb_path.stem) in readme, f"README lacks the badge of {nb_path.name}"


def test_colab_installs_the_pinned_versions_it_lacks():
    from test_packaging import constraint_pins

    pins = constraint_pins()
    for spec in lmcls_helpers.COLAB_PACKAGES:
        name, version = spec.split("==")
        assert pins[name] == version, f"COLAB_PACKAGES pins {spec}, constraints.txt {name}=={pins[name]}"
    for nb_path in NOTEBOOKS:
        install = nbformat.read(nb_path, as_version=4).cells[1].source
        assert re.findall(r"([\w.-]+==[\w.]+)", install) == list(lmcls_helpers.COLAB_PACKAGES), nb_path.name
        assert "--no-deps" in install, f"{nb_path.name}: installing our pins over Colab's packages breaks its kernel"


def test_first_code_cell_chooses_the_profile():
    for nb_path in NOTEBOOKS:
        cells = nbformat.read(nb_path, as_version=4).cells
        assert cells[1].source.startswith("PROFILE = None"), f"{nb_path.name}: the first code cell sets PROFILE"
        assert any(f"course.start(\"{nb_path.stem}\", PROFILE)" in c.source for c in cells[2:4]), f"{nb_path.name} ignores PROFILE"
