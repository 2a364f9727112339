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
    with pytest.raises(ValueError, match=r"choose one of \['full', 'shapes', 'tiny'\]"):
        get_profile("huge")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
@pytest.mark.parametrize("name", ["full", "shapes"])
def test_gpu_profiles_stop_early_without_a_gpu(name):
    with pytest.raises(RuntimeError, match="Runtime > Change runtime type.*'tiny' profile"):
        get_profile(name)


def test_with_makes_a_changed_copy():
    profile = get_profile("tiny")
    assert profile.with_(lr=1.0).lr == 1.0 and profile.lr != 1.0
