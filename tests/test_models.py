"""load_model's one-model rule and the hub-access messages (issue: a class on a free Colab T4)."""

from __future__ import annotations

import sys

import pytest

from lmcls_helpers import hub, models
from lmcls_helpers.profiles import get_profile


@pytest.fixture()
def one_model(monkeypatch):
    monkeypatch.setenv("LMCLS_ONE_MODEL", "1")
    models.free_gpu_memory()
    assert not models._LIVE_MODELS, "a model from an earlier test is still alive"
    return get_profile("tiny")


def test_load_model_refuses_a_second_live_base_model_and_names_the_fix(one_model):
    main = sys.modules["__main__"]
    main.held_model = models.load_model(one_model)  # a notebook variable, as in a kernel
    try:
        with pytest.raises(RuntimeError, match=r"del held_model.*free_gpu_memory"):
            models.load_model(one_model)
    finally:
        del main.held_model
    models.free_gpu_memory()
    again = models.load_model(one_model)  # loads once nothing refers to the first
    assert list(models._LIVE_MODELS) == [again]
    del again
    models.free_gpu_memory()
    assert not models._LIVE_MODELS


def test_a_model_in_a_reference_cycle_counts_as_freed_once_its_names_are_gone(one_model):
    model = models.load_model(one_model)
    model.cycle = [model]  # only the garbage collector frees this
    del model
    second = models.load_model(one_model)  # load_model collects before it refuses
    del second
    models.free_gpu_memory()


def test_the_rule_is_off_on_the_cpu_without_the_variable(monkeypatch):
    monkeypatch.delenv("LMCLS_ONE_MODEL", raising=False)
    profile = get_profile("tiny")
    assert not models.one_model_at_a_time(profile)
    assert models.one_model_at_a_time(profile.with_(device="cuda"))


# --- hub access: stand-ins for the hub's answers -------------------------------------------------
def _hub_profile():
    return get_profile("tiny").with_(model_id="meta-llama/Meta-Llama-3-8B")


def _http_error(cls, status: int):
    import httpx2 as httpx  # the HTTP client huggingface_hub 2.x raises its errors with

    response = httpx.Response(status, request=httpx.Request("GET", "https://huggingface.co/api/models/x"))
    return cls(f"{status} Client Error", response=response)


def test_local_models_need_no_hub():
    assert "no hub access needed" in hub.hub_login(get_profile("tiny"))


def test_no_token_stops_with_the_steps(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(hub, "find_token", lambda: None)
    with pytest.raises(RuntimeError, match=r"No Hugging Face token(.|\n)*accept the licence(.|\n)*HF_TOKEN"):
        hub.hub_login(_hub_profile())


@pytest.mark.parametrize(("error", "status", "says"), [
    ("GatedRepoError", 403, "no access to this gated model yet"),
    ("RepositoryNotFoundError", 401, "refused the token"),
    ("HfHubHTTPError", 403, "refused access"),
])
def test_hub_refusals_become_the_steps(monkeypatch, error, status, says):
    import huggingface_hub
    from huggingface_hub import errors

    def refuse(repo_id, token=None, **_):
        raise _http_error(getattr(errors, error), status)

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(hub, "find_token", lambda: "hf_wrong")
    monkeypatch.setattr(huggingface_hub, "auth_check", refuse)
    with pytest.raises(RuntimeError, match=says) as info:
        hub.hub_login(_hub_profile())
    assert "accept the licence" in str(info.value)


def test_a_granted_token_is_handed_to_from_pretrained(monkeypatch):
    import huggingface_hub

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(hub, "find_token", lambda: "hf_good")
    monkeypatch.setattr(huggingface_hub, "auth_check", lambda repo_id, token=None, **_: None)
    assert "granted" in hub.hub_login(_hub_profile())
    import os

    assert os.environ["HF_TOKEN"] == "hf_good"


def test_load_model_turns_a_wrapped_403_into_the_steps(monkeypatch):
    from huggingface_hub import errors

    def from_pretrained(*_, **__):
        try:
            raise _http_error(errors.GatedRepoError, 403)
        except errors.GatedRepoError as err:
            raise OSError("You are trying to access a gated repo.") from err

    monkeypatch.setattr(models.AutoModelForCausalLM, "from_pretrained", from_pretrained)
    with pytest.raises(RuntimeError, match="gated model"):
        models.load_model(_hub_profile(), quantize=False)


def test_another_head_loads_under_the_same_rule(one_model):
    from transformers import AutoModelForSequenceClassification

    seqcls = models.load_model(one_model, auto_class=AutoModelForSequenceClassification, num_labels=2)
    assert type(seqcls).__name__ == "LlamaForSequenceClassification" and seqcls.score.out_features == 2
    with pytest.raises(RuntimeError, match="already loaded"):
        models.load_model(one_model)
    del seqcls
    models.free_gpu_memory()
    with pytest.raises(ValueError, match="takes no auto_class"):
        models.load_model(one_model.with_(model_config={"vocab_size": 8}), num_labels=2)
