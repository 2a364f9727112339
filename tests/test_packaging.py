"""pyproject.toml declares ranges, constraints.txt and environment.yml the same exact pins within them,
and the Colab environment names every package the notebooks import; CI runs what the README shows."""

import ast
import re
import sys
from pathlib import Path

import tomllib
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent


def pyproject_requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = project["dependencies"] + [r for group in project["optional-dependencies"].values() for r in group]
    return [Requirement(r) for r in reqs]


def pins(path: Path) -> dict[str, str]:
    """``name==version`` lines of a requirements or constraints file (or environment.yml's pip list)."""
    found = re.findall(r"^[\s-]*([A-Za-z0-9_.\-]+)==([^\s#]+)", path.read_text(), flags=re.M)
    return {name.lower().replace("_", "-"): version for name, version in found}


def constraint_pins() -> dict[str, str]:
    return pins(ROOT / "constraints.txt")


def test_every_dependency_has_a_lower_bound_and_an_exact_pin_inside_it():
    exact = constraint_pins()
    for req in pyproject_requirements():
        assert any(s.operator == ">=" for s in req.specifier), f"{req}: declare the oldest supported version"
        assert req.name in exact, f"{req.name} has no exact pin in constraints.txt"
        assert req.specifier.contains(exact[req.name]), f"constraints.txt's {req.name}=={exact[req.name]} is outside {req}"
    assert set(exact) == {r.name for r in pyproject_requirements()}, "constraints.txt pins a package pyproject lacks"


def test_environment_yml_matches_the_constraints():
    assert pins(ROOT / "environment.yml") == constraint_pins()


def test_colab_requirements_satisfy_the_declared_ranges():
    """What Colab ships must be inside pyproject's ranges: the oldest versions we claim to support are tested there."""
    colab = pins(ROOT / "colab" / "requirements.txt")
    for req in pyproject_requirements():
        if req.name in colab:
            assert req.specifier.contains(colab[req.name]), f"Colab's {req.name}=={colab[req.name]} is outside {req}"


def third_party_imports() -> set[str]:
    """Top-level modules that both packages (Colab builds the tiny world too) and the notebooks import, less the
    standard library and our own."""
    names = set()
    for path in [*ROOT.glob("lmcls_helpers/**/*.py"), *ROOT.glob("lmcls_tools/**/*.py"), *(ROOT / "nbs_src").glob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names.add(node.module.split(".")[0])
    return {n for n in names if n not in sys.stdlib_module_names and n not in ("lmcls_helpers", "lmcls_tools", "google", "__future__")}


def test_the_colab_environment_has_every_package_the_notebooks_import():
    import lmcls_helpers

    module_to_dist = {"sklearn": "scikit-learn", "IPython": "ipython", "yaml": "pyyaml", "PIL": "pillow"}
    colab = set(pins(ROOT / "colab" / "requirements.txt")) | {"torch"}  # torch: installed by the Makefile
    colab |= {spec.split("==")[0] for spec in lmcls_helpers.COLAB_PACKAGES}
    missing = {m for m in third_party_imports() if module_to_dist.get(m, m).lower().replace("_", "-") not in colab}
    assert not missing, f"add Colab's versions of {sorted(missing)} to colab/requirements.txt (or to the Colab cell)"


def test_the_colab_cell_is_the_same_in_every_notebook_and_names_the_repository():
    sys.path.insert(0, str(ROOT / "colab"))
    try:
        from run_install_cell import colab_cell
    finally:
        sys.path.remove(str(ROOT / "colab"))
    import lmcls_helpers

    assert f"git+https://github.com/{lmcls_helpers.REPO}.git@{lmcls_helpers.BRANCH}" in colab_cell()


def test_ci_runs_the_readme_test_command():
    ci = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if line and not line.startswith("#")]
    assert ci[-2:] == ["make test", "make test-colab"], ci
    readme = (ROOT / "README.md").read_text()
    assert "make run" in readme.split("\n\n", 3)[1] + readme[:1500] and "make test" in readme[:1500]
    assert "make test-colab" in readme, "the README's contributor section names `make test-colab`"


def test_tiny_world_build_paths_are_ignored_by_git():
    ignored = (ROOT / ".gitignore").read_text().split()
    assert "build/" in ignored and ".venv/" in ignored and ".venv-colab/" in ignored


def test_pytest_runs_notebooks_first_and_the_longest_first():
    import importlib.util

    spec = importlib.util.spec_from_file_location("root_conftest", ROOT / "conftest.py")
    conftest = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(conftest)

    class Item:
        def __init__(self, path):
            self.path = Path(path)

    items = [Item(p) for p in ("tests/test_a.py", "notebooks/01_x.ipynb", "tests/test_b.py", "notebooks/07_y.ipynb")]
    conftest.pytest_collection_modifyitems(None, items)
    assert [i.path.name for i in items] == ["07_y.ipynb", "01_x.ipynb", "test_a.py", "test_b.py"]
