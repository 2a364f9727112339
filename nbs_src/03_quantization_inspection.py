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
# # 03 · NF4 by hand
# *Quantize one weight matrix to 4 bits yourself, bit for bit as bitsandbytes does, and measure what the lost bits cost.*
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/lmcls-org/lmcls/blob/main/notebooks/03_quantization_inspection.ipynb)
#
# Notebook 2's `load_model` asked for `BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4")`
# and moved on. Here we open that box. What you will learn:
#
# - why NF4's 16 levels are quantiles of a normal distribution, and how FP4's differ;
# - blockwise absmax quantization by hand (scale, nearest level, two codes per byte), equal bit for bit to bitsandbytes;
# - why real weights, with their heavy tails, are harder to quantize than random numbers;
# - what double quantization saves;
# - how to judge an accuracy difference between precisions: pair the predictions before believing it.
#
# What a whole 4-bit model weighs in memory (Llama-3-8B's 5.6 GiB) is notebook 5's subject.

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

profile = course.start("03_quantization_inspection", PROFILE)  # the profile, its world, login, versions and device, the time plan

# %%
import math

import numpy as np
import pandas as pd
import torch

from lmcls_helpers import memory, plots, quant
from lmcls_helpers.models import free_gpu_memory, llama_config, load_model, require_bitsandbytes
from lmcls_helpers.profiles import ensure_world
from lmcls_tools import diagrams

require_bitsandbytes()  # stops here, with the fix, if bitsandbytes is missing or cannot load
import bitsandbytes.functional as bnbf

_ = torch.manual_seed(profile.seed)

# %% [markdown]
# ## 1. Sixteen numbers
#
# Four bits make 16 codes. A 4-bit *data type* is the list of 16 values those codes stand for, on the
# scale [-1, 1] (section 2 brings weights onto it). Which 16 values is the whole design question;
# bitsandbytes offers two answers, read here from the library.

# %%
nf4_levels = bnbf.get_4bit_type("nf4", device="cpu")  # (16,): code i stands for nf4_levels[i]
fp4_levels = bnbf.get_4bit_type("fp4", device="cpu")  # (16,): 1 sign bit, 2 exponent bits, 1 mantissa bit
print("NF4:", [round(v, 4) for v in nf4_levels.tolist()])
print("FP4:", [round(v, 4) for v in fp4_levels.tolist()])
print("FP4 code 8, sign bit set:", fp4_levels[8].item(), "- its sign:", math.copysign(1, fp4_levels[8].item()))

# %% [markdown]
# NF4 is sorted: 7 negative levels, an exact zero, 8 positive ones. FP4 is listed in bit order: the top
# bit is the sign, so code 8 would be −0 by its bits, but bitsandbytes stores it as +0.0 (the last
# line), the same number as code 0. FP4 also spends a code on 0.0052 (= 1/192, its "subnormal"),
# which is almost zero again.

# %%
assert len(set(nf4_levels.tolist())) == 16, "NF4 should give every code its own value"
assert len(set(fp4_levels.tolist())) == 15, "FP4's codes 0 and 8 should be one value (15 distinct levels)"

# %% [markdown]
# **Where NF4 comes from.** Trained weights are roughly bell-shaped around zero. If each level gets an
# equal slice of the normal distribution's probability, every code is used about equally often. So
# the QLoRA paper places the levels at *quantiles* of N(0, 1): 8 on the positive side, 7 on the
# negative side, plus an exact zero, then divides by the largest. The top probability cannot be 1
# (its quantile is infinite), so bitsandbytes stops at δ = 0.9677, between 1 − 1/32 and 1 − 1/30.

# %%
delta = 0.9677083  # bitsandbytes' offset: the probability of the outermost level
positive = torch.special.ndtri(torch.linspace(delta, 0.5, 9, dtype=torch.float64)[:-1])  # (8,) quantiles
negative = -torch.special.ndtri(torch.linspace(delta, 0.5, 8, dtype=torch.float64)[:-1])  # (7,)
quantiles = torch.cat([negative, torch.zeros(1, dtype=torch.float64), positive]).sort().values  # (16,)
z_at_one = quantiles.abs().max().item()  # the level 1.0 stands for this many standard deviations
rebuilt = (quantiles / z_at_one).float()
torch.testing.assert_close(rebuilt, nf4_levels, atol=1e-6, rtol=0)
print(f"rebuilt NF4 equals bitsandbytes' table (largest difference {(rebuilt - nf4_levels).abs().max():.1e}); 1.0 = {z_at_one:.3f} σ")

# %% [markdown]
# The same fact as a picture: each level placed on the normal CDF. The height of a point is the share
# of a bell curve's mass that lies below that level.

