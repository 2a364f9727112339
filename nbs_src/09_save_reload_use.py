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
# # 09 · Save, reload and use
# *A trained adapter becomes a classifier you can hand on: a folder, a base model, one command.*
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/lmcls-org/lmcls/blob/main/notebooks/09_save_reload_use.ipynb)
#
# Notebooks 4 and 6 trained two kinds of classifier on a 4-bit base: LoRA adapters that make the
# right **label word** likelier, and a **linear head** on the last real token. This chapter is about
# what comes after training. It trains both kinds again, briefly (the lesson is saving, not
# accuracy), so it runs on its own. What you will learn:
#
# - what `save_pretrained` writes for a LoRA adapter, and what else a classifier needs to score
#   the same way tomorrow (the template, the label words, the base model);
# - why a new head must be listed in **`modules_to_save`**: a head left out is not saved, and comes
#   back random;
# - whether to **merge** the adapter into the 4-bit base, and what the re-quantization costs;
# - how to **reload** a classifier from its folder and the base model alone, and check that it
#   reproduces the predictions it made in memory;
# - the **command line**: `python -m lmcls_helpers.classify FOLDER "a sentence"`, and what it says
#   when something is wrong.

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

profile = course.start("09_save_reload_use", PROFILE)  # the profile, its world, login, versions and device, the time plan

# %%
import contextlib
import io
import json
import os
import shutil
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from peft import PeftModel, get_peft_model

from lmcls_helpers.batches import collate, encode_examples, label_loss
from lmcls_helpers.classify import load_classifier, main, save_classifier
from lmcls_helpers.data import download_cola, load_cola
from lmcls_helpers.heads import add_linear_head, require_saved_head, saved_head_keys
from lmcls_helpers.models import free_gpu_memory, load_model
from lmcls_helpers.paths import build_dir
from lmcls_helpers.prompts import PromptTemplate
from lmcls_helpers.scoring import evaluate
from lmcls_helpers.tokens import load_tokenizer
from lmcls_helpers.training import head_loss, head_model, head_scores, lora_config, strip_adapter, train

torch.manual_seed(profile.seed)
notebook_start = time.perf_counter()

# %% [markdown]
# ## 1. A classifier to save
#
# We need something trained. Notebook 4's recipe, cut short: LoRA on all seven projections of
# the 4-bit base, the label-word loss, a few optimizer steps on the first 512 training sentences of
# CoLA. Sixty-four sentences of the dev split are the **check set**: whatever we save must score
# them as the model in memory does.

# %%
cola_root = profile.cola_root if profile.cola_root.exists() else download_cola(profile.cola_root.parent)
splits = load_cola(cola_root)
train_df, check_df = splits["in_domain_train"].iloc[:512], splits["in_domain_dev"].iloc[:64]
train_sentences, train_labels = list(train_df.sentence), list(train_df.label)
check_sentences, check_labels = list(check_df.sentence), list(check_df.label)
num_steps = 20  # a brief run: enough to move the scores away from the base model's

tokenizer = load_tokenizer(profile, padding_side="right")
template = PromptTemplate()  # notebook 2's few-shot prompt; the sentence goes into its {sentence} slot
label_ids = template.check(tokenizer, profile.label_words)  # [id of ' unacceptable', id of ' acceptable']
print(f"{len(train_sentences)} training sentences, {len(check_sentences)} check sentences, {num_steps} steps of "
      f"{profile.train_batch_size}")


# %%
def label_word_loss(model, sentences, labels):
    """Notebook 4's loss: cross-entropy on the label word after the prompt, summed over the micro-batch."""
    examples = encode_examples(tokenizer, sentences, labels, template, profile.label_words)  # prompt + label word
    batch = collate(examples, tokenizer.pad_token_id, tokenizer.padding_side)  # targets: -100 but the label word
    return label_loss(model, {k: v.to(profile.device) for k, v in batch.items()})


base = load_model(profile)  # 4-bit NF4 weights
torch.manual_seed(profile.seed)  # LoRA's A matrices start random
words = get_peft_model(base, lora_config(profile))
with words.disable_adapter():  # LoRA's B starts at zero: before training, the adapter changes nothing
    before = evaluate(words, tokenizer, check_sentences, check_labels, template, label_ids, batch_size=profile.eval_batch_size)
train(words, label_word_loss, train_sentences, train_labels, tokenizer, profile, num_steps)
words_result = evaluate(words, tokenizer, check_sentences, check_labels, template, label_ids, batch_size=profile.eval_batch_size)
assert np.abs(words_result.probs - before.probs).max() > 1e-3, "training should move the scores"
print(f"P(acceptable) moved by up to {np.abs(words_result.probs - before.probs).max():.3f} on the check set; "
      f"check-set MCC {before.mcc:.3f} before, {words_result.mcc:.3f} after")

