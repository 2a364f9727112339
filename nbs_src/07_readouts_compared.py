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
# # 07 · Three read-outs compared
# *Label words, a linear head and `AutoModelForSequenceClassification` on one prompt, one adapter and one budget, and how many examples each needs.*
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/lmcls-org/lmcls/blob/main/notebooks/07_readouts_compared.ipynb)
#
# Chris McCormick's [Fine-Tuning Llama 3 for Sentence Classification](https://github.com/chrisjmccormick/llm-tuning-examples/blob/main/sentence-classification/Fine-Tuning%20Llama%203%20for%20Sentence%20Classification.ipynb) (from here on, the Llama 3
# tutorial) puts a few-shot prompt before each sentence and reads the class from the LM head's
# scores for two label words. It mentions the usual alternative, a linear classifier on the last
# token (what `LlamaForSequenceClassification` adds), and argues that the prompt and the pretrained
# LM head need less training data to do well.
# Notebook 4 trained the label words, notebook 6 a linear head. Here all three read-outs train on
# the same examples, with the same prompt, adapter, loop and number of steps, and we test that
# argument. What you will learn:
#
# - what separates the three read-outs: which weights read the last hidden state, and how many train;
# - how to compare them on one dev set, with an error bar that tells a gap from luck;
# - how `AutoModelForSequenceClassification` finds the last token, and the `pad_token_id` it needs;
# - how many training examples each read-out needs, and where the pretrained LM head's head start shows.

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

profile = course.start("07_readouts_compared", PROFILE)  # the profile, its world, login, versions and device, the time plan

# %%
import warnings

import numpy as np
import pandas as pd
import torch
import transformers
from peft import get_peft_model
from transformers import AutoModelForSequenceClassification

from lmcls_helpers import plots
from lmcls_helpers.batches import collate, encode_examples, label_loss
from lmcls_helpers.data import download_cola, load_cola
from lmcls_helpers.models import free_gpu_memory, load_model
from lmcls_helpers.prompts import PromptTemplate
from lmcls_helpers.scoring import evaluate
from lmcls_helpers.tokens import last_token_index, load_tokenizer
from lmcls_helpers.training import (
    bootstrap_sd,
    head_loss,
    head_model,
    head_scores,
    lora_config,
    metrics,
    strip_adapter,
    train,
)
from lmcls_tools.diagrams import readout_paths

torch.manual_seed(profile.seed)
warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")  # peft 0.21 calls a renamed transformers method
transformers.utils.logging.disable_progress_bar()
num_steps = profile.readout_steps or profile.max_steps  # optimizer steps per run, the same for every read-out

# %% [markdown]
# ## 1. One input, three read-outs
#
# All three classifiers read the same input, notebook 2's few-shot prompt with the sentence in its
# slot, and the same vector: the model's last hidden state at the last real token. They differ only
# in what multiplies that vector:
#
# - **(a) label words** (notebook 4): two rows of the pretrained LM head, those of `' unacceptable'`
#   and `' acceptable'`; trained with cross-entropy on the label word over the whole vocabulary;
# - **(b) a linear head** (notebook 6): a new `Linear(hidden, 1)`, trained with `BCEWithLogitsLoss`;
# - **(c) `AutoModelForSequenceClassification`**: transformers' new `Linear(hidden, 2)`, called
#   `score`, trained with cross-entropy over two classes.
#
# The picture draws them at this model's width:

# %%
tokenizer = load_tokenizer(profile, padding_side="right")
base = load_model(profile)  # 4-bit NF4 weights, profile.compute_dtype compute

# %%
plots.show(readout_paths(base.config.hidden_size, profile.label_words), "07_readout_paths")

# %% [markdown]
# Each path ends in a log-odds of label 1, so one rule, score > 0, predicts for all three. The data:
# CoLA-format training sentences, and the dev set that scores every run. Nothing is chosen on the
# dev set: every run trains for a fixed number of steps and is scored once.