# %%
fig = plots.levels_on_normal_cdf({"NF4": nf4_levels, "FP4": fp4_levels}, z_at_one)
plots.show(fig, "03_levels")

# %% [markdown]
# NF4's points climb in nearly equal steps: each level owns about the same share of normally
# distributed weights. FP4's steps are uneven: 0 and ±0.0052 are practically one point, and the next
# step out, to ±0.167, covers about twice NF4's share.
#
# ## 2. Blockwise absmax quantization, by hand
#
# Weights are not on [-1, 1], so they are scaled first: divide by the largest magnitude (the *absmax*)
# so that it lands on ±1. One scale for a whole matrix would let a single outlier push every other
# weight onto the few levels near zero, so bitsandbytes scales **blocks of 64 consecutive weights**:
# an outlier only coarsens its own block. We take one real weight matrix straight from the checkpoint
# file, which works for the 8B model too without loading it (on `full` this downloads its first shard).

# %%
weight_name = "model.layers.0.self_attn.k_proj.weight"
weight = quant.checkpoint_tensor(profile.model_id, weight_name)  # (out_features, in_features)
print(f"{weight_name}: shape {tuple(weight.shape)}, {weight.numel():,} weights, saved as {weight.dtype}")
weight = weight.float()  # bitsandbytes computes in fp32 whatever the input dtype, so we do too

# %% [markdown]
# Everything in this section runs on the CPU, where bitsandbytes' quantizer is plain PyTorch and can be
# compared with ours bit for bit (on a GPU a CUDA kernel does the same arithmetic). **Step 1: scale.**

# %%
blocksize = 64
blocks = weight.reshape(-1, blocksize)  # (n_blocks, 64): 64 neighbours along a row
absmax = blocks.abs().amax(dim=1)  # (n_blocks,): one scale per block
scaled = blocks * (1.0 / absmax[:, None])  # like bitsandbytes: multiply by the reciprocal
print(f"{len(absmax):,} blocks; scaled weights span [{scaled.min():.3f}, {scaled.max():.3f}]")

# %% [markdown]
# **Step 2: round each scaled weight to the nearest of the 16 levels.** The code is the level's index.
# The 15 midpoints between neighbouring levels are the decision boundaries, and a weight's code is the
# number of midpoints below it. That is how bitsandbytes does it, and it settles exact ties the same way.

# %%
midpoints = (nf4_levels[1:] + nf4_levels[:-1]) / 2  # (15,): NF4's levels are sorted
codes = torch.bucketize(scaled, midpoints).to(torch.uint8)  # (n_blocks, 64), values 0..15
print("scaled:", [round(v, 3) for v in scaled[0, :6].tolist()])
print("codes: ", codes[0, :6].tolist(), "-> levels", [round(v, 3) for v in nf4_levels[codes[0, :6].long()].tolist()])

# %% [markdown]
# Here is the whole first block, drawn from the values above: its weights and absmax, each scaled
# weight moved to its level (the small number is the code), and the error that rounding leaves.

# %%
fig = diagrams.nf4_block(blocks[0], nf4_levels)
plots.show(fig, "03_nf4_block")

# %% [markdown]
# The largest weight lands exactly on ±1 and is stored without error; the others move by up to half
# the gap between two levels, and the gaps are widest at the ends. **Step 3: pack two codes into each
# byte.** PyTorch has no 4-bit dtype, so pairs of codes share a `uint8`; bitsandbytes puts the first
# code in the high nibble.

# %%
flat = codes.flatten()  # (numel,)
packed = (flat[0::2] << 4) | flat[1::2]  # (numel / 2,) uint8: even positions in the high nibble
print(f"codes {flat[0].item():2d} = {flat[0].item():04b} and {flat[1].item():2d} = {flat[1].item():04b} -> byte {packed[0].item():08b}")

# %% [markdown]
# Now the library's version of the same three steps, and the self-check: our bytes and scales against
# bitsandbytes', and against the copy of these cells in `lmcls_helpers.quant` that later notebooks call.

# %%
packed_bnb, state = bnbf.quantize_4bit(weight, blocksize=blocksize, quant_type="nf4")
print(f"packed: {tuple(packed_bnb.shape)} {packed_bnb.dtype}   absmax: {tuple(state.absmax.shape)} {state.absmax.dtype}")
helper_packed, helper_absmax = quant.quantize_4bit_by_hand(weight, nf4_levels, blocksize)
assert torch.equal(absmax, state.absmax), "hand-made absmax differs from bitsandbytes'"
assert torch.equal(packed, packed_bnb.flatten()), "hand-made NF4 bytes differ from bitsandbytes'"
assert torch.equal(packed, helper_packed) and torch.equal(absmax, helper_absmax), "notebook and quant.py disagree"
packed_numel_ratio = packed_bnb.numel() / weight.numel()
print(f"hand-made NF4 equals bitsandbytes bit for bit: {packed.numel():,} bytes for {weight.numel():,} weights "
      f"(ratio {packed_numel_ratio}), plus {absmax.numel():,} fp32 scales")

