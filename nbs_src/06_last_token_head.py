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
# # 06 · A linear head on the last token
# *Swap the vocabulary for one logit, train it next to LoRA, and measure the padding bug that reads a pad token instead of the sentence.*
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/lmcls-org/lmcls/blob/main/notebooks/06_last_token_head.ipynb)
#
# Notebooks 2 and 4 read the answer from two label words of the LM head. A popular alternative,
# used by the Mistral-7B ledger tutorial (Income / Expense lines from a real ledger, 99.73% test
# accuracy), throws the LM head away and puts `Linear(4096, 1)` in its place: one logit, a sigmoid, a
# threshold. What you will learn:
#
# - how to build that head on the hidden state of the **last real token**, and train it with
#   `BCEWithLogitsLoss` next to a LoRA adapter;
# - why a new head must be listed in **`modules_to_save`**: otherwise it is frozen at its random start
#   and missing from the saved adapter;
# - what the tutorial's `logits[:, -1, :]` reads in a right-padded batch, what that costs here
#   (measured), and why it can still look fine;
# - how to save the head with its adapter, reload it, and classify your own sentences with it.
#
# Notebook 7 then compares this head with label words and `AutoModelForSequenceClassification`.

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

profile = course.start("06_last_token_head", PROFILE)  # the profile, its world, login, versions and device, the time plan

# %%
import shutil
import time
import warnings

import numpy as np
import pandas as pd
import torch
import transformers
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoModelForCausalLM, MistralConfig

from lmcls_helpers import plots
from lmcls_helpers.classify import load_classifier, save_classifier
from lmcls_helpers.data import download_cola, load_cola
from lmcls_helpers.heads import (
    HEAD_MODULE,
    LinearHead,
    add_linear_head,
    head_logits,
    load_linear_head,
    require_saved_head,
    saved_head_keys,
)
from lmcls_helpers.models import free_gpu_memory, load_model
from lmcls_helpers.paths import build_dir
from lmcls_helpers.profiles import LLAMA3_8B_CONFIG
from lmcls_helpers.prompts import PromptTemplate
from lmcls_helpers.tokens import last_token_index, load_tokenizer
from lmcls_helpers.training import (
    bootstrap_sd,
    head_loss,
    head_model,
    head_scores,
    metrics,
    pads_per_row,
    strip_adapter,
    train,
)

torch.manual_seed(profile.seed)
notebook_start = time.perf_counter()
warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")  # peft 0.21 calls a renamed transformers method
transformers.utils.logging.disable_progress_bar()

# %% [markdown]
# ## 1. The task and the prompt
#
# A classification head needs nothing but texts and 0/1 labels. We use notebook 2's CoLA-style
# grammar judgements (1 = acceptable). Nothing is selected on the dev set: every run trains for a
# fixed budget and is scored once.

# %%
cola_root = profile.cola_root if profile.cola_root.exists() else download_cola(profile.cola_root.parent)
splits = load_cola(cola_root)
train_df = splits["in_domain_train"].iloc[: profile.max_train_examples]  # None keeps everything
dev_df = splits["in_domain_dev"].iloc[: profile.max_eval_examples]
pd.DataFrame({"examples": [len(train_df), len(dev_df)], "share of label 1": [train_df.label.mean(), dev_df.label.mean()]},
             index=["grammar train", "grammar dev"]).round(3)

# %% [markdown]
# The head reads notebook 2's few-shot prompt with the sentence in its slot, so the pretrained model
# has already been asked the question when the head reads its answer. (The tutorial fed its ledger
# lines bare; notebook 7 measures what the prompt is worth to a head.)

# %%
template = PromptTemplate()  # notebook 2's few-shot prompt; the sentence goes into its {sentence} slot
train_sentences, train_labels = list(train_df.sentence), list(train_df.label)
dev_sentences, dev_labels = list(dev_df.sentence), list(dev_df.label)
train_texts = [template.format(s) for s in train_sentences]  # what the head reads
dev_texts = [template.format(s) for s in dev_sentences]
print(dev_texts[0])

# %% [markdown]
# ## 2. One logit instead of a vocabulary
#
# A causal LM ends in the **LM head**: a matrix with one row per vocabulary token, turning the
# final hidden state of each position into next-token scores. For a yes/no question we need one
# score. So we replace the head with `Linear(hidden, 1)`: its logit goes through a sigmoid to give
# P(label 1), and the prediction is 1 when that is above 0.5, i.e. when the logit is above 0.
#
# The tokenizer pads on the **right**, with eos as the pad token, as the tutorial did.

# %%
tokenizer = load_tokenizer(profile, padding_side="right")
model = load_model(profile)  # 4-bit NF4 weights, profile.compute_dtype compute
lm_head = model.get_output_embeddings()
c = LLAMA3_8B_CONFIG
print(f"this model's LM head: {tuple(lm_head.weight.shape)}, {lm_head.weight.numel():,} weights")
print(f"Llama-3-8B's LM head: ({c['vocab_size']}, {c['hidden_size']}), {c['vocab_size'] * c['hidden_size']:,} weights")
del lm_head  # replaced below: no name may keep its 1 GiB (at 8B) on the GPU

