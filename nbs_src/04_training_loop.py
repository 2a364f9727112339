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
# Notebook 2 scored sentences with a frozen model and a few-shot prompt. Here we train LoRA adapters
# on a 4-bit base so that the right label word becomes the likelier one. What you will learn:
#
# - how "prompt + label word" becomes a training example whose **only target is the label token**;
# - why **gradient accumulation** must scale the loss by the whole step, with a check that proves it
#   (and the tutorial's version that gets an uneven step wrong);
# - the loop itself: forward, label-only loss, backward, clip, step, schedule, validate, checkpoint;
# - a **lean recipe** (the LM head only where the label is predicted, gradient checkpointing) with the
#   same loss and gradients for far less memory;
# - how to **resume exactly** from a checkpoint, and what to do with the adapter afterwards.

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

from lmcls_helpers import memory, plots, quant
from lmcls_helpers.batches import collate, encode_examples, label_loss, step_batches, train_val_split
from lmcls_helpers.data import download_cola, error_kinds, load_cola
from lmcls_helpers.models import LLAMA_PROJECTIONS, load_model
from lmcls_helpers.paths import build_dir
from lmcls_helpers.profiles import LLAMA3_8B_CONFIG
from lmcls_helpers.prompts import PromptTemplate
from lmcls_helpers.scoring import evaluate, recall_by_kind
from lmcls_helpers.tokens import last_token_index, load_tokenizer

torch.manual_seed(profile.seed)
notebook_start = time.perf_counter()

# %% [markdown]
# ## 1. Training examples: the prompt, then the label word
#
# Training should teach one thing: after the prompt, say the right label word. So each training
# text is the few-shot prompt with the sentence, **followed by its label word**. The model sees the
# answer in its input, but a causal model cannot look ahead: the prediction *of* the label word is
# made from the tokens before it.
#
# We split CoLA's in-domain training file 90/10 into train and validation with a fixed seed, and keep
# the **out-of-domain** file as the test set, as the tutorial does (the in-domain dev file, which
# notebook 2 scored, is not used here).

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
# The tokenizer pads on the **right** for training: every example then starts at position 0, and
# the padding comes after the label word, where nothing reads it. Llama 3 has no pad token, so we
# pad with eos; the attention mask hides it.

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
# cross-entropy skips that value) except at the label word, which it finds with `last_token_index`.
# A batch of the shortest, the longest and the first example; around the label word of the shortest:

# %%
picked = [int(np.argmin(lengths)), int(np.argmax(lengths)), 0]
batch = collate([train_examples[i] for i in picked], tokenizer.pad_token_id, tokenizer.padding_side)  # 3 tensors (3, seq)
label_at = int(last_token_index(batch["attention_mask"])[0])  # row 0 is the shortest example
pd.DataFrame({"token": tokenizer.convert_ids_to_tokens(batch["input_ids"][0]),
              "id": batch["input_ids"][0].numpy(),
              "attention": batch["attention_mask"][0].numpy(),
              "target": batch["labels"][0].numpy()}).rename_axis("position").iloc[label_at - 4 : label_at + 4]

# %% [markdown]
# One target per row, the label word's own id at the label word's position; the padding after it
# has attention 0 and target -100. Every row of the batch obeys the same rule:

# %%
targets = batch["labels"] != -100
assert (targets.sum(dim=1) == 1).all(), "exactly one target per example"
assert set(batch["labels"][targets].tolist()) <= set(label_ids), "the target is always a label word"
assert (batch["labels"][targets] == batch["input_ids"][targets]).all(), "the target is the token at that position"

# %% [markdown]
# An empty split is a mistake worth stopping for (a wrong path, or `max_train_examples=0`):

# %%
try:
    encode_examples(tokenizer, [], [], template, profile.label_words)
except ValueError as err:
    print(err)

# %% [markdown]
# ## 2. The 4-bit base model and its few-shot score
#
# Training must beat what the prompt alone achieves, so we measure that first, on the test set and
# on the validation set, with the scoring function of notebook 2.
#
# The base is loaded in 4-bit NF4 (notebook 3). Its *compute* dtype comes from the profile: bf16 on
# GPUs that do bf16 natively (Ampere and newer), fp16 on a T4, fp32 on the CPU. Beware:
# `torch.cuda.is_bf16_supported()` answers `True` on a T4 because bf16 can be *emulated* there,
# slowly; the profile looks at the compute capability (8.0 or more) instead.

# %%
model = load_model(profile)  # 4-bit NF4 weights, computing in profile.compute_dtype
print(f"compute dtype: {profile.compute_dtype}")
fewshot_test = evaluate(model, tokenizer, list(test_df.sentence), list(test_df.label), template, label_ids,
                        batch_size=profile.eval_batch_size)
fewshot_val = evaluate(model, tokenizer, list(val_df.sentence), list(val_df.label), template, label_ids,
                       batch_size=profile.eval_batch_size)
results.record("fewshot_ood_mcc", fewshot_test.mcc)
print(f"few-shot  test MCC {fewshot_test.mcc:.3f}  accuracy {fewshot_test.accuracy:.3f}   "
      f"validation MCC {fewshot_val.mcc:.3f}")

# %% [markdown]
# This is the baseline; section 10 puts the fine-tuned score next to it. On the tiny profile the
# baseline is built in, not emergent: we pre-trained the tiny model on lists in this prompt's own
# format that flag only one kind of error (a wrong pronoun case, "me saw him"), so few-shot it
# catches those and almost nothing else (notebook 2 shows the recall per error kind). What
# fine-tuning has to teach it is CoLA's stricter standard: every other kind of error. A real LLM's
# few-shot skill comes from its own pre-training and is spread over all kinds.
#
# ## 3. LoRA on a 4-bit base
#
# The 4-bit weights cannot be trained: an update would have to be re-quantized. LoRA leaves them
# frozen and learns a low-rank correction `B·A` next to each projection.
#
# Most QLoRA recipes first call peft's `prepare_model_for_kbit_training(model)`. It freezes every
# base weight, **casts the remaining 16-bit weights (embeddings, LM head, norms) to fp32**, and
# switches on gradient checkpointing (section 5: it keeps fewer of the *activations*, the tensors
# the forward pass saves for backward, and recomputes the rest). We do not call it. `get_peft_model`
# below freezes the base anyway, section 5 switches checkpointing on itself, and the fp32 cast has a
# price on a GPU: the cast weights double, and with fp32 embeddings the residual stream (the hidden
# state that runs from block to block, each block adding its output to it) becomes fp32 too, so the
# activations grow as well. The tutorial trained Llama-3-8B on a T4 without
# it (its memory figures in notebook 5 are for that recipe), and notebook 5's estimator models that
# recipe. What the cast alone would add for Llama-3-8B, before any activation:

# %%
from peft import LoraConfig, get_peft_model

from lmcls_helpers import training

c = LLAMA3_8B_CONFIG
upcast_params = 2 * c["vocab_size"] * c["hidden_size"] + (2 * c["num_hidden_layers"] + 1) * c["hidden_size"]
print(f"Llama-3-8B: {upcast_params / 1e9:.2f}B weights would go from 2 to 4 bytes: +{upcast_params * 2 / 2**30:.2f} GiB")

# %% [markdown]
# The whole cost was measured once on a GPU (an H200, the tutorial's step of 8 prompts of 86 tokens,
# `prepare_model_for_kbit_training` with checkpointing left off, so only its cast counts; notebook 5,
# section 5, has the whole table):

# %%
shipped = memory.load_measurements(memory.VALIDATION)  # notebook 5's table of GPU measurements, shipped
steps = {r["step"]: r for r in shipped["branches"]}
plain, upcast = (steps[s]["measured_gib"] for s in ("batch 8, tutorial loss", "batch 8, tutorial loss, fp32 upcast"))
weights_gib = upcast_params * 2 / 2**30
print(f"{shipped['files'][steps['batch 8, tutorial loss']['file']]['gpu']}: {plain:.1f} GiB without the cast, "
      f"{upcast:.1f} GiB with it: +{upcast - plain:.1f} GiB, {weights_gib:.2f} for the weights and "
      f"{upcast - plain - weights_gib:.1f} for the activations")

# %% [markdown]
# Now the adapters: rank 8, scale α/r = 16/8 = 2, dropout 0.05 on their input, on **all seven
# projections** of every block (the QLoRA paper found adapters on all of a block's linear layers
# necessary to match full fine-tuning; the original LoRA recipe adapted only q and v). LoRA starts
# with `B = 0`, so the model is unchanged until the first step.

# %%
lora_config = training.lora_config(profile)  # r, alpha, dropout from the profile; all seven projections
torch.manual_seed(profile.seed)  # the A matrices start random
model = get_peft_model(model, lora_config)
trainable = [p for p in model.parameters() if p.requires_grad]
n_trainable = sum(p.numel() for p in trainable)
n_weights = int(quant.parameter_table(model)["weights"].sum())  # a packed uint8 element holds two 4-bit weights
print(f"trainable: {n_trainable:,} LoRA weights in {len(trainable)} tensors, "
      f"{n_trainable / n_weights:.2%} of the model's {n_weights:,} weights (base + LoRA)")


# %% [markdown]
# Each adapted `d_in → d_out` projection adds `r·(d_in + d_out)` weights (A is `r × d_in`, B is
# `d_out × r`). That formula must reproduce peft's count here, and then tells us the count for 8B:

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
# About 21 million weights to train, 0.26% of all of Llama-3-8B's weights (the same denominator as
# this profile's model's share above, which is larger because its layers are so narrow): that is why the
# adapters, their gradients and their optimizer state are small, and why the base can stay in 4 bits.
#
# ## 4. The loss: one target per sentence
#
# Position `t` of the logits predicts token `t + 1`. So we drop the last position of the logits and
# the first of the targets, and take the cross-entropy where the target is not -100: the one position
# *before* each label word. We **sum** over examples instead of averaging; section 6 shows why.

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
# `transformers` does exactly this inside the model when you pass `labels=` (it shifts for you), but
# returns the **mean** over targets. The tutorial used that built-in loss:

# %%
with torch.no_grad():
    builtin = model(**batch).loss  # mean over the non -100 targets
torch.testing.assert_close(loss_sum / n_examples, builtin, **profile.tolerance)
print(f"ours / n = {loss_sum.item() / n_examples:.5f}   transformers' loss = {builtin.item():.5f}")

# %% [markdown]
# ## 5. The lean recipe
#
# Look at the shape above: the model computed a score for **every vocabulary entry at every
# position**, `(batch, seq, vocab)`, and the loss reads one row per example. For Llama 3 the
# vocabulary has 128,256 entries, the LM head is a 128,256 × 4,096 matrix, and the logits are
# upcast to fp32 for the loss. Two switches make training lighter without changing its numbers:
#
# - **lean head**: run the decoder, gather the hidden state at the position *before* each label
#   word, and apply the LM head to those rows only, `(batch, vocab)`;
# - **gradient checkpointing**: keep only each layer's input in the forward pass and recompute the
#   rest during the backward pass; it trades about one extra forward pass for activation memory.

# %%
lean_head = True  # apply the LM head only where the label word is predicted
gradient_checkpointing = True  # recompute activations in the backward pass instead of storing them

# %% [markdown]
# The lean head, written out (`model.get_base_model()` is the Llama model with the LoRA layers
# inside; `.model` is its decoder, `.lm_head` its output layer):

# %%
label_pos = (batch["labels"] != -100).float().argmax(dim=1)  # (batch,) where each label word sits
rows = torch.arange(n_examples, device=label_pos.device)
llama = model.get_base_model()
with torch.no_grad():
    hidden = llama.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    lean_logits = llama.lm_head(hidden[rows, label_pos - 1])  # (batch, vocab): one row per example
    lean_sum = torch.nn.functional.cross_entropy(lean_logits.float(), batch["labels"][rows, label_pos], reduction="sum")
print(f"hidden {tuple(hidden.shape)} -> logits {tuple(lean_logits.shape)}; summed loss {lean_sum.item():.4f}")
torch.testing.assert_close(lean_sum, loss_sum, **profile.tolerance)

# %% [markdown]
# Same loss. The sizes of the two logits tensors, here and for the tutorial's Llama-3-8B batch of
# 8 sequences of 86 tokens (one fp32 copy each; the full recipe holds several such tensors at once:
# the logits, their fp32 copy, the log-probabilities and, in the backward pass, their gradient):

