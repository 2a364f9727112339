"""The tiny world's pieces: caching stamp, data files, pretraining documents, tokenizers.

Cheap tests only: the model is not retrained here (``make world`` builds it). Where the built
world is present, its recorded numbers and file hashes are checked too.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from transformers import AutoTokenizer

from lmcls_helpers import CPU_CODE_PATH
from lmcls_helpers.data import COLA_SPLITS, error_kinds, load_cola
from lmcls_helpers.paths import build_dir
from lmcls_helpers.profiles import LABEL_WORDS, get_profile
from lmcls_helpers.prompts import PromptTemplate
from lmcls_helpers.tokens import label_token_ids
from lmcls_tools import world


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """The real splits and pretraining corpus, written to a temporary folder."""
    root = tmp_path_factory.mktemp("tiny")
    splits = world.write_data(root)
    return root, splits, world.pretraining_corpus(splits)


@pytest.fixture(scope="module")
def tokenizers(data):
    root, splits, corpus = data
    world.train_tokenizers(world.tokenizer_texts(splits, corpus), root)
    return AutoTokenizer.from_pretrained(root / "tokenizer-bpe"), AutoTokenizer.from_pretrained(root / "tokenizer-sp")


def _fake_build(root):
    for path in world.expected_files(root):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x")
    (root / ".built").write_text(world.recipe_key() + "\n")


def test_stamp_matches_only_a_complete_build_of_this_recipe(tmp_path, monkeypatch):
    assert not world.is_built(tmp_path)
    _fake_build(tmp_path)
    assert world.is_built(tmp_path)
    monkeypatch.setitem(world.PRETRAIN, "steps", world.PRETRAIN["steps"] + 1)  # a changed recipe ...
    assert not world.is_built(tmp_path)  # ... is rebuilt
    monkeypatch.undo()
    (tmp_path / "model" / "model.safetensors").unlink()
    assert not world.is_built(tmp_path), "a missing output means rebuild, whatever the stamp says"


def test_recipe_key_is_stable_and_sensitive():
    assert world.recipe_key() == world.recipe_key()
    changed = json.loads(json.dumps(world.world_config()))
    changed["seed"] += 1
    assert world.recipe_key(changed) != world.recipe_key()


pinned_cpu = pytest.mark.skipif(not CPU_CODE_PATH, reason="the CPU code path is pinned on x86-64 only")


def _unpinned_env() -> dict[str, str]:
    """This environment without the pin's variables, as a fresh shell has it."""
    return {k: v for k, v in os.environ.items() if k not in CPU_CODE_PATH}


def _code_path(env: dict[str, str]) -> list[str]:
    """What a fresh process that imports lmcls_helpers, then torch, computes with and records."""
    probe = ("import os, lmcls_helpers, torch; from lmcls_tools import world; "
             "print(torch.backends.cpu.get_cpu_capability(), os.environ.get('MKL_CBWR'), world.recipe_key())")
    return subprocess.run([sys.executable, "-c", probe], env=_unpinned_env() | env, capture_output=True, text=True,
                          check=True).stdout.split()


@pinned_cpu
def test_import_pins_one_cpu_code_path_that_a_user_can_override():
    """Pre-training on AVX-512 kernels gave another tiny model (a Zen 4 printed other numbers): one path for all."""
    pinned = _code_path({})
    assert pinned[:2] == ["AVX2", "AVX2"]
    own = _code_path({"MKL_CBWR": "AUTO", "ATEN_CPU_CAPABILITY": "default"})
    assert own[:2] == ["DEFAULT", "AUTO"], "a value the user set is kept"
    assert own[2] != pinned[2], "a world built on another code path must not pass for this one"


@pinned_cpu
def test_a_process_that_computed_before_the_pin_refuses_to_build_a_world():
    # torch picks its native kernels at the first product; the pin asked for afterwards comes too late.
    late = ("import os, torch; torch.ones(2) @ torch.ones(2); os.environ['ATEN_CPU_CAPABILITY'] = 'default'; "
            "from lmcls_tools import world; world.check_code_path()")
    done = subprocess.run([sys.executable, "-c", late], env=_unpinned_env(), capture_output=True, text=True)
    assert done.returncode != 0 and "import lmcls_helpers before computing" in done.stderr


def test_build_skips_when_stamp_matches(tmp_path, monkeypatch):
    _fake_build(tmp_path)
    (tmp_path / "world.json").write_text('{"cached": true}')
    monkeypatch.setattr(world, "write_data", lambda root: pytest.fail("rebuilt a world whose stamp matches"))
    assert world.build(tmp_path) == {"cached": True}


def test_build_swaps_in_a_complete_world_and_leaves_no_partial_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(world, "_build", lambda root: (_fake_build(root), {"fresh": True})[1])
    root = tmp_path / "tiny"
    root.mkdir()
    (root / "stale.txt").write_text("from an older recipe")
    assert world.build(root) == {"fresh": True}
    assert world.is_built(root) and not (root / "stale.txt").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["tiny"]


def test_ensure_world_builds_tiny_once_and_full_never(tmp_root, monkeypatch):
    calls = []
    monkeypatch.setattr(world, "build", lambda *a, **k: calls.append("build"))
    monkeypatch.setattr(world, "fetch_reference_tokenizers", lambda *a, **k: calls.append("fetch"))
    tiny = get_profile("tiny")
    world.ensure_world(tiny)
    assert calls == ["build"]
    _fake_build(build_dir("tiny"))
    world.ensure_world(tiny)
    assert calls == ["build"], "a built world is reused"
    world.ensure_world(tiny.with_(name="full"))
    assert calls == ["build", "fetch"], "full only fetches notebook 1's reference tokenizers"