# %% [markdown]
# `add_linear_head` swaps it for a `LinearHead`: a `Linear(hidden, 1)` kept in float32 (it casts
# the incoming 16-bit hidden states up), drawn from a fixed seed. Ours has a **bias**, so it learns
# its threshold as well as its direction; the tutorial's `Linear(4096, 1, bias=False)` had none
# (4,096 weights for Llama-3-8B, against 4,097 for ours at that width).

# %%
model = add_linear_head(model, seed=profile.seed)
head = model.get_output_embeddings()
print(head, f"{sum(p.numel() for p in head.parameters()):,} weights (Llama-3-8B: {c['hidden_size'] + 1:,})")

# %% [markdown]
# The model now returns one score per **position**. Which position speaks for the sentence? Causal
# attention lets position *t* see tokens 0..*t*, so only the last real token has read the whole
# sentence. Four sentences of different lengths (bare, to keep the picture small), right-padded:

# %%
sample = sorted(dev_sentences[:8], key=len)[::2]  # four lengths, short to long
batch = tokenizer(sample, return_tensors="pt", padding=True).to(profile.device)
with torch.no_grad():
    logits = model(**batch).logits  # (4, seq, 1): one score per position
last = last_token_index(batch["attention_mask"])  # (4,): where each sentence really ends
print(f"logits {tuple(logits.shape)}; last real token at {last.tolist()}; position -1 is {logits.shape[1] - 1}")

# %%
fig = plots.padding_layout(batch, tokenizer, marks=last, title="right padding: last real token (red) vs position -1 (blue)",
                           minus_one=True)
plots.show(fig, "06_two_reads")

# %% [markdown]
# In every row but the longest, position -1 (blue) is an eos used as padding. The tutorial's
# `logits[:, -1, :]` reads those. `head_logits` reads the red boxes, via `last_token_index`:

# %%
with torch.no_grad():
    at_last, at_minus_one = head_logits(model, batch), head_logits(model, batch, read="minus_one")  # (4,) each
pd.DataFrame({"real tokens": batch["attention_mask"].sum(1).cpu().numpy(),
              "logit at last real": at_last.cpu().numpy(), "logit at -1": at_minus_one.cpu().numpy(),
              "P(label 1) = sigmoid(logit at last real)": torch.sigmoid(at_last).cpu().numpy()}).round(3)

# %%
torch.testing.assert_close(at_last, logits[torch.arange(len(last)), last, 0], **profile.tolerance,
                           msg="head_logits gathers at last_token_index")
torch.testing.assert_close(at_last[-1], at_minus_one[-1], **profile.tolerance,
                           msg="the longest row has no padding: both reads agree")


# %% [markdown]
# The head is untrained, so these probabilities mean nothing yet; only the longest row gets the
# same score from both reads.
#
# ## 3. A trainable head is not automatic: `modules_to_save`
#
# The tutorial's order of operations: replace the head, call `prepare_model_for_kbit_training`, wrap
# with LoRA (r=32, α=64 on q, k, v). We skip the middle step, as notebook 4 does (section 3 there:
# its fp32 upcast of embeddings, LM head and norms costs memory a T4 does not have). The last step
# decides what trains: `get_peft_model` marks **only the adapter's own matrices** as trainable and
# freezes every other weight, the brand-new head included, with or without 4-bit loading (a plain
# 16-bit model loses its head the same way, as shown below). A head that should learn, and be saved
# with the adapter, must be named in `modules_to_save`.
#
# Our LoRA differs from the tutorial's on purpose: it covers **all seven projections** (q, k, v, o
# and the MLP's gate, up, down) with the profile's rank (`lora_r`, `lora_alpha`), exactly notebook
# 4's adapter. `lora_config(profile, modules_to_save)` builds it, and `head_model` puts the three
# pieces together: base, `add_linear_head` (seed `profile.seed`), LoRA. Its `base=` argument reuses
# a base model we already hold; `strip_adapter` takes an adapter off again and hands back the
# untouched 4-bit base. LoRA never changes the 4-bit weights, so this gives exactly the model a fresh
# load would, without the load: minutes at 8B, and one base model is all a T4 holds.

# %%
def trainable_by_kind(model) -> dict:
    counts = {"LoRA": 0, "head": 0, "other": 0}
    for name, p in model.named_parameters():
        if p.requires_grad:
            counts["LoRA" if "lora_" in name else "head" if HEAD_MODULE in name else "other"] += p.numel()
    return counts


model = head_model(profile, save_head=False, base=model)  # the tutorial's setup: the head is not in the adapter
trainable_counts = {"tutorial (no modules_to_save)": trainable_by_kind(model)}
model = head_model(profile, save_head=True, base=strip_adapter(model))  # the same base, a fresh head and LoRA
trainable_counts[f"modules_to_save=['{HEAD_MODULE}']"] = trainable_by_kind(model)
pd.DataFrame(trainable_counts).T

# %%
hidden_size = head.in_features
assert trainable_counts["tutorial (no modules_to_save)"]["head"] == 0, "get_peft_model must have frozen the head"
assert trainable_counts[f"modules_to_save=['{HEAD_MODULE}']"]["head"] == hidden_size + 1, "the saved head trains: weight + bias"

