# ---
# jupyter:
#   jupytext:
#     cell_metadata_filter: tags,-all
#     formats: notebooks///ipynb,nbs_src///py:percent
#     notebook_metadata_filter: kernelspec,jupytext,-jupytext.text_representation.jupytext_version
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 04 · The training loop
# *Fine-tune the label word with QLoRA, one visible step at a time: no `Trainer`, no hidden `fit()`.*
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/lmcls-org/lmcls/blob/main/notebooks/04_training_loop.ipynb)
#
# Notebook 2 scored sentences with a few-shot prompt. Here we train LoRA adapters on a 4-bit base
# so that the right label word becomes the likelier one, as Chris McCormick's
# [Fine-Tuning Llama 3 for Sentence Classification](https://github.com/chrisjmccormick/llm-tuning-examples/blob/main/sentence-classification/Fine-Tuning%20Llama%203%20for%20Sentence%20Classification.ipynb)
# ("the Llama 3 tutorial") does, fixing its bugs on the way. What you will learn:
#
# - how "prompt + label word" becomes a training example whose **only target is the label token**;
# - what LoRA trains beside a 4-bit weight that stays frozen;
# - why **gradient accumulation** must scale the loss by the whole step;
# - the loop itself: forward, label-only loss, backward, clip, step, schedule, validate, checkpoint;
# - how to **resume exactly** from a checkpoint.

# %%
PROFILE = None  # None: $LMCLS_PROFILE, else "tiny" (CPU, offline). "small": a real 135M LLM on the CPU. Colab GPU: "full".

import subprocess
import sys

if "google.colab" in sys.modules:  # Colab only: this package, and the libraries Colab lacks; quiet unless one fails
    for args in ("--no-deps git+https://github.com/lmcls-org/lmcls.git@main",
                 "transformers==5.23.0 peft==0.21.2 bitsandbytes==0.50.2 accelerate==1.15.0 gguf==0.19.0"):
        pip = subprocess.run([sys.executable, "-m", "pip", "install", "-q", *args.split()], capture_output=True, text=True)
        if pip.returncode:
            raise RuntimeError(f"`pip install {args}` failed (pip's last words below). Rerun this cell; if it fails "
                               f"again, run `!pip install {args}` in a new cell to see the whole log.\n{pip.stderr[-2000:]}")

# %%
from lmcls_helpers import course, results

profile = course.start("04_training_loop", PROFILE)  # the profile, its world, login, versions and device, the time plan

# %%
import os
import shutil
import time

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from lmcls_helpers import plots, quant, training
from lmcls_helpers.batches import collate, encode_examples, label_loss, step_batches, train_val_split
from lmcls_helpers.data import download_cola, error_kinds, load_cola
from lmcls_helpers.models import LLAMA_PROJECTIONS, load_model
from lmcls_helpers.paths import build_dir
from lmcls_helpers.profiles import LLAMA3_8B_CONFIG
from lmcls_helpers.prompts import PromptTemplate
from lmcls_helpers.scoring import evaluate, recall_by_kind
from lmcls_helpers.tokens import last_token_index, load_tokenizer
from lmcls_tools import diagrams

_ = torch.manual_seed(profile.seed)  # every random draw below follows from the seed

# %% [markdown]
# ## 1. Training examples: the prompt, then the label word
#
# Each training text is the few-shot prompt with the sentence, **followed by its label word**. The
# model sees the answer in its input, but a causal model cannot look ahead: the prediction *of* the
# label word is made from the tokens before it.
#
# We split CoLA's in-domain training file 90/10 into train and validation with a fixed seed, and keep
# the **out-of-domain** file as the test set, as the Llama 3 tutorial does.

# %%
cola_root = profile.cola_root if profile.cola_root.exists() else download_cola(profile.cola_root.parent)
splits = load_cola(cola_root)
train_df, val_df = train_val_split(splits["in_domain_train"].iloc[: profile.max_train_examples],
                                   val_fraction=0.1, seed=profile.seed)
val_df = val_df.iloc[: profile.max_eval_examples]  # None keeps everything
test_df = splits["out_of_domain_dev"].iloc[: profile.max_eval_examples]
pd.DataFrame({"sentences": [len(train_df), len(val_df), len(test_df)],
              "share acceptable": [train_df.label.mean(), val_df.label.mean(), test_df.label.mean()]},
             index=["train", "validation", "test (out of domain)"]).round(3)

# %% [markdown]
# The tokenizer pads on the **right** for training: the padding comes after the label word, where
# nothing reads it. Llama 3 has no pad token, so we pad with eos; the attention mask hides it.

# %%
tokenizer = load_tokenizer(profile, padding_side="right")
template = PromptTemplate()
label_ids = template.check(tokenizer, profile.label_words)  # [id of ' unacceptable', id of ' acceptable']
assert tokenizer.padding_side == "right", "this notebook trains with right padding"
assert tokenizer.pad_token_id == tokenizer.eos_token_id, "pad = eos: Llama 3 ships no pad token"
print(template.format(train_df.sentence.iloc[0], profile.label_words[train_df.label.iloc[0]]))

# %% [markdown]
# `encode_examples` tokenizes `prompt + label word` for every sentence and refuses any example whose
# last token is not its label word (a tokenizer that appends eos, or a label word that merges with
# the end of the prompt, would silently train on the wrong token).

