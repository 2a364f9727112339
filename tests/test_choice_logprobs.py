"""choice_logprobs: batched scoring of continuations of several tokens, against a plain loop over tokens.

The model is a small random Llama with the tiny world's tokenizer (1,024 tokens): real attention,
masking and positions, fast on a CPU, and not a base model under the one-model rule.
"""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from peft import LoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM

from lmcls_helpers.profiles import get_profile
from lmcls_helpers.prompts import PromptTemplate
from lmcls_helpers.scoring import choice_logprobs, choice_token_counts, last_token_logits
from lmcls_helpers.tokens import load_tokenizer

WORDS = [" acceptable", " unacceptable", " grammatical", " fine", " odd", " the", " cat", " ledger", "!", " -", " zq"]


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(get_profile("tiny"))


@pytest.fixture(scope="module")
def model(tokenizer):
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=256, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=False,
    )
    return LlamaForCausalLM(config).eval()


@torch.no_grad()
def one_token_at_a_time(model, tokenizer, prompt: str, choice: str) -> float:
    """The definition, written plainly: one unpadded row, full logits, a loop summing log P(token | prefix)."""
    prompt_ids = tokenizer(prompt)["input_ids"]
    choice_ids = tokenizer.encode(choice, add_special_tokens=False)
    logits = model(input_ids=torch.tensor([prompt_ids + choice_ids])).logits[0]  # (seq, vocab)
    total = 0.0
    for j, token in enumerate(choice_ids):
        total += logits[len(prompt_ids) + j - 1].log_softmax(dim=-1)[token].item()  # the logits before the token
    return total


texts = st.lists(st.sampled_from(WORDS), min_size=1, max_size=4).map("".join)


@settings(max_examples=15, deadline=None)
@given(prompts=st.lists(texts, min_size=1, max_size=3), choices=st.lists(texts, min_size=1, max_size=3),
       side=st.sampled_from(["left", "right"]), batch_size=st.integers(1, 5))
def test_batched_scores_equal_a_plain_loop_over_tokens(model, tokenizer, prompts, choices, side, batch_size):
    tokenizer.padding_side = side
    got = choice_logprobs(model, tokenizer, prompts, choices, batch_size=batch_size)
    assert got.shape == (len(prompts), len(choices)) and got.dtype == torch.float32
    expected = torch.tensor([[one_token_at_a_time(model, tokenizer, p, c) for c in choices] for p in prompts])
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
    counts = torch.tensor(choice_token_counts(tokenizer, choices), dtype=torch.float32)
    means = choice_logprobs(model, tokenizer, prompts, choices, batch_size=batch_size, reduce="mean")
    torch.testing.assert_close(means, got / counts, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("wrap", [False, True], ids=["plain", "peft"])
def test_single_token_choices_equal_the_last_token_read_out(model, tokenizer, side, wrap):
    """The notebook-2 read-out is the one-token special case: a log-softmax over the vocabulary at the label ids."""
    tokenizer.padding_side = side
    template = PromptTemplate(tokenizer=tokenizer, label_words=(" unacceptable", " acceptable"))
    scored = get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj", "v_proj"])) if wrap else model
    prompts = [template.format(s) for s in ["The cat sat.", "Him and me went.", "A much longer sentence about a ledger."]]
    got = choice_logprobs(scored, tokenizer, prompts, [" unacceptable", " acceptable"], batch_size=4)
    with torch.no_grad():
        logits = last_token_logits(scored, tokenizer(prompts, return_tensors="pt", padding=True)).float()
    torch.testing.assert_close(got, logits.log_softmax(dim=-1)[:, list(template.label_ids)], atol=1e-5, rtol=1e-5)
    if wrap:
        scored.unload()  # take LoRA out again: the module-scoped model is shared


def test_longer_choices_get_lower_sums_and_mean_removes_the_count(model, tokenizer):
    """A sum over more tokens adds more negative terms: the length bias a later notebook shows."""
    short, long = " fine", " fine fine fine fine"
    counts = choice_token_counts(tokenizer, [short, long])
    assert counts[1] > counts[0]
    sums = choice_logprobs(model, tokenizer, [" The cat sat -"], [short, long])
    assert sums[0, 1] < sums[0, 0]


def test_model_mode_is_restored(model, tokenizer):
    model.train()
    try:
        choice_logprobs(model, tokenizer, [" a"], [" b"])
        assert model.training
    finally:
        model.eval()


class NoTokens:
    """A tokenizer that drops everything it is given, to reach the "tokenizes to nothing" error."""

    pad_token = "<pad>"

    def encode(self, text, add_special_tokens=True):
        return []


@pytest.mark.parametrize(
    ("prompts", "choices", "kwargs", "match"),
    [
        ([" a"], [""], {}, "non-empty string"),
        ([" a"], [" b", None], {}, "Choice 1"),
        ([], [" b"], {}, "at least one prompt"),
        ([" a"], [], {}, "at least one prompt and one choice"),
        ([" a"], [" b"], {"reduce": "max"}, "reduce must be"),
    ],
)
def test_errors_name_the_fix(model, tokenizer, prompts, choices, kwargs, match):
    with pytest.raises(ValueError, match=match):
        choice_logprobs(model, tokenizer, prompts, choices, **kwargs)


def test_a_choice_that_tokenizes_to_nothing_is_refused(model):
    with pytest.raises(ValueError, match="tokenizes to no token"):
        choice_logprobs(model, NoTokens(), [" a"], [" b"])


def test_each_prompt_runs_once_whatever_the_number_of_choices(model, tokenizer):
    """The KV cache is the point: the prompt's tokens go through the model once, each name's others once per prompt."""
    seen = []
    hook = model.get_input_embeddings().register_forward_hook(lambda mod, args, out: seen.append(args[0].numel()))
    try:
        prompts = [" The cat sat on the mat -", " Him and me went -"]
        choices = [" fine", " fine fine fine", " odd odd"]
        choice_logprobs(model, tokenizer, prompts, choices, batch_size=2)
    finally:
        hook.remove()
    width = max(len(tokenizer(p)["input_ids"]) for p in prompts)
    extra = sum(n - 1 for n in choice_token_counts(tokenizer, choices))
    assert seen[0] == 2 * width and sum(seen) == 2 * width + 2 * extra


@pytest.mark.parametrize("order", [1, -1], ids=["forward", "reversed"])
def test_prompts_of_unequal_length_over_several_chunks_match_the_plain_loop(model, tokenizer, order):
    """Left padding, positions and the cache cropped between names: each choice scores as if it were alone."""
    prompts = [" a", " The cat sat on the mat and the dog sat on the ledger -", " fine odd -", " zq zq zq zq zq"]
    choices = [" fine fine fine", " odd", " ledger cat !", " the cat"][::order]
    got = choice_logprobs(model, tokenizer, prompts, choices, batch_size=3)
    expected = torch.tensor([[one_token_at_a_time(model, tokenizer, p, c) for c in choices] for p in prompts])
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