# %% [markdown]
# Without `modules_to_save` the head has no trainable weight. The tutorial's own printout says so:
# `trainable params: 18874368` is its LoRA and nothing else. We can rebuild its setup without a GPU:
# Mistral-7B's shapes on PyTorch's `meta` device (no memory, no download), the `Linear(4096, 1)`
# head, then `get_peft_model` with the tutorial's LoRA, and **no** 4-bit loading:

# %%
mistral_config = MistralConfig(vocab_size=32000, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                               num_attention_heads=32, num_key_value_heads=8)  # from the tutorial's printout
with torch.device("meta"):  # shapes only
    tutorial_model = add_linear_head(AutoModelForCausalLM.from_config(mistral_config))
tutorial_lora = LoraConfig(r=32, lora_alpha=64, target_modules=["q_proj", "k_proj", "v_proj"], task_type="CAUSAL_LM")
tutorial_counts = trainable_by_kind(get_peft_model(tutorial_model, tutorial_lora))
print(tutorial_counts)
assert tutorial_counts == {"LoRA": 18_874_368, "head": 0, "other": 0}, "peft should reproduce the tutorial's count"
del tutorial_model

# %% [markdown]
# Its `Linear(4096, 1)` stayed at its random initial values for the whole run; the adapters learned
# to make that random direction meaningful. It worked there because the tutorial saved the whole
# `state_dict()` (the 4-bit base included). With the usual `save_pretrained`, which saves only the
# adapter, that head is lost: section 7 measures what that costs.
#
# ## 4. One small training loop for every run
#
# Every run here (and in notebook 7) uses the same loop: notebook 4's, compact. It lives in
# `lmcls_helpers.training.train`, so both notebooks run the very same code; its heart is
#
# ```python
# for micro_batches in plan[:num_steps]:          # a step: train_batch_size examples
#     n = sum(len(micro) for micro in micro_batches)
#     for micro in micro_batches:                 # what the device holds at once
#         loss = step_loss(model, texts_of(micro), labels_of(micro))  # summed over the micro-batch
#         (loss / n).backward()                   # exact gradient accumulation (notebook 4, section 6)
#     torch.nn.utils.clip_grad_norm_(trainable, profile.max_grad_norm)
#     optimizer.step(); scheduler.step(); optimizer.zero_grad(set_to_none=True)
# ```
#
# with AdamW, linear warm-up and decay, and length-sorted micro-batches. Only `step_loss` changes
# between read-outs. Every run gets the **same number of optimizer steps** (`profile.max_steps`,
# each of `train_batch_size` examples); a small training set is cycled.

# %%
print(f"every run: {profile.max_steps} steps of {profile.train_batch_size} examples "
      f"(micro-batches of {profile.micro_batch_size}), lr {profile.lr}, gradient checkpointing {profile.gradient_checkpointing}")

# %% [markdown]
# The head's loss is binary cross-entropy on the logit. `BCEWithLogitsLoss` applies the sigmoid
# inside, in a numerically stable form (it never computes `log(sigmoid(x))` for large |x| the naive
# way), so the model returns raw logits and the sigmoid appears only when we want a probability.

# %% [markdown]
# `head_loss(tokenizer, profile, read)` pads a micro-batch, reads one logit per row at position
# `read` (`head_logits`) and sums `BCEWithLogitsLoss`. `head_scores` scores a list of texts in
# evaluation batches, and `metrics` turns logits into MCC and accuracy (prediction: logit > 0). The
# loss on one micro-batch, for our fresh head, against the formula it stands for,
# −[y·log σ(x) + (1 − y)·log(1 − σ(x))] summed over the examples:

# %%
texts, labels = train_texts[: profile.micro_batch_size], train_labels[: profile.micro_batch_size]
with torch.no_grad():
    loss = head_loss(tokenizer, profile)(model, texts, labels)  # summed over the micro-batch
    x = head_logits(model, tokenizer(texts, return_tensors="pt", padding=True).to(profile.device))  # (micro,)
    y = torch.tensor(labels, dtype=torch.float32, device=x.device)
    by_hand = -(y * torch.log(torch.sigmoid(x)) + (1 - y) * torch.log(1 - torch.sigmoid(x))).sum()
torch.testing.assert_close(loss, by_hand, **profile.tolerance)  # two forward passes: equal up to the dtype's rounding
print(f"untrained head: {loss.item() / len(texts):.3f} per example (a coin flip scores log 2 = {np.log(2):.3f})")

# %% [markdown]
# ## 5. The padding bug, measured
#
# Two heads, identical in everything (data, order, seed, steps) except the position they read while
# training and scoring: the tutorial's position -1, or the last real token. Both see our batches:
# padded on the right to the longest sentence of each micro-batch (dynamic padding), with an
# attention mask. That is not quite the tutorial's pipeline (no mask, every line padded to the
# longest in the file); notebook 7 runs that one on the ledger.
#
# One base model at a time means the -1 head is gone once the second head trains on its base. So
# before that, we take every measurement section 6 needs from it: its dev scores in three
# **layouts** (how the dev set is cut into batches) and its score for a sentence followed by 0 to 16
# pads (`score_with_pads`, masked out as a tokenizer pads).