# %%
train_examples = encode_examples(tokenizer, list(train_df.sentence), list(train_df.label), template, profile.label_words)
lengths = [len(ids) for ids in train_examples]
print(f"{len(train_examples):,} training examples, {min(lengths)} to {max(lengths)} tokens long")

# %% [markdown]
# `collate` pads a few examples into a batch and builds the **targets**: `-100` everywhere (PyTorch's
# cross-entropy skips that value) except at the label word. The shortest, the longest and the first
# example; around the label word of the shortest:

# %%
picked = [int(np.argmin(lengths)), int(np.argmax(lengths)), 0]
batch = collate([train_examples[i] for i in picked], tokenizer.pad_token_id, tokenizer.padding_side)  # 3 tensors (3, seq)
label_at = int(last_token_index(batch["attention_mask"])[0])  # row 0 is the shortest example
pd.DataFrame({"token": tokenizer.convert_ids_to_tokens(batch["input_ids"][0]),
              "id": batch["input_ids"][0].numpy(),
              "attention": batch["attention_mask"][0].numpy(),
              "target": batch["labels"][0].numpy()}).rename_axis("position").iloc[label_at - 4 : label_at + 4]

# %% [markdown]
# One target per row, at the label word; the padding after it has attention 0 and target -100. Every
# row obeys the same rule:

# %%
targets = batch["labels"] != -100
assert (targets.sum(dim=1) == 1).all(), "exactly one target per example"
assert set(batch["labels"][targets].tolist()) <= set(label_ids), "the target is always a label word"
assert (batch["labels"][targets] == batch["input_ids"][targets]).all(), "the target is the token at that position"

# %% [markdown]
# ## 2. The 4-bit base model and its few-shot score
#
# Training must beat the prompt alone, so we score that first. The base is loaded in 4-bit NF4 (notebook 3) and *computes* in the profile's
# dtype: bf16 on GPUs that do it natively, fp16 on a T4 (section 6 says what fp16 asks of the loop),
# fp32 on the CPU.

# %%
model = load_model(profile)  # 4-bit NF4 weights, computing in profile.compute_dtype
print(f"compute dtype: {profile.compute_dtype}")
fewshot_test = evaluate(model, tokenizer, list(test_df.sentence), list(test_df.label), template, label_ids,
                        batch_size=profile.eval_batch_size)
fewshot_val = evaluate(model, tokenizer, list(val_df.sentence), list(val_df.label), template, label_ids,
                       batch_size=profile.eval_batch_size)
print(f"few-shot  test MCC {fewshot_test.mcc:.3f}  accuracy {fewshot_test.accuracy:.3f}   "
      f"validation MCC {fewshot_val.mcc:.3f}")

# %% [markdown]
# That is the baseline; section 9 puts the fine-tuned score beside it.
#
# ## 3. LoRA on a 4-bit base
#
# The 4-bit weights cannot be trained: an update would have to be re-quantized. LoRA leaves them
# frozen and learns a low-rank correction beside each projection: `A` takes the input down to `r`
# numbers, `B` takes them back up, and their output, scaled by `α/r`, is added to the frozen weight's.
# One of this model's MLP projections, drawn with its own sizes:

# %%
config = model.config
fig = diagrams.lora_beside_nf4(config.hidden_size, config.intermediate_size, profile.lora_r, profile.lora_alpha,
                               compute_dtype=str(profile.compute_dtype))
plots.show(fig, "04_lora_beside_nf4")

# %% [markdown]
# `B` starts at 0, so the model is unchanged until the first step. The adapters go on **all seven
# projections** of every block, as the QLoRA paper recommends. Most QLoRA recipes first call peft's
# `prepare_model_for_kbit_training`; we do not: `get_peft_model` freezes the base anyway, and that
# function's fp32 copy of the embeddings and LM head costs memory (notebook 5 measures it).

# %%
from peft import LoraConfig, get_peft_model

lora_config = training.lora_config(profile)  # r, alpha, dropout from the profile; all seven projections
torch.manual_seed(profile.seed)  # the A matrices start random
model = get_peft_model(model, lora_config)
trainable = [p for p in model.parameters() if p.requires_grad]
n_trainable = sum(p.numel() for p in trainable)
n_weights = int(quant.parameter_table(model)["weights"].sum())  # a packed uint8 element holds two 4-bit weights
print(f"trainable: {n_trainable:,} LoRA weights in {len(trainable)} tensors, "
      f"{n_trainable / n_weights:.2%} of the model's {n_weights:,} weights (base + LoRA)")


# %% [markdown]
# Each adapted `d_in → d_out` projection adds `r·(d_in + d_out)` weights, as the diagram counts. The
# formula must reproduce peft's count, and then gives Llama-3-8B's:

# %%
def lora_param_count(config: dict, r: int, targets) -> int:
    """LoRA weights for a Llama-style config: r * (d_in + d_out) per adapted projection per layer."""
    h, inter = config["hidden_size"], config["intermediate_size"]
    kv = config.get("head_dim") or h // config["num_attention_heads"]
    kv *= config["num_key_value_heads"]
    dims = {"q_proj": h + h, "k_proj": h + kv, "v_proj": h + kv, "o_proj": h + h,
            "gate_proj": h + inter, "up_proj": h + inter, "down_proj": inter + h}
    return config["num_hidden_layers"] * sum(r * dims[t] for t in targets)