def test_failed_download_is_reported_not_raised(tmp_root, monkeypatch, capsys):
    failed = subprocess.CompletedProcess([], returncode=1, stdout="", stderr="No matching distribution found")
    monkeypatch.setattr(world.subprocess, "run", lambda *a, **k: failed)
    status = world.fetch_reference_tokenizers()
    assert status == {"llama-3": "missing", "mistral-7b": "missing"}
    assert "make world" in capsys.readouterr().out


def test_written_data_is_cola_exact_with_aligned_kinds(data):
    root, splits, _ = data
    loaded = load_cola(root / "cola_public")
    kinds = error_kinds(root / "cola_public")
    for name in COLA_SPLITS:
        assert list(loaded[name].columns) == ["source", "label", "marker", "sentence"]
        assert ((kinds[name]["kind"] == "none") == (loaded[name]["label"] == 1)).all(), name
    assert error_kinds(root) is None, "real CoLA has no sidecar"
    raw = (root / "cola_public" / "raw" / "in_domain_dev.tsv").read_text()
    assert raw.count("\n") == world.SIZES["in_domain_dev"] and not raw.startswith("source")


def test_pretraining_never_sees_a_split_sentence(data):
    _, splits, corpus = data
    held_out = {s for df in splits.values() for s in df["sentence"]}
    seen = [text.rsplit("\n", 1)[-1].strip().removesuffix(" -")  # the sentence of each line
            for docs in (corpus["notes"], corpus["prompts"]) for doc in docs for text, _ in doc]
    assert not held_out & set(seen)
    assert corpus["notes"] and corpus["prompts"] and corpus["ledger"]


def test_prompt_documents_train_only_the_label_words(data, tokenizers):
    _, _, corpus = data
    tokenizer, _ = tokenizers
    label_ids = set(label_token_ids(tokenizer, LABEL_WORDS))
    for ids, roles in world.encode(tokenizer, corpus["prompts"][:20]):
        assert ids[0] == tokenizer.bos_token_id
        assert set(ids[roles == 2].tolist()) <= label_ids and (roles != 1).all()


def test_pretraining_loss_weights_text_and_answers_equally():
    logits = torch.zeros(1, 4, 5)  # uniform predictions: every token costs log(5)
    ids = torch.tensor([[0, 1, 2, 3]])
    roles = torch.tensor([[0, 1, 1, 2]])
    assert world.pretraining_loss(logits, ids, roles).item() == pytest.approx(2 * torch.log(torch.tensor(5.0)).item())


def test_bpe_tokenizer_is_llama3_style(tokenizers):
    tokenizer, _ = tokenizers
    assert len(tokenizer) == world.TOKENIZER["vocab_size"]
    assert tokenizer.pad_token is None, "like Llama 3: no pad token"
    ids = tokenizer(" Him and me are going to the store.").input_ids
    assert tokenizer.convert_ids_to_tokens(ids)[:4] == ["<|begin_of_text|>", "ĠHim", "Ġand", "Ġme"]
    assert tokenizer.decode(ids, skip_special_tokens=True) == " Him and me are going to the store."
    assert tokenizer.eos_token == "<|end_of_text|>"
    assert PromptTemplate().check(tokenizer, LABEL_WORDS) == label_token_ids(tokenizer, LABEL_WORDS)
    assert len(tokenizer.encode("unacceptable", add_special_tokens=False)) > 1, "un + acceptable, as in Llama 3"


def test_sentencepiece_tokenizer_is_mistral_style(tokenizers):
    _, tokenizer = tokenizers
    ids = tokenizer("The dogs are happy.").input_ids
    pieces = tokenizer.convert_ids_to_tokens(ids)
    assert pieces[0] == "<s>" and pieces[1].startswith("▁")
    assert tokenizer.decode(ids, skip_special_tokens=True) == "The dogs are happy."


BUILT = build_dir("tiny")


@pytest.mark.skipif(not world.is_built(BUILT), reason="the tiny world is not built (run `make world`)")
def test_built_world_matches_its_record():
    info = json.loads((BUILT / "world.json").read_text())
    assert info["recipe"] == world.recipe_key()
    for name, digest in info["sha256"].items():
        assert world.sha256(BUILT / name)[:16] == digest, f"{name} changed since the build"
    assert info["few_shot"]["nf4"]["in_domain_dev"]["mcc"] > 0.2, "few-shot scoring must beat chance"
    config = json.loads((BUILT / "model" / "config.json").read_text())
    assert config["vocab_size"] == info["tokenizer"]["vocab"] and config.get("pad_token_id") is None


def test_gpu_profiles_get_the_synthetic_ledger_without_the_tiny_world(tmp_path):
    from lmcls_helpers.data import load_ledger
    from lmcls_helpers.profiles import get_profile
    from lmcls_tools import synthetic
    from lmcls_tools.world import SEED, SIZES, ensure_world

    full_like = get_profile("tiny").with_(name="full", ledger_path=tmp_path / "ledger" / "ledger.csv")
    ensure_world(full_like)
    ledger = load_ledger(full_like.ledger_path)
    assert ledger["text"].tolist() == synthetic.ledger_lines(SIZES["ledger"], SEED)["text"].tolist()