# %%
layouts = {f"right-padded batches of {profile.eval_batch_size}": dict(padding_side="right"),
           "no padding (as if one at a time)": dict(unpadded=True),
           "left-padded batches": dict(padding_side="left")}


@torch.inference_mode()
def score_with_pads(model, text: str, read: str, max_pads: int = 16) -> list[float]:
    """The head's logit for `text` followed by 0..max_pads pad tokens (masked out, as a tokenizer pads)."""
    ids = tokenizer(text, return_tensors="pt")["input_ids"].to(profile.device)  # (1, n)
    out = []
    for k in range(max_pads + 1):
        pads = torch.full((1, k), tokenizer.pad_token_id, device=ids.device)
        batch = {"input_ids": torch.cat([ids, pads], 1),
                 "attention_mask": torch.cat([torch.ones_like(ids), torch.zeros_like(pads)], 1)}
        out.append(head_logits(model, batch, read).item())
    return out


# %%
bug_runs = {}
for read in ("minus_one", "last_real"):
    if read == "last_real":  # a fresh head and LoRA on the same 4-bit base
        model = head_model(profile, base=strip_adapter(model))
    seconds = train(model, head_loss(tokenizer, profile, read), train_texts, train_labels, tokenizer, profile)
    by_layout = {layout: head_scores(model, dev_texts, tokenizer, profile, read, **kwargs) for layout, kwargs in layouts.items()}
    scores = by_layout[next(iter(layouts))]  # right-padded batches, as the tutorial scored
    bug_runs[read] = {"scores": scores, "by_layout": by_layout, "seconds": seconds, **metrics(scores, dev_labels),
                      "pads": {i: score_with_pads(model, dev_texts[i], read) for i in range(3)}}
fixed = model  # the last-real-token head stays; sections 6 and 7 use it under this name
del model
bug_table = pd.DataFrame({k: {m: v[m] for m in ("MCC", "accuracy", "seconds")} for k, v in bug_runs.items()}).T
bug_table.index = ["position -1", "last real token"]
bug_table.round(3)

# %%
margin = bug_runs["last_real"]["MCC"] - bug_runs["minus_one"]["MCC"]
results.record("head_last_real_mcc", bug_runs["last_real"]["MCC"])
results.record("head_position_minus1_mcc", bug_runs["minus_one"]["MCC"])
results.record("head_last_real_accuracy", bug_runs["last_real"]["accuracy"])
results.record("head_position_minus1_accuracy", bug_runs["minus_one"]["accuracy"])
results.record("head_bug_margin_mcc", margin)
print(f"reading the last real token: MCC {margin:+.2f} over reading position -1 (dev, right-padded batches of {profile.eval_batch_size})")

# %% [markdown]
# Same data, same steps, same seed: the whole margin comes from the position read. Is it more than
# luck of the dev set? Draw new dev sets of the same size from this one (with replacement), score both
# heads' predictions on each, and see how much the margin moves. A **clear** margin is one at least
# three of those standard deviations from zero:

# %%
margin_sd = bootstrap_sd(dev_labels, bug_runs["last_real"]["scores"], bug_runs["minus_one"]["scores"], seed=profile.seed)
results.record("head_bug_margin_sd", margin_sd)
print(f"margin {margin:.2f} MCC, ± {margin_sd:.2f} from resampling {len(dev_labels)} dev sentences"
      + (f": {margin / margin_sd:.1f} standard deviations" if margin_sd > 0 else " (both heads answer every sentence alike)"))
learned_sd = bootstrap_sd(dev_labels, bug_runs["last_real"]["scores"], seed=profile.seed)  # one head's MCC, alone
print(f"the last-real-token head alone: MCC {bug_runs['last_real']['MCC']:.2f} ± {learned_sd:.2f}"
      + (" (clearly above chance)" if bug_runs["last_real"]["MCC"] > 3 * learned_sd else
         f" (not clearly above chance after {profile.max_steps} steps: little for the bug to cost)"))
assert margin_sd >= 0 and -2 <= margin <= 2, f"a difference of two MCCs lies in [-2, 2], not {margin}"

# %% [markdown]
# The scores themselves, one dot per dev sentence, coloured by its true label. A good head pushes
# the two colours to opposite sides of 0:

# %%
fig = plots.score_strips({"position -1": bug_runs["minus_one"]["scores"], "last real token": bug_runs["last_real"]["scores"]},
                         dev_labels, class_names=("unacceptable", "acceptable"),
                         title="dev logits of the two heads (right-padded batches)")
plots.show(fig, "06_bug_scores")

# %%
above_zero = pd.DataFrame({name: [float((bug_runs[read]["scores"][np.asarray(dev_labels) == k] > 0).mean()) for k in (0, 1)]
                           for name, read in (("position -1", "minus_one"), ("last real token", "last_real"))},
                          index=["unacceptable", "acceptable"]).T
above_zero.columns.name = "share with logit > 0"
above_zero.round(2)