# %%
cola_root = profile.cola_root if profile.cola_root.exists() else download_cola(profile.cola_root.parent)
splits = load_cola(cola_root)
train_df = splits["in_domain_train"].iloc[: profile.max_train_examples]  # None keeps everything
dev_df = splits["in_domain_dev"].iloc[: profile.max_eval_examples]
train_sentences, train_labels = list(train_df.sentence), list(train_df.label)
dev_sentences, dev_labels = list(dev_df.sentence), list(dev_df.label)
pd.DataFrame({"sentences": [len(train_df), len(dev_df)], "share acceptable": [train_df.label.mean(), dev_df.label.mean()]},
             index=["train", "dev"]).round(3)

# %%
template = PromptTemplate()  # notebook 2's few-shot prompt; the sentence goes into its {sentence} slot


def prompted(sentences) -> list[str]:
    return [template.format(s) for s in sentences]


print(prompted(dev_sentences[:1])[0])

# %% [markdown]
# ## 2. Label words and a linear head, on one base
#
# Both (a) and (b) live on the causal LM and train with notebook 6's loop (`training.train`), the same
# LoRA and `num_steps` steps. They also share one 4-bit base: after each run `strip_adapter` takes
# the adapter off and hands back the base as loaded, so no run pays for a reload. The linear head
# replaces the LM head, so we keep the LM head aside (on the CPU while a head run has the GPU) and
# put it back for the label-word runs.

# %%
lm_head = base.get_output_embeddings()  # (vocab, hidden): label words need it, a head replaces it
tied = lm_head.weight is base.get_input_embeddings().weight  # a tied LM head is the embedding: it stays put
label_ids = template.check(tokenizer, profile.label_words)  # [id of ' unacceptable', id of ' acceptable']


def label_word_model(base):
    """The base with its pretrained LM head + fresh LoRA (notebook 4)."""
    base.set_output_embeddings(lm_head.to(profile.device))
    torch.manual_seed(profile.seed)  # LoRA's A matrices start random
    return get_peft_model(base, lora_config(profile))


def linear_head_model(base):
    """The base + Linear(hidden, 1) in modules_to_save + fresh LoRA (notebook 6); the LM head waits on the CPU."""
    model = head_model(profile, base=base)
    if not tied:
        lm_head.to("cpu")  # 1 GiB at 8B that a head run does not need on the GPU
    return model


# %% [markdown]
# The label-word loss and score are notebook 4's: the targets are -100 except the label word, and
# the score is logit(`' acceptable'`) minus logit(`' unacceptable'`).

# %%
def label_word_loss(model, sentences, labels):
    examples = encode_examples(tokenizer, sentences, labels, template, profile.label_words)  # prompt + label word
    batch = collate(examples, tokenizer.pad_token_id, tokenizer.padding_side)  # targets: -100 but the label word
    return label_loss(model, {k: v.to(profile.device) for k, v in batch.items()})  # summed


def label_word_scores(model, sentences, labels) -> np.ndarray:
    """logit(' acceptable') - logit(' unacceptable') at the last real token of each prompt."""
    result = evaluate(model, tokenizer, sentences, labels, template, label_ids, batch_size=profile.eval_batch_size)
    return result.scores[:, 1] - result.scores[:, 0]


methods = {  # name: (build on the base, step_loss, score, inputs)
    "label words": (label_word_model, label_word_loss, label_word_scores, list),
    "linear head": (linear_head_model, head_loss(tokenizer, profile),
                    lambda m, texts, labels: head_scores(m, texts, tokenizer, profile), prompted),
}


# %% [markdown]
# One function runs any read-out: build it on the base, train it, score the dev set, strip the
# adapter. It also returns the run's **bootstrap SD**: how far the MCC moves when the dev set is
# redrawn with replacement (notebook 6). That is the error bar of every number below.

# %%
def run(method: str, sentences, labels, inputs=None) -> dict:
    """Build `method` on the base, train it, score dev; then strip its adapter so the base is ready for the next."""
    build, step_loss, score, default_inputs = methods[method]
    inputs = inputs or default_inputs
    model = build(base)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    seconds = train(model, step_loss, inputs(sentences), labels, tokenizer, profile, num_steps)
    scores = score(model, inputs(dev_sentences), dev_labels)  # (dev,): > 0 predicts label 1
    sd = bootstrap_sd(dev_labels, scores, seed=profile.seed)  # the MCC's spread over resampled dev sets
    strip_adapter(model)  # the same base object, back as loaded
    return {**metrics(scores, dev_labels), "SD": sd, "trainable": trainable, "seconds": seconds, "scores": scores}


