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
# # 08 · Beyond two labels
# *Five classes whose names are several tokens long: score them, fine-tune for them, and fix an imbalance.*
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/lmcls-org/lmcls/blob/main/notebooks/08_beyond_two_labels.ipynb)
#
# Both tutorials this course follows stop at two labels: Chris McCormick's
# [Fine-Tuning Llama 3 for Sentence Classification](https://github.com/chrisjmccormick/llm-tuning-examples/blob/main/sentence-classification/Fine-Tuning%20Llama%203%20for%20Sentence%20Classification.ipynb)
# reads two one-token label words, and a Mistral-7B ledger-line tutorial (Income / Expense lines,
# a `Linear(4096, 1)` head) trains one logit. Real tasks have more classes, and their names rarely
# fit in one token. Here the ledger lines of notebook 6 are sorted into five bookkeeping
# categories. What you will learn:
#
# - how a class name of several tokens is scored: the prompt runs **once**, and its cached keys
#   and values serve every name;
# - why a **sum** of log-probabilities favours short names, and two standard remedies:
#   **calibration** by the prompt's prior and **one-token aliases**;
# - two ways to fine-tune for k classes: label words with **multi-token targets**, and a
#   **`Linear(hidden, k)` head** in `modules_to_save`;
# - why **macro-F1**, per-class precision and recall, and a **majority baseline** tell more than
#   accuracy when classes are uneven;
# - two fixes for imbalance, a **weighted loss** and **resampling**: the same gradient on average,
#   different runs.

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

profile = course.start("08_beyond_two_labels", PROFILE)  # the profile, its world, login, versions and device, the time plan

# %%
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from peft import get_peft_model
from sklearn.metrics import ConfusionMatrixDisplay, accuracy_score, f1_score, precision_recall_fscore_support

from lmcls_helpers import plots
from lmcls_helpers.batches import train_val_split
from lmcls_helpers.categories import CATEGORY_NAMES, MINORITY, MINORITY_KEEP, ledger_categories
from lmcls_helpers.data import load_ledger
from lmcls_helpers.heads import head_logits
from lmcls_helpers.models import base_model, load_model
from lmcls_helpers.scoring import choice_logprobs, choice_token_counts
from lmcls_helpers.tokens import load_tokenizer, token_table
from lmcls_helpers.training import head_model, lora_config, strip_adapter, train

_ = torch.manual_seed(profile.seed)  # every random draw below follows from the seed

# %% [markdown]
# ## 1. Five categories, uneven on purpose
#
# Each ledger memo belongs to one category ("Pest Control" to repairs, "Property Tax" to insurance
# and taxes), so `ledger_categories` gives every line exactly one of five. The categories are
# uneven already; on top of that we **keep only a quarter of the utilities lines**, so that one
# class is rare and section 9 has something to fix. A quarter of the lines is held out as the
# test set, and nothing is tuned on it.

# %%
ledger = ledger_categories(load_ledger(profile.ledger_path), seed=profile.seed)  # + a `category` column, 0..4
train_df, test_df = train_val_split(ledger, val_fraction=0.25, seed=profile.seed)
test_df = test_df.iloc[: profile.max_eval_examples]  # a profile may test on fewer lines; None keeps them all
class_names = [name.strip() for name in CATEGORY_NAMES]  # for tables and figures
k = len(CATEGORY_NAMES)
counts = pd.DataFrame({"train": train_df.category.value_counts(), "test": test_df.category.value_counts()})
counts.index = [class_names[i] for i in counts.index]
print(f"utilities kept: {MINORITY_KEEP:.0%} of its lines ({class_names[MINORITY]} is class {MINORITY})")
counts.assign(share=(counts.train / counts.train.sum()).round(3))

# %% [markdown]
# Rent and fees is the largest class, utilities by far the smallest: a model that never says
# "utilities" still gets most lines right.
#
# ## 2. Class names of several tokens
#
# A class is read as the text that follows the prompt, so we write each name the way it would
# follow `Category:`, **with its leading space**. What each name costs:

# %%
tokenizer = load_tokenizer(profile, padding_side="right")  # right: training rows start at position 0
name_ids = [tokenizer.encode(name, add_special_tokens=False) for name in CATEGORY_NAMES]  # each name alone
token_counts = choice_token_counts(tokenizer, CATEGORY_NAMES)
pd.DataFrame({"class name": [repr(n) for n in CATEGORY_NAMES], "tokens": token_counts,
              "pieces": [" | ".join(tokenizer.convert_ids_to_tokens(ids)) for ids in name_ids]})

# %% [markdown]
# The names differ in length, and most take several tokens. Without its space, a name starts with
# another token:

# %%
pd.concat({"' utilities'": token_table(tokenizer, " utilities", add_special_tokens=False),
           "'utilities'": token_table(tokenizer, "utilities", add_special_tokens=False)}, axis=1)

# %% [markdown]
# `Ġ` marks the space. The prompt therefore ends with `Category:` and **no** space, and the space
# travels with each name, as in the text the model learned from.
#
# ## 3. Few-shot: one prompt, every class
#
# A name of several tokens has no single logit. Its probability is the product of its tokens'
# probabilities, each given the prompt and the tokens before it, so its log-probability is a
# **sum**. The prompt shows one line of each class:

# %%
shots = train_df.groupby("category").head(1).sample(frac=1.0, random_state=profile.seed)  # one line per class
header = "".join(f"Line: {t}\nCategory:{CATEGORY_NAMES[c]}\n\n" for t, c in zip(shots.text, shots.category))


def fewshot_prompt(text: str) -> str:
    """The five examples, then the line to classify; the class name follows 'Category:'."""
    return f"{header}Line: {text}\nCategory:"


test_labels = test_df.category.to_numpy()
print(fewshot_prompt(test_df.text.iloc[0]))

# %% [markdown]
# The prompt is the same for all five names, so it runs **once**. With `use_cache=True` the model
# returns its keys and values in every layer (the KV cache `generate` keeps). The prompt's last
# position scores every name's first token; each longer name then feeds its other tokens on top
# of the cache, and the cache is cropped back to the prompt before the next name, so names never
# see each other. Written out for one test line:

# %%
model = load_model(profile)  # 4-bit NF4 weights, computing in profile.compute_dtype
one_prompt = fewshot_prompt(test_df.text.iloc[0])
prompt_ids = tokenizer(one_prompt, return_tensors="pt")["input_ids"].to(profile.device)  # (1, prompt)
by_hand = []
with torch.no_grad():
    out = model(input_ids=prompt_ids, use_cache=True)  # the prompt, run once
    cache = out.past_key_values  # its keys and values, every layer
    first = out.logits[0, -1].float().log_softmax(-1).cpu()  # (vocab,): what follows the prompt
    for ids in name_ids:
        logprob = first[ids[0]]
        if len(ids) > 1:  # the name's tokens but its last, on the cache: each predicts the next one
            rest = model(input_ids=torch.tensor([ids[:-1]], device=profile.device), past_key_values=cache).logits
            logprob = logprob + rest[0].float().log_softmax(-1).cpu()[torch.arange(len(ids) - 1), ids[1:]].sum()
            cache.crop(-(len(ids) - 1))  # remove those tokens again: back to the prompt alone
        by_hand.append(logprob.item())
library = choice_logprobs(model, tokenizer, [one_prompt], CATEGORY_NAMES)[0].numpy()  # (k,)
np.testing.assert_allclose(by_hand, library, **profile.tolerance)  # the same sums
pd.DataFrame({"by hand": by_hand, "choice_logprobs": library}, index=class_names).round(3)

# %% [markdown]
# `choice_logprobs` does the same for many prompts at once, with two changes. It pads them on the
# **left**, so that every prompt ends in the last column: the first tokens are all read there, and
# each name's tokens go in the same next columns for every row. With right padding, a short
# prompt's pads would sit between it and the name. Positions are counted from each prompt's first
# real token, so the pads shift nothing. And it runs the decoder, applying the LM head only where
# a name's token is predicted (notebook 2's lean read-out). A prompt of hundreds of tokens costs
# one pass instead of k; a name adds a short pass over its own few tokens.

