"""The one-logit head on a real (tiny, random, fp32) Llama: shapes, where it reads, save/load, errors."""

from types import SimpleNamespace

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM

from lmcls_helpers.heads import (
    HEAD_MODULE,
    LinearHead,
    add_linear_head,
    head_logits,
    load_linear_head,
    saved_head_keys,
)

HIDDEN = 32
PAD = 1  # pad = eos, as in the notebooks


def tiny_llama(seed: int = 0, tie: bool = False) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=64, hidden_size=HIDDEN, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64, bos_token_id=0, eos_token_id=PAD,
        tie_word_embeddings=tie,
    )
    return LlamaForCausalLM(config).eval()


@pytest.fixture(scope="module")
def model():
    return add_linear_head(tiny_llama(), seed=0)


def make_batch(rows: list[list[int]], side: str) -> dict[str, torch.Tensor]:
    """Pad token-id lists with PAD on ``side``, like a tokenizer with pad = eos."""
    width = max(len(r) for r in rows)
    ids, mask = [], []
    for r in rows:
        pad = width - len(r)
        ids.append([PAD] * pad + r if side == "left" else r + [PAD] * pad)
        mask.append([0] * pad + [1] * len(r) if side == "left" else [1] * len(r) + [0] * pad)
    return {"input_ids": torch.tensor(ids), "attention_mask": torch.tensor(mask)}


rows_strategy = st.lists(st.lists(st.integers(2, 63), min_size=1, max_size=12), min_size=1, max_size=5)


def test_linear_head_is_reproducible_per_seed_and_leaves_the_global_rng_alone():
    state = torch.random.get_rng_state()
    a, b, c = LinearHead(HIDDEN, seed=3), LinearHead(HIDDEN, seed=3), LinearHead(HIDDEN, seed=4)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias)
    assert not torch.equal(a.weight, c.weight)
    assert a.bias.shape == (1,)  # unlike the tutorial's bias=False head
    bound = 1 / HIDDEN**0.5
    assert a.weight.abs().max() <= bound and a.bias.abs().max() <= bound


def test_add_linear_head_draws_the_same_head_as_a_seeded_linear_head():
    model = add_linear_head(tiny_llama(), seed=7)
    torch.testing.assert_close(model.get_output_embeddings().weight, LinearHead(HIDDEN, seed=7).weight)


def test_head_replaces_the_vocabulary_head(model):
    assert isinstance(model.get_output_embeddings(), LinearHead)
    batch = make_batch([[5, 6, 7], [8, 9]], "right")
    with torch.no_grad():
        assert model(**batch).logits.shape == (2, 3, 1)  # one score per position
        assert head_logits(model, batch).shape == (2,)  # one score per row
    assert sum(p.numel() for p in model.get_output_embeddings().parameters()) == HIDDEN + 1


def test_seed_makes_the_head_reproducible():
    a = add_linear_head(tiny_llama(), seed=3).get_output_embeddings().weight
    b = add_linear_head(tiny_llama(), seed=3).get_output_embeddings().weight
    c = add_linear_head(tiny_llama(), seed=4).get_output_embeddings().weight
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_tied_embeddings_are_untied_not_overwritten():
    model = add_linear_head(tiny_llama(tie=True), seed=0)
    assert model.config.tie_word_embeddings is False
    model.tie_weights()  # what a later from_pretrained or resize would call
    assert isinstance(model.get_output_embeddings(), LinearHead)
    assert model.get_output_embeddings().weight.shape == (1, HIDDEN)


@settings(max_examples=25, deadline=None)
@given(rows=rows_strategy, side=st.sampled_from(["left", "right"]))
def test_last_real_read_equals_each_row_alone(model, rows, side):
    """Padding on either side changes nothing: each row scores as if it were alone in the batch."""
    with torch.no_grad():
        together = head_logits(model, make_batch(rows, side))
        alone = torch.cat([head_logits(model, make_batch([r], side)) for r in rows])
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-5)


@settings(max_examples=25, deadline=None)
@given(rows=rows_strategy)
def test_last_real_read_gathers_the_last_real_position_on_both_sides(model, rows):
    """The read is the (batch, seq, 1) logits at each row's last real token, and both sides agree."""
    reads = {}
    with torch.no_grad():
        for side in ("left", "right"):
            batch = make_batch(rows, side)
            logits = model(**batch).logits  # (batch, seq, 1)
            width = logits.shape[1]
            last = [width - 1 if side == "left" else len(r) - 1 for r in rows]  # computed by hand
            reads[side] = head_logits(model, batch)
            assert torch.equal(reads[side], logits[torch.arange(len(rows)), torch.tensor(last), 0])
    torch.testing.assert_close(reads["left"], reads["right"], atol=1e-5, rtol=1e-5)