def table(rows: dict) -> pd.DataFrame:
    """One row per run: its metrics, SD and trainable weights (the scores stay in the dicts)."""
    frame = pd.DataFrame({m: {k: row[k] for k in ("MCC", "SD", "accuracy", "trainable")} for m, row in rows.items()}).T
    return frame.astype({"MCC": float, "SD": float, "accuracy": float, "trainable": int})


# %% [markdown]
# Before any training, the label words already have something the heads lack: the pretrained LM
# head scores them from the start (LoRA starts with `B = 0`, so an untrained adapter changes
# nothing). A new head starts from random weights. Whether this few-shot start is above chance
# depends on what the model learned in pre-training:

# %%
model = label_word_model(base)
fewshot_scores = label_word_scores(model, dev_sentences, dev_labels)
strip_adapter(model)
del model
fewshot_mcc, fewshot_sd = metrics(fewshot_scores, dev_labels)["MCC"], bootstrap_sd(dev_labels, fewshot_scores, seed=profile.seed)
print(f"label words with 0 training examples (the few-shot prompt alone): dev MCC {fewshot_mcc:.3f} ± {fewshot_sd:.3f}")

# %%
contrast = {m: run(m, train_sentences, train_labels) for m in methods}
table(contrast).round(3)

# %% [markdown]
# The table's SD column is one bootstrap standard deviation of each MCC. Hold the two MCCs against
# it before calling either read-out better.
#
# ## 3. How many examples does each read-out need?
#
# The label words start from what the pretrained LM head knows about `' acceptable'`; the head
# starts from random weights. That head start should matter most when examples are few. So each
# read-out also trains on random subsets of the training sentences (`profile.sample_sizes`), with
# the same `num_steps` steps of `train_batch_size` as before: a small subset is seen many times over.
# The full-set point is the run of section 2, and it too draws only `num_steps × train_batch_size`
# examples: the x-axis counts the distinct sentences a run may draw from.

# %%
sizes = [n for n in profile.sample_sizes if n < len(train_df)]
subsets = {n: train_df.sample(n, random_state=profile.seed) for n in sizes}  # the same subsets for every read-out
runs = {(m, len(train_df)): contrast[m] for m in methods}
for n, subset in subsets.items():
    for m in methods:
        runs[(m, n)] = run(m, list(subset.sentence), list(subset.label))
pd.DataFrame({f"{m}, {n} sentences": {"MCC": r["MCC"], "SD": r["SD"]} for (m, n), r in sorted(runs.items())}).T.round(3)

# %% [markdown]
# Section 6 draws these points as a curve, with the third read-out added.
#
# ## 4. The third read-out: `AutoModelForSequenceClassification`
#
# transformers' own version of (b): it loads the same checkpoint, drops the LM head and adds a
# randomly initialised `Linear(hidden, 2)` called `score`. It is another class, so another base
# model: we free the causal one first (one base model at a time), and load through
# `load_model(..., auto_class=AutoModelForSequenceClassification)`, which takes the same 4-bit
# config. The `score` layer must train and be saved. The Llama 3 tutorial's author reports a model
# that would not learn, because LoRA had frozen this head; `task_type="SEQ_CLS"` makes peft put
# `score` in `modules_to_save` (we name it anyway, to be explicit).

# %%
lm_head = None  # the causal base's LM head goes with it
del base
free_gpu_memory()
transformers.logging.set_verbosity_error()  # its load report names the model's folder; the prose below says what it lists
base = load_model(profile, auto_class=AutoModelForSequenceClassification, num_labels=2)


def upcast_input(module, args):
    """Hidden states arrive in the compute dtype; the fp32 `score` layer reads them in fp32, as the linear head does."""
    return (args[0].to(module.weight.dtype),)