# %%
vocab_8b = LLAMA3_8B_CONFIG["vocab_size"]
sizes = {"this profile": (logits.numel(), lean_logits.numel()), "Llama-3-8B, 8 × 86 tokens": (8 * 86 * vocab_8b, 8 * vocab_8b)}
pd.DataFrame({"full logits (MiB, fp32)": {k: v[0] * 4 / 2**20 for k, v in sizes.items()},
              "lean logits (MiB, fp32)": {k: v[1] * 4 / 2**20 for k, v in sizes.items()}}).round(2)

# %% [markdown]
# What that buys on a GPU: notebook 5's estimator predicts the peak of one training step
# (`torch.cuda.max_memory_allocated`) for Llama-3-8B at the tutorial's prompt length, per recipe and
# micro-batch size. Notebook 5 checks it against the peaks measured on an H100 for this model and
# recipe (batch 8 × 86 tokens, shipped with the package): every phase within 1% (its self-check
# allows 10%). Next to it, what a T4 can hold: its capacity minus its CUDA context (notebook 5, section 1).

# %%
from lmcls_helpers.memory import GPUS, cuda_context_gib, estimate_training_memory

t4_spec = GPUS["T4 16 GB"]
t4_tensor_gib = t4_spec["capacity_gib"] - cuda_context_gib()["T4 16 GB"]  # GiB left for tensors
recipe_switches = {"tutorial (all logits)": {"logits": "all", "grad_checkpointing": False},
                   "lean head": {"logits": "label", "grad_checkpointing": False},
                   "lean head + checkpointing": {"logits": "label", "grad_checkpointing": True}}
peaks = pd.DataFrame({name: {f"micro-batch {b}": estimate_training_memory(
    LLAMA3_8B_CONFIG, batch_size=b, seq_len=86, workspace_mib=t4_spec["workspace_mib"], **kw)["total"]
    for b in (8, 16, 32)} for name, kw in recipe_switches.items()})
print(f"estimated peak GiB for one training step; a T4 holds {t4_spec['capacity_gib']} GiB, "
      f"{t4_tensor_gib:.2f} GiB of it for tensors")
peaks.round(2)

# %%
tutorial_left = t4_tensor_gib - peaks.loc["micro-batch 8", "tutorial (all logits)"]
lean_share = peaks["lean head + checkpointing"] / peaks["tutorial (all logits)"]
print(f"the estimator says: the tutorial's step leaves {tutorial_left:.2f} GiB of the T4's budget; the lean recipe "
      f"needs {' / '.join(f'{x:.0%}' for x in lean_share)} of its peak at {' / '.join(lean_share.index)}")


# %% [markdown]
# By the estimate, the tutorial's step fits the T4, but with a third of a GiB to spare. The lean head alone saves
# about a gigabyte at micro-batch 8, more at bigger ones; checkpointing is what changes the picture: the activations of 32 blocks no
# longer pile up, and a micro-batch four times the tutorial's fits in about half a T4. The price is one more forward pass per step, which the benchmark
# (`python -m benchmarks.recipes`) weighs against the bigger batches it allows.

# %% [markdown]
# Equal losses are not enough: training follows the **gradients**. We compare the gradients of
# every LoRA weight under the full recipe and under the chosen switches, in training mode with
# dropout on (resetting the random seed before each run gives both the same dropout masks).

# %%
def loss_and_grads(compute_loss):
    """Run one backward pass from a fresh seed; return the loss and all LoRA gradients as one vector."""
    model.zero_grad(set_to_none=True)
    torch.manual_seed(profile.seed)
    loss = compute_loss()
    loss.backward()
    return loss.detach(), torch.cat([p.grad.flatten() for p in model.parameters() if p.requires_grad])


model.train()
full_loss, full_grads = loss_and_grads(lambda: label_loss(model, batch, lean=False))
if gradient_checkpointing:  # transformers' newer name for gradient checkpointing; non-reentrant by default
    model.get_base_model().config.use_cache = False  # a KV cache is for generation; it cannot be checkpointed
    model.get_base_model().activation_checkpointing_enable()
recipe_loss, recipe_grads = loss_and_grads(lambda: label_loss(model, batch, lean=lean_head))
grad_error = ((recipe_grads - full_grads).norm() / full_grads.norm()).item()
print(f"lean_head={lean_head}, gradient_checkpointing={gradient_checkpointing}: loss {recipe_loss.item():.5f} "
      f"(full recipe {full_loss.item():.5f}); gradients differ by {grad_error:.1e} (relative)")
torch.testing.assert_close(recipe_loss, full_loss, **profile.tolerance)  # exact in fp32, 16-bit rounding on a GPU
grad_bound = max(10 * torch.finfo(profile.compute_dtype).eps, 1e-4)  # 10 rounding steps: 0.078 in bf16, 1e-4 in fp32
assert grad_error < grad_bound, f"same recipe, same gradients (up to {grad_bound:.0e}, rounding in {profile.compute_dtype})"

# %% [markdown]
# Same loss, same gradients, so the same training run; only memory and time differ.
# `label_loss(model, batch, lean=...)` from `lmcls_helpers.batches` packages the two recipes of
# sections 4 and 5, so the loop below (and the benchmarks) can switch between them.
#
# The lean head is free, so the loop keeps it. Checkpointing is a trade, so the loop uses it only
# where memory asks for it, as `profile.gradient_checkpointing` says. On the `full` profile the GPU
# decides, through notebook 5's estimator: on a T4 the 8B step at micro-batch 8 with the lean head
# would leave about 1.4 GiB (the table above), just under the 10% the profile keeps free for
# fragmentation and longer prompts, so there it is on. The CPU profiles never checkpoint: they have memory to spare,
# and the recomputation would only cost time. On the tiny model it costs far more than the one
# extra forward pass above suggests: 2.9 times as long per training example, in the CPU measurement
# that `lmcls_helpers/measurements/runtime_rates.json` records (the bookkeeping dominates there).

# %%
gradient_checkpointing = profile.gradient_checkpointing  # the loop's setting: on only where memory needs it
if gradient_checkpointing:
    model.get_base_model().config.use_cache = False
    model.get_base_model().activation_checkpointing_enable()
else:
    model.get_base_model().activation_checkpointing_disable()
print(f"the training loop below: lean_head={lean_head}, gradient_checkpointing={gradient_checkpointing}")

