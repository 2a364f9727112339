"""The lean recipe must not change the answer: same loss, gradients and scores as the tutorial's.

Benchmarks are not tests: nothing here looks at a timing.
"""

import json
from dataclasses import replace

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM

import benchmarks.recipes as recipes
from benchmarks.recipes import (
    LEAN,
    STEP_EXAMPLES,
    TUTORIAL,
    ablation,
    accumulate_step,
    attach_lora,
    loss_for,
    micro_batches,
    pad_length,
    set_grad_checkpointing,
    step_plan,
)
from lmcls_helpers.batches import collate, encode_examples
from lmcls_helpers.data import load_cola
from lmcls_helpers.models import load_model
from lmcls_helpers.profiles import get_profile
from lmcls_helpers.prompts import PromptTemplate
from lmcls_helpers.scoring import label_logits, last_token_logits
from lmcls_helpers.tokens import load_tokenizer


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


def test_both_recipes_take_the_same_optimizer_steps():
    data = random_examples(80)
    plans = {r.name: step_plan(data, r) for r in (TUTORIAL, LEAN)}
    for recipe in (TUTORIAL, LEAN):
        plan = plans[recipe.name]
        sizes = [sum(map(len, step)) for step in plan]
        assert sorted(sizes) == [16, 32, 32], "steps of STEP_EXAMPLES, one smaller (the lean steps are shuffled)"
        assert all(len(chunk) <= recipe.micro_batch_size for step in plan for chunk in step)
        assert sorted(tuple(ex) for step in plan for chunk in step for ex in chunk) == sorted(map(tuple, data))
    assert [len(step) for step in plans["tutorial"]] == [4, 4, 2] and [len(step) for step in plans["lean"]] == [1] * 3
    with pytest.raises(ValueError, match="multiple of the micro-batch size"):
        step_plan(data, TUTORIAL, step_examples=12)


def test_the_tutorial_pads_every_batch_to_the_longest_example_in_the_data():
    data = random_examples(50)
    longest = max(map(len, data))
    assert pad_length(data, TUTORIAL) == longest and pad_length(data, LEAN) is None
    widths = {r.name: [collate(c, 0, pad_to=pad_length(data, r))["input_ids"].shape[1] for c in micro_batches(data, r)]
              for r in (TUTORIAL, LEAN)}
    assert set(widths["tutorial"]) == {longest}, "one tokenizer call over the whole set: every batch is as wide"
    assert sum(widths["lean"]) < longest * len(widths["lean"]), "dynamic padding must make some batches narrower"
    # a sample of a bigger training set: the tutorial pads to the whole set's longest, never below the sample's
    assert pad_length(data, TUTORIAL, longest=longest + 9) == longest + 9
    assert pad_length(data, TUTORIAL, longest=3) == longest and pad_length(data, LEAN, longest=99) is None


def test_examples_from_a_cola_folder_are_those_sentences_as_llama3_prompts(tmp_path):
    """``--cola``: the folder's training sentences, in order, each a prompt ending in its label word."""
    tiny = get_profile("tiny")
    from_folder, default = recipes.examples(5, tiny.cola_root), recipes.examples(5)
    assert from_folder == default and len(from_folder) == 5  # the tiny world's files are such a folder
    with pytest.raises(FileNotFoundError):
        recipes.examples(5, tmp_path)


def test_ablation_switches_one_thing_per_row():
    rows = ablation("cpu")
    assert rows[0] == TUTORIAL and rows[-1] == LEAN
    for before, after in zip(rows, rows[1:]):
        changed = [k for k in ("logits", "grad_checkpointing", "micro_batch_size", "dynamic_padding", "group_by_length",
                               "fused_adamw")
                   if getattr(before, k) != getattr(after, k)]
        assert len(changed) == 1, (before, after)
    assert ablation("cuda")[-1] == replace(LEAN, name="fused_adamw", fused_adamw=True)


# --- The tiny world's 4-bit model, with LoRA attached as the benchmark attaches it -----------------------


@pytest.fixture(scope="module")
def tiny():
    """The tiny 4-bit model + LoRA (no dropout, so train mode is deterministic), its pad id and 32 examples."""
    profile = get_profile("tiny")
    tokenizer = load_tokenizer(profile, padding_side="right")
    train = load_cola(profile.cola_root)["in_domain_train"].iloc[:STEP_EXAMPLES]
    template = PromptTemplate()
    data = encode_examples(tokenizer, list(train.sentence), list(train.label), template, profile.label_words)
    torch.manual_seed(0)
    model = attach_lora(load_model(profile), profile.with_(lora_dropout=0.0))
    for name, p in model.named_parameters():  # LoRA B starts at zero, which would leave A without a gradient
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.02)
    label_ids = template.check(tokenizer, profile.label_words)
    return model, tokenizer.pad_token_id, data, label_ids