# %% [markdown]
# A bug can only cost what a model has learned. Where the last-real-token head itself learned
# nothing clear in these few steps (on the `small` profile, a 135M model and a few minutes of CPU:
# on real CoLA both 8-step heads answered every dev sentence "acceptable", MCC 0.00; a rehearsal
# with synthetic sentences gave a margin of +0.01 ± 0.07 after 24 steps, and no clearer with a head
# learning ten times faster), both heads answer nearly every sentence alike and the margin is
# noise; the tests then expect no margin there (on tiny and full, one of three standard deviations),
# and section 6 still shows the mechanism, which does not depend on training.
#
# A good head puts nearly all acceptable sentences above 0 and as many unacceptable ones as it can
# below. On the tiny profile this run printed 0.32 and 1.0 for the last-real-token head (its
# unacceptable sentences two thirds below 0), against 0.95 and 1.0 for the position -1 head: it puts
# nearly every sentence above its threshold, the unacceptable ones included, so it calls almost
# everything acceptable. Its score carries something other than the sentence.

# %% [markdown]
# ## 6. Why it can look fine, and when it breaks
#
# What *is* the hidden state at a pad position? The pad token is eos, and the attention mask hides
# pad positions as **keys**: no token attends to them. But the pad position is still a **query**:
# under causal attention it attends to every real token before it. So the state at -1 is "an eos
# token reading the sentence from *k* positions further on", a summary of the sentence that LoRA can
# learn to use. That is why the bug does not simply destroy the classifier.
#
# What changes from row to row is *k*, the number of pads after the sentence, and it depends on the
# **other** sentences in the batch. Through the rotary position encoding, the distance *k* changes
# the summary. Here are three sentences' scores as we append more and more pads (measured in section 5):

# %%
pad_curves = {(name, i): bug_runs[read]["pads"][i] for read, name in (("minus_one", "position -1"), ("last_real", "last real token"))
              for i in range(3)}
fig = plots.line_chart({f"{read}, sentence {i}": (range(len(v)), v, {"linestyle": "--" if read == "position -1" else "-",
                                                                     "color": f"C{i}", "markersize": 3})
                        for (read, i), v in pad_curves.items()}, "head logit", xlabel="pad tokens after the sentence",
                       title="three sentences, more and more padding after each")
plots.show(fig, "06_score_vs_pads")

# %%
for (name, i), v in pad_curves.items():
    if name == "last real token":  # masked pads change only the rounding: allow the compute dtype's tolerance
        np.testing.assert_allclose(v, np.full(len(v), v[0]), **profile.tolerance,
                                   err_msg=f"padding must not move the last-real-token score (sentence {i})")
print("largest swing over 0..16 pads:",
      {name: round(float(max(np.ptp(v) for (n, _), v in pad_curves.items() if n == name)), 3) for name, _ in pad_curves})

# %% [markdown]
# The last-real-token score is flat: padding is invisible to it. The position -1 score swings with
# every pad (on the tiny profile by up to 1.5; this run's swing is printed above), although the sentence is the same. So the tutorial's classifier gives a sentence
# a **different score depending on its batch-mates**. Training saw micro-batches of a few sentences
# sorted by length (few pads); evaluation uses bigger batches in random order (more pads), and a
# deployed model often scores one request at a time (no pads at all). The same dev set under the
# three layouts of section 5:

# %%
pads_per_row(train_texts, dev_texts, tokenizer, profile)

# %%
layout_rows = {layout: {"position -1 head": metrics(bug_runs["minus_one"]["by_layout"][layout], dev_labels)["MCC"],
                        "last-real-token head": metrics(bug_runs["last_real"]["by_layout"][layout], dev_labels)["MCC"]}
               for layout in layouts}
results.record("layout_mcc", layout_rows)
pd.DataFrame(layout_rows).T.round(3)

# %%
fixed_by_layout = bug_runs["last_real"]["by_layout"]
fixed_scores_right = fixed_by_layout[next(iter(layouts))]
for name, scores in fixed_by_layout.items():  # the same scores up to the compute dtype's rounding
    np.testing.assert_allclose(scores, fixed_scores_right, **profile.tolerance,
                               err_msg=f"the layout must not change the last-real-token head's scores ({name})")
fixed_mccs = [row["last-real-token head"] for row in layout_rows.values()]
buggy_mccs = [row["position -1 head"] for row in layout_rows.values()]
print(f"position -1 head: MCC {min(buggy_mccs):.2f} to {max(buggy_mccs):.2f}, depending on the layout; "
      f"last-real-token head: {fixed_mccs[0]:.2f} in every layout")

# %% [markdown]
# Training micro-batches, sorted by length, put fewer pads after a sentence than the dev batches do
# (on the tiny profile about 1.5 against about 4). The last-real-token head gets the same MCC in every
# layout; where the heads have learned something (tiny), the position -1 head's MCC depends on how
# the evaluation happened to batch the sentences, and stays below the fixed head in all of them
# (heads that answer one class everywhere, as small's do after 8 steps, tie in every layout). Left padding makes -1 the last real token, which
# the position -1 head saw in training only for the longest sentence of each micro-batch.
#
# **The fixes.** Either read at `last_token_index` (any padding side), or pad on the left and read
# -1. For a head trained at the last real token, all of these give the same scores:

# %%
fixed_left_minus_one = head_scores(fixed, dev_texts, tokenizer, profile, "minus_one", padding_side="left")
fixed_left = fixed_by_layout["left-padded batches"]  # read at last_token_index
print(f"largest difference: {np.abs(fixed_scores_right - fixed_left_minus_one).max():.1e} (left padding + -1), "
      f"{np.abs(fixed_scores_right - fixed_left).max():.1e} (left padding + last_token_index)")
for other in (fixed_left_minus_one, fixed_left):
    np.testing.assert_allclose(other, fixed_scores_right, **profile.tolerance, err_msg="both fixes must give the same scores")

# %% [markdown]
# When is the -1 read harmless? When every row of every batch gets the same number of pads in
# training and in use. The tutorial padded *every* sentence to the longest in its file (25 tokens
# for train and test, 23 for validation) and passed no attention mask: the pad count was a fixed
# function of the sentence, and its test file happened to share the training file's width. Change
# the batch size, sort by length, serve one request at a time, or meet one longer sentence, and the
# pad counts change under a model that learned to read them. Notebook 7 trains a head exactly that
# way on the ledger and scores it both ways.
#
# ## 7. Saving the head with the adapter
#
# `save_pretrained` on a peft model writes the adapter: the LoRA matrices plus every module in
# `modules_to_save`. The head is two tensors in that file:

# %%
adapter_dir = build_dir("adapters", "06_head")
shutil.rmtree(adapter_dir, ignore_errors=True)
fixed.save_pretrained(adapter_dir)
saved_head_keys(adapter_dir)

# %% [markdown]
# A classifier is more than its adapter: the template that wraps each sentence and the meaning of
# the sigmoid (which class it is the probability of) belong with it. `save_classifier` writes the
# adapter and a readable `classifier.json` next to it; section 8 loads it in a fresh model.

# %%
classifier_dir = save_classifier(build_dir("classifiers", "06_linear_head"), fixed, profile, template,
                                 class_names=("unacceptable", "acceptable"))
print((classifier_dir / "classifier.json").read_text())

# %% [markdown]
# To load: a base, a fresh head (deliberately drawn from a *different* seed), then the adapter, which
# overwrites the head with the trained one. `load_linear_head` does these steps. The base is the
# one we hold, with the trained adapter stripped off: the same 4-bit weights a fresh load gives
# (section 8 loads from disk).

# %%
base = strip_adapter(fixed)
del fixed
reloaded = load_linear_head(base, adapter_dir, seed=profile.seed + 1)
reloaded_scores = head_scores(reloaded, dev_texts, tokenizer, profile)
agreement = ((reloaded_scores > 0) == (bug_runs["last_real"]["scores"] > 0)).mean()
print(f"largest score difference after the round trip: {np.abs(reloaded_scores - bug_runs['last_real']['scores']).max():.1e}; "
      f"{agreement:.1%} of predictions as before")
assert agreement >= 0.98, "the reloaded head must reproduce the trained model's predictions"

# %% [markdown]
# On the CPU the round trip is exact; on a GPU expect differences in the last bits of the compute
# dtype.
#
# Now the tutorial's setup: the head is **not** in `modules_to_save`. We train it that way (the
# adapters must learn around a frozen random head), save with `save_pretrained`, and load as one
# normally would: a base, `add_linear_head`, `PeftModel.from_pretrained`.

# %%
frozen_head = head_model(profile, save_head=False, base=strip_adapter(reloaded))
del reloaded, base
train(frozen_head, head_loss(tokenizer, profile), train_texts, train_labels, tokenizer, profile)
frozen_scores = head_scores(frozen_head, dev_texts, tokenizer, profile)
frozen_dir = build_dir("adapters", "06_head_not_saved")
shutil.rmtree(frozen_dir, ignore_errors=True)
frozen_head.save_pretrained(frozen_dir)
print("head tensors in the saved adapter:", saved_head_keys(frozen_dir))

# %%
naive = PeftModel.from_pretrained(add_linear_head(strip_adapter(frozen_head), seed=profile.seed + 1), frozen_dir)
del frozen_head  # its base now carries the reloaded adapter
naive_scores = head_scores(naive, dev_texts, tokenizer, profile)
frozen_mcc = results.record("frozen_head_mcc", metrics(frozen_scores, dev_labels)["MCC"])
naive_mcc = results.record("frozen_head_reloaded_mcc", metrics(naive_scores, dev_labels)["MCC"])
pd.DataFrame({"trained head in modules_to_save (section 5)": metrics(bug_runs["last_real"]["scores"], dev_labels),
              "frozen random head (tutorial), as trained": metrics(frozen_scores, dev_labels),
              "frozen random head, after save + load": metrics(naive_scores, dev_labels)}).T.round(3)

# %%
naive_agreement = ((naive_scores > 0) == (frozen_scores > 0)).mean()
print(f"frozen random head: MCC {frozen_mcc:.2f} as trained, {naive_mcc:+.2f} after save + load "
      f"(trained head: {bug_runs['last_real']['MCC']:.2f}); {naive_agreement:.1%} of predictions as trained")


