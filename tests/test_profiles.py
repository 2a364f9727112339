from pathlib import Path

import pytest
import torch

from lmcls_helpers.profiles import get_profile


def test_tiny_is_the_default(monkeypatch):
    monkeypatch.delenv("LMCLS_PROFILE", raising=False)
    profile = get_profile()
    assert profile.name == "tiny" and profile.device == "cpu"
    assert profile.train_batch_size % profile.micro_batch_size == 0
    assert profile.grad_accum_steps * profile.micro_batch_size == profile.train_batch_size


def test_environment_variable_chooses(monkeypatch):
    monkeypatch.setenv("LMCLS_PROFILE", "Tiny")
    assert get_profile().name == "tiny"


def test_unknown_profile_lists_the_choices():
    with pytest.raises(ValueError, match=r"choose one of \['full', 'shapes', 'small', 'tiny'\]"):
        get_profile("huge")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
@pytest.mark.parametrize("name", ["full", "shapes"])
def test_gpu_profiles_stop_early_without_a_gpu(name):
    with pytest.raises(RuntimeError, match="Runtime > Change runtime type.*'tiny' profile"):
        get_profile(name)


def test_with_makes_a_changed_copy():
    profile = get_profile("tiny")
    assert profile.with_(lr=1.0).lr == 1.0 and profile.lr != 1.0


def test_the_first_cell_variable_beats_the_environment(monkeypatch):
    monkeypatch.setenv("LMCLS_PROFILE", "full")
    assert get_profile("tiny").name == "tiny"  # PROFILE = "tiny" in a notebook's first cell


def test_full_profile_without_bitsandbytes_says_how_to_install(monkeypatch):
    import importlib.util

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "bitsandbytes" else real_find_spec(name, *a))
    with pytest.raises(RuntimeError, match="needs bitsandbytes: `pip install bitsandbytes`"):
        get_profile("full")


def test_full_profile_with_a_broken_bitsandbytes_names_the_fix(monkeypatch):
    # torch says a GPU is there, but the quantize probe cannot run on it (this CPU build of torch):
    # the same path as a bitsandbytes whose CUDA kernels do not load. Imported first, with torch's real
    # answer: imported for the first time while is_available lies, bitsandbytes half-initializes, and the
    # broken module would stay in sys.modules for every later test in this process.
    import bitsandbytes.functional  # noqa: F401

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    with pytest.raises(RuntimeError, match=r"cannot quantize on this GPU \(\w+: .+\).*pip install -U bitsandbytes"):
        get_profile("full")


def test_tolerance_follows_the_compute_dtype():
    tiny = get_profile("tiny")
    tols = [tiny.with_(compute_dtype=d).tolerance["atol"] for d in (torch.float32, torch.float16, torch.bfloat16)]
    assert tols == sorted(tols) and tols[0] <= 1e-3, "coarser dtypes need looser comparisons"


def test_environment_report_names_no_machine_path():
    from lmcls_helpers.paths import repo_root
    from lmcls_helpers.profiles import environment_report

    report = environment_report(get_profile("tiny"))
    assert "model: build/tiny/model" in report and str(repo_root()) not in report


def test_tiny_sets_one_torch_thread_and_says_so():
    from lmcls_helpers.profiles import environment_report

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        profile = get_profile("tiny")
        assert profile.torch_threads == 1 and torch.get_num_threads() == 1
        assert "CPU (1 thread, " in environment_report(profile)
    finally:
        torch.set_num_threads(before)


def test_a_profile_without_a_thread_count_leaves_torch_alone():
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        profile = get_profile("small", require_device=False)
        assert profile.torch_threads is None and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_full_profile_checkpoints_only_where_the_estimator_and_the_one_headroom_rule_say_a_t4_cannot_hold_the_step():
    """The full profile at micro-batch 8 of 86-token prompts, label-position loss, decided by memory.fits
    (the rule notebook 5 uses); on a T4 the step fits, so there is no checkpointing, as in the Llama 3 tutorial."""
    from lmcls_helpers.memory import GPUS, HEADROOM_GIB, cuda_context_gib, estimate_training_memory, fits
    from lmcls_helpers.profiles import LLAMA3_8B_CONFIG

    full = get_profile("full", require_device=False)  # without a GPU: planned for a T4
    t4 = GPUS["T4 16 GB"]
    peak = estimate_training_memory(LLAMA3_8B_CONFIG, batch_size=full.micro_batch_size, seq_len=86, logits="label",
                                    dtype=full.compute_dtype, workspace_mib=t4["workspace_mib"])["total"]
    context = cuda_context_gib()["T4 16 GB"]
    assert full.gradient_checkpointing == (not fits(peak, t4["capacity_gib"], context))
    assert not full.gradient_checkpointing and peak + HEADROOM_GIB <= t4["capacity_gib"] - context


def test_the_checkpointing_decision_follows_the_estimate(monkeypatch):
    """A bigger estimate (here: a smaller card) turns checkpointing on; the decision is memory.fits, nothing else."""
    import lmcls_helpers.profiles as profiles

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # planned for a T4 even where a bigger GPU is visible
    for peak, expected in ((10.0, False), (14.5, True)):
        monkeypatch.setattr(profiles, "estimate_training_memory", lambda *a, _p=peak, **k: {"total": _p})
        assert profiles.get_profile("full", require_device=False).gradient_checkpointing is expected


def test_notebook_5_uses_the_profiles_rule():
    notebook = (Path(__file__).parents[1] / "nbs_src" / "05_gpu_memory.py").read_text()
    assert "memory.fits(" in notebook and "HEADROOM_GIB" in notebook