# %% [markdown]
# ## 6. The batch the maths wants vs the batch the device holds
#
# The optimizer should see the average gradient of `train_batch_size` examples; the GPU may hold
# only `micro_batch_size` at once. Gradients add up across `backward()` calls, so we run
# `grad_accum_steps` micro-batches and step once. The plan for one epoch draws each step's examples
# at random and, inside a step, sorts them by length so that micro-batches need less padding.

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
# Sorting inside a step changes nothing in the maths (a sum does not care about order) but saves
# padding. Tokens the model must process, padding included, over the whole plan:

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
# With micro-batches as big as the step there is nothing to save; the saving grows with the number
# of micro-batches per step. The tutorial paid the most: it tokenized all training sentences in one
# call with `padding="longest"`, so every batch was as long as the longest sentence of the whole set
# (86 tokens with Llama 3's tokenizer on its CoLA set). Padding each micro-batch only to its own longest example is **dynamic padding**.
#
# **Scaling the loss.** The gradient of the step's mean loss is the gradient of
# `sum of per-example losses / number of examples in the step`. So each micro-batch contributes its
# **summed** loss divided by the **step's** example count. The tutorial instead divided each
# micro-batch's *mean* loss by the number of micro-batches. That is the same only when every
# micro-batch has the same number of examples; the last step of an epoch often does not.
#
# We check both on the first step's examples, split unevenly on purpose (all but one, then a single
# example, as the last step of an epoch can be), against one big batch. Dropout is off (`eval()`), so all three
# compute the same function.

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
assert relative["ours"] < grad_bound, "accumulated and big-batch gradients must agree (up to rounding in the compute dtype)"

# %% [markdown]
# Accumulating summed losses divided by the step's size reproduces the big-batch gradient to float
# precision; the tutorial's scaling gives the lone example of the short micro-batch as much weight
# as all the others together.
#
# One more detail the tutorial gets wrong: it calls `clip_grad_norm_` after **every** micro-batch,
# clipping partial sums. Clipping belongs after the last micro-batch, once, on the full gradient.
#
# ## 7. Optimizer and learning-rate schedule
#
# AdamW with decoupled weight decay, on the trainable weights only; the tiny profile sets the decay to
# 0 (printed below), which makes it plain Adam, while the full profile keeps a small one. (`from transformers import
# AdamW`, as in the tutorial, no longer exists in transformers 5; PyTorch's `torch.optim.AdamW` is the
# same algorithm.) The switch selects bitsandbytes' 8-bit AdamW instead.

# %%
import bitsandbytes as bnb

use_8bit_adam = False  # bitsandbytes AdamW8bit: moment estimates stored in 8 bits
optimizer_class = bnb.optim.AdamW8bit if use_8bit_adam else torch.optim.AdamW
optimizer = optimizer_class(trainable, lr=profile.lr, weight_decay=profile.weight_decay)
print(f"{optimizer_class.__module__}.{optimizer_class.__name__}: lr {profile.lr:g}, weight decay {profile.weight_decay:g}")


# %% [markdown]
# What does 8-bit AdamW save? Adam keeps two moment estimates per trainable weight: 8 bytes in fp32,
# about 2 bytes in 8 bits (bitsandbytes adds one fp32 scale per block of 256 values, and keeps
# tensors under 4,096 values in fp32). We measure the state both optimizers create, on the CPU, for
# zero tensors shaped like this model's LoRA weights and like Llama-3-8B's. PyTorch's AdamW creates
# its state in its first step; bitsandbytes' in `init_state`, which its `step` calls first (we call
# it directly and skip the update, slow on a CPU for 21 million values).

# %%
def adam_state_mib(shapes, optimizer_class) -> float:
    """MiB of optimizer state for zero weights of these shapes (each storage counted once)."""
    params = [torch.nn.Parameter(torch.zeros(shape)) for shape in shapes]
    opt = optimizer_class(params, lr=profile.lr)
    if hasattr(opt, "init_state"):  # bitsandbytes
        for i, p in enumerate(params):
            opt.init_state(opt.param_groups[0], p, 0, i)
    else:
        for p in params:
            p.grad = torch.zeros_like(p)
        opt.step()
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes()
                for p in params for t in opt.state[p].values() if torch.is_tensor(t) and t.numel() > 1}
    return sum(storages.values()) / 2**20


h, m = LLAMA3_8B_CONFIG["hidden_size"], LLAMA3_8B_CONFIG["intermediate_size"]
kv = LLAMA3_8B_CONFIG["num_key_value_heads"] * h // LLAMA3_8B_CONFIG["num_attention_heads"]
d_in_out = {"q_proj": (h, h), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (h, h),
            "gate_proj": (h, m), "up_proj": (h, m), "down_proj": (m, h)}
lora_shapes = {"this model": [tuple(p.shape) for p in trainable],
               "Llama-3-8B LoRA": [s for _ in range(LLAMA3_8B_CONFIG["num_hidden_layers"]) for d_in, d_out in d_in_out.values()
                                   for s in ((profile.lora_r, d_in), (d_out, profile.lora_r))]}  # A, B
adam_states = pd.DataFrame({name: {"weights": sum(np.prod(s) for s in shapes),
                                   "fp32 AdamW state (MiB)": adam_state_mib(shapes, torch.optim.AdamW),
                                   "8-bit AdamW state (MiB)": adam_state_mib(shapes, bnb.optim.AdamW8bit)}
                            for name, shapes in lora_shapes.items()}).T
adam_saving_gib = (adam_states["fp32 AdamW state (MiB)"] - adam_states["8-bit AdamW state (MiB)"]) / 1024
assert adam_states.loc["Llama-3-8B LoRA", "weights"] == lora_param_count(LLAMA3_8B_CONFIG, profile.lora_r, LLAMA_PROJECTIONS)
print(f"measured saving for Llama-3-8B's LoRA: {adam_saving_gib['Llama-3-8B LoRA']:.3f} GiB")
adam_states.round(2)

# %% [markdown]
# For the 8B model's LoRA weights 8-bit AdamW saves 0.12 GiB of a 15 GiB T4 (the state measured
# here; notebook 5's estimator gives the same). Tensors under 4,096 values stay in fp32 and save
# nothing: all of the tiny model's LoRA tensors are that small (the table shows what this model's save). The 8-bit optimizer matters when
# *all* weights are trained (8B × 6 bytes = 45 GiB); with LoRA it is nearly free to skip.
#
# The schedule warms the learning rate up linearly from 0 over `warmup_steps` (the fresh adapters'
# first gradients are noisy; Adam's moment estimates are not yet reliable) and then decays it
# linearly to 0 at the last step.

