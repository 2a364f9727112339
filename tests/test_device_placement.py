"""A check without a GPU for the commonest CUDA-only bug of a notebook: a batch left on the CPU.

On the tiny and small profiles the model sits on the CPU, so ``tokenizer(..., return_tensors="pt")``
fed straight to it works; on the full profile (Colab GPU) the same cell stops with "Expected all
tensors to be on the same device". Every notebook that loads a model must move each batch it
tokenizes to the model's device in the same expression: ``.to(model.device)`` or ``.to(profile.device)``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SOURCES = sorted((Path(__file__).resolve().parents[1] / "nbs_src").glob("[0-9][0-9]_*.py"))


def unmoved_batches(source: str) -> list[int]:
    """Line numbers of ``...(return_tensors="pt")`` calls whose result (or an item of it) is not moved with ``.to(...)``."""
    tree = ast.parse(source)
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and any(k.arg == "return_tensors" for k in node.keywords):
            outer = parents.get(node)
            while isinstance(outer, ast.Subscript) and outer.value is not None:  # tokenizer(...)["input_ids"].to(...)
                node, outer = outer, parents.get(outer)
            if not (isinstance(outer, ast.Attribute) and outer.attr == "to"):
                lines.append(node.lineno)
    return lines


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.stem)
def test_tokenized_batches_go_to_the_models_device(path):
    source = path.read_text(encoding="utf-8")
    if "load_model(" not in source:  # a notebook without a model (notebook 1's tokenizers) keeps its batches on the CPU
        pytest.skip("no model in this notebook: its batches stay on the CPU")
    assert not (lines := unmoved_batches(source)), (
        f"{path.name} lines {lines}: a tokenized batch is not moved to the model's device; add .to(model.device) "
        "(it is a no-op on the CPU profiles, and the full profile's model is on the GPU).")


def test_the_check_finds_a_batch_left_on_the_cpu():
    assert unmoved_batches('b = tok(texts, return_tensors="pt", padding=True)\nm(**b)') == [1]
    assert unmoved_batches('b = tok(texts, return_tensors="pt").to(model.device)') == []
    assert unmoved_batches('ids = tok(t, return_tensors="pt")["input_ids"].to(profile.device)') == []
    assert unmoved_batches('ids = tok(t, return_tensors="pt")["input_ids"]') == [1]