assert lora_param_count(model.get_base_model().config.to_dict(), profile.lora_r, LLAMA_PROJECTIONS) == n_trainable
lora_8b = lora_param_count(LLAMA3_8B_CONFIG, profile.lora_r, LLAMA_PROJECTIONS)
weights_8b = int(quant.predicted_table(LLAMA3_8B_CONFIG)["weights"].sum()) + lora_8b
print(f"Llama-3-8B, r={profile.lora_r}, all seven projections: {lora_8b:,} trainable weights, "
      f"{lora_8b / weights_8b:.2%} of its {weights_8b:,} weights (base + LoRA)")

# %% [markdown]
# For Llama-3-8B only a quarter of a percent of the weights train: the adapters, their gradients and
# their optimizer state are small, and the base can stay in 4 bits.
#
# ## 4. The loss: one target per sentence
#
# Position `t` of the logits predicts token `t + 1`. So we drop the last position of the logits and
# the first of the targets, and take the cross-entropy where the target is not -100: the one position
# *before* each label word. We **sum** over examples; section 5 shows why.

# %%
batch = collate(train_examples[: profile.micro_batch_size], tokenizer.pad_token_id, tokenizer.padding_side)
batch = {k: v.to(profile.device) for k, v in batch.items()}
n_examples = len(batch["labels"])
model.eval()  # no dropout while we compare numbers
with torch.no_grad():
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits  # (batch, seq, vocab)
    loss_sum = torch.nn.functional.cross_entropy(
        logits[:, :-1].flatten(0, 1).float(),  # position t ...
        batch["labels"][:, 1:].flatten(),  # ... predicts token t + 1
        ignore_index=-100, reduction="sum")
print(f"logits {tuple(logits.shape)}; summed loss {loss_sum.item():.4f} over {n_examples} examples")

# %% [markdown]
# `transformers` does the same inside the model when you pass `labels=`, but returns the **mean**
# over targets, the loss the Llama 3 tutorial used:

# %%
with torch.no_grad():
    builtin = model(**batch).loss  # mean over the non -100 targets
torch.testing.assert_close(loss_sum / n_examples, builtin, **profile.tolerance)
print(f"ours / n = {loss_sum.item() / n_examples:.5f}   transformers' loss = {builtin.item():.5f}")

# %% [markdown]
# The logits above score every vocabulary entry at every position, and the loss reads one row per
# example. `label_loss(model, batch, lean=True)` applies the LM head only at the position before each
# label word: the same loss from a far smaller tensor. Where memory is short (the 8B model on a T4),
# the profile also turns on **gradient checkpointing**: the blocks recompute their activations in the
# backward pass instead of storing them. Notebook 5 weighs both.

# %%
lean_head = True  # the LM head only where the label word is predicted
with torch.no_grad():
    lean_sum = label_loss(model, batch, lean=lean_head)
torch.testing.assert_close(lean_sum, loss_sum, **profile.tolerance)
if profile.gradient_checkpointing:
    model.get_base_model().config.use_cache = False  # a KV cache is for generation; it cannot be checkpointed
    model.get_base_model().activation_checkpointing_enable()
print(f"lean loss {lean_sum.item():.4f} (full logits {loss_sum.item():.4f}); "
      f"gradient checkpointing in the loop: {profile.gradient_checkpointing}")

# %% [markdown]
# ## 5. The batch the maths wants vs the batch the device holds
#
# The optimizer should see the average gradient of `train_batch_size` examples; the GPU may hold only
# `micro_batch_size` at once. Gradients add up across `backward()` calls, so we run
# `grad_accum_steps` micro-batches and step once. Each step's examples are drawn at random, then
# sorted by length so that micro-batches need less padding.

# %%
grad_accum_steps = profile.grad_accum_steps
print(f"train_batch_size {profile.train_batch_size} = micro_batch_size {profile.micro_batch_size} "
      f"× grad_accum_steps {grad_accum_steps}")
plan = [step for epoch in range(profile.num_epochs)
        for step in step_batches(lengths, profile.train_batch_size, profile.micro_batch_size, profile.seed, epoch)]
total_steps = len(plan)
print(f"{profile.num_epochs} epoch(s) of {len(train_examples):,} examples: {total_steps} optimizer steps")
[[lengths[i] for i in micro] for micro in plan[0]]  # token counts of the first step's micro-batches


# %% [markdown]
# Sorting inside a step changes nothing in the maths but saves padding. Tokens processed, padding
# included, over the whole plan:

# %%
def padded_tokens(micro_batches) -> int:
    return sum(len(micro) * max(lengths[i] for i in micro) for micro in micro_batches)


shuffle = torch.Generator().manual_seed(0)
unsorted = [[i for micro in step for i in micro] for step in plan]
unsorted = [[flat[j] for j in torch.randperm(len(flat), generator=shuffle)] for flat in unsorted]
unsorted = [[flat[k : k + profile.micro_batch_size] for k in range(0, len(flat), profile.micro_batch_size)] for flat in unsorted]
sorted_cost, unsorted_cost = sum(map(padded_tokens, plan)), sum(map(padded_tokens, unsorted))
whole_set_cost = sum(len(micro) for step in plan for micro in step) * max(lengths)  # the tutorial: one tokenizer call
print(f"length-sorted micro-batches: {sorted_cost:,} tokens; random: {unsorted_cost:,} ({1 - sorted_cost / unsorted_cost:.1%} saved)")
print(f"every example padded to the longest in the set, as the tutorial's single tokenizer call did: {whole_set_cost:,}")
assert sorted_cost <= unsorted_cost <= whole_set_cost