# %% [markdown]
# The scales come back as **fp32**, not the 16-bit multiplier described in Chris McCormick's
# [Fine-Tuning Llama 3 for Sentence Classification](https://github.com/chrisjmccormick/llm-tuning-examples/blob/main/sentence-classification/Fine-Tuning%20Llama%203%20for%20Sentence%20Classification.ipynb)
# (from here on, the Llama 3 tutorial): 32 bits per 64 weights, which is why section 4 exists.
#
# **Dequantize**: unpack the nibbles, look up each level, multiply by its block's absmax. A `Linear4bit`
# layer does this whenever it multiplies a batch of tokens (training, or reading a whole prompt):
# it dequantizes the weight to the compute dtype, then runs an ordinary matrix product. Generating
# one token at a time it does not: a fused kernel reads the packed codes and scales directly and never
# builds the 16-bit matrix.

# %%
unpacked = torch.stack([packed >> 4, packed & 0x0F], dim=1).flatten()  # (numel,): codes again, in order
dequantized = (nf4_levels[unpacked.long()].reshape(-1, blocksize) * absmax[:, None]).reshape(weight.shape)
assert torch.equal(dequantized, bnbf.dequantize_4bit(packed_bnb, state)), "hand-made dequantization differs"
nf4_error = dequantized - weight  # (out_features, in_features)
print(f"mean |weight| {weight.abs().mean():.2e}, mean |error| {nf4_error.abs().mean():.2e}")

# %% [markdown]
# ## 3. NF4 against FP4, on random numbers and on real weights
#
# FP4 on the same weights and blocks (the helper sorts FP4's levels before taking midpoints, then maps
# back to FP4's bit-order codes). If NF4's design works, each of its 16 levels holds about 1/16 of the weights.

# %%
fp4_packed, fp4_state = bnbf.quantize_4bit(weight, blocksize=blocksize, quant_type="fp4")
hand_fp4_packed, hand_fp4_absmax = quant.quantize_4bit_by_hand(weight, fp4_levels, blocksize)
assert torch.equal(hand_fp4_packed, fp4_packed.flatten()), "hand-made FP4 bytes differ from bitsandbytes'"
fp4_error = bnbf.dequantize_4bit(fp4_packed, fp4_state) - weight  # (out_features, in_features)
nf4_mean_abs_error, fp4_mean_abs_error = nf4_error.abs().mean().item(), fp4_error.abs().mean().item()
print(f"mean |error|: NF4 {nf4_mean_abs_error:.3e}, FP4 {fp4_mean_abs_error:.3e} "
      f"(FP4 / NF4 = {fp4_mean_abs_error / nf4_mean_abs_error:.2f}); mean |weight| {weight.abs().mean():.3e}")
assert nf4_mean_abs_error < fp4_mean_abs_error, "NF4 should beat FP4 on bell-shaped weights"

# %%
fig = plots.code_usage({"NF4": unpacked, "FP4": quant.unpack_codes(fp4_packed)}, {"NF4": nf4_levels, "FP4": fp4_levels})
plots.show(fig, "03_code_usage")

# %% [markdown]
# NF4's middle levels are used about evenly; its outer ones less, because the largest of 64
# bell-shaped draws usually lies beyond the 1.85 σ the design assumes. FP4 is lopsided: its levels at
# ±0.167 take far more than their share, its zeros almost nothing. Same weights, same blocks, same
# 4 bits: NF4's errors are smaller because its levels sit where the weights are.
#
# **How normal are the weights?** Next to the profile's matrix we put the same matrix (layer 0's
# `k_proj`) of SmolLM2-135M-Instruct, a real pre-trained Llama (the `small` profile's model, shipped as a
# 4-bit GGUF that we convert back to fp32, so its values already sit on 16 even steps per block of 32: read
# its tails, less its rounding error), and, as the yardstick,
# normal draws of the same shape. *Kurtosis* measures the tails: 3 for a normal distribution, more when
# rare large weights stretch the blocks' absmax.

# %%
smollm2 = quant.checkpoint_tensor(str(ensure_world(profile, smollm2="model")), weight_name).float()
matrices = {f"{profile.name} profile's model": weight, "SmolLM2-135M": smollm2,
            "normal draws": torch.randn(smollm2.shape, generator=torch.Generator().manual_seed(profile.seed))}