# %%
from transformers import get_linear_schedule_with_warmup

scheduler = get_linear_schedule_with_warmup(optimizer, num_warmup_steps=profile.warmup_steps, num_training_steps=total_steps)
lrs = [profile.lr * scheduler.lr_lambdas[0](step) for step in range(total_steps)]  # lr used by steps 1..total
peak = profile.warmup_steps
assert lrs[peak] == profile.lr and all(a <= b for a, b in zip(lrs[:peak], lrs[1 : peak + 1])), "warm-up rises to lr"
assert all(a >= b for a, b in zip(lrs[peak:], lrs[peak + 1 :])) and lrs[-1] < lrs[peak], "then it decays"
fig = plots.line_chart({"learning rate": (range(1, total_steps + 1), lrs, {"marker": ""})}, "learning rate",
                       title=f"learning rate over {total_steps} steps",
                       span=(0, profile.warmup_steps, f"warm-up ({profile.warmup_steps} steps)"))
plots.show(fig, "04_lr_schedule")


# %% [markdown]
# The very first step runs with learning rate 0 (the schedule starts at the bottom of the ramp);
# the peak is reached after `warmup_steps`.
#
# ## 8. The training loop
#
# One optimizer step, written out: for each micro-batch, forward and label-only loss, scaled by the
# step's size, backward (gradients accumulate); then clip the full gradient once, step the
# optimizer, step the schedule, and clear the gradients.

# %%
def train_step(model, optimizer, scheduler, micro_batches) -> dict:
    """One optimizer step over micro-batches of example indices; returns the step's mean loss, lr and grad norm."""
    n = sum(len(micro) for micro in micro_batches)  # examples in this step
    loss_total = 0.0
    for micro in micro_batches:
        b = collate([train_examples[i] for i in micro], tokenizer.pad_token_id, tokenizer.padding_side)
        loss = label_loss(model, {k: v.to(profile.device) for k, v in b.items()}, lean=lean_head)  # summed
        (loss / n).backward()  # accumulates d(mean loss of the step)
        loss_total += loss.item()
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), profile.max_grad_norm)  # once, on the full gradient
    lr = optimizer.param_groups[0]["lr"]
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return {"loss": loss_total / n, "lr": lr, "grad_norm": grad_norm.item()}


# %% [markdown]
# The loop: every `eval_every` steps (and at the end) it measures validation loss and MCC with
# notebook 2's `evaluate`, and writes a checkpoint (section 9). `evaluate` switches the model to
# `eval()` and back to `train()`; the tutorial forgot the way back, so dropout stayed off for the
# rest of its training after the first validation.
#
# **Where checkpoints go.** A Colab runtime that disconnects takes its disk with it, `build/` and its
# checkpoints included: the very failure that resuming is for. `checkpoint_dir` picks Google Drive
# when it is mounted, so in Colab run `from google.colab import drive; drive.mount("/content/drive")`
# once before this cell. Then a run that a disconnect cut short **continues** from its last
# checkpoint when you run the notebook again. Anywhere else the checkpoints go under `build/` and
# each run starts afresh. To use another folder that outlives the runtime, change `checkpoint_root`.

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
    history, validations, first_step = state["extra"]["history"], state["extra"]["validations"], state["step"] + 1
    print(f"continuing the run in {checkpoint_root} after step {state['step']}")
start = time.perf_counter()
# the bar is off when TQDM_DISABLE is set (as under `make run`): in Jupyter, tqdm needs to be told
progress = tqdm(range(first_step, total_steps + 1), desc="training", unit="step", disable=bool(os.environ.get("TQDM_DISABLE")))
for step in progress:
    history.append({"step": step, **train_step(model, optimizer, scheduler, plan[step - 1])})
    if step % profile.eval_every == 0 or step == total_steps:
        val = evaluate(model, tokenizer, list(val_df.sentence), list(val_df.label), template, label_ids,
                       batch_size=profile.eval_batch_size)
        validations.append({"step": step, "val_loss": val.loss, "val_mcc": val.mcc, "elapsed_s": time.perf_counter() - start})
        save_checkpoint(checkpoint_root / f"step-{step:05d}", model, optimizer, scheduler, step,
                        extra={"history": history, "validations": validations})  # the curves survive too
        progress.set_postfix(loss=f"{history[-1]['loss']:.3f}", val_mcc=f"{val.mcc:.3f}")
train_seconds = time.perf_counter() - start
print(f"steps {first_step} to {total_steps} in {train_seconds:.1f} s, validation and checkpoints included")

# %% [markdown]
# The statistics table: one row per validation, with the mean training loss over the steps since the
# previous one (step 0 is the untrained model: the few-shot score). The tutorial's table divided a
# running sum of micro-batch losses by the step count plus one, which is neither of these.

# %%
steps_df = pd.DataFrame(history)
stats = pd.DataFrame(validations)
window = np.searchsorted(stats.step.to_numpy(), steps_df.step.to_numpy())  # the validation each step leads to
stats["train_loss"] = steps_df.groupby(window).loss.mean()
stats["lr"] = steps_df.set_index("step").lr.reindex(stats.step).to_numpy()
stats.set_index("step")[["train_loss", "val_loss", "val_mcc", "lr", "elapsed_s"]].round(4)

# %% [markdown]
# Learning curves against optimizer steps (the tutorial labelled its axis "Epoch" although it
# plotted one point per 200 steps). The training loss of each step is noisy, a single batch each;
# the validation loss is measured on the same held-out sentences every time.

# %%
fig = plots.line_chart({"training loss (per step)": (steps_df.step, steps_df.loss, {"marker": "", "alpha": 0.35, "linewidth": 1}),
                        "validation loss": (stats.step, stats.val_loss, {"color": "tab:green"})},
                       "cross-entropy of the label word (nats)", title="label-word loss: training steps and validation")
plots.show(fig, "04_learning_curves")
spike = steps_df.loc[steps_df.loss.idxmax()]
print(f"highest training loss {spike.loss:.2f} at step {spike.step:.0f} of {total_steps}, learning rate then "
      f"{spike.lr:.1e} ({spike.lr / profile.lr:.0%} of the peak, reached at step {profile.warmup_steps + 1})")