# %%
fewshot_sum = choice_logprobs(model, tokenizer, [fewshot_prompt(t) for t in test_df.text], CATEGORY_NAMES,
                              batch_size=profile.eval_batch_size).numpy()  # (lines, k): summed log-probabilities
print(f"{fewshot_sum.shape[0]} lines x {fewshot_sum.shape[1]} classes = {fewshot_sum.size:,} (line, class) scores")
assert fewshot_sum.shape == (len(test_df), k) and (fewshot_sum < 0).all(), "one log-probability per line and class"


# %% [markdown]
# Macro-F1 is the F1 score of each class, averaged with equal weight: a rare class counts as much
# as a common one. We report it next to accuracy throughout, and keep every classifier's
# predictions in `preds` for the comparisons of section 7.

# %%
def headline(labels, predicted) -> dict:
    """Macro-F1 (every class counts the same) and accuracy (every line counts the same)."""
    return {"macro-F1": f1_score(labels, predicted, labels=list(range(k)), average="macro", zero_division=0),
            "accuracy": accuracy_score(labels, predicted)}


preds = {"few-shot, sum": fewshot_sum.argmax(axis=1)}
pd.Series(headline(test_labels, preds["few-shot, sum"])).round(3)

# %% [markdown]
# ## 4. The length bias of a sum
#
# Every token of a name costs log-probability, so a sum favours names with fewer tokens. Dividing
# by the token count (`reduce="mean"`) compares the average token instead. No new forward pass is
# needed: the mean is the sum divided by the counts of section 2.

# %%
fewshot_mean = fewshot_sum / np.array(token_counts)  # (lines, k)
check = choice_logprobs(model, tokenizer, [fewshot_prompt(t) for t in test_df.text[:4]], CATEGORY_NAMES,
                        batch_size=profile.eval_batch_size, reduce="mean").numpy()
np.testing.assert_allclose(check, fewshot_mean[:4], **profile.tolerance)  # the library's mean is sum / tokens
preds["few-shot, mean"] = fewshot_mean.argmax(axis=1)
changed = (preds["few-shot, sum"] != preds["few-shot, mean"]).mean()
print(f"sum and mean disagree on {changed:.1%} of the {len(test_df)} test lines")

# %% [markdown]
# ## 5. Calibration by the prompt's prior
#
# Part of every score has nothing to do with the line: how likely the model finds each name after
# *this prompt*, whatever the line says. **Contextual calibration** (Zhao et al., 2021, "Calibrate
# Before Use") measures that prior with a content-free line such as `N/A` in the same prompt, and
# divides each class's probability by it. In log space it is a subtraction, one row for all lines:

# %%
fewshot_prior = choice_logprobs(model, tokenizer, [fewshot_prompt("N/A")], CATEGORY_NAMES).numpy()  # (1, k)
preds["few-shot, calibrated"] = (fewshot_sum - fewshot_prior).argmax(axis=1)  # log P(name | line) - log P(name | N/A)
pd.Series(fewshot_prior[0], index=class_names, name="log P(name | 'N/A')").round(2)

# %% [markdown]
# What each read-out predicts, against how often each class really occurs:

# %%
readouts = ["few-shot, sum", "few-shot, mean", "few-shot, calibrated"]
shares = pd.DataFrame({"tokens": token_counts, "true share": np.bincount(test_labels, minlength=k) / len(test_labels),
                       **{r: np.bincount(preds[r], minlength=k) / len(test_labels) for r in readouts}}, index=class_names)
print(pd.DataFrame({r: headline(test_labels, preds[r]) for r in readouts}).round(3))
shares.round(3)

# %% [markdown]
# The summed scores pile onto the shortest name; the mean trades that bias for another; the
# calibrated scores spread over more classes, because subtracting the prior removes what a name
# costs on every line alike. None of them adds information the prompt lacks.
#
# > **Three worlds.** The tiny model never read a ledger category in pre-training, so its
# > prompt carries little signal and the names' lengths decide the few-shot scores. SmolLM2 and
# > Llama 3 split these names into one to three real words ("rent", "insurance"), and there the
# > five-example prompt can draw on what the model read: compare a fine-tuning run against it.