def tail_stats(w: torch.Tensor) -> dict:
    """Kurtosis, the largest weight in standard deviations, use of the levels near 0, NF4's relative error."""
    z = (w - w.mean()) / w.std()
    packed_w, state_w = bnbf.quantize_4bit(w, blocksize=blocksize, quant_type="nf4")
    error = bnbf.dequantize_4bit(packed_w, state_w) - w
    near_zero = torch.isin(quant.unpack_codes(packed_w), nf4_levels.abs().argsort()[:3])  # codes of -0.09, 0, 0.08
    typical_max = torch.special.ndtri(torch.tensor(1 - (1 - 0.5 ** (1 / w.numel())) / 2, dtype=torch.float64))
    return {"weights": w.numel(), "kurtosis": (z**4).mean().item(), "largest |w| (SD)": z.abs().max().item(),
            "... of as many normal draws (median, SD)": typical_max.item(),
            "share on the 3 levels nearest 0": near_zero.float().mean().item(),
            "NF4 mean |error| / mean |w|": (error.abs().mean() / w.abs().mean()).item()}


tails = pd.DataFrame({name: tail_stats(w) for name, w in matrices.items()}).T
tails.round(3)

# %%
fig = plots.histograms({name: w.reshape(-1, blocksize) / w.reshape(-1, blocksize).abs().amax(1, keepdim=True)
                        for name, w in matrices.items()}, "weight / absmax of its block of 64", "density",
                       title="block-scaled weights under the 16 NF4 levels", bins=101, span=(-1, 1), density=True,
                       lines=nf4_levels, lines_label="NF4 levels")
plots.show(fig, "03_real_weights")

# %%
assert tails.loc["SmolLM2-135M", "kurtosis"] > 4, "a pre-trained matrix should have heavier tails than a normal (3)"
assert tails.loc["SmolLM2-135M", "share on the 3 levels nearest 0"] > tails.loc["normal draws", "share on the 3 levels nearest 0"]

# %% [markdown]
# Normal draws have kurtosis 3 and put about a quarter of the weights on the three levels nearest 0.
# The pre-trained matrix has far heavier tails: a few large weights set their blocks' absmax, the rest
# are squeezed onto those three levels (the taller peak; the spikes at ±1 are each block's absmax), and
# NF4's relative error grows. Compare the kurtosis and the largest weight of every row with the normal
# draws' (the column after it says how far the largest of as many normal draws typically lies): a matrix
# can be heavy-tailed and still *round* like normal draws (the last two columns), when its outliers are
# too few to change many blocks. Outliers, not the bulk, make 4 bits hard.
#
# ## 4. Double quantization
#
# The scales are not free: one fp32 per 64 weights is 0.5 extra bits per weight, so a "4-bit" weight
# costs 4.5 bits. *Double quantization* quantizes the scales themselves: subtract their mean, then
# blockwise absmax again, in blocks of 256 scales, to 8 bits. What stays in fp32 is one scale per 256
# scales, plus the mean.

# %%
bits_plain = 32 / blocksize  # one fp32 absmax per block
bits_double = 8 / blocksize + 32 / (blocksize * 256)  # one uint8 per block + one fp32 per 256 blocks
print(f"scales: {bits_plain:.3f} bits/weight plain, {bits_double:.3f} double-quantized; saves {bits_plain - bits_double:.3f} bits")
packed_dq, state_dq = bnbf.quantize_4bit(weight, blocksize=blocksize, quant_type="nf4", compress_statistics=True)
print(f"absmax now {tuple(state_dq.absmax.shape)} {state_dq.absmax.dtype}; second level: "
      f"{tuple(state_dq.state2.absmax.shape)} {state_dq.state2.absmax.dtype}, block {state_dq.state2.blocksize}, "
      f"offset (the mean) {state_dq.offset.item():.3e}")

# %% [markdown]
# Check the byte count against the library's state (a small matrix pays for a partly filled last block
# of 256 and for the 4-byte mean), then what changes in the weights.

# %%
n_blocks = weight.numel() // blocksize
expected = n_blocks * 1 + 4 * math.ceil(n_blocks / 256) + 4  # uint8 codes, fp32 second-level scales, fp32 mean
stored = state_dq.absmax.nbytes + state_dq.state2.absmax.nbytes + state_dq.offset.nbytes
assert stored == expected and state.absmax.nbytes == 4 * n_blocks, (stored, expected)
assert torch.equal(packed_dq, packed_bnb), "the 4-bit codes should not depend on double quantization"
absmax_dq = bnbf.dequantize_blockwise(state_dq.absmax, state_dq.state2) + state_dq.offset  # (n_blocks,)
dq_error = bnbf.dequantize_4bit(packed_dq, state_dq) - weight
print(f"scale bytes: {state.absmax.nbytes:,} plain -> {stored:,} double-quantized "
      f"({8 * stored / weight.numel():.3f} bits/weight here, {bits_double:.3f} for a large matrix)")