# %% [markdown]
# Where the curve shows a bump at the start (on the tiny profile, at the end of the warm-up), it is
# the warm-up at work. The learning rate climbs to its peak (`profile.lr`,
# 2e-3 on the tiny profile) at the end of the warm-up, and Adam moves every weight by about the
# learning rate per step, whatever the gradient's size. Near the peak those steps are too big for
# adapters that are just leaving `B = 0`: each step over-corrects the last batch, so the next
# batch's loss goes up instead of down. When the rate starts to decay, and Adam's moment estimates
# have averaged over more batches, the loss falls quickly and stays down. The printed line above
# places the highest training loss of the run; on the tiny profile it sits at the end of the warm-up.

# %%
fig = plots.line_chart({"validation MCC": (stats.step, stats.val_mcc, {"color": "tab:purple"})}, "validation MCC",
                       title="validation MCC during training", hlines={"few-shot (step 0)": fewshot_val.mcc})
plots.show(fig, "04_validation_mcc")
best_val_mcc = float(stats.val_mcc[stats.step > 0].max())
print(f"best validation MCC {best_val_mcc:.3f} (few-shot {fewshot_val.mcc:.3f})")

# %% [markdown]
# ## 9. Checkpoint and resume
#
# A long run on a free GPU gets interrupted. To continue *exactly* where it stopped we need more
# than the adapter weights: the optimizer's moment estimates, the scheduler's position, the step
# counter, and the random-number state that LoRA dropout draws from. The data order is a function
# of the seed and the epoch (section 6), so the step counter is enough to find our place in it.
# Each checkpoint folder holds:

# %%
checkpoints = sorted(checkpoint_root.glob("step-*"))
pd.DataFrame([{"file": f.name, "KiB": round(f.stat().st_size / 1024, 1)} for f in sorted(checkpoints[0].iterdir())])

# %% [markdown]
# `adapter_model.safetensors` and `adapter_config.json` are peft's own adapter format (peft adds a
# `README.md` model card); `training_state.pt` holds the rest, plus a fingerprint of the base model
# and LoRA config, so that loading into a different setup stops with an error instead of garbage.
#
# Now pretend the run died after the checkpoint closest to half-way. We wipe the adapter, build a
# new optimizer and scheduler (as a new process would), load the checkpoint, and train on towards
# the next checkpoint: all the way on a profile that sets no `resume_replay_steps` (tiny), the first
# `resume_replay_steps` steps otherwise (20 on the full profile, under a minute on a T4).

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
scheduler = get_linear_schedule_with_warmup(optimizer, num_warmup_steps=profile.warmup_steps, num_training_steps=total_steps)
state = load_checkpoint(checkpoint_root / f"step-{resume_step:05d}", model, optimizer, scheduler)
print(f"resumed at step {state['step']} of {total_steps}; replaying steps {resume_step + 1} to {until_step}")

# %%
model.train()
resumed = [train_step(model, optimizer, scheduler, plan[step - 1])["loss"] for step in range(state["step"] + 1, until_step + 1)]
recorded = steps_df.set_index("step").loss.loc[resume_step + 1 : until_step].to_numpy()
loss_diff = float(np.abs(np.array(resumed) - recorded).max())
pd.DataFrame({"uninterrupted": recorded, "resumed": resumed}, index=range(resume_step + 1, until_step + 1)).head()

# %% [markdown]
# The losses of the resumed run, step by step, against the ones recorded in the uninterrupted run.
# Where the replay reaches the next checkpoint, the adapter weights there must also match the ones
# the uninterrupted run saved:

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
results.record("resume_matches", resume_matches)
print(f"largest loss difference {loss_diff:.2e}; largest weight difference {weight_diff:.2e} (largest weight {weight_scale:.2f})")
assert resume_matches, "the resumed run must retrace the uninterrupted one"

# %% [markdown]
# On the CPU the resumed run is bit-for-bit the uninterrupted one (both differences are 0). On a GPU
# some kernels (attention's backward pass among them) add up in a varying order, so the check allows
# the compute dtype's tolerance (`profile.tolerance`), and compares weights only where the replay
# reaches a checkpoint. Finally we load the last checkpoint, so that the model is the one at the end
# of training.

# %%
state = load_checkpoint(checkpoint_root / f"step-{total_steps:05d}", model, optimizer, scheduler)
assert state["step"] == total_steps

# %% [markdown]
# ## 10. The test score
#
# Training never saw the out-of-domain split, and during training we watched the validation split,
# not this one. Its score, next to the few-shot score of section 2 and the tutorial's numbers for
# Llama-3-8B (516 sentences, T4):

# %%
test = evaluate(model, tokenizer, list(test_df.sentence), list(test_df.label), template, label_ids,
                batch_size=profile.eval_batch_size)
this_run = pd.DataFrame({"MCC": [fewshot_test.mcc, test.mcc], "accuracy": [fewshot_test.accuracy, test.accuracy]},
                        index=["few-shot", "fine-tuned"])
tutorial = pd.DataFrame({"MCC": [0.495, 0.647], "accuracy": [np.nan, 0.8527]}, index=["few-shot", "fine-tuned"])
print(f"this run ({profile.name} profile, {len(test_df)} test sentences):")
print(this_run.round(3).to_string())
print("\nthe tutorial (Llama-3-8B on real CoLA, 516 sentences, T4), not comparable with a run on another model or data:")
print(tutorial.round(3).to_string())

# %% [markdown]
# (The tutorial reports few-shot *test* MCC 0.495 for the 4-bit model, but no few-shot accuracy.)
# Read each table down its rows, few-shot against fine-tuned; do not compare across the tables. On
# the tiny profile the first is a 4-layer model on synthetic sentences, the second Llama-3-8B on real
# CoLA: a higher number in the first table does not mean the tiny model beats Llama, the tasks differ.
#
# Which errors did training teach? The synthetic data records each sentence's kind of error, so we
# can count, per kind, how many of the test sentences each model gets right (for an error kind:
# flagged unacceptable, its recall). Real CoLA has no such labels; there the cell says so.

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
# On the tiny profile this run's few-shot column catches 24 of the 25 pronoun-case errors it was
# pre-trained to flag and none of the others. Fine-tuning adds the other kinds, unevenly: every
# word-order and missing-word error, 60% of the determiner errors, 40% of the doubled words, and
# no agreement error at all. Where the errors are, after fine-tuning:

# %%
fig = plots.confusion_heatmap(test.labels, test.preds, title=f"fine-tuned, out-of-domain test (MCC {test.mcc:.2f})")
plots.show(fig, "04_confusion_test")
missed = int(((test.labels == 0) & (test.preds == 1)).sum())
false_alarms = int(((test.labels == 1) & (test.preds == 0)).sum())
print(f"unacceptable called acceptable: {missed} of {int((test.labels == 0).sum())}; "
      f"acceptable called unacceptable: {false_alarms} of {int((test.labels == 1).sum())}")

# %% [markdown]
# The matrix is lopsided: most of the model's errors are unacceptable sentences let through as
# acceptable, far fewer the other way round (on the tiny profile this run printed 50 of 150 against
# 5 of 350). There, all of the misses are the three kinds the recall table shows it learned worst
# (agreement, doubled words, determiners). With 70% of CoLA's sentences acceptable, "acceptable" is
# the cheaper guess whenever the model is unsure.

# %%
gain = test.mcc - fewshot_test.mcc
assert -2 <= gain <= 2, f"a difference of two MCCs lies in [-2, 2], not {gain}"
results.record("finetuned_ood_mcc", test.mcc)
results.record("finetuned_ood_accuracy", test.accuracy)
results.record("best_val_mcc", best_val_mcc)
results.record("train_seconds", round(train_seconds, 1))
results.record("finetuned_gain_mcc", gain)
print(f"MCC gain over few-shot: {gain:+.3f}")

# %% [markdown]
# How much of that gain could be luck of the test set? Draw new test sets of the same size from this
# one, with replacement, score both models' predictions on each, and look at how much the gain
# moves: its standard deviation. A gain of three standard deviations or more is clear (notebook 6
# uses the same yardstick). `bootstrap_sd` reads a prediction as "acceptable" where its score is
# above 0, so we hand it each model's logit of " acceptable" minus that of " unacceptable":

# %%
from lmcls_helpers.training import bootstrap_sd

gain_sd = bootstrap_sd(test.labels, test.scores[:, 1] - test.scores[:, 0],
                       fewshot_test.scores[:, 1] - fewshot_test.scores[:, 0], seed=profile.seed)
results.record("finetuned_gain_sd", gain_sd)
print(f"gain {gain:+.3f} ± {gain_sd:.3f} from resampling {len(test_df)} test sentences"
      + (f": {gain / gain_sd:.1f} standard deviations" if gain_sd > 0 else " (both models answer every sentence alike)"))

# %% [markdown]
# On the tiny profile this run printed a gain of +0.391 ± 0.038, 10.2 standard deviations: clear.
# With about 500 test sentences the yardstick is a few hundredths of MCC: if the tutorial's spread
# was like ours, its gain (0.495 to 0.647 on 516 sentences) is about four of them, clear as well,
# while a gain of 0.05 would not be.
#
# On the small profile there is no gain to test. There SmolLM2-135M on real CoLA printed a gain of
# −0.101 ± 0.110 (2-core AMD EPYC, 2026-12-04): 57 steps of 16 sentences leave it near chance, where
# the prompt left it, calling most sentences acceptable. A longer trial did no better: 124 steps of
# 16 at a learning rate of 1e-3 (1,980 sentences, 13 minutes) scored MCC 0.065 on all 516 test
# sentences, a gain of +0.035 ± 0.059, calling all but at most 2 of them acceptable. A few hundred
# examples do not teach a 135M model what makes a sentence grammatical, so on the small profile the
# tests expect no gain (on tiny and full, one above 0). What it shows is the code path on real
# weights: the loss, checkpoints, resume and merge run as on a GPU.

# %% [markdown]
# ## 11. Saving the adapter, loading it, merging it
#
# For later use we need only the adapter: `save_pretrained` on a peft model writes the LoRA weights
# and their config, not the base model.

# %%
adapter_dir = build_dir("adapters", "04_cola_lora")
model.save_pretrained(adapter_dir)
pd.DataFrame([{"file": f.name, "KiB": round(f.stat().st_size / 1024, 1)} for f in sorted(adapter_dir.iterdir())])

# %% [markdown]
# For Llama-3-8B the adapter is 21M fp32 weights, about 80 MiB, next to a 5.6 GiB 4-bit base. To use
# it, load the base as usual and put the adapter on top. We free the training model first: on a
# T4 two copies of the 8B base would not fit.

# %%
from peft import PeftModel

from lmcls_helpers.models import free_gpu_memory

del model, optimizer, scheduler, trainable, llama
free_gpu_memory()  # collect the freed model's reference cycles; on a GPU, hand its memory back
model = PeftModel.from_pretrained(load_model(profile), adapter_dir)  # 4-bit base + saved adapter, ready for inference
reloaded = evaluate(model, tokenizer, list(test_df.sentence), list(test_df.label), template, label_ids,
                    batch_size=profile.eval_batch_size)
agreement = float((reloaded.preds == test.preds).mean())
print(f"reloaded: test MCC {reloaded.mcc:.3f}; {agreement:.1%} of predictions as before; "
      f"largest score difference {np.abs(reloaded.scores - test.scores).max():.1e}")
assert agreement >= 0.98, "the reloaded adapter must reproduce the trained model's predictions"

# %% [markdown]
# On a GPU the scores can differ in the last bits of the compute dtype (kernels add in varying
# order); the predictions agree.
#
# An adapter alone is not yet a classifier: its scores also depend on the template that wraps each
# sentence, the two label words read, and the base model it was trained on. `save_classifier` writes
# all of that beside the adapter, in a `classifier.json` you can read; section 12 uses it.

# %%
from lmcls_helpers.classify import load_classifier, save_classifier

classifier_dir = save_classifier(build_dir("classifiers", "04_label_words"), model, profile, template)
print((classifier_dir / "classifier.json").read_text())

# %% [markdown]
# **`merge_and_unload`** folds each adapter into its base weight, `W + (α/r)·B·A`, and returns a
# plain model without LoRA layers: no extra matmuls at inference. With a 4-bit base that means
# dequantize `W`, add the update, and **quantize again** to the 16 NF4 levels. The update is small
# next to the gaps between those levels, so rounding distorts it. We measure by how much in one
# projection, comparing the dequantized weights before and after the merge. (peft warns, on every
# such merge, that merging into a 4-bit layer may change the model's outputs through rounding: that is
# what we measure here, so the cell silences that one warning.)

# %%
import warnings

from bitsandbytes.functional import dequantize_4bit