# %% [markdown]
# The Llama 3 tutorial paid the most: it tokenized all training sentences in one call with
# `padding="longest"`. Padding each micro-batch only to its own longest example is **dynamic padding**.
#
# **Scaling the loss.** The step's mean loss is `sum of per-example losses / examples in the step`,
# so each micro-batch contributes its **summed** loss divided by the **step's** example count. The
# Llama 3 tutorial divided each micro-batch's *mean* loss by the number of micro-batches: the same only
# when all micro-batches are equal, which the last step of an epoch often is not. We check both on an
# uneven split of the first step (all but one example, then one) against one big batch, dropout off.

# %%
def lora_grads(micro_batches, divisor):
    """Accumulate gradients over micro-batches (lists of example indices); divisor(micro) scales each summed loss."""
    model.zero_grad(set_to_none=True)
    for micro in micro_batches:
        b = collate([train_examples[i] for i in micro], tokenizer.pad_token_id, tokenizer.padding_side)
        loss = label_loss(model, {k: v.to(profile.device) for k, v in b.items()}, lean=lean_head)
        (loss / divisor(micro)).backward()
    return torch.cat([p.grad.flatten() for p in model.parameters() if p.requires_grad])


model.eval()
examples = [i for micro in plan[0] for i in micro]
micro_batches = [examples[:-1], examples[-1:]]  # an uneven step
print("micro-batch sizes:", [len(m) for m in micro_batches])
big_batch = lora_grads([examples], lambda micro: len(examples))

# %%
ours = lora_grads(micro_batches, lambda micro: len(examples))  # summed loss / examples in the step
tutorials = lora_grads(micro_batches, lambda micro: len(micro) * len(micro_batches))  # mean loss / micro-batches
relative = {name: ((g - big_batch).norm() / big_batch.norm()).item() for name, g in [("ours", ours), ("tutorial's", tutorials)]}
print({name: f"{err:.1e}" for name, err in relative.items()}, "(relative error against the big batch)")
grad_bound = max(10 * torch.finfo(profile.compute_dtype).eps, 1e-4)  # 10 rounding steps of the dtype
assert relative["ours"] < grad_bound, "accumulated and big-batch gradients must agree (up to rounding in the compute dtype)"

# %% [markdown]
# Ours reproduces the big-batch gradient up to rounding; the tutorial's gives the lone example as much
# weight as all the others together. It also clipped after **every** micro-batch; clipping belongs
# once per step, on the full gradient.
#
# ## 6. Optimizer, schedule and loss scaling
#
# AdamW on the trainable weights only (a weight decay of 0 makes it plain Adam). The tutorial's
# `from transformers import AdamW` is gone in transformers 5; `torch.optim.AdamW` is the same
# algorithm. The switch `use_8bit_adam` selects bitsandbytes' 8-bit AdamW, which saves little for LoRA's few weights
# (notebook 5 measures it).

# %%
import bitsandbytes as bnb

use_8bit_adam = False  # bitsandbytes AdamW8bit: moment estimates stored in 8 bits
optimizer_class = bnb.optim.AdamW8bit if use_8bit_adam else torch.optim.AdamW
optimizer = optimizer_class(trainable, lr=profile.lr, weight_decay=profile.weight_decay)
print(f"{optimizer_class.__module__}.{optimizer_class.__name__}: lr {profile.lr:g}, weight decay {profile.weight_decay:g}")


# %% [markdown]
# The learning rate **warms up** linearly over `warmup_steps`, then decays linearly towards 0. Adam's
# first steps move every weight by about the learning rate while its estimates of the gradient's size
# rest on a batch or two; the warm-up keeps those steps short. `get_linear_schedule_with_warmup` from
# `transformers` runs the first step at rate 0; our factor counts steps from 1, so the first step
# learns and the rate reaches 0 just after the last.

# %%
def lr_factor(index: int) -> float:
    """The share of the peak learning rate that optimizer step ``index + 1`` uses (LambdaLR counts from 0)."""
    step = index + 1  # steps 1 .. total_steps
    if step <= profile.warmup_steps:
        return step / profile.warmup_steps  # step warmup_steps runs at the peak
    return (total_steps + 1 - step) / (total_steps + 1 - profile.warmup_steps)  # 0 one step after the last


def make_scheduler(optimizer):
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)


scheduler = make_scheduler(optimizer)
assert all(lr_factor(i) == training.lr_factor(i, profile.warmup_steps, total_steps) for i in range(total_steps))  # = train()'s
lrs = [profile.lr * lr_factor(i) for i in range(total_steps)]  # the rates of steps 1 .. total_steps
peak = profile.warmup_steps  # the step that first runs at the peak rate
assert 0 < lrs[0] < profile.lr and lrs[peak - 1] == profile.lr, "the first step learns; step warmup_steps is the peak"
assert all(a > b for a, b in zip(lrs[peak - 1 :], lrs[peak:])) and lrs[-1] > 0, "then it decays, staying above 0"
fig = plots.line_chart({"learning rate": (range(1, total_steps + 1), lrs, {"marker": ""})}, "learning rate",
                       title=f"learning rate over {total_steps} steps", span=(1, peak, f"warm-up (steps 1-{peak})"))