# %% [markdown]
# The scores moved: the adapter now carries something the base model alone does not. That is what
# we must not lose.
#
# ## 2. What `save_pretrained` writes, and what a classifier adds
#
# `save_pretrained` on a peft model writes the adapter only: the LoRA matrices, a config and a model
# card (`README.md`), not the 4-bit base.

# %%
adapter_dir = build_dir("adapters", "09_label_words")
words.save_pretrained(adapter_dir)
pd.DataFrame([{"file": f.name, "KiB": round(f.stat().st_size / 1024, 1)} for f in sorted(adapter_dir.iterdir())])

# %%
adapter_config = json.loads((adapter_dir / "adapter_config.json").read_text())
{k: adapter_config[k] for k in ("peft_type", "r", "lora_alpha", "target_modules", "modules_to_save")}

# %% [markdown]
# For Llama-3-8B at rank 8 on all seven projections the adapter is about 21M fp32 weights, some
# 80 MiB, next to a base of 5.6 GiB in 4 bits: cheap to store, cheap to send. The config says how
# to rebuild the LoRA layers, and records where the base model was loaded from.
#
# But an adapter alone does not classify. Its scores also depend on the **template** that wraps
# each sentence, the two **label words** read, and the exact **base model** it was trained on. Lose
# one and the adapter still loads, and scores something else. `save_classifier` writes the adapter
# and, next to it, a `classifier.json` you can read:

# %%
words_dir = save_classifier(build_dir("classifiers", "09_label_words"), words, profile, template)
print((words_dir / "classifier.json").read_text())

# %% [markdown]
# The base model is named by its path from the checkout (`build/...`) when it lives in `build/`, so
# the folder stays valid when the checkout moves, and by its hub id otherwise; `profile` says how
# to load that base (4 bits, which dtype). `classifier.json` is written last: a folder that has it
# is complete.
#
# ## 3. A new head must be in `modules_to_save`
#
# A linear head replaces the LM head with `Linear(hidden, 1)` (notebook 6). It is a new module,
# not a LoRA layer, and `get_peft_model` freezes every weight outside the LoRA layers, so the head
# trains **and is saved** only when it is named in `modules_to_save`. Notebook 6's ledger tutorial
# (Mistral-7B, a `Linear(4096, 1)` head) leaves it out; we do the same first.
# `strip_adapter` hands back the 4-bit base as loaded, so no reload is needed.

# %%
prompts = [template.format(s) for s in train_sentences]
check_prompts = [template.format(s) for s in check_sentences]
lost = head_model(profile, save_head=False, base=strip_adapter(words))  # head seeded with profile.seed, frozen
del words
train(lost, head_loss(tokenizer, profile), prompts, train_labels, tokenizer, profile, num_steps)
lost_scores = head_scores(lost, check_prompts, tokenizer, profile)  # (check,): one logit per sentence
lost_dir = build_dir("adapters", "09_head_not_saved")
shutil.rmtree(lost_dir, ignore_errors=True)
lost.save_pretrained(lost_dir)
print("head tensors in the saved adapter:", saved_head_keys(lost_dir))

# %% [markdown]
# None. The adapters learned to steer the hidden states toward whatever direction the frozen random
# head points, but that head lives only in this process. Reloading the adapter the usual way, a
# base, `add_linear_head`, `PeftModel.from_pretrained`, draws a new head (here from another seed):

# %%
naive = PeftModel.from_pretrained(add_linear_head(strip_adapter(lost), seed=profile.seed + 1), lost_dir)
del lost
naive_scores = head_scores(naive, check_prompts, tokenizer, profile)
lost_same = float(((naive_scores > 0) == (lost_scores > 0)).mean())
print(f"after save + load: {lost_same:.0%} of the check set predicted as trained; "
      f"largest logit change {np.abs(naive_scores - lost_scores).max():.2f}")
assert np.abs(naive_scores - lost_scores).max() > 0.01, "a redrawn head should change the scores"

# %% [markdown]
# The reloaded model is another classifier: its answers now depend on a random draw. So
# `save_classifier` refuses to finish such a save, and the loader refuses such a folder; both ask:

# %%
try:
    require_saved_head(lost_dir)  # what save_classifier and load_classifier check first
except ValueError as err:
    print("ValueError:", err)

# %% [markdown]
# The fix is one argument: `head_model(profile, save_head=True)` puts the head in
# `LoraConfig(modules_to_save=["lm_head"])`. Then peft trains a copy of the head and writes it into
# the adapter file:

# %%
kept = head_model(profile, save_head=True, base=strip_adapter(naive))
del naive
train(kept, head_loss(tokenizer, profile), prompts, train_labels, tokenizer, profile, num_steps)
kept_scores = head_scores(kept, check_prompts, tokenizer, profile)
head_dir = save_classifier(build_dir("classifiers", "09_linear_head"), kept, profile, template,
                           class_names=("unacceptable", "acceptable"))  # label 0, label 1: the sigmoid is P(label 1)
print("head tensors in the saved adapter:", saved_head_keys(head_dir))

# %% [markdown]
# The head's weight and bias are in the file, under the `modules_to_save` prefix. A linear head
# reads no label words, so `save_classifier` asks for the **class names** instead: which class
# its sigmoid is the probability of.
#
# ## 4. Merge or not?
#
# `merge_and_unload` folds each LoRA update into its base weight, `W + (α/r)·B·A`, and returns a
# plain model: no adapter, no extra matmuls at inference. With a 4-bit base that means
# dequantize `W`, add the update, and **quantize again** to the 16 NF4 levels of each block. The
# update is small next to the gaps between those levels, so the rounding distorts it. We measure
# by how much in one projection. (peft warns on every such merge that rounding may change the
# outputs; that is what we measure, so the cell silences that one warning.)

# %%
from bitsandbytes.functional import dequantize_4bit

layer = kept.get_base_model().model.layers[-1].mlp.down_proj  # a LoRA layer around a Linear4bit
update = layer.get_delta_weight("default").float()  # (α/r)·B·A, (out, in)
w_before = dequantize_4bit(layer.base_layer.weight.data, layer.base_layer.weight.quant_state).float()
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="Merge lora module to 4-bit linear", category=UserWarning)
    merged = kept.merge_and_unload()  # every Linear4bit re-quantized with its update folded in; the head kept
w_after = dequantize_4bit(layer.base_layer.weight.data, layer.base_layer.weight.quant_state).float()
distortion = ((w_after - w_before - update).norm() / update.norm()).item()
print(f"mean |update| {update.abs().mean():.1e}, mean |W| {w_before.abs().mean():.1e}; after re-quantizing, "
      f"the weights miss W + update by {distortion:.0%} of the update's size")

# %% [markdown]
# What the rounding does to the predictions, and what each way ships:

# %%
merged_scores = head_scores(merged, check_prompts, tokenizer, profile)
merged_same = float(((merged_scores > 0) == (kept_scores > 0)).mean())
merged_bytes = sum(t.numel() * t.element_size() for t in merged.state_dict().values())  # every weight of the base
pd.DataFrame({"same prediction": [1.0, merged_same], "largest logit change": [0.0, np.abs(merged_scores - kept_scores).max()],
              "MiB to ship": [(head_dir / "adapter_model.safetensors").stat().st_size / 2**20, merged_bytes / 2**20]},
             index=["adapter on the 4-bit base", "merged into 4 bits"]).round(3)

# %% [markdown]
# Keeping the adapter separate gives back exactly what was trained, and what you ship is the
# adapter alone (one base can serve many adapters). Merging into 4 bits saves the adapter's small
# matmuls, but the rounding moves the logits, and how many predictions flip depends on the
# update's size next to the NF4 gaps: a short or gentle run can be rounded away, or rounded into
# another change altogether. It is also one-way, and what you ship is the whole base. The exact
# merge goes into a 16-bit copy of the base, 15 GiB for Llama-3-8B: more than a T4 can hold. So
# with a 4-bit base, keep the adapter, as most QLoRA deployments do.
#
# The merged model has served its purpose. Everything from here on starts from the saved folders.

# %%
del kept, merged, layer, base, update, w_before, w_after
free_gpu_memory()  # collect the freed model's reference cycles; on a GPU, hand its memory back

# %% [markdown]
# ## 5. Reloading: the folder and the base model
#
# `load_classifier` reads `classifier.json`, checks that the folder has every file it needs, loads
# the base model the file names, puts the adapter on it, and rebuilds the template with its label
# words. It needs nothing else: not the notebook that trained it, and not the data it trained on
# (a classifier saved on the `small` profile loads without CoLA). A classifier saved on a GPU
# loads on the CPU when no GPU is visible, and says so: bitsandbytes runs NF4 there too, slowly.
#
# The check that matters: the reloaded classifier gives the probabilities the model in memory gave.

