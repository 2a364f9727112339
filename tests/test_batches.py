"""Training batches: the split, the encoding, label-only targets, the step plan, the two loss recipes,
and gradient accumulation (notebook 4)."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from peft import LoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM, get_linear_schedule_with_warmup

from lmcls_helpers.batches import IGNORE_INDEX, collate, encode_examples, label_loss, step_batches, train_val_split
from lmcls_helpers.models import LLAMA_PROJECTIONS
from lmcls_helpers.profiles import LABEL_WORDS
from lmcls_helpers.prompts import PromptTemplate

VOCAB = 64


def tiny_lora_model(seed: int = 0, dropout: float = 0.0):
    """A two-layer Llama with LoRA on all seven projections and B != 0, so every gradient is non-zero."""
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False)
    lora = LoraConfig(r=4, lora_alpha=8, lora_dropout=dropout, target_modules=list(LLAMA_PROJECTIONS),
                      init_lora_weights="gaussian")
    model = get_peft_model(LlamaForCausalLM(config), lora)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1)
    return model


def random_examples(n: int, seed: int = 0, low: int = 3, high: int = 12) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(low, high, (n,), generator=g).tolist()
    return [torch.randint(2, VOCAB, (k,), generator=g).tolist() for k in lengths]


def grads(model) -> torch.Tensor:
    return torch.cat([p.grad.flatten() for p in model.parameters() if p.requires_grad])


# --- split ------------------------------------------------------------------------------------------
def test_split_is_90_10_disjoint_and_seeded():
    df = pd.DataFrame({"sentence": [f"s{i}" for i in range(100)], "label": [i % 2 for i in range(100)]})
    train, val = train_val_split(df, 0.1, seed=42)
    assert (len(train), len(val)) == (90, 10)
    assert set(train.sentence) | set(val.sentence) == set(df.sentence)
    assert not set(train.sentence) & set(val.sentence)
    again, _ = train_val_split(df, 0.1, seed=42)
    other, _ = train_val_split(df, 0.1, seed=7)
    assert list(again.sentence) == list(train.sentence)
    assert list(other.sentence) != list(train.sentence)


@pytest.mark.parametrize("rows, fraction", [(0, 0.1), (3, 0.1), (10, 0.0), (10, 1.0)])
def test_split_refuses_to_leave_a_split_empty(rows, fraction):
    df = pd.DataFrame({"sentence": ["x"] * rows, "label": [1] * rows})
    with pytest.raises(ValueError):
        train_val_split(df, fraction)


# --- encoding ---------------------------------------------------------------------------------------
def test_every_example_ends_with_its_label_word(llama3_tokenizer):
    template = PromptTemplate()
    label_ids = template.check(llama3_tokenizer, LABEL_WORDS)
    sentences, labels = ["The cat sat.", "Cat the sat on.", "Who did you see?"], [1, 0, 1]
    encoded = encode_examples(llama3_tokenizer, sentences, labels, template, LABEL_WORDS)
    for ids, sentence, label in zip(encoded, sentences, labels):
        assert ids[-1] == label_ids[label]
        assert ids[:-1] == llama3_tokenizer(template.format(sentence))["input_ids"], "the prompt part is unchanged"


def test_empty_split_is_a_clear_error(llama3_tokenizer):
    with pytest.raises(ValueError, match="empty"):
        encode_examples(llama3_tokenizer, [], [], PromptTemplate(), LABEL_WORDS)


def test_a_label_word_that_merges_with_the_prompt_is_refused(llama3_tokenizer):
    merging = PromptTemplate(" Is this sentence fine? {sentence} - un")  # 'un' + 'acceptable' -> ' unacceptable'
    with pytest.raises(ValueError, match="does not tokenize as its own token"):
        encode_examples(llama3_tokenizer, ["The cat sat."], [0], merging, ("acceptable", "able"))


def test_a_tokenizer_that_appends_eos_is_refused(llama3_tokenizer):
    class AppendsEos:
        def __init__(self, inner):
            self.inner = inner

        def __call__(self, text):
            return {"input_ids": self.inner(text)["input_ids"] + [self.inner.eos_token_id]}

        def __getattr__(self, name):
            return getattr(self.inner, name)

    with pytest.raises(ValueError, match="not the last token"):
        encode_examples(AppendsEos(llama3_tokenizer), ["The cat sat."], [1], PromptTemplate(), LABEL_WORDS)


def test_labels_must_be_class_indices(llama3_tokenizer):
    with pytest.raises(ValueError, match="not one of"):
        encode_examples(llama3_tokenizer, ["The cat sat."], [2], PromptTemplate(), LABEL_WORDS)


# --- collate: the targets ---------------------------------------------------------------------------
@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.integers(1, 500), min_size=2, max_size=12), min_size=1, max_size=6),
       st.sampled_from(["left", "right"]), st.sampled_from([None, 0, 5]))
def test_only_the_label_position_is_a_target(examples, side, extra):
    longest = max(map(len, examples))
    pad_to = None if extra is None else longest + extra  # the tutorial's padding: to the data's longest
    batch = collate(examples, pad_id=0, padding_side=side, pad_to=pad_to)
    seq = pad_to or longest
    assert batch["input_ids"].shape == batch["labels"].shape == (len(examples), seq)
    for row, ids in enumerate(examples):
        mask = batch["attention_mask"][row].bool()
        assert mask.sum() == len(ids)
        assert batch["input_ids"][row][mask].tolist() == ids, "real tokens keep their order"
        targets = (batch["labels"][row] != IGNORE_INDEX).nonzero().flatten().tolist()
        label_col = len(ids) - 1 if side == "right" else seq - 1
        assert targets == [label_col], "exactly one target: the last real token"
        assert batch["labels"][row, label_col] == ids[-1]


def test_collate_refuses_bad_input():
    with pytest.raises(ValueError, match="padding_side"):
        collate([[1, 2]], 0, padding_side="middle")
    with pytest.raises(ValueError):
        collate([], 0)
    with pytest.raises(ValueError):
        collate([[5]], 0)  # a label word with no prompt before it
    with pytest.raises(ValueError, match="pad_to=2 is shorter"):
        collate([[1, 2, 3]], 0, pad_to=2)


# --- the step plan ----------------------------------------------------------------------------------
@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(2, 90), min_size=1, max_size=70), st.sampled_from([(8, 8), (8, 4), (16, 8), (6, 3), (4, 1)]),
       st.integers(0, 3))
def test_plan_covers_every_example_once_in_length_sorted_micro_batches(lengths, sizes, epoch):
    train_batch_size, micro_batch_size = sizes
    plan = step_batches(lengths, train_batch_size, micro_batch_size, seed=1, epoch=epoch)
    flat = [i for step in plan for micro in step for i in micro]
    assert sorted(flat) == list(range(len(lengths)))
    for k, step in enumerate(plan):
        n = sum(map(len, step))
        assert n == train_batch_size or (k == len(plan) - 1 and n < train_batch_size)
        assert all(0 < len(micro) <= micro_batch_size for micro in step)
        in_order = [lengths[i] for micro in step for i in micro]
        assert in_order == sorted(in_order)
    assert plan == step_batches(lengths, train_batch_size, micro_batch_size, seed=1, epoch=epoch), "replayable"


def test_each_epoch_has_its_own_order():
    lengths = list(range(40))
    assert step_batches(lengths, 8, 4, seed=0, epoch=0) != step_batches(lengths, 8, 4, seed=0, epoch=1)


def test_plan_refuses_bad_sizes():
    with pytest.raises(ValueError, match="multiple"):
        step_batches([3, 4, 5], 8, 3, seed=0)
    with pytest.raises(ValueError, match="empty"):
        step_batches([], 8, 4, seed=0)


# --- the loss: full logits vs lean head -------------------------------------------------------------
@pytest.mark.parametrize("side", ["left", "right"])
def test_lean_head_gives_the_same_loss_and_gradients(side):
    model = tiny_lora_model()
    batch = collate(random_examples(5), pad_id=1, padding_side=side)
    model.zero_grad()
    full = label_loss(model, batch, lean=False)
    full.backward()
    full_grads = grads(model)
    model.zero_grad()
    lean = label_loss(model, batch, lean=True)
    lean.backward()
    torch.testing.assert_close(lean, full, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grads(model), full_grads, rtol=1e-4, atol=1e-6)
    assert full_grads.abs().sum() > 0


def test_full_recipe_is_transformers_loss_times_the_example_count():
    model = tiny_lora_model()
    batch = collate(random_examples(4, seed=3), pad_id=1)
    with torch.no_grad():
        builtin = model(**batch).loss  # mean over targets, shifted inside transformers
        ours = label_loss(model, batch, lean=False)
    torch.testing.assert_close(ours, builtin * 4)


def test_lean_head_refuses_rows_without_exactly_one_target():
    model = tiny_lora_model()
    batch = collate(random_examples(2), pad_id=1)
    batch["labels"][0, 1] = 5  # a second target in row 0
    with pytest.raises(ValueError, match="exactly one target"):
        label_loss(model, batch, lean=True)


def test_gradient_checkpointing_keeps_the_gradients():
    model = tiny_lora_model(dropout=0.1)
    batch = collate(random_examples(4, seed=5), pad_id=1)
    model.train()

    def run():
        model.zero_grad()
        torch.manual_seed(0)
        label_loss(model, batch, lean=True).backward()
        return grads(model)

    plain = run()
    model.get_base_model().gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    torch.testing.assert_close(run(), plain, rtol=1e-5, atol=1e-7)


# --- gradient accumulation --------------------------------------------------------------------------
@pytest.mark.parametrize("sizes", [[4, 4], [3, 3, 1], [1] * 5, [5, 2]])
def test_accumulated_gradient_equals_the_big_batch_gradient(sizes):
    model = tiny_lora_model()
    examples = random_examples(sum(sizes), seed=7)
    model.zero_grad()
    (label_loss(model, collate(examples, 1)) / len(examples)).backward()
    big = grads(model)
    model.zero_grad()
    start = 0
    for size in sizes:
        micro = collate(examples[start : start + size], 1)
        (label_loss(model, micro) / len(examples)).backward()  # summed loss / examples in the step
        start += size
    # fp32 sums in another order: elements near 0 keep an absolute error of about 1e-7 of the largest
    # (CPUs differ here: AVX-512 and AVX2 kernels add in different orders); a wrong scaling is off by 10%+
    torch.testing.assert_close(grads(model), big, rtol=1e-4, atol=1e-5 * big.abs().max().item())


def test_mean_loss_over_micro_batch_count_is_wrong_on_an_uneven_step():
    """The tutorial's scaling: right for equal micro-batches, wrong as soon as one is shorter."""
    model = tiny_lora_model()
    examples = random_examples(7, seed=9)
    model.zero_grad()
    (label_loss(model, collate(examples, 1)) / 7).backward()
    big = grads(model)
    model.zero_grad()
    for micro in (examples[:4], examples[4:]):
        (label_loss(model, collate(micro, 1)) / len(micro) / 2).backward()
    assert (grads(model) - big).norm() > 1e-3 * big.norm()


