"""pyproject.toml and environment.yml pin the same versions; CI runs only what the README shows."""

import re
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parent.parent


def pyproject_pins() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = project["dependencies"] + [r for group in project["optional-dependencies"].values() for r in group]
    return dict(r.split("==") for r in reqs)


def environment_pins() -> dict[str, str]:
    text = (ROOT / "environment.yml").read_text()
    return dict(re.findall(r"^\s+- ([A-Za-z0-9_.\-]+)==([^\s#]+)", text, flags=re.M))


def test_every_dependency_is_pinned_exactly():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for req in project["dependencies"]:
        assert "==" in req, f"{req} is not pinned"


def test_environment_yml_matches_pyproject():
    assert environment_pins() == pyproject_pins()


def test_ci_runs_the_readme_test_command():
    ci = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if line and not line.startswith("#")]
    assert ci[-1].strip() == "make test"
    readme = (ROOT / "README.md").read_text()
    assert "make run" in readme.split("\n\n", 3)[1] + readme[:1500] and "make test" in readme[:1500]


def test_tiny_world_build_paths_are_ignored_by_git():
    ignored = (ROOT / ".gitignore").read_text().split()
    assert "build/" in ignored and ".venv/" in ignored


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