# %%
classifier = load_classifier(words_dir)  # a fresh 4-bit base + the saved adapter + classifier.json
reloaded = classifier.predict_proba(check_sentences)  # (check, 2): columns in the order of class_names
words_gap = float(np.abs(reloaded[:, 1] - words_result.probs).max())
np.testing.assert_allclose(reloaded[:, 1], words_result.probs, **profile.tolerance,
                           err_msg="the reloaded classifier must reproduce the in-memory probabilities")
print(f"{classifier.class_names}: P(acceptable) of {len(check_sentences)} check sentences as in memory "
      f"(largest difference {words_gap:.1e})")

# %% [markdown]
# On the CPU the round trip is exact to float rounding; on a GPU expect differences in the last
# bits of the compute dtype, since kernels may add in another order. Expect wrong answers below:
# twenty steps on 512 sentences make a weak classifier (section 1's check-set MCC). What this
# section checks is that the folder answers as the model in memory did. Now yours: change the
# sentences and run the cell again.

# %%
my_sentences = ["A neighbor is dropping the cakes.", "A neighbor are dropping the cakes.", "She and I slept after lunch.",
                "Her and I slept after lunch.", "A neighbor is the dropping cakes.", "The cat sat on the mat."]
for sentence, label, p in zip(my_sentences, classifier.predict(my_sentences), classifier.predict_proba(my_sentences)[:, 1]):
    print(f"{label:>12}  P(acceptable) {p:.3f}  {sentence}")

# %% [markdown]
# A model reads at most its **context**: the positions it was trained on (256 for the tiny model,
# 8,192 for Llama 3). Past it, the scores mean nothing, and nothing in the forward pass says so.
# The classifier refuses such a text rather than cut it: a cut prompt loses its end, where the answer
# is read.

# %%
long_text = " ".join([check_sentences[0]] * 2000)  # thousands of words, one text
try:
    classifier.predict_proba([long_text])
except ValueError as err:
    print(f"{len(long_text.split()):,} words -> ValueError:", err)

# %%
del classifier
free_gpu_memory()


# %% [markdown]
# ## 6. The command line
#
# From a shell, the same folder classifies texts given as arguments, or one a line from a file
# (blank lines are skipped); each text gets a line with its label, a tab and the label's probability:
#
# ```
# python -m lmcls_helpers.classify build/classifiers/09_linear_head "The cat sat on the mat."
# python -m lmcls_helpers.classify build/classifiers/09_linear_head --file sentences.txt
# ```
#
# `cli` below runs that command inside this kernel and shows what a shell would print: the lines
# on standard output, the errors on standard error. Paths are relative to where you run it.

# %%
def cli(*args) -> str | None:
    """What `python -m lmcls_helpers.classify ARGS` prints; returns its standard output, if any."""
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            main([os.path.relpath(a) if isinstance(a, os.PathLike) else a for a in args])
    except SystemExit as stop:  # the command stops with status 2 after printing its error
        sys.stderr.flush()
        print(f"(exit status {stop.code})")
    print(out.getvalue(), end="")
    return out.getvalue() or None


sentences_file = build_dir("classifiers", "09_sentences.txt")
sentences_file.write_text("\n\n".join(check_sentences[:8]) + "\n")  # a blank line between texts
printed = cli(head_dir, "--file", sentences_file)

# %% [markdown]
# A fresh process would load the base model again, as `cli` just did. The printed lines carry the
# head's sigmoid from section 3, where the head was still in memory:

# %%
labels, p_label = zip(*(line.split("\t") for line in printed.splitlines()))
p_acceptable = np.array([float(p) if label == "acceptable" else 1 - float(p) for label, p in zip(labels, p_label)])
expected = 1 / (1 + np.exp(-kept_scores[:8]))  # sigmoid of the in-memory logits
head_gap = float(np.abs(p_acceptable - expected).max())
assert len(p_acceptable) == 8, "one line per non-blank line of the file"
np.testing.assert_allclose(p_acceptable, expected, rtol=profile.tolerance["rtol"], atol=profile.tolerance["atol"] + 1e-4,
                           err_msg="the command line must reproduce the in-memory head (to its four decimals)")
print(f"the command line's P(acceptable) as in memory, to {head_gap:.1e}")

# %% [markdown]
# When something is wrong, the command says what in one line, and how to fix it; a problem with
# the folder stops it before it loads a model. The adapter folder of section 3 is no classifier,
# and a `classifier.json` cut short by a bad copy is named as such:

# %%
cli(lost_dir, "A sentence.")