plots.show(fig, "04_lr_schedule")
print(f"step 1: lr {lrs[0]:.1e}; peak {profile.lr:g} at step {peak}; last step ({total_steps}): lr {lrs[-1]:.1e}")


# %% [markdown]
# **Loss scaling in fp16.** fp16 cannot hold numbers below about 6e-8: small gradients flowing back
# through fp16 activations round to 0. `torch.amp.GradScaler` multiplies each micro-batch's loss by a
# large factor before `backward()` and divides the summed gradient back (`unscale_`) before clipping,
# so clipping sees the true gradient; a step whose gradient holds an inf or nan is skipped and the
# factor shrinks. bf16 and fp32 have fp32's range: there the scaler is off and changes nothing.

# %%
def make_scaler():
    return torch.amp.GradScaler(profile.device, enabled=profile.compute_dtype == torch.float16)


scaler = make_scaler()
print(f"loss scaling: {scaler.is_enabled()} (compute dtype {profile.compute_dtype})")


# %% [markdown]
# ## 7. The training loop
#
# One optimizer step: per micro-batch, forward, scaled label-only loss, backward; then unscale and
# clip the full gradient once, step the optimizer and the schedule, clear the gradients.

# %%
def train_step(model, optimizer, scheduler, scaler, micro_batches) -> dict:
    """One optimizer step over micro-batches of example indices; returns the step's mean loss, lr and grad norm."""
    n = sum(len(micro) for micro in micro_batches)  # examples in this step
    loss_total = 0.0
    for micro in micro_batches:
        b = collate([train_examples[i] for i in micro], tokenizer.pad_token_id, tokenizer.padding_side)
        loss = label_loss(model, {k: v.to(profile.device) for k, v in b.items()}, lean=lean_head)  # summed
        scaler.scale(loss / n).backward()  # accumulates d(mean loss of the step), times the fp16 loss scale
        loss_total += loss.item()
    scaler.unscale_(optimizer)  # the true gradient again, before clipping
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), profile.max_grad_norm)  # once, on the full gradient
    lr = optimizer.param_groups[0]["lr"]
    scale = scaler.get_scale()
    scaler.step(optimizer)  # optimizer.step(), unless the gradient holds inf or nan
    scaler.update()  # after a skipped step the scale shrinks ...
    if scaler.get_scale() >= scale:  # ... and the schedule waits for a step that was taken
        scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return {"loss": loss_total / n, "lr": lr, "grad_norm": grad_norm.item()}


# %% [markdown]
# Every `eval_every` steps (and at the end) the loop measures validation loss and MCC with
# `evaluate`, and writes a checkpoint (section 8). `evaluate` switches the model to `eval()` and back
# to `train()`; the tutorial forgot the way back, so its dropout stayed off after the first validation.
#
# **Where checkpoints go.** A Colab runtime that disconnects takes its disk with it. `checkpoint_dir`
# picks Google Drive when it is mounted (`from google.colab import drive; drive.mount("/content/drive")`
# before this cell): a run cut short then **continues** from its last checkpoint when you run the
# notebook again. Anywhere else the checkpoints go under `build/` and each run starts afresh.

# %%
from lmcls_helpers.checkpoints import latest_checkpoint, load_checkpoint, save_checkpoint
from lmcls_helpers.paths import checkpoint_dir

checkpoint_root = checkpoint_dir("04_training_loop")  # Google Drive when mounted, else build/checkpoints/
if checkpoint_root.is_relative_to(build_dir()):  # on the runtime's own disk: nothing survives to continue
    shutil.rmtree(checkpoint_root, ignore_errors=True)
history = []  # one row per optimizer step
validations = [{"step": 0, "val_loss": fewshot_val.loss, "val_mcc": fewshot_val.mcc, "elapsed_s": 0.0}]
model.train()
torch.manual_seed(profile.seed)  # dropout masks
first_step = 1
if (interrupted := latest_checkpoint(checkpoint_root)) is not None:  # an earlier session got this far
    state = load_checkpoint(interrupted, model, optimizer, scheduler)  # adapter, optimizer, schedule, RNG
    scaler.load_state_dict(state["extra"]["scaler"])  # the fp16 loss scale ({} where the scaler is off)
    history, validations, first_step = state["extra"]["history"], state["extra"]["validations"], state["step"] + 1
    print(f"continuing the run in {checkpoint_root} after step {state['step']}")
start = time.perf_counter()
# the bar is off when TQDM_DISABLE is set (as under `make run`): in Jupyter, tqdm needs to be told
progress = tqdm(range(first_step, total_steps + 1), desc="training", unit="step", disable=bool(os.environ.get("TQDM_DISABLE")))
for step in progress:
    history.append({"step": step, **train_step(model, optimizer, scheduler, scaler, plan[step - 1])})
    if step % profile.eval_every == 0 or step == total_steps:
        val = evaluate(model, tokenizer, list(val_df.sentence), list(val_df.label), template, label_ids,
                       batch_size=profile.eval_batch_size)
        validations.append({"step": step, "val_loss": val.loss, "val_mcc": val.mcc, "elapsed_s": time.perf_counter() - start})
        save_checkpoint(checkpoint_root / f"step-{step:05d}", model, optimizer, scheduler, step,
                        extra={"history": history, "validations": validations,  # the curves survive too
                               "scaler": scaler.state_dict()})
        progress.set_postfix(loss=f"{history[-1]['loss']:.3f}", val_mcc=f"{val.mcc:.3f}")