# %%
fig = plots.confusion_heatmap(test_labels, preds["few-shot, sum"], class_names=class_names,
                              title="few-shot, summed log-probabilities")
fig.set_size_inches(6, 4.5)
plots.show(fig, "08_confusion_fewshot")


# %% [markdown]
# ## 6. Fine-tuning label words of several tokens
#
# To fine-tune the label-word way, a training example is the prompt followed by its class name.
# The targets are -100 except at the name's tokens, **all** of them: the model learns the first
# token from the prompt and each later one from the prompt plus the tokens before it (teacher
# forcing). The loss is the sum of those per-token cross-entropies, which is exactly minus the
# summed log-probability that `choice_logprobs` scores. Fine-tuning uses a short prompt with no
# examples: the training set teaches the task.

# %%
def prompt(text: str) -> str:
    return f"Line: {text}\nCategory:"


train_texts, train_labels = [prompt(t) for t in train_df.text], train_df.category.to_numpy()
test_texts = [prompt(t) for t in test_df.text]


def words_batch(texts, labels, names) -> dict:
    """Right-padded prompt + class-name ids (names: one id list per class); labels -100 but the name's tokens."""
    rows = [(tokenizer(text)["input_ids"], names[label]) for text, label in zip(texts, labels)]
    width = max(len(p) + len(c) for p, c in rows)
    batch = {"input_ids": torch.full((len(rows), width), tokenizer.pad_token_id),
             "attention_mask": torch.zeros((len(rows), width), dtype=torch.long),
             "labels": torch.full((len(rows), width), -100)}
    for r, (p, c) in enumerate(rows):
        batch["input_ids"][r, : len(p) + len(c)] = torch.tensor(p + c)
        batch["attention_mask"][r, : len(p) + len(c)] = 1
        batch["labels"][r, len(p) : len(p) + len(c)] = torch.tensor(c)
    return {key: value.to(profile.device) for key, value in batch.items()}


# %% [markdown]
# The loss reads the hidden state at the position *before* each target token (position t predicts
# token t + 1) and applies the LM head only there:

# %%
def words_loss(model, batch) -> torch.Tensor:
    """Summed cross-entropy over every class-name token of every row (a scalar)."""
    targets = batch["labels"][:, 1:]  # the token each position predicts
    rows, cols = (targets != -100).nonzero(as_tuple=True)
    lm = base_model(model)
    hidden = lm.get_decoder()(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    logits = lm.get_output_embeddings()(hidden[rows, cols])  # (target tokens, vocab)
    return F.cross_entropy(logits.float(), targets[rows, cols], reduction="sum")


first_line = words_batch(train_texts[:1], train_labels[:1], name_ids)
print(f"{len(name_ids[train_labels[0]])} target tokens for {CATEGORY_NAMES[train_labels[0]]!r}; "
      f"targets {first_line['labels'][0][first_line['labels'][0] != -100].tolist()}")

# %% [markdown]
# The training loss of one line must be minus the score `choice_logprobs` gives its true class:
# the same sum, computed once to train and once to predict.

# %%
with torch.no_grad():
    loss_one = words_loss(model, first_line).item()
score_one = choice_logprobs(model, tokenizer, train_texts[:1], [CATEGORY_NAMES[train_labels[0]]])[0, 0].item()
print(f"loss {loss_one:.4f}, -log P(name | prompt) {-score_one:.4f}")
assert np.isclose(loss_one, -score_one, **profile.tolerance), "the training loss is minus the summed log-probability"


# %% [markdown]
# The loop is notebook 6's `train` (notebook 4's loop, compact): `profile.max_steps` AdamW steps of
# `train_batch_size` examples in micro-batches, one clip and one step each. Only the step's loss
# changes between runs. `label_word_run` puts a fresh adapter on the base, trains it on the given
# class names, and reports the loss of a few training lines before and after.

# %%
def label_word_run(base, names) -> tuple:
    """A fresh LoRA on `base`, trained on prompt + names[label]; returns (model, mean loss before, after)."""
    torch.manual_seed(profile.seed)  # LoRA's A matrices start random
    model = get_peft_model(base, lora_config(profile))
    probe = words_batch(train_texts[:8], train_labels[:8], names)
    with torch.no_grad():
        before = words_loss(model, probe).item() / 8
    train(model, lambda m, texts, labels: words_loss(m, words_batch(texts, labels, names)),
          train_texts, train_labels, tokenizer, profile)
    with torch.no_grad():
        return model, before, words_loss(model, probe).item() / 8


model, before, after = label_word_run(model, name_ids)
print(f"label words: loss {before:.2f} -> {after:.2f} per line ({profile.max_steps} steps of {profile.train_batch_size})")
assert after < before, "training should lower the label-word loss"

# %% [markdown]
# To predict, `choice_logprobs` scores every name after each test line, on the fine-tuned model;
# the calibrated scores subtract the fine-tuned model's own prior for `N/A`:

# %%
words_scores = choice_logprobs(model, tokenizer, test_texts, CATEGORY_NAMES, batch_size=profile.eval_batch_size).numpy()
words_prior = choice_logprobs(model, tokenizer, [prompt("N/A")], CATEGORY_NAMES).numpy()  # (1, k)
preds["label words, sum"] = words_scores.argmax(axis=1)
preds["label words, calibrated"] = (words_scores - words_prior).argmax(axis=1)
pd.DataFrame({r: headline(test_labels, preds[r]) for r in ["label words, sum", "label words, calibrated"]}).round(3)

# %% [markdown]
# The predicted shares (in the table of section 7) tell why: where the fine-tuned model is still
# unsure of a long name's later tokens, their cost outweighs what it learned about the first, and
# the sum falls back to the short names. Calibration takes that cost off.
#
# The other standard remedy removes the cost at its source: give each class a **one-token alias**
# and train on that. Each name's first token is one, as long as no two names share it:

# %%
aliases = [tokenizer.decode(ids[:1]) for ids in name_ids]  # each name's first token, as text
alias_ids = [tokenizer.encode(alias, add_special_tokens=False) for alias in aliases]
assert all(len(ids) == 1 for ids in alias_ids) and len({ids[0] for ids in alias_ids}) == k, "k distinct one-token aliases"
print(dict(zip(class_names, map(repr, aliases))))

# %%
base = strip_adapter(model)  # the 4-bit base as loaded, without the label-word adapter
del model
model, before, after = label_word_run(base, alias_ids)
alias_scores = choice_logprobs(model, tokenizer, test_texts, aliases, batch_size=profile.eval_batch_size).numpy()
preds["one-token aliases"] = alias_scores.argmax(axis=1)  # one token each: the prompt's pass, nothing more
print(f"aliases: loss {before:.2f} -> {after:.2f} per line")
pd.Series(headline(test_labels, preds["one-token aliases"])).round(3)


# %% [markdown]
# Every training step now spends its whole loss on the one token that decides the class, and
# scoring costs one pass per line. The price: an alias is not the name (a first token can be a
# mere fragment), so a few-shot prompt reads less into it, and the alias of each class must be
# chosen (and kept) with the model.
#
# ## 7. A linear head: one forward pass, k logits
#
# The other way drops the vocabulary: a `Linear(hidden, k)` reads the hidden state of the **last
# real token** of the prompt (notebook 6) and gives one logit per class; cross-entropy over those
# k logits is the loss. The names are never read, so their tokens cannot bias anything.
#
# The head is new, so it must train and be saved with the adapter: `head_model` puts it in
# `modules_to_save`, as notebook 6 insisted, and the same `train` finds it among the trainable
# weights. The base is reused: `strip_adapter` takes the label-word adapter off, and the head
# replaces the LM head.

# %%
def head_step_loss(weight=None):
    """The summed cross-entropy of the head's k logits; `weight`: a weight per class (section 9)."""
    def step_loss(model, texts, labels):
        batch = tokenizer(list(texts), return_tensors="pt", padding=True).to(profile.device)
        logits = head_logits(model, batch, num_labels=k)  # (micro, k), at each row's last real token
        return F.cross_entropy(logits, torch.tensor(labels, device=logits.device), weight=weight, reduction="sum")
    return step_loss


@torch.no_grad()
def head_predict(model, texts) -> np.ndarray:
    """The class with the largest head logit, one forward pass per line."""
    size = profile.eval_batch_size
    return torch.cat([head_logits(model, tokenizer(texts[s : s + size], return_tensors="pt", padding=True)
                                  .to(profile.device), num_labels=k).argmax(-1).cpu()
                      for s in range(0, len(texts), size)]).numpy()


# %%
base = strip_adapter(model)
del model
model = head_model(profile, base=base, num_labels=k)  # Linear(hidden, k) in modules_to_save + fresh LoRA
with torch.no_grad():
    start_loss = head_step_loss()(model, train_texts[:8], train_labels[:8]).item() / 8
print(f"head {tuple(base_model(model).get_output_embeddings().weight.shape)} (k, hidden); untrained loss "
      f"{start_loss:.2f} per line, about log k = {np.log(k):.2f}: k equal guesses")
train(model, head_step_loss(), train_texts, train_labels, tokenizer, profile)
preds["linear head"] = head_predict(model, test_texts)
pd.Series(headline(test_labels, preds["linear head"])).round(3)

# %% [markdown]
# All classifiers so far, side by side, with the baseline that needs no model: always answer the
# largest class of the training set.

# %%
preds["always the largest class"] = np.full_like(test_labels, np.bincount(train_labels).argmax())
board = pd.DataFrame({name: {**headline(test_labels, p), **{f"share {c}": s for c, s in
                                                            zip(class_names, np.bincount(p, minlength=k) / len(p))}}
                      for name, p in preds.items()}).T
board.round(3)


# %% [markdown]
# The baseline's accuracy is simply the largest class's share of the test lines. A classifier whose
# accuracy does not clear it has learned less about the lines than the class counts alone say,
# however varied its predictions look. Macro-F1 scores the baseline low (one class found, four
# missed), so a read-out that trails it on macro-F1 too is worse than no model.
#
# Where the label words trail the head, look at where each run started: a name's tokens begin far
# from likely after the prompt (the losses printed before training), while a fresh head begins at
# k equal guesses. With the same steps, the head has much less distance to cover.
#
# ## 8. Precision, recall and F1 per class
#
# Accuracy counts lines, so the big classes decide it. Per class, **precision** is the share of the
# lines predicted as that class that are right, **recall** the share of the class's lines found,
# and **F1** their harmonic mean:

# %%
def per_class(labels, predicted) -> pd.DataFrame:
    """Precision, recall and F1 of each class. (k, 3)"""
    p, r, f, _ = precision_recall_fscore_support(labels, predicted, labels=list(range(k)), zero_division=0)
    return pd.DataFrame({"precision": p, "recall": r, "F1": f}, index=class_names)


per_class(test_labels, preds["linear head"]).round(3)

# %% [markdown]
# A class with recall 0 has F1 0, and macro-F1 counts that zero as a fifth of the score.
#
# ## 9. Imbalance: a weighted loss or resampling
#
# Two standard fixes make a rare class count more in training. A **weighted loss** multiplies each
# example's cross-entropy by its class's weight, `n / (k · count)` ("balanced"): over the training
# set the weights average exactly 1, so the step size is unchanged on average.

# %%
class_counts = np.bincount(train_labels, minlength=k)
class_weights = torch.tensor(len(train_labels) / (k * class_counts), dtype=torch.float32)
print({name: round(float(w), 2) for name, w in zip(class_names, class_weights)})
print(f"mean weight over the training lines: {class_weights.numpy()[train_labels].mean():.3f}")

# %% [markdown]
# **Resampling** leaves the loss alone and changes the data: `WeightedRandomSampler` draws lines
# with probability proportional to `1 / count` of their class, with replacement, so every class
# fills about a fifth of the draws.
#
# The two have the **same expected gradient**. Weighting gives class c the share
# `count_c / n · n / (k · count_c) = 1/k` of the loss; resampling gives it `1/k` of the draws. They
# differ in how they get there. Resampling repeats the same few rare lines and never shows many
# common ones within a budget of draws; weighting sees every line it draws once, but a rare line
# enters its batch with a large weight, so its steps vary more and can hit the gradient clip.

# %%
n_draws = profile.max_steps * profile.train_batch_size  # the examples one run trains on
sampler = torch.utils.data.WeightedRandomSampler(1.0 / class_counts[train_labels], num_samples=n_draws,
                                                 replacement=True, generator=torch.Generator().manual_seed(profile.seed))
balanced = list(sampler)
drawn = pd.DataFrame({"share of the draws": np.bincount(train_labels[balanced], minlength=k) / n_draws,
                      "distinct lines drawn": [len(set(np.array(balanced)[train_labels[balanced] == c])) for c in range(k)],
                      "lines in the class": class_counts}, index=class_names)
draw_se = np.sqrt((1 / k) * (1 - 1 / k) / n_draws)  # a share's binomial standard error: wider on fewer draws
print(f"{n_draws:,} draws: each share is 1/{k} = {1 / k:.2f} give or take {draw_se:.3f}")
assert (drawn["share of the draws"] - 1 / k).abs().max() < 4 * draw_se, "every class about equally often"
drawn.round(3)

# %% [markdown]
# Both runs start from the same base with a fresh adapter and head, as the plain run did.
# Resampling needs no new loop: `train` is simply given the drawn lines as its training set.

# %%
heads = {"plain loss": preds["linear head"]}
runs = {"weighted loss": (train_texts, train_labels, class_weights.to(profile.device)),
        "resampled": ([train_texts[i] for i in balanced], train_labels[balanced], None)}
for name, (texts, labels, weight) in runs.items():
    base = strip_adapter(model)
    del model
    model = head_model(profile, base=base, num_labels=k)
    train(model, head_step_loss(weight), texts, labels, tokenizer, profile)
    heads[name] = head_predict(model, test_texts)
pd.concat({name: per_class(test_labels, p) for name, p in heads.items()}, axis=1).round(2)

# %% [markdown]
# Where the errors go, for the three heads:

# %%
fig, axes = plt.subplots(1, 3, figsize=(11, 4), sharey=True)
for ax, (name, p) in zip(axes, heads.items()):
    ConfusionMatrixDisplay.from_predictions(test_labels, p, labels=list(range(k)), ax=ax, colorbar=False, cmap="Blues",
                                            display_labels=[n.replace(" and ", "\n& ") for n in class_names])
    ax.set(title=f"{name}: macro-F1 {headline(test_labels, p)['macro-F1']:.2f}", xlabel="predicted class", ylabel="")
    ax.tick_params(axis="x", labelrotation=90)
axes[0].set_ylabel("true class")
fig.tight_layout()
plots.show(fig, "08_confusion_heads")


# %% [markdown]
# Both fixes move predictions away from the largest class, towards smaller ones (compare the
# columns), and the big classes pay for it in recall.
# The rarest class has only a handful of test lines, so its recall moves in large steps. A
# bootstrap over those lines (drawn again with replacement) shows how far it could move by luck:

# %%
def recall_interval(predicted, cls: int = MINORITY, draws: int = 2000) -> tuple[float, float]:
    """A 95% bootstrap interval for one class's recall, resampling that class's test lines."""
    hits = predicted[test_labels == cls] == cls  # one True per line of the class that was found
    means = np.random.default_rng(profile.seed).choice(hits, size=(draws, len(hits))).mean(axis=1)
    return tuple(np.percentile(means, [2.5, 97.5]))


minority = pd.DataFrame({name: {"recall": per_class(test_labels, p).recall.iloc[MINORITY],
                                "95% interval": "{:.2f} to {:.2f}".format(*recall_interval(p))}
                         for name, p in heads.items()}).T
print(f"{class_names[MINORITY]}: {(test_labels == MINORITY).sum()} test lines")
minority

# %% [markdown]
# Read the intervals before the recalls: with this few lines, two runs whose intervals overlap are
# not clearly different on the rare class, whatever their point values say. Neither fix adds
# information; each moves errors between classes, and the macro-F1 in the titles says whether the
# trade paid overall. Which trade is right depends on what a miss costs in each class.
#
# The numbers `make run` summarizes:

# %%
imbalance = pd.DataFrame({name: headline(test_labels, p) for name, p in heads.items()}).T
for name, p in heads.items():
    key = name.replace(" ", "_")
    results.record(f"{key}_macro_f1", imbalance.loc[name, "macro-F1"])
    results.record(f"{key}_minority_recall", per_class(test_labels, p).recall.iloc[MINORITY])
for key, name in {"fewshot_macro_f1_sum": "few-shot, sum", "fewshot_macro_f1_mean": "few-shot, mean",
                  "fewshot_macro_f1_calibrated": "few-shot, calibrated", "words_macro_f1": "label words, sum",
                  "words_macro_f1_calibrated": "label words, calibrated", "aliases_macro_f1": "one-token aliases",
                  "head_macro_f1": "linear head", "majority_macro_f1": "always the largest class"}.items():
    results.record(key, board.loc[name, "macro-F1"])
results.record("majority_accuracy", board.loc["always the largest class", "accuracy"])
results.record("fewshot_sum_mean_disagree", float(changed))
assert (imbalance["macro-F1"] > board.loc["always the largest class", "macro-F1"]).all(), "every head beats the baseline"
imbalance.round(3)

# %%
course.finish("08_beyond_two_labels", profile)  # the time taken against the plan; the model loads checked

# %% [markdown]
# ## Summary
#
# - A class name is the text after the prompt, leading space included; its log-probability is the
#   sum over its tokens. The prompt runs once, and its KV cache serves every name;
#   `choice_logprobs` left-pads so that all prompts end in one column.
# - A sum favours short names and a mean trades that for another bias. Calibration by the prompt's
#   prior (`N/A`) removes what a name costs on every line; one-token aliases remove the cost itself.
# - Fine-tuning label words of several tokens sums the per-token losses (teacher forcing), the
#   number `choice_logprobs` scores; a `Linear(hidden, k)` head in `modules_to_save` needs one
#   forward pass per line and never reads the names.
# - With uneven classes, report macro-F1 and per-class precision and recall next to the
#   majority baseline: accuracy is decided by the big classes.
# - A balanced weighted loss and a balanced sampler have the same expected gradient and give small
#   classes more say; on a handful of test lines, read a rare class's recall with its interval.
#
# ## Exercises
#
# **1. Balanced weights by hand.** scikit-learn's `compute_class_weight("balanced", ...)` gives the
# weights of section 9. Compute them for the **test** labels without it, as a NumPy array of k
# floats. *Hint:* `n / (k · count)` per class; `np.bincount` counts.

# %%
my_test_weights = None  # your answer: an array of k floats

# %%
if my_test_weights is None:
    print("Exercise 1 not attempted yet: set my_test_weights above.")
else:
    from sklearn.utils.class_weight import compute_class_weight

    expected = compute_class_weight("balanced", classes=np.arange(k), y=test_labels)
    assert np.allclose(my_test_weights, expected), f"expected {expected.round(3)}"
    print("correct:", dict(zip(class_names, expected.round(2))))

# %% [markdown]
# **2. Does fine-tuning remove the length bias?** Compute the macro-F1 of the fine-tuned label
# words of section 6 when each class is scored by its **mean** log-probability per token, and
# compare it with the sum's and the calibrated sum's. *Hint:* no new forward pass: `words_scores`
# holds the sums, and `token_counts` the divisors.

# %%
words_mean_macro_f1 = None  # your answer: a float

# %%
if words_mean_macro_f1 is None:
    print("Exercise 2 not attempted yet: set words_mean_macro_f1 above.")
else:
    expected = headline(test_labels, (words_scores / np.array(token_counts)).argmax(axis=1))["macro-F1"]
    assert abs(words_mean_macro_f1 - expected) < 1e-9, f"expected {expected:.4f}"
    print(f"correct: mean {expected:.3f}, sum {board.loc['label words, sum', 'macro-F1']:.3f}, "
          f"calibrated {board.loc['label words, calibrated', 'macro-F1']:.3f}")