# %% [markdown]
# The tutorial's setup can learn: the adapters bend the hidden states toward whatever direction the
# frozen random head happens to point, and on the tiny profile come close to a trained head (on
# small, after 8 steps, neither head learned anything). But that direction lives
# only in the training process. The reload drew another random head (seed `profile.seed + 1`) and
# the score changed completely. Is that number a property of the saved adapters? Keep the adapters
# and redraw only the head, under a few seeds. A head is one matrix product on the hidden state at
# the last real token, so we compute those hidden states once and apply each head to them:

# %%
@torch.inference_mode()
def head_inputs(model, texts) -> torch.Tensor:
    """What a head reads: the final (normed) hidden state at each text's last real token. (n, hidden)"""
    decoder = model.get_base_model().get_decoder()  # the LoRA-adapted transformer, without its head
    out = []
    for start in range(0, len(texts), profile.eval_batch_size):
        batch = tokenizer(texts[start : start + profile.eval_batch_size], return_tensors="pt", padding=True).to(profile.device)
        hidden = decoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        out.append(hidden[torch.arange(len(hidden)), last_token_index(batch["attention_mask"])].float().cpu())
    return torch.cat(out)


naive_hidden = head_inputs(naive, dev_texts)  # (dev, hidden)
with torch.no_grad():  # the reload's own head, redrawn from its seed, must give the reload's scores
    redrawn = LinearHead(hidden_size, seed=profile.seed + 1)(naive_hidden)[:, 0].numpy()
np.testing.assert_allclose(redrawn, naive_scores, **profile.tolerance, err_msg="a head is a matrix product on these states")
print(f"hidden states at the last real token: {tuple(naive_hidden.shape)}")

# %%
reload_rows = {}
for seed in range(profile.seed, profile.seed + 8):  # profile.seed drew the head the adapters were trained with
    with torch.no_grad():
        scores = LinearHead(hidden_size, seed=seed)(naive_hidden)[:, 0].numpy()  # (dev,)
    reload_rows[seed] = {**metrics(scores, dev_labels), "predicted acceptable": (scores > 0).mean(),
                         "same prediction as trained": ((scores > 0) == (frozen_scores > 0)).mean()}
reload_table = pd.DataFrame(reload_rows).T
reload_table.index.name = "head seed at reload"
results.record("frozen_head_reloaded_mcc_by_seed", {str(k): float(v) for k, v in reload_table.MCC.items()})
reload_table.round(3)

# %%
trained_seed, other_seeds = reload_table.loc[profile.seed], reload_table.drop(index=profile.seed)
assert trained_seed["same prediction as trained"] >= 0.98, "the training head's seed must give back the trained model"
assert other_seeds["same prediction as trained"].min() <= 0.9, \
    "random heads on the reloaded adapters should not all give back the trained predictions"
print(f"other head seeds: MCC from {other_seeds.MCC.min():+.2f} to {other_seeds.MCC.max():+.2f}; "
      f"{(other_seeds.MCC < 0).sum()} of {len(other_seeds)} below 0; "
      f"at most {other_seeds['same prediction as trained'].max():.1%} of predictions as trained")

# %% [markdown]
# Only the seed the adapters were trained with is sure to give back the trained classifier. Another
# draw changes a share of the predictions, and which way is random (a head that answers one class
# everywhere, like small's after 8 steps, is matched by any other draw that does the same). On the tiny profile the table shows
# all three outcomes: heads that point partly against the learned direction (MCC down to -0.75, the
# classifier inverted), heads that happen to point near it (MCC up to +0.72), and heads that put
# every sentence on one side of their threshold (MCC 0, a constant answer). The seed this reload
# drew, `profile.seed + 1`, is just one of them. The saved adapters alone do not define a classifier.
# `load_linear_head` refuses such a folder instead of returning a model whose predictions
# depend on a random draw:

# %%
try:
    require_saved_head(frozen_dir)  # what load_linear_head checks first, before it touches a model
except ValueError as err:
    print("ValueError:", err)
else:
    raise AssertionError("load_linear_head should refuse an adapter saved without its head")

# %% [markdown]
# ## 8. Classify your own sentence
#
# The classifier of section 7 loads on a fresh base model, in a new session or from a shell:
# `python -m lmcls_helpers.classify build/classifiers/06_linear_head "The cat sat on the mat."`
# prints the label and its probability. Here we load it in the notebook, after freeing the model we
# hold (one base model at a time, as on a T4), and first check that it gives the probabilities the
# trained head gave the same dev sentences in section 5.

# %%
del naive
free_gpu_memory()
classifier = load_classifier(classifier_dir)
check = dev_sentences[:16]
expected = 1 / (1 + np.exp(-bug_runs["last_real"]["scores"][:16]))  # sigmoid of section 5's logits
np.testing.assert_allclose(classifier.predict_proba(check)[:, 1], expected, **profile.tolerance)
print(f"classifier.json read back; P(acceptable) of {len(check)} dev sentences as section 5 gave them")