print(f"scales: largest relative error {((absmax_dq - absmax).abs() / absmax).max():.2%}; "
      f"weights: mean |error| {nf4_mean_abs_error:.4e} -> {dq_error.abs().mean():.4e}")

# %% [markdown]
# Double quantization leaves every 4-bit code as it was (they were computed with the fp32 scales) and
# makes the scales they are multiplied by slightly less exact. Over Llama-3-8B's 7 billion quantized
# weights, the 0.373 bits saved per weight come to about 0.3 GiB (notebook 5 prices the whole model).
#
# ## 5. What 4 bits cost in accuracy
#
# Every weight moved a little. Does the classifier notice? We score the same sentences with notebook 2's
# few-shot prompt under five precisions: unquantized, NF4 and FP4, each with and without double
# quantization, and also report **perplexity** on the sentences, which depends on neither prompt nor labels.

# %%
from lmcls_helpers.data import download_cola, load_cola
from lmcls_helpers.prompts import PromptTemplate
from lmcls_helpers.scoring import evaluate
from lmcls_helpers.tokens import load_tokenizer

cola_root = profile.cola_root if profile.cola_root.exists() else download_cola(profile.cola_root.parent)
dev = load_cola(cola_root)["in_domain_dev"].iloc[: profile.max_eval_examples]  # None keeps everything
tokenizer = load_tokenizer(profile)
template = PromptTemplate()
label_ids = template.check(tokenizer, profile.label_words)
sentences, labels = dev["sentence"].tolist(), dev["label"].tolist()
print(f"{len(dev)} dev sentences, label ids {label_ids}")


# %% [markdown]
# Perplexity is exp of the mean next-token cross-entropy over the real tokens; a token counts only if
# the token before it is real too.

# %%
def perplexity(model, tokenizer, texts, batch_size):
    """exp(mean cross-entropy of each real token given the ones before it)."""
    device = next(model.parameters()).device
    total, count = 0.0, 0
    for start in range(0, len(texts), batch_size):
        batch = tokenizer(texts[start : start + batch_size], return_tensors="pt", padding=True).to(device)
        with torch.no_grad():
            logits = model(**batch).logits.float()  # (batch, seq, vocab)
        targets = batch["input_ids"][:, 1:]  # (batch, seq - 1): position t predicts token t + 1
        real = (batch["attention_mask"][:, 1:] * batch["attention_mask"][:, :-1]).bool()
        losses = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), targets, reduction="none")
        total, count = total + losses[real].sum().item(), count + real.sum().item()
    return math.exp(total / count)


# %% [markdown]
# One model in memory at a time. On a 16 GB T4 the unquantized 8B model (15 GiB of weights alone) does
# not fit, which is why we quantize at all; `memory.fits_in_memory` skips it there with a message.

# %%
baseline = str(profile.compute_dtype).removeprefix("torch.")  # the unquantized precision of this profile
precisions = {
    baseline: {"quantize": False},
    "nf4": {"quant_type": "nf4"},
    "nf4 + double quant": {"quant_type": "nf4", "double_quant": True},
    "fp4": {"quant_type": "fp4"},
    "fp4 + double quant": {"quant_type": "fp4", "double_quant": True},
}
arch = llama_config(profile)
runs = {}
for name, options in precisions.items():
    options = {"quantize": True, **options}
    needed = quant.total_bytes(quant.predicted_table(arch, dtype=profile.compute_dtype, quantize=options["quantize"]))
    if not memory.fits_in_memory(needed, profile.device):
        print(f"{name}: skipped, its weights alone need {needed / 2**30:.1f} GiB")
        continue
    model = load_model(profile, **options)
    result = evaluate(model, tokenizer, sentences, labels, template, label_ids, profile.eval_batch_size)
    runs[name] = {"result": result, "perplexity": perplexity(model, tokenizer, sentences, profile.eval_batch_size)}
    del model
    free_gpu_memory()  # hand its GPU blocks back: the next fit check, and the plan checked at the end, read free memory
print("evaluated:", list(runs))

# %% [markdown]
# One table, against the first precision that ran (the unquantized model wherever it fits). "label
# loss" is the cross-entropy of the true label word at the read-out position; "flipped" counts
# sentences whose predicted label differs from the reference's.

