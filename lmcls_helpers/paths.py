"""Where things live: the repository root and its ``build/`` folder, whatever the working directory.

nbmake runs notebooks from ``notebooks/`` and ``make`` from the root; both must write to the
same ``build/``. In Colab (package installed from git, no checkout) the working directory is used.
"""

from __future__ import annotations

import os
from pathlib import Path

#: Every shipped measurement (GPU memory, runtime rates, benchmark reports): package data, so Colab has it too.
MEASUREMENTS = Path(__file__).resolve().parent / "measurements"


def repo_root() -> Path:
    """The checkout root (``LMCLS_ROOT`` overrides), found from this file; else the working directory."""
    if env := os.environ.get("LMCLS_ROOT"):
        return Path(env).resolve()
    here = Path(__file__).resolve().parent.parent
    if (here / "pyproject.toml").exists() and (here / "lmcls_helpers").is_dir():
        return here
    return Path.cwd().resolve()


def build_dir(*parts: str) -> Path:
    """``<root>/build/<parts>``; the folder is created when ``parts`` name a folder."""
    return repo_root().joinpath("build", *parts)


#: Where Colab mounts Google Drive (`from google.colab import drive; drive.mount("/content/drive")`).
COLAB_DRIVE = Path("/content/drive/MyDrive")


def checkpoint_dir(notebook: str, drive: Path | None = COLAB_DRIVE) -> Path:
    """Where ``notebook`` keeps its checkpoints: on Google Drive when it is mounted, else under ``build/``.

    A Colab disconnect erases the VM's disk, ``build/`` included: the very failure that resuming
    from a checkpoint exists for. With Drive mounted, checkpoints survive it, and a new session
    resumes from them. ``drive=None`` always uses ``build/`` (``LMCLS_CHECKPOINTS`` overrides both).
    """
    if env := os.environ.get("LMCLS_CHECKPOINTS"):
        return Path(env) / notebook
    if drive is not None and Path(drive).is_dir():
        return Path(drive) / "lmcls" / "checkpoints" / notebook
    return build_dir("checkpoints", notebook)
