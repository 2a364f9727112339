import json

import numpy as np
import pytest
import torch

from lmcls_helpers import results
from lmcls_tools import report


def test_record_writes_under_the_root_whatever_the_cwd(tmp_root, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path.parent)
    results.start("99_demo")
    results.record("mcc", np.float32(0.5))
    results.record("by_variant", {"a": torch.tensor(0.25)})
    data = json.loads((tmp_root / "build" / "results" / "99_demo.json").read_text())
    assert data == {"mcc": 0.5, "by_variant": {"a": 0.25}}
    assert "99_demo" in "\n".join(report.summary(tmp_root / "build" / "results"))


def test_start_clears_old_numbers(tmp_root):
    results.start("99_demo")
    results.record("old", 1)
    results.start("99_demo")
    assert report.load_all()["99_demo"] == {}


def test_bad_values_and_names(tmp_root):
    results.start("99_demo")
    with pytest.raises(ValueError, match="non-finite"):
        results.record("x", float("nan"))
    with pytest.raises(ValueError, match="stem"):
        results.start("notebooks/02.ipynb")