train_seconds = time.perf_counter() - start
print(f"steps {first_step} to {total_steps} in {train_seconds:.1f} s, validation and checkpoints included")

# %% [markdown]
# One row per validation, with the mean training loss since the previous one (step 0 is the untrained
# model):

# %%
steps_df = pd.DataFrame(history)
stats = pd.DataFrame(validations)
window = np.searchsorted(stats.step.to_numpy(), steps_df.step.to_numpy())  # the validation each step leads to
stats["train_loss"] = steps_df.groupby(window).loss.mean()
stats["lr"] = steps_df.set_index("step").lr.reindex(stats.step).to_numpy()
stats.set_index("step")[["train_loss", "val_loss", "val_mcc", "lr", "elapsed_s"]].round(4)

# %% [markdown]
# Learning curves against optimizer steps (the tutorial labelled this axis "Epoch"). Each step's
# training loss comes from one batch and is noisy; the validation loss uses the same sentences each time.

# %%
fig = plots.line_chart({"training loss (per step)": (steps_df.step, steps_df.loss, {"marker": "", "alpha": 0.35, "linewidth": 1}),
                        "validation loss": (stats.step, stats.val_loss, {"color": "tab:green"})},
                       "cross-entropy of the label word (nats)", title="label-word loss: training steps and validation")
plots.show(fig, "04_learning_curves")

# %% [markdown]
# What did the warm-up do? The mean training loss over its steps, over as many steps after it, and
# over the rest of the run:

# %%
per_step, w = steps_df.set_index("step")[["lr", "loss"]], profile.warmup_steps
parts = {f"warm-up (steps 1-{w})": per_step.iloc[:w], f"next {w} steps": per_step.iloc[w : 2 * w],
         f"the rest (steps {2 * w + 1}-{total_steps})": per_step.iloc[2 * w :]}
phases = pd.DataFrame({name: {"mean lr": part.lr.mean(), "mean training loss": part.loss.mean()} for name, part in parts.items()}).T
after = per_step.loss.iloc[w:].mean()  # every step after the warm-up
print(f"mean training loss: {per_step.loss.iloc[:w].mean():.4f} during the warm-up, {after:.4f} after it")
assert after < per_step.loss.iloc[:w].mean(), "once the rate has peaked, the loss falls below the warm-up's"
phases.round(4)

# %% [markdown]
# Once the rate reaches its peak the loss falls below the warm-up's (the check above). The warm-up does
# not do the learning; it holds Adam's first, poorly informed steps back. The validation MCC over the
# same run:

# %%
fig = plots.line_chart({"validation MCC": (stats.step, stats.val_mcc, {"color": "tab:purple"})}, "validation MCC",
                       title="validation MCC during training", hlines={"few-shot (step 0)": fewshot_val.mcc})
plots.show(fig, "04_validation_mcc")
best_val_mcc = float(stats.val_mcc[stats.step > 0].max())
print(f"best validation MCC {best_val_mcc:.3f} (few-shot {fewshot_val.mcc:.3f})")

# %% [markdown]
# ## 8. Checkpoint and resume
#
# To continue *exactly* where an interrupted run stopped we need more than the adapter: the
# optimizer's moment estimates, the scheduler's position, the step counter, the random-number state
# that LoRA dropout draws from, and in fp16 the loss scale. The data order follows from the seed and
# the epoch (section 5). Each checkpoint folder holds:

# %%
checkpoints = sorted(checkpoint_root.glob("step-*"))
pd.DataFrame([{"file": f.name, "KiB": round(f.stat().st_size / 1024, 1)} for f in sorted(checkpoints[0].iterdir())])

# %% [markdown]
# The adapter in peft's own format (with a `README.md` model card), and `training_state.pt` with the
# rest plus a fingerprint of the base model and LoRA config: loading into another setup stops with an
# error instead of garbage.
#
# Now pretend the run died at the checkpoint closest to half-way. We wipe the adapter, build a new
# optimizer, scheduler and scaler (as a new process would), load the checkpoint, and train on towards
# the next one (or for the profile's `resume_replay_steps`).

# %%
saved_steps = [int(p.name.split("-")[1]) for p in checkpoints]
assert len(saved_steps) >= 2, "the resume demonstration needs at least two checkpoints: lower eval_every"
resume_step = min(saved_steps[:-1], key=lambda s: abs(s - total_steps / 2))
next_saved = saved_steps[saved_steps.index(resume_step) + 1]
until_step = min(next_saved, resume_step + (profile.resume_replay_steps or next_saved))
with torch.no_grad():
    for p in trainable:
        p.normal_()  # whatever training left in the adapter is gone
optimizer = optimizer_class(trainable, lr=profile.lr, weight_decay=profile.weight_decay)
scheduler, scaler = make_scheduler(optimizer), make_scaler()
state = load_checkpoint(checkpoint_root / f"step-{resume_step:05d}", model, optimizer, scheduler)
scaler.load_state_dict(state["extra"]["scaler"])
print(f"resumed at step {state['step']} of {total_steps}; replaying steps {resume_step + 1} to {until_step}")

