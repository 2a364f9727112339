import json

import numpy as np
import pytest
import torch

from lmcls_helpers import results


def test_record_writes_under_the_root_whatever_the_cwd(tmp_root, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path.parent)
    results.start("99_demo")
    results.record("mcc", np.float32(0.5))
    results.record("by_variant", {"a": torch.tensor(0.25)})
    data = json.loads((tmp_root / "build" / "results" / "99_demo.json").read_text())
    assert data == {"mcc": 0.5, "by_variant": {"a": 0.25}}
    assert "99_demo" in results.summary_table()


def test_start_clears_old_numbers(tmp_root):
    results.start("99_demo")
    results.record("old", 1)
    results.start("99_demo")
    assert results.load_all()["99_demo"] == {}


def test_bad_values_and_names(tmp_root):
    results.start("99_demo")
    with pytest.raises(ValueError, match="non-finite"):
        results.record("x", float("nan"))
    with pytest.raises(ValueError, match="stem"):
        results.start("notebooks/02.ipynb")


def _notebook(path, outputs):
    cell = {"cell_type": "code", "source": "", "metadata": {}, "execution_count": 1, "outputs": outputs}
    path.write_text(json.dumps({"cells": [cell], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))


def test_check_executed_counts_inline_figures_and_finds_paths_and_reprs(tmp_root):
    executed, figures = tmp_root / "executed", tmp_root / "figures"
    executed.mkdir()
    figures.mkdir()
    (figures / "07_a.png").write_bytes(b"png")
    (figures / "07_b.png").write_bytes(b"png")
    image = {"output_type": "display_data", "data": {"image/png": "iVBOR"}, "metadata": {}}
    _notebook(executed / "07_demo.ipynb", [image, image])
    assert results.check_executed(executed, figures) == []
    path_echo = {"output_type": "execute_result", "execution_count": 1, "metadata": {},
                 "data": {"text/plain": f"PosixPath('{tmp_root}/build/figures/07_a.png')"}}
    _notebook(executed / "07_demo.ipynb", [image, path_echo])
    found = results.check_executed(executed, figures)
    assert any("1 inline figure(s) but 2 saved" in f for f in found)
    assert any(str(tmp_root) in f for f in found) and any("PosixPath(" in f for f in found)


def test_check_executed_finds_a_progress_bar_frame(tmp_root):
    executed, figures = tmp_root / "executed", tmp_root / "figures"
    executed.mkdir()
    figures.mkdir()
    frame = {"output_type": "display_data", "metadata": {},
             "data": {"text/plain": "scoring:   0%|          | 0/8 [00:00<?, ?it/s]"}}
    _notebook(executed / "02_demo.ipynb", [frame])
    assert any("progress bar" in f for f in results.check_executed(executed, figures))
    text = {"output_type": "stream", "name": "stdout", "text": "accuracy 71.6% | MCC 0.372 | 500/500 sentences\n"}
    _notebook(executed / "02_demo.ipynb", [text])
    assert results.check_executed(executed, figures) == []