# %%
reference = next(iter(runs))
ref_preds = runs[reference]["result"].preds
summary = pd.DataFrame({name: {"MCC": run["result"].mcc, "accuracy": run["result"].accuracy,
                               "label loss": run["result"].loss, "perplexity": run["perplexity"],
                               "flipped": int((run["result"].preds != ref_preds).sum())}
                        for name, run in runs.items()}).T
summary.round(4)


# %% [markdown]
# All precisions answered the **same** sentences, so the right question is about the *difference*:
# resample sentence indices with replacement, compute both MCCs on that same resample, subtract, and
# repeat 1,000 times (a *paired* bootstrap). An unpaired interval around one MCC answers another
# question, and is far too wide for two models that agree on almost every sentence.

# %%
def mcc_of(labels, preds):
    """Matthews correlation of binary labels and predictions along the last axis (vectorized over resamples)."""
    tp, tn = ((labels == 1) & (preds == 1)).sum(-1), ((labels == 0) & (preds == 0)).sum(-1)
    fp, fn = ((labels == 0) & (preds == 1)).sum(-1), ((labels == 1) & (preds == 0)).sum(-1)
    denominator = np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn).astype(float))
    return np.where(denominator > 0, (tp * tn - fp * fn) / np.where(denominator > 0, denominator, 1), 0.0)


# %%
from sklearn.metrics import matthews_corrcoef

ref_labels = np.asarray(runs[reference]["result"].labels)  # (n,)
assert abs(mcc_of(ref_labels, np.asarray(ref_preds)) - matthews_corrcoef(ref_labels, ref_preds)) < 1e-9
rng = np.random.default_rng(profile.seed)
resamples = rng.integers(0, len(ref_labels), size=(1000, len(ref_labels)))  # (1000, n) sentence indices
ref_boot = mcc_of(ref_labels[resamples], np.asarray(ref_preds)[resamples])  # (1000,)
paired = {}  # {precision: (difference, low, high)}
for name, run in runs.items():
    diff = mcc_of(ref_labels[resamples], np.asarray(run["result"].preds)[resamples]) - ref_boot  # same resamples
    paired[name] = (run["result"].mcc - runs[reference]["result"].mcc, *np.percentile(diff, [2.5, 97.5]))
unpaired = np.percentile(ref_boot, [2.5, 97.5]) - runs[reference]["result"].mcc  # one model's own spread
for name, (d, lo, hi) in paired.items():
    print(f"{name:>20}: MCC − {reference} = {d:+.3f}, paired 95% interval [{lo:+.3f}, {hi:+.3f}]")
print(f"unpaired 95% interval of {reference}'s MCC alone: [{unpaired[0]:+.3f}, {unpaired[1]:+.3f}] on n = {len(ref_labels)}")

# %%
fig = plots.values_chart(
    {name: d for name, (d, _, _) in paired.items()}, f"MCC − MCC of {reference}",
    f"few-shot MCC difference by precision, n = {len(ref_labels)}",
    band=tuple(unpaired), band_label=f"unpaired 95% interval of {reference} (for contrast)",
    intervals={name: (lo, hi) for name, (_, lo, hi) in paired.items()},
)
plots.show(fig, "03_mcc_by_precision")

# %% [markdown]
# McNemar's test looks at the same pairing from the other side: only the sentences whose answer
# changed carry information, `b` that went from right to wrong and `c` from wrong to right. If the
# precision made no difference, each change is a coin flip, and the p-value is that of a binomial test.

# %%
from scipy.stats import binomtest

ref_right = np.asarray(ref_preds) == ref_labels
for name, run in runs.items():
    right = np.asarray(run["result"].preds) == ref_labels
    b, c = int((ref_right & ~right).sum()), int((~ref_right & right).sum())
    p = binomtest(b, b + c).pvalue if b + c else 1.0
    ppl = summary.loc[name, "perplexity"] / summary.loc[reference, "perplexity"] - 1
    print(f"{name:>20}: {b} right -> wrong, {c} wrong -> right, McNemar p = {p:.3f}; perplexity {ppl:+.1%}")

# %% [markdown]
# **How to read this.** A paired interval that contains zero means these sentences cannot tell the two
# precisions apart; the counts show how few sentences any difference rests on. Perplexity usually rises a little, but
# need not: a small model not at a sharp optimum can take random nudges without harm. A fall would not make 4 bits
# better: rounding adds noise to every weight, not a regularizer you can count on.
#
# > **Three worlds.** The tiny model's weights were barely trained. They are heavy-tailed (section 3's
# > kurtosis above 3, a largest weight well beyond the normal draws' median) yet round like normal draws,
# > and rounding moves few of its answers, so "almost no flips" here says little about a real LLM. The small profile's real 135M model, with
# > the heavy-tailed weights of section 3 and little redundancy, loses more: NF4 raises its perplexity
# > by about a quarter on CoLA's sentences. On `full`, section 2's matrix is Llama-3-8B's own.
#
# The cell below spells out what "NF4 costs little" should mean wherever the unquantized model fits:
# perplexity moves little, and where the
# few-shot classifier has answers worth protecting (MCC above 0.2), fewer than 1 sentence in 10 gets
# another answer and the paired interval contains zero or lies within 0.05 of it.

