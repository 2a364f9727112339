"""The offline tiny world (STUB: being written by the world builder)."""

from __future__ import annotations


def ensure_world(profile) -> None:
    """Build ``build/tiny/`` once if the tiny profile needs it."""