# %%
model.train()
resumed = [train_step(model, optimizer, scheduler, scaler, plan[step - 1])["loss"]
           for step in range(state["step"] + 1, until_step + 1)]
recorded = steps_df.set_index("step").loss.loc[resume_step + 1 : until_step].to_numpy()
loss_diff = float(np.abs(np.array(resumed) - recorded).max())
pd.DataFrame({"uninterrupted": recorded, "resumed": resumed}, index=range(resume_step + 1, until_step + 1)).head()

# %% [markdown]
# The resumed run's losses against the uninterrupted run's. Where the replay reaches the next
# checkpoint, the adapter weights must match too:

# %%
from peft import get_peft_model_state_dict
from safetensors.torch import load_file

tol = profile.tolerance  # exact agreement is possible only where every kernel adds in a fixed order
weight_diff, weight_scale = 0.0, 1.0
if until_step == next_saved:
    saved = load_file(checkpoint_root / f"step-{until_step:05d}" / "adapter_model.safetensors")
    current = {k: v.detach().cpu().float() for k, v in get_peft_model_state_dict(model).items()}
    weight_diff = max((current[k] - saved[k].float()).abs().max().item() for k in saved)
    weight_scale = max(v.abs().max().item() for v in saved.values())
resume_matches = bool(np.allclose(resumed, recorded, **tol)) and weight_diff <= tol["rtol"] * weight_scale
print(f"largest loss difference {loss_diff:.2e}; largest weight difference {weight_diff:.2e} (largest weight {weight_scale:.2f})")
assert resume_matches, "the resumed run must retrace the uninterrupted one"

# %% [markdown]
# On the CPU the resumed run is bit-for-bit the uninterrupted one. On a GPU some kernels add up in a
# varying order, so the check allows the compute dtype's tolerance. Finally we load the last
# checkpoint: the model at the end of training.

# %%
state = load_checkpoint(checkpoint_root / f"step-{total_steps:05d}", model, optimizer, scheduler)
assert state["step"] == total_steps

# %% [markdown]
# ## 9. The test score
#
# Training never saw the out-of-domain split. Its score, next to the few-shot score and the Llama 3
# tutorial's numbers for Llama-3-8B:

# %%
test = evaluate(model, tokenizer, list(test_df.sentence), list(test_df.label), template, label_ids,
                batch_size=profile.eval_batch_size)
this_run = pd.DataFrame({"MCC": [fewshot_test.mcc, test.mcc], "accuracy": [fewshot_test.accuracy, test.accuracy]},
                        index=["few-shot", "fine-tuned"])
tutorial = pd.DataFrame({"MCC": [0.495, 0.647], "accuracy": [np.nan, 0.8527]}, index=["few-shot", "fine-tuned"])
print(f"{profile.name} profile's model, {len(test_df)} test sentences:")
print(this_run.round(3).to_string())
print("\nthe Llama 3 tutorial (Llama-3-8B on real CoLA, 516 sentences, T4), not comparable with a run on another model or data:")
print(tutorial.round(3).to_string())

# %% [markdown]
# Read each table down its rows; do not compare across them: different models, different data.
#
# > **Three worlds.** The tiny model's few-shot skill is built in: it was pre-trained on lists in this
# > prompt's format that flag one kind of error (a wrong pronoun case), so fine-tuning has CoLA's other
# > kinds to teach. A 135M model (the small profile) starts near chance and stays there. Llama-3-8B brings real few-shot skill, and fine-tuning still added to it (the second table).
#
# Which errors did training teach? Synthetic data records each sentence's kind of error, so we count
# per kind how many test sentences each model flags as unacceptable (recall); real CoLA cannot.

# %%
from IPython.display import display

kinds = error_kinds(cola_root)  # per split, the error kind of each sentence; None on real CoLA
if kinds is None:
    print("This data has no error-kind labels (real CoLA): nothing to break down.")
else:
    test_kinds = kinds["out_of_domain_dev"].iloc[: len(test_df)]
    by_kind = pd.concat({"few-shot": recall_by_kind(test_kinds, fewshot_test.preds),
                         "fine-tuned": recall_by_kind(test_kinds, test.preds)}, axis=1)
    display(by_kind.drop(columns=[("fine-tuned", "sentences")]).round(2))

# %% [markdown]
# Where kinds are recorded, the few-shot column catches the one kind its pre-training taught, and
# fine-tuning adds others, unevenly. The errors after fine-tuning:

# %%
fig = plots.confusion_heatmap(test.labels, test.preds, title=f"fine-tuned, out-of-domain test (MCC {test.mcc:.2f})")
plots.show(fig, "04_confusion_test")
missed = int(((test.labels == 0) & (test.preds == 1)).sum())
false_alarms = int(((test.labels == 1) & (test.preds == 0)).sum())
print(f"unacceptable called acceptable: {missed} of {int((test.labels == 0).sum())}; "
      f"acceptable called unacceptable: {false_alarms} of {int((test.labels == 1).sum())}")

# %% [markdown]
# With 70% of CoLA's sentences acceptable, "acceptable" is the cheaper guess when the model is unsure,
# so letting unacceptable sentences through is the mistake to watch.
#
# Could the gain be luck of the test set? `bootstrap_sd` draws new test sets of the same size from
# this one, with replacement, and measures how much the gain moves: its standard deviation. A gain of
# three standard deviations or more is clear (notebook 6 uses the same yardstick). It reads
# "acceptable" where a score is above 0, so we hand it each model's logit of " acceptable" minus that
# of " unacceptable":