layer = model.get_base_model().model.layers[-1].mlp.down_proj  # a LoRA layer around a Linear4bit
update = layer.get_delta_weight("default").float()  # (α/r)·B·A, (out, in)
w_before = dequantize_4bit(layer.base_layer.weight.data, layer.base_layer.weight.quant_state).float()
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="Merge lora module to 4-bit linear", category=UserWarning)
    merged = model.merge_and_unload()  # every Linear4bit re-quantized with its update folded in
w_after = dequantize_4bit(layer.base_layer.weight.data, layer.base_layer.weight.quant_state).float()
distortion = ((w_after - w_before - update).norm() / update.norm()).item()
print(f"mean |update| {update.abs().mean():.1e}, mean |W| {w_before.abs().mean():.1e}; "
      f"after re-quantizing, the weights miss W + update by {distortion:.0%} of the update's size")

# %% [markdown]
# What that does to the predictions:

# %%
merged_result = evaluate(merged, tokenizer, list(test_df.sentence), list(test_df.label), template, label_ids,
                         batch_size=profile.eval_batch_size)
pd.DataFrame({"test MCC": [fewshot_test.mcc, test.mcc, merged_result.mcc],
              "same prediction as the adapter": [np.nan, 1.0, float((merged_result.preds == test.preds).mean())]},
             index=["few-shot base", "base + adapter", "merged into 4-bit"]).round(3)

# %% [markdown]
# How much of what training learned survives depends on the update's size next to the gaps between
# NF4 levels: on the tiny profile this run printed test MCC 0.730 merged against 0.734, with 97.6% of
# the predictions unchanged. An update far smaller than the gaps (the small profile's, after 57 steps
# at a low learning rate: the line above says how far re-quantizing missed it) can be rounded away,
# or rounded into another change altogether, and many predictions move. So with a 4-bit
# base, keep the adapter separate (what most QLoRA deployments do), or merge into a 16-bit copy of
# the base: for Llama-3-8B that copy alone is 15 GiB, more than a T4 can spare. Merging into 4 bits costs no
# memory and saves the adapters' matmuls at inference, but it is a lossy, one-way step.

# %% [markdown]
# ## 12. Classify your own sentence
#
# The saved classifier loads on a fresh base model, in a new session or from a shell:
# `python -m lmcls_helpers.classify build/classifiers/04_label_words "The cat sat on the mat."`
# prints the label and its probability. Here we load it in the notebook, after freeing the model
# we merged (one base model at a time, as on a T4), and first check that it gives the scores the
# evaluation above gave for the same test sentences.

# %%
from lmcls_helpers.models import free_gpu_memory

model = merged = None  # drop both references (like del), so the memory can be freed
free_gpu_memory()
classifier = load_classifier(classifier_dir)
check = list(test_df.sentence[:16])
np.testing.assert_allclose(classifier.predict_proba(check)[:, 1], reloaded.probs[:16], **profile.tolerance)
print(f"classifier.json read back; P(acceptable) of {len(check)} test sentences as the evaluation gave them")

# %% [markdown]
# Now yours: change the sentences and run the cell again.

# %%
my_sentences = ["A neighbor is dropping the cakes.", "A neighbor are dropping the cakes.", "She and I slept after lunch.",
                "Her and I slept after lunch.", "A neighbor is the dropping cakes.", "The cat sat on the mat."]
p_acceptable = classifier.predict_proba(my_sentences)[:, 1]  # (n,): column 1 is ' acceptable'
print(f"{'prediction':>12}  P(acceptable)  sentence")
for sentence, label, p in zip(my_sentences, classifier.predict(my_sentences), p_acceptable):
    print(f"{label:>12}  {p:13.3f}  {sentence}")

# %% [markdown]
# On the tiny profile the answers follow the recall table of section 10: the wrong pronoun case
# and the scrambled word order are caught, the agreement error ("A neighbor are") slips through,
# as every agreement error did (0 of 25 caught). And "The cat sat on the mat." is called unacceptable: its
# words are not in the tiny world's small synthetic vocabulary, which is all this model has ever
# read. Llama-3-8B has read the web; try the same cell on the full profile.

# %%
notebook_seconds = time.perf_counter() - notebook_start
print(f"notebook ran in {notebook_seconds:.0f} s (training {train_seconds:.0f} s)")
course.finish("04_training_loop", profile)  # the time taken against the plan; the model loads checked

# %% [markdown]
# ## Summary
#
# - A training example is `prompt + label word`; its targets are -100 except the label word, so the
#   loss reads one prediction per sentence: the one made at the position before the label.
# - Gradient accumulation is exact when each micro-batch adds its **summed** loss divided by the
#   **step's** example count, and clipping happens once per step; the tutorial's scaling is wrong on
#   uneven steps.
# - The lean recipe applies the LM head only where the label is predicted, and gradient
#   checkpointing recomputes activations: same loss and gradients, far less memory.
# - A checkpoint that resumes exactly holds the adapter, the optimizer and scheduler state, the step
#   and the random-number state; the resumed run retraces the uninterrupted one.
# - Keep the adapter separate from a 4-bit base: merging re-quantizes and loses part of the update.
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
# **2. Early stopping.** The last checkpoint is not always the best (on the tiny profile it happens
# to be; on real data it often is not). Pick the step whose checkpoint
# had the highest validation MCC, put that checkpoint's adapter on a fresh 4-bit base, and check that
# it reproduces the recorded validation MCC. *Hint:* `stats` has the MCC per step; a checkpoint's
# adapter loads with `PeftModel.from_pretrained(load_model(profile), folder)`. Free section 12's
# `classifier` first (`del classifier`, then `free_gpu_memory()`): one 8B base at a time on a T4.

# %%
best_step = None  # your answer: a step number from stats.step

# %%
if best_step is None:
    print("Exercise 2 not attempted yet: set best_step above.")
else:
    trained = stats[stats.step > 0]
    assert best_step == int(trained.step[trained.val_mcc.idxmax()]), "that is not the (first) best validation step"
    del classifier
    free_gpu_memory()
    best_model = PeftModel.from_pretrained(load_model(profile), checkpoint_root / f"step-{best_step:05d}")
    check = evaluate(best_model, tokenizer, list(val_df.sentence), list(val_df.label), template, label_ids,
                     batch_size=profile.eval_batch_size)
    assert abs(check.mcc - best_val_mcc) < 1e-6, "the checkpoint must reproduce its validation MCC"
    print(f"step {best_step}: validation MCC {check.mcc:.3f}, as recorded")