# %% [markdown]
# Now yours: change the sentences and run the cell again.

# %%
my_sentences = ["A neighbor is dropping the cakes.", "A neighbor are dropping the cakes.", "She and I slept after lunch.",
                "Her and I slept after lunch.", "A neighbor is the dropping cakes.", "The cat sat on the mat."]
for sentence, label, p in zip(my_sentences, classifier.predict(my_sentences), classifier.predict_proba(my_sentences).max(axis=1)):
    print(f"{label:>12}  {p:.3f}  {sentence}")

# %% [markdown]
# On the tiny profile the head catches the wrong pronoun case ("Her and I") and calls "The cat sat on
# the mat." unacceptable: its words are not in the tiny world's small synthetic vocabulary, which is
# all this model has ever read. It also catches the scrambled word order ("A neighbor is the
# dropping cakes.", 0.785 unacceptable), but the agreement error ("A neighbor are", 0.853
# acceptable) slips through, as it did past notebook 4's label words. Llama-3-8B has read the web;
# try the same cell on the full profile.

# %%
notebook_seconds = results.record("notebook_seconds", time.perf_counter() - notebook_start)
print(f"notebook ran in {notebook_seconds:.0f} s")

# %%
course.finish("06_last_token_head", profile)  # the time taken against the plan; the model loads checked


# %% [markdown]
# ## Summary
#
# - A classification head is `Linear(hidden, 1)` on the hidden state of the **last real token**:
#   one logit, a sigmoid, a threshold at logit 0, trained with `BCEWithLogitsLoss`. For Llama-3-8B it
#   replaces a 525M-weight LM head with 4,097 weights.
# - `get_peft_model` trains only the adapter's matrices and freezes every other weight, a new head
#   included, with or without 4-bit loading. Name the head in `modules_to_save` so that it trains
#   **and** is saved with the adapter; a head left out comes back random on reload, and the adapters
#   trained around the old one then classify right, inverted or constant, depending on that draw.
# - `logits[:, -1, :]` on right-padded batches reads an eos pad: a summary of the sentence whose value
#   depends on how many pads follow, so on the batch-mates. Read at `last_token_index`, or pad left.
# - `save_classifier` keeps the adapter, the head, the template and the class names together;
#   `load_classifier` gives back the same probabilities on a fresh base.
#
# ## Exercises
#
# **1. One logit or two?** `AutoModelForSequenceClassification` ends in `Linear(hidden, 2)` and a
# softmax; our head in `Linear(hidden, 1)` and a sigmoid. Show that they can express the same
# classifiers: complete `one_logit_weight(W)` so that, for the two-row weight `W` (2, hidden) of a
# `score` layer, it returns the weight `w` (hidden,) of a one-logit head with
# `sigmoid(h · w) = softmax(W h)[1]` for every hidden state `h`.
# *Hint:* a softmax over two logits depends only on their difference.

# %%
def one_logit_weight(W: torch.Tensor) -> torch.Tensor | None:
    return None  # your answer: a (hidden,) tensor computed from W


# %%
generator = torch.Generator().manual_seed(0)
W, h = torch.randn(2, 16, generator=generator), torch.randn(5, 16, generator=generator)  # a score layer, 5 hidden states
w = one_logit_weight(W)
if w is None:
    print("Exercise 1 not attempted yet: complete one_logit_weight above.")
else:
    torch.testing.assert_close(torch.sigmoid(h @ w), torch.softmax(h @ W.T, dim=1)[:, 1])
    print("correct: the two heads give the same probabilities")

# %% [markdown]
# **2. Rescue a head that is not in the adapter.** Section 7's adapter lost its head. Without
# retraining with `modules_to_save`, the other way out is to save the head yourself, next to the
# adapter. Write `save_head(model, folder)`, which writes the head's weights to
# `folder / "head.safetensors"`, and `load_head(model, folder)`, which puts them back into a model
# loaded with `PeftModel.from_pretrained`.
# *Hint:* `model.get_output_embeddings()` is the head, through the peft wrapper too;
# `safetensors.torch.save_file` and `load_file` store a `state_dict`.

# %%
save_head = None  # your answer: a function (model, folder) -> None
load_head = None  # your answer: a function (model, folder) -> None

# %%
if save_head is None or load_head is None:
    print("Exercise 2 not attempted yet: define save_head and load_head above.")
else:  # one base model at a time: the classifier's base is reused, its adapter stripped off
    original = head_model(profile, save_head=False, base=strip_adapter(classifier.model))  # the tutorial's setup
    del classifier
    folder = build_dir("adapters", "06_exercise_head")
    shutil.rmtree(folder, ignore_errors=True)
    original.save_pretrained(folder)
    save_head(original, folder)
    original_scores = head_scores(original, dev_texts[:64], tokenizer, profile)
    restored = PeftModel.from_pretrained(add_linear_head(strip_adapter(original), seed=profile.seed + 1), folder)
    del original
    load_head(restored, folder)
    np.testing.assert_allclose(head_scores(restored, dev_texts[:64], tokenizer, profile), original_scores,
                               **profile.tolerance, err_msg="the restored model must score like the original")
    print("correct: the head came back with the adapter")