@settings(max_examples=25, deadline=None)
@given(rows=rows_strategy)
def test_minus_one_read_is_right_only_for_left_padding(model, rows):
    with torch.no_grad():
        right = make_batch(rows, "right")
        left = make_batch(rows, "left")
        torch.testing.assert_close(head_logits(model, left, "minus_one"), head_logits(model, left), atol=0, rtol=0)
        wrong = head_logits(model, right, "minus_one")
        true = head_logits(model, right)
    width = max(len(r) for r in rows)
    for i, r in enumerate(rows):
        if len(r) == width:  # no padding in this row: -1 is its last real token
            assert wrong[i] == true[i]
        else:  # -1 is a pad position: a different hidden state, a different score
            assert not torch.isclose(wrong[i], true[i], atol=1e-6)


def lora(model, save_head: bool):
    config = LoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
        modules_to_save=[HEAD_MODULE] if save_head else None,
    )
    peft_model = get_peft_model(model, config)
    torch.manual_seed(1)
    with torch.no_grad():  # stand-in for training: move every trainable weight off its init
        for p in peft_model.parameters():
            if p.requires_grad:
                p.add_(0.5 * torch.randn_like(p))
    return peft_model.eval()


def test_head_in_modules_to_save_is_trained_and_round_trips(tmp_path):
    peft_model = lora(add_linear_head(tiny_llama(), seed=0), save_head=True)
    head_params = [n for n, p in peft_model.named_parameters() if p.requires_grad and HEAD_MODULE in n]
    assert len(head_params) == 2  # weight and bias
    peft_model.save_pretrained(tmp_path)
    assert len(saved_head_keys(tmp_path)) == 2
    batch = make_batch([[5, 6, 7, 8], [9, 10]], "right")
    reloaded = load_linear_head(tiny_llama(), tmp_path, seed=99)  # a different random head, replaced on load
    with torch.no_grad():
        assert torch.equal(head_logits(peft_model, batch), head_logits(reloaded, batch))


def test_head_left_out_of_the_adapter_is_frozen_and_comes_back_random(tmp_path):
    # get_peft_model alone freezes it: no 4-bit loading, no prepare_model_for_kbit_training here.
    peft_model = lora(add_linear_head(tiny_llama(), seed=0), save_head=False)
    assert not any(p.requires_grad for p in peft_model.get_output_embeddings().parameters())
    peft_model.save_pretrained(tmp_path)
    assert saved_head_keys(tmp_path) == []
    with pytest.raises(ValueError, match="modules_to_save"):
        load_linear_head(tiny_llama(), tmp_path, seed=0)
    # Loading by hand "works" and silently uses whatever head the fresh model drew.
    naive = PeftModel.from_pretrained(add_linear_head(tiny_llama(), seed=99), tmp_path)
    batch = make_batch([[5, 6, 7, 8], [9, 10]], "right")
    with torch.no_grad():
        assert not torch.allclose(head_logits(peft_model, batch), head_logits(naive, batch))


def test_head_rejects_hidden_states_of_the_wrong_size():
    with pytest.raises(ValueError, match="hidden states of size 32.*produced 16"):
        LinearHead(32)(torch.randn(2, 5, 16))


def test_head_built_for_another_model_fails_clearly():
    model = tiny_llama()
    model.set_output_embeddings(LinearHead(HIDDEN * 2))  # e.g. a head saved from a bigger model
    with pytest.raises(ValueError, match="add_linear_head"):
        head_logits(model, make_batch([[5, 6]], "right"))


def test_model_without_hidden_size_is_rejected():
    stub = SimpleNamespace(config=SimpleNamespace(), set_output_embeddings=lambda m: None)
    with pytest.raises(ValueError, match="hidden_size"):
        add_linear_head(stub)


def test_head_logits_needs_the_head_and_a_known_read():
    plain = tiny_llama()
    batch = make_batch([[5, 6]], "right")
    with pytest.raises(ValueError, match="vocabulary head"), torch.no_grad():
        head_logits(plain, batch)
    with pytest.raises(ValueError, match="read must be one of"):
        head_logits(add_linear_head(plain), batch, read="last")


def test_head_goes_on_before_lora():
    peft_model = lora(add_linear_head(tiny_llama(), seed=0), save_head=True)
    with pytest.raises(ValueError, match="already wrapped by PEFT"):
        add_linear_head(peft_model)


@pytest.mark.parametrize("side", ["left", "right"])
def test_k_class_head_reads_k_logits_at_the_last_real_token(side):
    """Notebook 8's Linear(hidden, k): (batch, k) logits, each row as if alone; a wrong k is refused."""
    k_model = add_linear_head(tiny_llama(), seed=0, num_labels=5)
    rows = [[5, 6, 7, 8], [9, 10]]
    with torch.no_grad():
        together = head_logits(k_model, make_batch(rows, side), num_labels=5)
        alone = torch.cat([head_logits(k_model, make_batch([r], side), num_labels=5) for r in rows])
        assert together.shape == (2, 5)
        torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-5)
        with pytest.raises(ValueError, match=r"not \(batch, seq, 1\)"):
            head_logits(k_model, make_batch(rows, side))
    with pytest.raises(ValueError, match="num_labels"):
        LinearHead(HIDDEN, num_labels=0)
