"""The lean recipe must not change the answer: same loss, gradients and scores as the tutorial's."""

from dataclasses import replace

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM

from benchmarks.recipes import LEAN, TUTORIAL, loss_for, micro_batches
from lmcls_helpers.batches import collate
from lmcls_helpers.scoring import last_token_logits


@pytest.fixture(scope="module")
def lora_model():
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2)
    model = LlamaForCausalLM(config)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"], task_type="CAUSAL_LM")
    model = get_peft_model(model, lora)
    for name, p in model.named_parameters():  # LoRA B starts at zero; make the adapter do something
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.02)
    return model


def random_examples(n: int, seed: int = 0) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(3, 300, (int(torch.randint(4, 20, (1,), generator=g)),), generator=g).tolist() for _ in range(n)]


@pytest.mark.parametrize("padding_side", ["left", "right"])
def test_lean_loss_and_gradients_equal_the_tutorial_recipe(lora_model, padding_side):
    batch = collate(random_examples(6), pad_id=0, padding_side=padding_side)
    grads = {}
    for recipe in (TUTORIAL, LEAN):
        lora_model.zero_grad()
        loss = loss_for(recipe, lora_model, batch)
        loss.backward()
        grads[recipe.name] = (loss.detach(), [p.grad.clone() for p in lora_model.parameters() if p.requires_grad])
    torch.testing.assert_close(grads["lean"][0], grads["tutorial"][0], rtol=1e-5, atol=1e-5)
    for lean_g, tut_g in zip(grads["lean"][1], grads["tutorial"][1]):
        torch.testing.assert_close(lean_g, tut_g, rtol=1e-4, atol=1e-6)


def test_lean_scores_equal_full_logits(lora_model):
    batch = collate(random_examples(5, seed=1), pad_id=0, padding_side="right")
    with torch.no_grad():
        torch.testing.assert_close(last_token_logits(lora_model, batch, lean=True),
                                   last_token_logits(lora_model, batch, lean=False), rtol=1e-5, atol=1e-5)


def test_length_grouping_keeps_every_example_once():
    data = random_examples(50)
    for recipe in (TUTORIAL, LEAN):
        chunks = micro_batches(data, recipe)
        assert sorted(map(tuple, (ex for c in chunks for ex in c))) == sorted(map(tuple, data))
        assert all(len(c) <= recipe.micro_batch_size for c in chunks)
    padded = {r.group_by_length: sum(max(map(len, c)) * len(c) for c in micro_batches(data, r))
              for r in (LEAN, replace(LEAN, group_by_length=False))}
    assert padded[True] < padded[False], "grouping by length must pad less"
