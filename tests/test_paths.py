"""build/ is found from the package's own location, not the working directory (nbmake runs in notebooks/)."""

from pathlib import Path

from lmcls_helpers import paths

ROOT = Path(__file__).resolve().parent.parent


def test_root_is_the_checkout_whatever_the_cwd(tmp_path, monkeypatch):
    monkeypatch.delenv("LMCLS_ROOT", raising=False)
    monkeypatch.chdir(tmp_path)
    assert paths.repo_root() == ROOT
    assert paths.build_dir("results", "x.json") == ROOT / "build" / "results" / "x.json"
    monkeypatch.chdir(ROOT / "notebooks")
    assert paths.repo_root() == ROOT


def test_without_a_checkout_the_working_directory_is_used(tmp_path, monkeypatch):
    """As in Colab, where the package is installed from git and has no pyproject.toml beside it."""
    monkeypatch.delenv("LMCLS_ROOT", raising=False)
    fake_package = tmp_path / "site-packages" / "lmcls_helpers" / "paths.py"
    monkeypatch.setattr(paths, "__file__", str(fake_package))
    monkeypatch.chdir(tmp_path)
    assert paths.repo_root() == tmp_path.resolve()


def test_checkpoints_go_to_drive_when_it_is_mounted(tmp_path, monkeypatch):
    monkeypatch.delenv("LMCLS_CHECKPOINTS", raising=False)
    drive = tmp_path / "MyDrive"  # a stand-in for /content/drive/MyDrive
    assert paths.checkpoint_dir("04_training_loop", drive) == paths.build_dir("checkpoints", "04_training_loop")
    drive.mkdir()
    assert paths.checkpoint_dir("04_training_loop", drive) == drive / "lmcls" / "checkpoints" / "04_training_loop"
    assert paths.checkpoint_dir("04_training_loop", None) == paths.build_dir("checkpoints", "04_training_loop")
    monkeypatch.setenv("LMCLS_CHECKPOINTS", str(tmp_path / "elsewhere"))
    assert paths.checkpoint_dir("04_training_loop", drive) == tmp_path / "elsewhere" / "04_training_loop"