def seqcls_model(base, pad_token_id=tokenizer.pad_token_id):
    """The base with a fresh fp32 `score` layer (seed profile.seed) + fresh LoRA; `score` trains and is saved."""
    score = torch.randn(base.score.weight.shape, generator=torch.Generator().manual_seed(profile.seed))
    base.score.to(torch.float32).weight.data = (score * base.config.initializer_range).to(base.score.weight.device)
    if not base.score._forward_pre_hooks:
        base.score.register_forward_pre_hook(upcast_input)
    base.config.pad_token_id = pad_token_id
    torch.manual_seed(profile.seed)  # LoRA's A matrices start random
    return get_peft_model(base, lora_config(profile, ["score"], task_type="SEQ_CLS"))


model = seqcls_model(base, pad_token_id=None)
print(model.get_base_model().score, "| trainable:", [n for n, p in model.named_parameters() if p.requires_grad and "score" in n])

# %% [markdown]
# transformers' load report (silenced above) lists `score` as MISSING (new, initialised at random;
# we redraw it from a fixed seed, in fp32) and an untied LM head, like Llama 3's, as UNEXPECTED (in
# the checkpoint, dropped). How does the model find the last token? It does not look at the attention mask. It
# takes, in each row, the **rightmost token that is not `config.pad_token_id`**, which works for
# both padding sides. Llama 3 ships no pad id (SmolLM2 does; the cell above set none,
# `pad_token_id=None`, to show what happens then), and without one it
# refuses any batch of more than one:

# %%
sample = sorted(dev_sentences[:8], key=len)[::2]  # four lengths, short to long
batch = tokenizer(prompted(sample), return_tensors="pt", padding=True).to(profile.device)
try:
    model(**batch)
except ValueError as err:
    print("ValueError:", err)
else:
    raise AssertionError("without a pad id, a batch of more than one should be refused")

# %% [markdown]
# (With a single sentence it falls back to position -1, which is right only because there is no
# padding.) Setting `pad_token_id` to the tokenizer's pad id (eos) fixes it. The trap left: any real
# eos at the end of a text would count as padding, so texts must not end with eos.

# %%
model.get_base_model().config.pad_token_id = tokenizer.pad_token_id
with torch.no_grad():
    hidden = model.get_base_model().model(**batch).last_hidden_state  # (4, seq, hidden)
    last = last_token_index(batch["attention_mask"])  # (4,)
    by_hand = model.get_base_model().score(hidden[torch.arange(len(last), device=last.device), last])  # (4, 2)
    torch.testing.assert_close(model(**batch).logits, by_hand, **profile.tolerance)
print("the score layer reads the same position as last_token_index")
strip_adapter(model)
del model


# %%
def seqcls_loss(model, texts, labels):
    batch = tokenizer(texts, return_tensors="pt", padding=True).to(profile.device)
    logits = model(**batch).logits  # (micro, 2)
    return torch.nn.functional.cross_entropy(logits.float(), torch.tensor(labels, device=logits.device), reduction="sum")


@torch.inference_mode()
def seqcls_scores(model, texts, labels=None) -> np.ndarray:
    out = []
    for start in range(0, len(texts), profile.eval_batch_size):
        batch = tokenizer(texts[start : start + profile.eval_batch_size], return_tensors="pt", padding=True).to(profile.device)
        logits = model(**batch).logits.float()  # (batch, 2)
        out.append((logits[:, 1] - logits[:, 0]).cpu())  # log-odds of label 1, like the head's logit
    return torch.cat(out).numpy()


methods["SequenceClassification"] = (seqcls_model, seqcls_loss, seqcls_scores, prompted)

# %% [markdown]
# Now the runs of sections 2 and 3 once more for the third read-out, on this base: the full
# training set and the same subsets.

# %%
seqcls = "SequenceClassification"
contrast[seqcls] = runs[(seqcls, len(train_df))] = run(seqcls, train_sentences, train_labels)
for n, subset in subsets.items():
    runs[(seqcls, n)] = run(seqcls, list(subset.sentence), list(subset.label))
print(f"{seqcls}: dev MCC {contrast[seqcls]['MCC']:.3f} ± {contrast[seqcls]['SD']:.3f}")

# %% [markdown]
# ## 5. All three, side by side
#
# Same prompt, LoRA, loop and number of steps; only the read-out differs:

# %%
contrast_table = table(contrast)
contrast_table.round(3)