# %%
from lmcls_helpers.training import bootstrap_sd

gain = test.mcc - fewshot_test.mcc
assert -2 <= gain <= 2, f"a difference of two MCCs lies in [-2, 2], not {gain}"
gain_sd = bootstrap_sd(test.labels, test.scores[:, 1] - test.scores[:, 0],
                       fewshot_test.scores[:, 1] - fewshot_test.scores[:, 0], seed=profile.seed)
print(f"gain {gain:+.3f} ± {gain_sd:.3f} from resampling {len(test_df)} test sentences"
      + (f": {gain / gain_sd:.1f} standard deviations" if gain_sd > 0 else " (both models answer every sentence alike)"))

# %% [markdown]
# ## 10. Keep the classifier
#
# An adapter alone is not a classifier: its scores also depend on the template, the two label words
# and the base model. `save_classifier` writes them beside the adapter; notebook 9 reloads the folder,
# classifies new sentences and weighs merging the adapter into the 4-bit base.

# %%
from lmcls_helpers.classify import save_classifier

classifier_dir = save_classifier(build_dir("classifiers", "04_label_words"), model, profile, template)
print(f"saved to {classifier_dir.relative_to(build_dir().parent)}: {sorted(f.name for f in classifier_dir.iterdir())}")

# %% [markdown]
# This notebook's headline numbers, which `make run` prints:

# %%
results.record("fewshot_ood_mcc", fewshot_test.mcc)
results.record("finetuned_ood_mcc", test.mcc)
results.record("finetuned_ood_accuracy", test.accuracy)
results.record("best_val_mcc", best_val_mcc)
results.record("train_seconds", round(train_seconds, 1))
results.record("finetuned_gain_mcc", gain)
results.record("finetuned_gain_sd", gain_sd)
results.record("resume_matches", resume_matches)
course.finish("04_training_loop", profile)  # the time taken against the plan; the model loads checked

# %% [markdown]
# ## Summary
#
# - A training example is `prompt + label word`; its only target is the label word, predicted at the
#   position before it.
# - LoRA trains a low-rank path `B·A` beside each frozen NF4 weight; `B = 0` leaves the model unchanged
#   at the start.
# - Accumulation is exact when each micro-batch adds its **summed** loss over the **step's** example
#   count; clip once per step, after unscaling in fp16.
# - A checkpoint that resumes exactly holds the adapter, the optimizer, scheduler and scaler state,
#   the step and the random-number state.
#
# ## Exercises
#
# **1. Counting LoRA weights.** The original LoRA paper adapted only `q_proj` and `v_proj`. How many
# trainable weights does rank 16 on those two give Llama-3-8B? Work it out by hand first.
# *Hint:* `r · (d_in + d_out)` per projection and layer; `k_proj`/`v_proj` output
# `num_key_value_heads × head_dim = 8 × 128` features.

# %%
qv_r16_params = None  # your answer: an integer

# %%
if qv_r16_params is None:
    print("Exercise 1 not attempted yet: set qv_r16_params above.")
else:  # peft counts it on an 8B skeleton that has shapes but no memory ("meta" device)
    from transformers import AutoModelForCausalLM, LlamaConfig

    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(LlamaConfig(**{k: v for k, v in LLAMA3_8B_CONFIG.items() if k != "model_type"}))
        counted = get_peft_model(skeleton, LoraConfig(r=16, lora_alpha=32, target_modules=["q_proj", "v_proj"]))
    expected = sum(p.numel() for p in counted.parameters() if p.requires_grad)
    assert qv_r16_params == expected, f"{qv_r16_params:,} is not peft's count"
    print(f"correct: {expected:,} trainable weights")

# %% [markdown]
# **2. Early stopping.** The last checkpoint is not always the best. Pick the step with the highest
# validation MCC (the first, if several tie); the check puts its checkpoint's adapter on a fresh 4-bit
# base and confirms it reproduces the recorded MCC. *Hint:* `stats` has the MCC per step; the folder is
# `checkpoint_root / f"step-{step:05d}"`, and `PeftModel.from_pretrained(load_model(profile), folder)` loads it.

# %%
best_step = None  # your answer: a step number from stats.step

# %%
if best_step is None:
    print("Exercise 2 not attempted yet: set best_step above.")
else:
    from peft import PeftModel

    from lmcls_helpers.models import free_gpu_memory

    trained = stats[stats.step > 0]
    assert best_step == int(trained.step[trained.val_mcc.idxmax()]), "that is not the (first) best validation step"
    model = optimizer = scheduler = trainable = None  # drop the trained model, so its memory can be freed
    free_gpu_memory()
    best_model = PeftModel.from_pretrained(load_model(profile), checkpoint_root / f"step-{best_step:05d}")
    check = evaluate(best_model, tokenizer, list(val_df.sentence), list(val_df.label), template, label_ids,
                     batch_size=profile.eval_batch_size)
    assert abs(check.mcc - best_val_mcc) < 1e-6, "the checkpoint must reproduce its validation MCC"
    print(f"step {best_step}: validation MCC {check.mcc:.3f}, as recorded")