# --- the schedule the notebook relies on ------------------------------------------------------------
@pytest.mark.parametrize("warmup, total", [(10, 50), (3, 7), (0, 5), (100, 962)])
def test_warmup_then_linear_decay(warmup, total):
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.AdamW([param], lr=1e-3)
    scheduler = get_linear_schedule_with_warmup(optimizer, num_warmup_steps=warmup, num_training_steps=total)
    used = []
    for _ in range(total):
        used.append(optimizer.param_groups[0]["lr"])  # the lr this step runs with
        optimizer.step()
        scheduler.step()
    for step, lr in enumerate(used):
        expected = 1e-3 * (step / warmup if step < warmup else (total - step) / (total - warmup))
        assert lr == pytest.approx(expected, abs=1e-12)
    assert max(used) == pytest.approx(1e-3) and optimizer.param_groups[0]["lr"] == 0.0


# --- a 4-bit base on the CPU: validation must not break training ------------------------------------
def test_gradients_on_a_4bit_base_survive_an_eval_pass(tmp_path):
    """bitsandbytes repacks CPU 4-bit weights at the first eval-mode forward, after which its matmul has
    no backward; load_model switches that off, so a validation between steps cannot zero the gradients."""
    from lmcls_helpers.models import load_model
    from lmcls_helpers.profiles import get_profile

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False)
    LlamaForCausalLM(config).save_pretrained(tmp_path / "model")
    base = load_model(get_profile("tiny").with_(model_id=str(tmp_path / "model")))
    lora = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=list(LLAMA_PROJECTIONS), init_lora_weights="gaussian")
    model = get_peft_model(base, lora)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1)
    batch = collate(random_examples(4), pad_id=1)

    def first_layer_grads():
        model.train()
        model.zero_grad()
        label_loss(model, batch).backward()
        return grads(model)

    before = first_layer_grads()
    model.eval()
    with torch.no_grad():
        model(**batch)
    after = first_layer_grads()
    torch.testing.assert_close(after, before)
    assert before.abs().sum() > 0