def test_one_step_of_the_lean_recipe_equals_the_tutorial_step_on_the_tiny_model(tiny):
    model, pad_id, data, _ = tiny
    (tut_step,), (lean_step,) = step_plan(data, TUTORIAL), step_plan(data, LEAN)
    assert [len(c) for c in tut_step] == [8] * 4 and [len(c) for c in lean_step] == [32]
    assert sorted(map(tuple, sum(tut_step, []))) == sorted(map(tuple, sum(lean_step, []))), "the same 32 examples"
    assert [len(ex) for ex in lean_step[0]] == sorted(len(ex) for ex in data), "the lean step is grouped by length"
    results = {}
    model.train()
    try:
        for recipe, step in ((TUTORIAL, tut_step), (LEAN, lean_step)):
            set_grad_checkpointing(model, recipe.grad_checkpointing)
            assert model.get_base_model().is_activation_checkpointing is recipe.grad_checkpointing
            model.zero_grad(set_to_none=True)
            loss = accumulate_step(recipe, model, step, pad_id, pad_to=pad_length(data, recipe))
            grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
            results[recipe.name] = (loss, grads)
    finally:
        set_grad_checkpointing(model, False)
        model.zero_grad(set_to_none=True)
        model.eval()
    (tut_loss, tut_grads), (lean_loss, lean_grads) = results["tutorial"], results["lean"]
    torch.testing.assert_close(lean_loss, tut_loss, rtol=1e-5, atol=1e-5)
    assert lean_grads.keys() == tut_grads.keys() and len(tut_grads) == 2 * 7 * model.config.num_hidden_layers
    for name, grad in tut_grads.items():
        assert grad.abs().sum() > 0, f"{name} got no gradient: the comparison would prove nothing"
        torch.testing.assert_close(lean_grads[name], grad, rtol=1e-4, atol=1e-6, msg=lambda m, n=name: f"{n}: {m}")


def test_lean_scoring_predicts_what_full_logits_predict_on_the_tiny_model(tiny):
    model, pad_id, data, label_ids = tiny
    prompts = [ex[:-1] for ex in data]
    model.eval()
    with torch.no_grad():
        scores = {}
        for recipe in (TUTORIAL, LEAN):
            chunks = micro_batches(prompts, recipe)
            order = [tuple(p) for c in chunks for p in c]
            pad_to = pad_length(prompts, recipe)
            logits = torch.cat([label_logits(model, collate(c, pad_id, pad_to=pad_to), label_ids,
                                             lean=recipe.logits == "label") for c in chunks])  # (32, 2)
            scores[recipe.name] = dict(zip(order, logits))
    assert scores["lean"].keys() == scores["tutorial"].keys()
    keys = list(scores["tutorial"])
    lean, tut = (torch.stack([scores[n][k] for k in keys]) for n in ("lean", "tutorial"))
    torch.testing.assert_close(lean, tut, rtol=1e-4, atol=1e-5)
    assert torch.equal(lean.argmax(dim=1), tut.argmax(dim=1)), "lean scoring must predict the same labels"


# --- The command itself, on a very small model ------------------------------------------------------------


@pytest.fixture()
def small_bench(tmp_path, monkeypatch):
    """Llama 3's vocabulary on a 1-layer, 32-wide body; the report and the chart go to ``tmp_path``."""
    monkeypatch.setattr(recipes, "CPU_SCALED", dict(recipes.CPU_SCALED, hidden_size=32, intermediate_size=64,
                                                    num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1))
    build = lambda *parts: tmp_path.joinpath("build", *parts)  # noqa: E731
    monkeypatch.setattr(recipes, "build_dir", build)
    monkeypatch.setattr("lmcls_helpers.plots.build_dir", build)
    return tmp_path / "build"


@pytest.mark.parametrize("ablate", [False, True])
def test_main_prints_only_json_and_writes_the_chart(small_bench, capsys, monkeypatch, ablate):
    # The module's `tiny` fixture keeps its model alive while main builds its own: two small CPU models,
    # so the one-model rule that `make test` sets for the notebooks (a T4's) is lifted here.
    monkeypatch.delenv("LMCLS_ONE_MODEL", raising=False)
    recipes.main(["--device", "cpu", "--examples", "8", "--json"] + (["--ablate", "--repeats", "2"] if ablate else []))
    out = capsys.readouterr()
    report = json.loads(out.out)  # stdout is pure JSON; the table went to stderr
    assert "train ex/s" in out.err and "train ex/s" not in out.out
    assert report["model"] == {"vocab_size": 128256, "hidden_size": 32, "num_hidden_layers": 1}
    names = [r.name for r in ablation("cpu")] if ablate else ["tutorial", "lean"]
    assert list(report["train"]) == names and list(report["score"]) == names
    for key in ("train_speedup", "score_speedup", "peak_memory_ratio"):
        assert isinstance(report[key], float) and report[key] > 0, key
    for name in names:
        assert report["train"][name]["examples_per_s"] > 0 and report["score"][name]["examples_per_s"] > 0
        assert report["train"][name]["peak_gib"] > 0  # the estimate at the 8B shape
        for key in ("train", "score"):
            runs = report[key][name]["all_examples_per_s"]
            assert len(runs) == report["repeats"] == (2 if ablate else 1) and max(runs) == report[key][name]["examples_per_s"]
    assert report["memory_source"].startswith("estimated")
    assert (small_bench / "figures" / "bench_recipes_cpu.png").stat().st_size > 0
    assert json.loads((small_bench / "bench" / "recipes_cpu.json").read_text()) == report