# %%
assert set(runs) >= {"nf4", "fp4"}, "the 4-bit runs should always fit"
nf4_perplexity_rise = None  # not measured where the unquantized model does not fit
if baseline in runs:
    nf4_perplexity_rise = summary.loc["nf4", "perplexity"] / summary.loc[baseline, "perplexity"] - 1
    flip_rate = summary.loc["nf4", "flipped"] / len(sentences)
    assert summary.loc[[baseline, "nf4"], "perplexity"].ge(1).all(), "a perplexity is at least 1"
    answers_checked = summary.loc[baseline, "MCC"] > 0.2  # a classifier above chance: its answers should survive
    if answers_checked:
        assert flip_rate < 0.10, f"NF4 changed {flip_rate:.1%} of the answers"
        _, lo, hi = paired["nf4"]
        assert lo <= 0 <= hi or max(abs(lo), abs(hi)) < 0.05, f"NF4's MCC moved by [{lo:+.3f}, {hi:+.3f}]"
    print(f"NF4 vs {baseline}: perplexity {nf4_perplexity_rise:+.1%}, {flip_rate:.1%} of the answers changed; answer checks "
          + ("passed" if answers_checked else f"skipped ({baseline}'s few-shot MCC {summary.loc[baseline, 'MCC']:.3f} <= 0.2)"))
else:
    print(f"{baseline} did not fit on this device: nothing unquantized to compare NF4 with")

# %% [markdown]
# The Llama 3 tutorial reports, on CoLA's 516 out-of-domain sentences, a few-shot MCC of 0.508 unquantized
# and 0.495 in 4 bits. Trying every confusion matrix that gives those two MCCs, the cell below finds that
# they fit both a couple of flipped borderline sentences and a wholesale shift McNemar's test would flag
# beyond doubt: two MCCs alone cannot show a difference, only the paired counts can.

# %%
n_pos, n_neg = 354, 162  # CoLA's out-of-domain dev split: 354 of 516 sentences acceptable
tp, tn = np.meshgrid(np.arange(n_pos + 1), np.arange(n_neg + 1), indexing="ij")  # every confusion matrix
fp, fn = n_neg - tn, n_pos - tp
mcc_grid = (tp * tn - fp * fn) / np.sqrt(np.maximum((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn), 1).astype(float))
at_508, at_495 = np.argwhere(np.abs(mcc_grid - 0.508) < 5e-4), np.argwhere(np.abs(mcc_grid - 0.495) < 5e-4)
delta = at_495[None, :, :] - at_508[:, None, :]  # (n_508, n_495, 2): change in (TP, TN) from 16-bit to 4-bit
worse, better = np.maximum(-delta, 0).sum(-1).ravel(), np.maximum(delta, 0).sum(-1).ravel()  # fewest flips each way
mcnemar = {(w, b): binomtest(w, w + b).pvalue for w, b in set(zip(worse.tolist(), better.tolist()))}
fewest, strongest = min(mcnemar, key=sum), min(mcnemar, key=mcnemar.get)
for what, (w, b) in [("fewest changed answers", fewest), ("most lopsided change", strongest)]:
    print(f"{what:>22}: {w} right -> wrong, {b} wrong -> right, McNemar p = {mcnemar[w, b]:.1e}")

# %% [markdown]
# This notebook's headline numbers, which `make run` prints:

# %%
results.record("packed_numel_ratio", packed_numel_ratio)
results.record("nf4_mean_abs_error", nf4_mean_abs_error)
results.record("fp4_mean_abs_error", fp4_mean_abs_error)
results.record("weight_tails", tails.to_dict(orient="index"))
results.record("mcc_by_precision", summary["MCC"].round(4).to_dict())
_ = results.record("nf4_perplexity_rise", nf4_perplexity_rise)

# %%
course.finish("03_quantization_inspection", profile)  # the time taken against the plan; the model loads checked