# %%
broken_dir = build_dir("classifiers", "09_broken_copy")
shutil.rmtree(broken_dir, ignore_errors=True)
shutil.copytree(words_dir, broken_dir)
text = (broken_dir / "classifier.json").read_text()
(broken_dir / "classifier.json").write_text(text[: len(text) // 2])  # half a file
cli(broken_dir, "A sentence.")

# %% [markdown]
# So do an empty text, a missing `--file`, a text longer than the context, and an `LMCLS_MODEL`
# (the environment variable that swaps in another base model) that names a folder that does not
# exist: each ends in one line that says what to do.
#
# The numbers `make run` summarizes:

# %%
results.record("words_reload_max_prob_diff", words_gap)
results.record("head_cli_max_prob_diff", head_gap)
results.record("lost_head_same_prediction", lost_same)
results.record("merge_distortion", distortion)
results.record("merged_same_prediction", merged_same)
results.record("notebook_seconds", time.perf_counter() - notebook_start)
course.finish("09_save_reload_use", profile)  # the time taken against the plan; the model loads checked


# %% [markdown]
# ## Summary
#
# - `save_pretrained` on a peft model writes the adapter only. A classifier also needs its template,
#   its label words or class names, and the name of its base model: `save_classifier` writes them
#   into a readable `classifier.json` beside the adapter.
# - A new head trains and is saved only when it is in `modules_to_save`. Left out, it is missing
#   from the file and comes back as a new random draw, and the predictions with it.
# - Merging into a 4-bit base re-quantizes every weight and rounds the update; keep the adapter
#   separate unless you can merge into a 16-bit copy.
# - `load_classifier(folder)` needs the folder and the base model only, and reproduces the
#   in-memory probabilities; `python -m lmcls_helpers.classify` does the same from a shell and names
#   the fix when something is wrong.
#
# ## Exercises
#
# **1. Read the command line back.** The command prints the winning label and *its* probability.
# Write `p_acceptable_of(line)` that turns one printed line, like `"unacceptable\t0.8123"`, into
# P(acceptable). *Hint:* two classes, and the probabilities add up to 1.

# %%
def p_acceptable_of(line: str) -> float | None:
    return None  # your answer


# %%
if p_acceptable_of("acceptable\t0.5000") is None:
    print("Exercise 1 not attempted yet: complete p_acceptable_of above.")
else:
    np.testing.assert_allclose([p_acceptable_of(line) for line in printed.splitlines()], p_acceptable, atol=1e-9)
    print("correct: the same P(acceptable) as section 6 computed")

# %% [markdown]
# **2. What an adapter weighs.** Section 2 said the label-word adapter for Llama-3-8B is about 80 MiB.
# Check it: how many bytes do rank-8 LoRA matrices on all seven projections of its 32 layers take
# in fp32? *Hint:* each adapted `Linear(d_in, d_out)` gets `A` (r, d_in) and `B` (d_out, r); the
# hidden size is 4,096, `k_proj` and `v_proj` output `8 × 128` features, `gate_proj` and `up_proj`
# 14,336, `down_proj` reads 14,336.

# %%
adapter_bytes_8b = None  # your answer: an integer

# %%
if adapter_bytes_8b is None:
    print("Exercise 2 not attempted yet: set adapter_bytes_8b above.")
else:
    from lmcls_helpers.profiles import LLAMA3_8B_CONFIG as c

    h, kv, inter = c["hidden_size"], c["num_key_value_heads"] * c["hidden_size"] // c["num_attention_heads"], c["intermediate_size"]
    shapes = [(h, h), (h, kv), (h, kv), (h, h), (h, inter), (h, inter), (inter, h)]  # q k v o gate up down: (d_in, d_out)
    expected_bytes = 4 * c["num_hidden_layers"] * sum(8 * (d_in + d_out) for d_in, d_out in shapes)
    assert adapter_bytes_8b == expected_bytes, f"{adapter_bytes_8b:,} bytes is not the count"
    print(f"correct: {expected_bytes:,} bytes, {expected_bytes / 2**20:.0f} MiB")

# %% [markdown]
# **3. A folder copied in part.** Folders get copied by hand, and files get left behind. Copy
# `words_dir` to a new folder, delete `adapter_model.safetensors` from the copy, and guess which fix
# the command will name before the check cell runs it. *Hint:* `shutil.copytree(words_dir, build_dir("classifiers", "09_my_copy"))`.

# %%
shipped = None  # your answer: the copy's folder, without its adapter_model.safetensors

# %%
if shipped is None:
    print("Exercise 3 not attempted yet: set shipped above.")
else:
    shipped = Path(shipped)
    assert (shipped / "classifier.json").is_file(), "copy the whole folder first"
    assert not (shipped / "adapter_model.safetensors").exists(), "then delete adapter_model.safetensors from the copy"
    cli(shipped, "A sentence.")  # stops before it loads a model
