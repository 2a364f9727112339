"""lmcls build tooling: what ``make world``, ``make small`` and ``make run`` run, kept out of the lesson's package.

``world`` (the offline tiny world and the reference tokenizers), ``synthetic`` (its generated
grammar and ledger data), ``small`` (the small profile's SmolLM2 folder) and ``report`` (the check
of executed notebooks and the summary ``make run`` ends with). Notebooks reach it through one
call, ``lmcls_helpers.profiles.ensure_world``. This package may import ``lmcls_helpers``; the
reverse happens only inside that one function.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import lmcls_helpers  # noqa: F401  first: it pins torch's CPU code path, as the world's bytes need

T = TypeVar("T")


def build_atomically(dest: Path, make: Callable[[Path], T], keep_existing: Callable[[], bool] | None = None) -> T:
    """Run ``make`` on a private sibling folder of ``dest``, then rename it into place; returns what ``make`` returns.

    A reader never sees half a folder, and two processes building at once cannot corrupt each
    other's files. When ``keep_existing()`` answers True after the build (another process finished
    an identical folder first), that one is kept. The private folder is removed on any failure.
    """
    dest = Path(dest)
    partial = dest.with_name(f"{dest.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        result = make(partial)
        if keep_existing is None or not keep_existing():
            shutil.rmtree(dest, ignore_errors=True)
            partial.rename(dest)
        return result
    finally:
        shutil.rmtree(partial, ignore_errors=True)


def sha256(path: Path) -> str:
    """The file's SHA-256 in hex, read in 1 MiB blocks (a model file need not fit in memory twice)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