# %% [markdown]
# ## Summary
#
# - NF4's 16 levels are normalized quantiles of N(0, 1), so bell-shaped weights use all codes about
#   equally. FP4 spends four codes within 0.006 of zero (two of them +0.0) and jumps to ±0.167, so its
#   errors are larger.
# - 4-bit quantization is three short steps per block of 64: divide by the absmax, round to the nearest
#   level, pack two codes per byte. Ours equals bitsandbytes bit for bit.
# - Real pre-trained weights have heavy tails: outliers stretch their blocks' absmax and crowd the rest
#   onto the levels near zero, so NF4's relative error grows. Moderate tails still round like normal draws.
# - The scales are fp32, +0.5 bits per weight; double quantization brings that to 0.127 bits without
#   changing a single 4-bit code.
# - Precisions scored on the same sentences are compared *paired*: count the flipped answers (McNemar)
#   or bootstrap the MCC difference on shared resamples.

# %% [markdown]
# ## Exercises
#
# **1. Block size.** Larger blocks mean fewer scales but coarser ones. Quantize `weight` in NF4 with
# block sizes 32, 64, 128 and 256, and store the mean absolute error of each in `block_errors`
# (`{blocksize: error}`). Before you run it, predict the scale overhead in bits per weight for each.
#
# *Hint:* `quant.quantize_4bit_by_hand(weight, nf4_levels, b)` returns `(packed, absmax)`, and
# `quant.dequantize_4bit_by_hand(packed, absmax, nf4_levels, b)` undoes it (flat; reshape to `weight.shape`).
# Why not bitsandbytes' own `dequantize_4bit`? In bitsandbytes 0.50.2 its CPU code for **AVX-512F**
# processors reads the scale `absmax[r * (n // b) + c // b]` for row `r`, column `c`: right only when
# `b` divides the row length `n`, wrong for blocks longer than a row. The next cell shows which case holds on your machine.

# %%
rows_of_64 = weight.reshape(-1, 64)  # the tiny model's row length, whatever this profile's matrix is
probe_packed, probe_state = bnbf.quantize_4bit(rows_of_64, blocksize=128, quant_type="nf4")  # on the CPU
probe_levels = nf4_levels[quant.unpack_codes(probe_packed).long()].reshape(rows_of_64.shape)
by_hand = probe_levels * probe_state.absmax.repeat_interleave(2)[:, None]  # blocks of 128 = pairs of rows
from_bnb = bnbf.dequantize_4bit(probe_packed, probe_state)
n_rows, n = rows_of_64.shape  # the AVX-512 kernel reads absmax[r * (n // b) + c // b] for row r, column c
avx512_index = torch.arange(n_rows)[:, None] * (n // 128) + torch.arange(n)[None, :] // 128
avx512_reading = probe_levels * probe_state.absmax[avx512_index]
case = "agrees with the hand-made one" if torch.equal(from_bnb, by_hand) else (
    "mis-scales, exactly as described" if torch.equal(from_bnb, avx512_reading) else "differs in a new way")
try:  # bitsandbytes asks the CPU itself whether to take its AVX-512 paths
    from bitsandbytes.cextension import lib

    avx512f = bool(lib.has_avx512f_cpu())
except Exception:  # no native CPU library, or an older one without the probe
    avx512f = False
print(f"AVX-512F: {avx512f}; bitsandbytes' CPU dequantize_4bit, blocks of 128 on rows of 64: {case}")
assert case != "differs in a new way", "bitsandbytes' CPU dequantization changed: re-read the hint above"

# %%
block_errors = {}  # your answer: {blocksize: mean absolute error}, for at least three block sizes

# %%
if not block_errors:
    print("Exercise 1 not attempted yet: fill block_errors above.")
else:
    errors = [block_errors[b] for b in sorted(block_errors)]
    assert len(errors) >= 3, "try at least three block sizes"
    assert all(a < b for a, b in zip(errors, errors[1:])), "the error should grow with the block size"
    print("correct: bigger blocks, bigger scales, coarser levels for everyone in the block")

# %% [markdown]
# **2. One outlier.** Make `outlier_weight`, a copy of `weight` in which the first weight is multiplied
# by 20. Quantize both in NF4 (block 64) and set `outlier_block_error` and `other_blocks_error` to the
# change in mean absolute error inside the first block and in all other blocks. Redraw the block
# diagram for the outlier's block: where do its other weights go?
#
# *Hint:* reshape the error to `(-1, 64)`; row 0 is the first block. What should `other_blocks_error` be?

# %%
outlier_block_error = None  # your answer: a float
other_blocks_error = None  # your answer: a float

# %%
if outlier_block_error is None or other_blocks_error is None:
    print("Exercise 2 not attempted yet: set outlier_block_error and other_blocks_error above.")
else:
    assert outlier_block_error > 0, "the outlier's block should get worse: its scale grew 20 times"
    assert other_blocks_error == 0, "blocks are quantized independently: the other blocks should not change at all"
    print("correct: an outlier only hurts its own 64-weight block")