# %%
lora_only = contrast["label words"]["trainable"]
print("trainable weights:", {m: f"LoRA + {int(row['trainable'] - lora_only):,}" for m, row in contrast.items()})
gap, widest = contrast_table.MCC.max() - contrast_table.MCC.min(), contrast_table.SD.max()
print(f"the three MCCs span {gap:.3f}; one bootstrap SD is up to {widest:.3f}, so the span is {gap / widest:.1f} SDs")

# %% [markdown]
# The three read-outs differ only by the weights that read the last hidden state, and those are few
# next to the LoRA matrices that every run trains: (a) adds none, since it reuses two rows of the
# pretrained LM head; (b) adds `hidden + 1` weights and (c) `2 × hidden`. Read the printed span in
# SDs: a gap of less than about two SDs is one this dev set cannot tell from luck, and a single seed
# adds its own noise on top. Section 6 sharpens the test with a paired bootstrap.
#
# ## 6. Sample efficiency, with error bars
#
# Every run of sections 2 to 4 on one plot: dev MCC against the number of sentences the run could
# draw from, each point with an error bar of one bootstrap SD. The dashed line is the label words'
# few-shot start, with no training at all.

# %%
curve = pd.DataFrame({m: {n: r["MCC"] for (k, n), r in runs.items() if k == m} for m in methods}).sort_index()
curve_sd = pd.DataFrame({m: {n: r["SD"] for (k, n), r in runs.items() if k == m} for m in methods}).sort_index()
curve.index.name = curve_sd.index.name = "training sentences"
dodge = {m: 2 ** (0.12 * (i - 1)) for i, m in enumerate(methods)}  # side by side: no error bar hides another
fig = plots.line_chart({m: (curve.index * dodge[m], curve[m]) for m in methods}, "dev MCC", log2x=True,
                       title=f"dev MCC after {num_steps} steps, by training-set size (± 1 bootstrap SD)",
                       xlabel="training sentences available (log scale)",
                       hlines={"label words, 0 examples (few-shot)": fewshot_mcc})
ax = fig.axes[0]
for m, line in zip(methods, ax.get_lines()):  # one error bar per point, in its line's colour
    ax.errorbar(curve.index * dodge[m], curve[m], yerr=curve_sd[m], fmt="none", capsize=3, color=line.get_color())
ax.set_xticks(curve.index, [str(n) for n in curve.index])
plots.show(fig, "07_sample_efficiency")

# %% [markdown]
# The label words' lead over the better head at each size is a difference of two MCCs on the same
# dev sentences, so its error bar is a **paired** bootstrap SD: each resampled dev set scores both.

# %%
leads = {}
for n in curve.index:
    head = max(["linear head", seqcls], key=lambda m: runs[(m, n)]["MCC"])  # the better head at this size
    words, other = runs[("label words", n)], runs[(head, n)]
    sd = bootstrap_sd(dev_labels, words["scores"], baseline=other["scores"], seed=profile.seed)
    leads[n] = {"better head": head, "lead": words["MCC"] - other["MCC"], "paired SD": sd,
                "lead in SDs": (words["MCC"] - other["MCC"]) / sd}
pd.DataFrame(leads).T.rename_axis("training sentences").astype({k: float for k in ("lead", "paired SD", "lead in SDs")}).round(3)

# %% [markdown]
# A fresh head's logit starts as a random projection, so everything it knows comes from the
# labels; the label words start at the dashed line. Where that start is above chance, the
# pretrained LM head is worth most when labels are scarce, and the heads catch up as they see more
# distinct sentences, and may pass the label words (a negative lead). Where the few-shot start is
# at chance there is no head start to keep. Read each lead in paired SDs, and with one seed per
# point read the curve's shape, not its third decimal.
#
# > **Three worlds.** The head start is whatever pre-training put in the model. The tiny model was
# > pre-trained on lines in this very prompt format, so its label words start well above chance. The
# > `small` profile's 135M model scores about chance few-shot, and a fresh head on it learns little
# > in its few steps, so its curves stay near zero. Llama-3-8B scored an MCC of 0.555 few-shot in the
# > Llama 3 tutorial (on sentences it held out of CoLA's training set): the case that tutorial's
# > argument is about.
#
# The numbers `make run` summarizes:

# %%
for key, value in {"fewshot_mcc": fewshot_mcc, "label_words_mcc": contrast["label words"]["MCC"],
                   "head_mcc": contrast["linear head"]["MCC"], "seqcls_mcc": contrast[seqcls]["MCC"],
                   "contrast": {m: {k: float(v) for k, v in row.items() if k != "scores"} for m, row in contrast.items()},
                   "sample_efficiency_mcc": {m: {str(n): float(v) for n, v in col.items()} for m, col in curve.items()},
                   "sample_efficiency_sd": {m: {str(n): float(v) for n, v in col.items()} for m, col in curve_sd.items()},
                   "sample_efficiency_lead": {str(n): {k: v for k, v in row.items() if k != "better head"}
                                              for n, row in leads.items()}}.items():
    results.record(key, value)

# %%
course.finish("07_readouts_compared", profile)  # the time taken against the plan; the model loads checked

# %% [markdown]
# ## Summary
#
# - Label words, a linear head and `AutoModelForSequenceClassification` read the same last hidden
#   state; they differ only in the few weights that turn it into a log-odds.
# - Compare read-outs on one prompt, LoRA and budget, and rank them only by gaps larger than about
#   two bootstrap SDs of the dev set (paired, for two read-outs scored on the same sentences).
# - Label words reuse the pretrained LM head: where the model does the task few-shot they start
#   above chance with no training, and their lead is largest when examples are few; with many, a
#   head can pass them.
# - `AutoModelForSequenceClassification` reads the rightmost token that is not `config.pad_token_id`:
#   set that id, or batches of more than one fail, and keep eos out of the texts.
#
# ## Exercises
#
# **1. What is the prompt worth?** The Llama 3 tutorial argues that without a prompt a classifier
# head must learn the task from the labels alone. Train `AutoModelForSequenceClassification` on the
# bare sentences: `run(seqcls, train_sentences, train_labels, inputs=list)` (the `inputs` function
# turns sentences into model inputs; `list` keeps them bare). Store the returned dict in `bare`.
# *Hint:* one run costs as much as one point of section 6.

# %%
bare = None  # your answer: the dict that run(...) returns

# %%
if bare is None:
    print("Exercise 1 not attempted yet: set bare above.")
else:
    assert abs(bare["MCC"] - metrics(bare["scores"], dev_labels)["MCC"]) < 1e-9, "bare should be what run() returns"
    assert bare["trainable"] == contrast[seqcls]["trainable"], "train the same read-out: SequenceClassification"
    assert not np.allclose(bare["scores"], contrast[seqcls]["scores"]), "these are the prompted run's scores"
    paired = bootstrap_sd(dev_labels, contrast[seqcls]["scores"], baseline=bare["scores"], seed=profile.seed)
    margin = contrast[seqcls]["MCC"] - bare["MCC"]
    print(f"correct: MCC {bare['MCC']:.3f} bare, {contrast[seqcls]['MCC']:.3f} with the prompt: "
          f"the prompt is worth {margin:+.3f} ({margin / paired:+.1f} paired SDs)")

# %% [markdown]
# **2. Do the two heads differ?** The linear head and `AutoModelForSequenceClassification` differ
# only in one output against two and in their loss. Compare them at the full training set (section
# 5's runs) as section 6 compared the leads: set `gap_sd` to the paired bootstrap SD of the linear
# head's MCC minus `AutoModelForSequenceClassification`'s.
# *Hint:* `bootstrap_sd(dev_labels, scores_a, baseline=scores_b, seed=profile.seed)`; the dev scores
# are in `contrast[name]["scores"]`.

# %%
gap_sd = None  # your answer: a float

# %%
if gap_sd is None:
    print("Exercise 2 not attempted yet: set gap_sd above.")
else:
    expected = bootstrap_sd(dev_labels, contrast["linear head"]["scores"], baseline=contrast[seqcls]["scores"],
                            seed=profile.seed)
    assert abs(gap_sd - expected) < 1e-9, f"{gap_sd} is not the paired bootstrap SD of the two heads"
    gap = contrast["linear head"]["MCC"] - contrast[seqcls]["MCC"]
    print(f"correct: the gap {gap:+.3f} is {gap / expected:+.1f} paired SDs; beyond about 2 it is more than luck")
