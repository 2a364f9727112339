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
# # 05 · Where the GPU memory goes
# *Measure each phase of 4-bit LoRA fine-tuning, predict it from the architecture alone, and see what fits on a T4.*
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/lmcls-org/lmcls/blob/main/notebooks/05_gpu_memory.ipynb)
#
# The Llama 3 tutorial trained on a free 16 GB T4 and reported "14.68 of 14.748 GB used": barely
# fitting. Was it? What you will learn:
#
# - the three different numbers called "GPU memory used" (tensors, PyTorch's cache, the driver's
#   count) and why `nvidia-smi` overstates what the tensors need;
# - how to measure each phase (loading, a forward pass, LoRA, a training step) and where its peak is;
# - one formula per component (4-bit weights, LoRA, optimizer state, activations, logits) that
#   predicts the measured peak of Llama-3-8B to within 1%;
# - which knob buys the most room (batch, sequence length, checkpointing, label-only logits,
#   8-bit Adam, double quantization, LoRA rank), and which configurations fit which GPU.

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

profile = course.start("05_gpu_memory", PROFILE)  # the profile, its world, login, versions and device, the time plan

# %%
import pandas as pd
import torch
from peft import get_peft_model

from lmcls_helpers import memory, plots, training
from lmcls_helpers.batches import label_loss
from lmcls_helpers.models import llama_config, load_model
from lmcls_helpers.profiles import LLAMA3_8B_CONFIG

torch.manual_seed(profile.seed)
shipped = memory.load_measurements()  # the project's reference H100 figures, shipped with the package
GIB, MIB = memory.GIB, memory.MIB

# %% [markdown]
# ## 1. Three numbers called "memory used"
#
# The tutorial asked the driver (`nvidia-smi`) and found PyTorch's `torch.cuda.memory_allocated()`
# to "severely under-report". Neither is wrong: they count different things, nested like this.
#
# | number | PyTorch call | what it counts |
# |---|---|---|
# | **allocated** | `memory_allocated()`, peak: `max_memory_allocated()` | bytes of live tensors |
# | **reserved** | `memory_reserved()` | allocated + freed blocks PyTorch's caching allocator keeps for reuse |
# | **driver** | `mem_get_info()` (total − free), `nvidia-smi` | reserved + the CUDA context (kernels, cuBLAS) + other processes |
#
# Only the first is what your tensors need; a formula can predict it, and out-of-memory errors
# happen when it cannot grow. Here is what this machine offers:

# %%
if torch.cuda.is_available():
    free, total = torch.cuda.mem_get_info()
    print(f"{torch.cuda.get_device_name(0)}: {total / GIB:.2f} GiB visible to CUDA, {(total - free) / GIB:.2f} GiB "
          f"already used by the driver's count, {torch.cuda.memory_allocated() / GIB:.2f} GiB in tensors")
else:
    print("No GPU on this machine: below we count tensor bytes on the CPU (the same phases, in miniature),\n"
          f"and the GPU figures come from measurements shipped with the package: {shipped['provenance']['gpu']}, "
          f"torch {shipped['provenance']['torch']}, bitsandbytes {shipped['provenance']['bitsandbytes']}\n"
          f"({shipped['provenance']['source'].split(' (')[0]}).")

# %% [markdown]
# The tutorial's T4 figures (driver's count) next to the shipped H100 figures for the same recipe
# (Llama-3-8B in NF4, batch 8 of 86 tokens, LoRA r = 8 on all projections). The tutorial used 8-bit
# Adam and fp16 on the T4, AdamW and bf16 on the H100, so compare the pattern across phases, not
# individual values between the two GPUs.

# %%
tutorial = shipped["tutorial_T4_figures_GB"]  # nvidia-smi MiB / 1024, so in fact GiB
h100 = shipped["phases"]
phase_names = {"model loaded": "model_loaded_4bit", "forward pass": "forward_eval_tutorial_recipe",
               "LoRA attached": "lora_attached", "training step": "train_step_tutorial_recipe"}
side_by_side = pd.DataFrame({
    "T4, driver's count (tutorial)": [tutorial[k] for k in ("model", "forward", "with_lora", "training")],
    "H100, driver's count": [h100[p].get("smi") for p in phase_names.values()],
    "H100, tensors allocated after": [h100[p].get("allocated") for p in phase_names.values()],
    "H100, tensors at the peak": [h100[p].get("peak") for p in phase_names.values()],
}, index=list(phase_names))
side_by_side.round(2)

# %% [markdown]
# (Empty cells were not recorded: the LoRA phase has only what stays allocated, the forward pass
# and the training step only their peak.) In the three phases with both figures, the H100's
# driver's count is 0.6 to 1.1 GiB above the tensors' peak: the CUDA context and the allocator's
# cache, not anything the model needs. Right after loading, before the
# cache has grown, the difference is mostly the context. The loaded 4-bit model is the same tensors
# on any GPU, so the tutorial's T4 figure for that phase, minus the H100's tensors, gives the T4's:

# %%
contexts = memory.cuda_context_gib(shipped)  # GiB per GPU: driver's count minus tensors, right after loading
loaded = h100["model_loaded_4bit"]
print(f"H100: {loaded['smi']:.3f} GiB driver's count - {loaded['allocated']:.2f} GiB memory_allocated = "
      f"{contexts['H100 80 GB']:.2f} GiB\nT4:   {tutorial['model']:.2f} GiB driver's count - {loaded['allocated']:.2f} "
      f"GiB memory_allocated (H100) = {contexts['T4 16 GB']:.2f} GiB")

# %% [markdown]
# The context is not one fixed cost: it depends on the GPU, the driver and the CUDA version (which
# kernels are loaded up front), and here the T4's is a third of the H100's. So each GPU gets its
# own budget, its capacity minus its context (cards with no figure of their own get the H100's
# larger one). The tutorial's "training 14.68 of 14.748" is not "the tensors filled the T4" either:
# the caching allocator keeps freed blocks, and on a nearly full card it holds all it can. Section 6
# estimates the T4's real tensor peak and what is left of its budget.
#
# ## 2. Measuring the four phases
#
# To know what one step costs, reset the peak counter, run the step, read the peak. We follow the
# tutorial's order: load the 4-bit model, run an evaluation forward pass, attach LoRA, train.
# `memory.MemoryMeter` does the bookkeeping on both profiles: on a GPU it reads the four numbers
# above; on the CPU, where no allocator keeps statistics, it counts the bytes of every live tensor
# (a `TorchDispatchMode` sees each tensor an operation creates; a weak reference tells when its
# memory is freed). The batch is random token ids: memory depends on shapes, not on words.

# %%
config = llama_config(profile)  # the architecture as a plain dict, no weights needed
batch_size, seq_len = profile.micro_batch_size, memory.TUTORIAL_SEQ_LEN  # the tutorial's prompt: 86 tokens
device = "cuda:0" if profile.device == "cuda" else "cpu"
input_ids = torch.randint(0, config["vocab_size"], (batch_size, seq_len))  # (batch, seq)
labels = torch.full_like(input_ids, -100)  # the tutorial's targets: -100 (ignored) everywhere ...
labels[:, -1] = input_ids[:, -1]  # ... except the last token, which stands for the label word
batch = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids), "labels": labels}
batch = {k: v.to(device) for k, v in batch.items()}  # no padding: every row has seq_len real tokens
print({k: tuple(v.shape) for k, v in batch.items()})

# %% [markdown]
# **Phase 1, the model loaded.** `meter.track(model)` tells the CPU counter about the weights
# (a GPU's allocator sees them anyway).

# %%
meter = memory.MemoryMeter(profile.device)
with meter.phase("model_loaded_4bit"):
    model = load_model(profile)  # 4-bit NF4 projections; embeddings, norms and LM head in the compute dtype
    meter.track(model)
{k: round(v * 1024, 2) for k, v in meter.phases["model_loaded_4bit"].items()}  # MiB

# %% [markdown]
# **Phase 2, an evaluation forward pass**, as the tutorial's validation ran it: labels passed,
# so the model also computes the loss.

# %%
with meter.phase("forward_eval_tutorial_recipe", model), torch.no_grad():
    out = model(**batch)
print(f"logits {tuple(out.logits.shape)} {out.logits.dtype}, loss {out.loss.item():.3f}")  # (batch, seq, vocab)
del out  # the tutorial kept only the two label logits per row

# %% [markdown]
# **Phase 3, LoRA attached**: small fp32 matrices A and B beside each of the seven projections.

# %%
lora_config = training.lora_config(profile)  # the profile's r, alpha and dropout on all seven projections
with meter.phase("lora_attached", model):
    model = get_peft_model(model, lora_config)
    meter.track(model)
trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
print(f"{trainable:,} trainable LoRA values")

# %% [markdown]
# **Phase 4, one training step**: forward, loss, backward, optimizer step. Two losses: the
# tutorial's (the model's own loss over logits for *every* position, the output kept alive as the
# tutorial kept `result.logits`) and notebook 4's lean one (the LM head only where the label word
# is predicted, `label_loss(..., lean=True)`).

# %%
optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=profile.lr)


def train_step(lean: bool) -> float:
    """One optimizer step on `batch` with the tutorial's loss (lean=False) or the label-position loss."""
    if lean:
        loss = label_loss(model, batch, lean=True) / batch_size
    else:
        out = model(**batch)  # `out` (and its logits) stays alive through backward, as in the tutorial
        loss = out.loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.item()


# %%
model.train()
train_step(lean=False)  # the first step creates AdamW's state; we measure steady-state steps
with meter.phase("train_step_tutorial_recipe", model, optimizer):
    train_step(lean=False)
with meter.phase("train_step_label_position_logits", model, optimizer):
    train_step(lean=True)
measured = (pd.DataFrame(meter.phases).T * 1024).round(2)  # MiB
results.record("measured_phases_mib", measured.to_dict(orient="index"))
measured

# %% [markdown]
# Each row is one phase in MiB: `allocated` is what stays after it, `peak` the most that was
# live during it; on a GPU also `reserved`, `smi` (the driver's count) and `capacity`. The forward
# pass's `allocated` still includes its output `out` (logits and loss), which the cell deleted only
# after the phase had ended.

# %%
assert meter.phases["lora_attached"]["allocated"] > meter.phases["model_loaded_4bit"]["allocated"], "LoRA adds memory"
train = meter.phases["train_step_tutorial_recipe"]["peak"]
assert train > 1.5 * meter.phases["lora_attached"]["allocated"], "activations and logits add half again or more"
assert meter.phases["train_step_label_position_logits"]["peak"] < train, "label-position logits need less"

# %% [markdown]
# On a GPU, `python -m benchmarks.gpu_memory` measures these same phases and writes them, with the
# shapes and a provenance read off the objects it measured (GPU, library versions, dtype,
# quantization, LoRA, optimizer, date), into `lmcls_helpers/measurements/`, where the tests and
# the table of section 5 pick them up.

# %% [markdown]
# ## 3. Drawing the phases
#
# One bar per phase, stacked from the bottom: what stays allocated, what the peak adds on top,
# then (on a GPU) the allocator's cache and the CUDA context. On a GPU a red line marks the device's
# real capacity. (The tutorial drew its "used" line at the card's total: a line that can only ever say "full".)

# %%
fig = plots.memory_phases(memory.phase_segments(meter.phases),
                          capacity_gib=meter.phases["train_step_tutorial_recipe"].get("capacity"),
                          title=f"this run ({profile.name} profile, batch {batch_size} × {seq_len} tokens)")
plots.show(fig, "05_phases_this_run")

# %% [markdown]
# The same phases for Llama-3-8B, measured on an H100 and shipped with the package. Their
# measurements have no `reserved`, so the cache and the CUDA context share one segment.

# %%
h100_gpu, t4 = memory.GPUS["H100 80 GB"]["capacity_gib"], memory.GPUS["T4 16 GB"]["capacity_gib"]
ymax = 1.45 * max(t4, *(m["smi"] for m in h100.values() if "smi" in m))  # one GiB scale for the H100 and the T4
fig = plots.memory_phases(memory.phase_segments({p: h100[p] for p in (*phase_names.values(), "train_step_label_position_logits")}),
                          capacity_gib=h100_gpu, capacity_label=f"H100 capacity ≈ {h100_gpu} GiB", ymax=ymax,
                          title="Llama-3-8B, NF4, batch 8 × 86 tokens (H100, shipped)")
plots.show(fig, "05_phases_h100")

# %% [markdown]
# On an 80 GB card the recipe uses under a fifth of the memory. The interesting card is the T4 of the
# tutorial: its driver's counts on the same GiB scale, with the T4's capacity where it belongs.

# %%
tutorial_phases = {name: {"smi": tutorial[key]} for name, key in
                   zip(phase_names, ("model", "forward", "with_lora", "training"))}
fig = plots.memory_phases(memory.phase_segments(tutorial_phases), capacity_gib=t4,
                          capacity_label=f"T4 capacity {t4} GiB", ymax=ymax,
                          title="the tutorial's T4 figures (driver's count)")
plots.show(fig, "05_phases_tutorial_t4")

# %% [markdown]
# ## 4. Predicting the peak, term by term
#
# `memory.estimate_training_memory(config, batch_size=..., seq_len=..., ...)` predicts the peak of
# `max_memory_allocated` during a training step from the architecture alone. Every term is a count
# of bytes with a reason; no constant is fitted to the measurements. We derive the terms for
# Llama-3-8B and check each against the estimator.
#
# **Weights.** A 4-bit weight is half a byte, plus one fp32 scale (absmax) per block of 64 weights.
# Embeddings, norms and the LM head stay in 16 bits.

# %%
shapes = {"q_proj": (4096, 4096), "k_proj": (1024, 4096), "v_proj": (1024, 4096), "o_proj": (4096, 4096),
          "gate_proj": (14336, 4096), "up_proj": (14336, 4096), "down_proj": (4096, 14336)}  # (out, in)
n_4bit = 32 * sum(o * i for o, i in shapes.values())  # 32 blocks
n_16bit = 2 * 128256 * 4096 + 65 * 4096  # embedding, LM head, 65 norm vectors
by_hand = {"quantized_weights": n_4bit * (0.5 + 4 / 64) / GIB, "weights_16bit": n_16bit * 2 / GIB}
estimate = memory.estimate_training_memory(LLAMA3_8B_CONFIG, batch_size=8, seq_len=86, padding=False)
print({k: f"{v:.3f} GiB (estimator {estimate[k]:.3f})" for k, v in by_hand.items()})
assert all(abs(by_hand[k] - estimate[k]) < 1e-9 for k in by_hand), "hand count and estimator agree"

# %% [markdown]
# 5.614 GiB against 5.66 measured after loading (rounded to 0.01 GiB): a gap of about 47 MiB that
# nobody has traced. Buffers the count leaves out (rotary frequencies, bitsandbytes' 16-entry code
# tables) come to kilobytes. The likeliest cause is the caching allocator: `memory_allocated` counts
# the blocks it hands out, and a block can be up to 1 MiB larger than its tensor; about 0.1 MiB on
# each of the 448 packed weights and absmax tensors would add up to it.
#
# **LoRA, gradients, optimizer.** Each projection gets A (r × in) and B (out × r) in fp32; their
# gradients are fp32 too, and AdamW keeps two fp32 moments per value. `zero_grad(set_to_none=True)`
# frees the gradients after each step, so at the peak they only exist with gradient accumulation.

# %%
lora_values = 32 * sum(profile.lora_r * (o + i) for o, i in shapes.values())
print(f"{lora_values:,} LoRA values: weights {4 * lora_values / MIB:.0f} MiB, gradients {4 * lora_values / MIB:.0f} MiB, "
      f"AdamW state {8 * lora_values / MIB:.0f} MiB")
assert abs(8 * lora_values / GIB - memory.estimate_training_memory(
    LLAMA3_8B_CONFIG, batch_size=8, seq_len=86, lora_r=profile.lora_r)["optimizer_state"]) < 1e-9

# %% [markdown]
# The LoRA weights and AdamW's state are 240 MiB together, 4% of the 5.6 GiB of base weights. The
# gradients' 80 MiB are not in the peak: it comes early in the backward pass, before almost any of
# them exist (section 5 checks the estimate against the measurements), and
# `zero_grad(set_to_none=True)` frees them after the step.
# The big term is the next one.
#
# **Activations: what autograd keeps for the backward pass.** Every operation that needs its
# input (or output) to compute a gradient saves it, and it stays until the backward pass reaches
# it. `torch.autograd.graph.saved_tensors_hooks` lets us see each saved tensor; we count each
# storage once (views share memory) and leave out the weights, which exist anyway.

# %%
weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
saved = {}  # storage address -> (bytes, shape, dtype)


def keep(t):
    if t.untyped_storage().data_ptr() not in weights:
        saved[t.untyped_storage().data_ptr()] = (t.untyped_storage().nbytes(), tuple(t.shape), str(t.dtype))
    return t


with torch.autograd.graph.saved_tensors_hooks(keep, lambda t: t):
    out = model(**batch)  # the tutorial's forward pass, in training mode (dropout on)
print(f"{len(saved)} saved tensors, {sum(b for b, _, _ in saved.values()) / MIB:.2f} MiB")

# %% [markdown]
# Grouped by shape, the pattern of one decoder block shows: per LoRA projection its fp32 input after
# dropout and the dropout mask (a bool on the GPU, fp32 noise on the CPU), each RMSNorm's fp32
# input, SDPA's query, key, value and output, and SwiGLU's three `(batch, seq, intermediate)` tensors.

# %%
table = pd.DataFrame(saved.values(), columns=["bytes", "shape", "dtype"])
table = table.groupby(["shape", "dtype"])["bytes"].agg(["count", "sum"]).sort_values("sum", ascending=False)
table["MiB"] = (table.pop("sum") / MIB).round(3)
table.head(10)

# %% [markdown]
# The saved tensors whose last dimension is the vocabulary belong to the loss (the fp32
# log-softmax over every position); the rest are the activations. Counted against the formula:

# %%
vocab = config["vocab_size"]
in_loss = sum(b for b, shape, dtype in saved.values() if shape[-1:] == (vocab,) or dtype == "torch.int64")
counted = {"activations": sum(b for b, _, _ in saved.values()) - in_loss, "log-softmax and targets": in_loss}
ours = memory.estimate_training_memory(config, batch_size=batch_size, seq_len=seq_len, lora_r=profile.lora_r,
                                       dtype=profile.compute_dtype, device=profile.device, padding=False)
formula = {"activations": ours["activations"] * GIB, "log-softmax and targets": (4 * seq_len * vocab + 8 * seq_len) * batch_size}
check = pd.DataFrame({"counted MiB": counted, "formula MiB": formula}) / MIB
check["formula / counted"] = check["formula MiB"] / check["counted MiB"]
check.round(3)

# %%
assert ((check["formula / counted"] - 1).abs() < 0.10).all(), check  # a T4's attention kernel keeps a little more
del out

# %% [markdown]
# The formula, per decoder block (T = batch × seq tokens, H hidden, M MLP width, c bytes per
# compute value, r the LoRA rank):
#
# $$\underbrace{2(4TH)}_{\text{norms}} + \underbrace{cT(2H + 2H_{kv})}_{\text{attention}} + \underbrace{3cTM}_{\text{SwiGLU}} + \underbrace{(4 + m)\,T(6H + M) + 7 \cdot 4Tr}_{\text{LoRA inputs, masks}}$$
#
# with m = 1 byte per mask value on a GPU. For Llama-3-8B at 8 × 86 tokens that is 219 MiB per
# block, 6.8 GiB for 32 blocks: more than the weights. Note the LoRA term, 128 of the 219 MiB.
# peft casts each adapter's input to fp32 (the adapters' dtype), dropout draws a new mask per
# adapter, and A keeps its own dropped-out fp32 input for its backward pass: 4 bytes per value,
# 102 MiB. Dropout itself keeps the mask: 1 byte per value on a GPU (a bool), 26 MiB; on the CPU
# it keeps fp32 noise, 4 bytes. Without dropout (`lora_dropout=0`, or evaluation mode) there is no
# mask, and the rest depends on the compute dtype: in 16-bit compute every adapter still keeps its
# own fp32 cast of the input; in fp32 compute the cast changes nothing and adapters that read the
# same input share it (exercise 2 measures the difference).
#
# **Logits.** The tutorial's loss computes `(batch, seq, vocab)` logits and
# transformers upcasts them to fp32 for the loss. When the backward pass starts, four such
# tensors are alive at once; with the LM head only at the label position, one row per sequence.

# %%
T8, V = 8 * 86, LLAMA3_8B_CONFIG["vocab_size"]  # tokens in the batch, vocabulary (128,256)
logit_tensors = {"logits (bf16, held by the output)": 2, "log-softmax (fp32, kept by the loss)": 4,
                 "its incoming gradient (fp32)": 4, "its result gradient (fp32)": 4}
logits_mib = pd.Series({k: b * T8 * V / MIB for k, b in logit_tensors.items()})  # bytes per value x (T, V)
label_mib = logits_mib / 86  # one row per sequence instead of 86
print(logits_mib.round(0).to_string(), f"\ntotal {logits_mib.sum():.0f} MiB; label position only: "
      f"{label_mib.sum():.0f} MiB for the same four tensors, {label_mib.iloc[0]:.0f} MiB for the bf16 logits alone")

# %% [markdown]
# 1.15 GiB for one number per sequence. Of the knobs that change neither the gradients (notebook 4
# proved it) nor the compute, this one saves the most. Gradient checkpointing saves more, about
# 7 GiB at this shape (section 6), but runs every block's forward pass twice.
#
# **Workspaces and the peak's moment.** cuBLAS keeps a 32 MiB workspace (Hopper; 8 MiB on older
# GPUs) per thread that runs matrix products: one for the forward pass, one for autograd's
# backward thread. The peak itself is one of two moments: when the loss's backward runs (all
# activations + the four logits tensors), or in the last block's backward, where bitsandbytes
# dequantizes `down_proj` to 16 bits (112 MiB) next to a few gradient tensors. The estimator
# computes both and reports the larger one, component by component. With label-position logits the
# loss's moment adds only the 14 MiB above, less than the dequantized `down_proj`, so the peak moves to
# the last block's backward. By then only the bf16 logits are still alive: that is why the table's
# `logits` row shows 0.002 GiB (2 MiB) for that recipe, while its `workspace` grows.

# %%
estimates = {"tutorial's loss": estimate,
             "label-position logits": memory.estimate_training_memory(LLAMA3_8B_CONFIG, batch_size=8, seq_len=86,
                                                                      padding=False, logits="label")}
pd.DataFrame(estimates).round(3)  # GiB

# %% [markdown]
# ## 5. Checking the estimate
#
# Against every phase measured on a GPU: the four phases, the label-position step, and two
# evaluation batches that the measurement ran between training steps (AdamW's state still alive).
# Each `gpu_measurements*.json` in `lmcls_helpers/measurements/` holds them (the H100 reference, plus
# any file `python -m benchmarks.gpu_memory` has added on a GPU), and `python -m benchmarks.memory_validation`
# estimates each phase again from the shapes and the recipe the file records, and ships the result
# as one small table, `estimator_validation.json` (`tests/test_memory.py` checks it is up to date).
# Where a file does not record whether its batches were padded, the estimate assumes unpadded
# batches (like ours), and we print what a padding mask would add.

# %%
validation = memory.load_measurements(memory.VALIDATION)  # estimated and measured GiB per phase and per step
checks = pd.DataFrame(validation["phases"]).set_index(["file", "phase"])
checks["relative error"] = (checks["estimated_gib"] - checks["measured_gib"]) / checks["measured_gib"]
h100_check = checks.loc["gpu_measurements.json"]  # the reference: batch 8 x 86 tokens, NF4, bf16, r = 8, unpadded
gap_mib = (h100_check["measured_gib"] - h100_check["estimated_gib"]) * 1024
print("measured - estimated, MiB:", gap_mib.round(0).astype(int).to_dict())
max_rel_error = float(checks["relative error"].abs().max())
assert max_rel_error < validation["tolerance"]["phases"], checks  # 10%, as tests/test_memory.py asks
results.record("estimator_max_rel_error", round(max_rel_error, 4))
results.record("estimator_rel_error_by_phase", h100_check["relative error"].round(4).to_dict())
padded = memory.estimate_training_memory(LLAMA3_8B_CONFIG, batch_size=8, seq_len=86)["total"]
print(f"{checks.index.levels[0].size} shipped file(s), largest error {max_rel_error:.1%} (tests/test_memory.py keeps "
      f"it under 10%); padded, the H100 step would need {padded:.2f} GiB")
checks["ratio"].unstack("file").round(4)  # estimated / measured, one column per shipped file

# %% [markdown]
# Every phase within 1%, all slightly low: the 47 MiB found at loading stays in every later phase, and
# grows to about 75 MiB in the two training steps. With a padding mask transformers repeats the 8 key/value heads to all 32 before
# calling SDPA and autograd keeps the copies: real CoLA batches are padded, so section 6 plans with it.
#
# And against this run's own two training steps (on the CPU, where the kernels differ
# slightly: dropout keeps fp32 noise instead of a bool mask, `device="cpu"` accounts for it):

# %%
run_check = pd.DataFrame({phase: {"measured GiB": meter.phases[phase]["peak"], "estimated GiB": memory.estimate_training_memory(
    config, batch_size=batch_size, seq_len=seq_len, lora_r=profile.lora_r, dtype=profile.compute_dtype, logits=logits,
    device=profile.device, padding=False, workspace_mib=memory.cublas_workspace_mib(profile.device))["total"]}
    for phase, logits in (("train_step_tutorial_recipe", "all"), ("train_step_label_position_logits", "label"))}).T
run_check["relative error"] = (run_check["estimated GiB"] - run_check["measured GiB"]) / run_check["measured GiB"]
run_error = float(run_check["relative error"].abs().max())
results.record("estimator_max_rel_error_this_run", round(run_error, 4))
assert run_error < 0.10, run_check
run_check.round(4)

# %% [markdown]
# The files above each hold one shape: batch 8 × 86 tokens, no checkpointing, AdamW. The estimator
# has more branches than that, and a formula is only as good as its least-tested branch.
# `python -m benchmarks.gpu_memory` measured one Llama-3-8B training step on a GPU for each of them:
# micro-batches of 4 to 32, the tutorial's loss and label-position logits, gradient checkpointing
# off and on, a padded batch, 8-bit AdamW, and, last, a model prepared the way most QLoRA recipes
# prepare it (below). Its file (`gpu_grid_<gpu>.json`) ships with the package, and the same table
# has every row estimated again from the settings the file records:

# %%
for name in dict.fromkeys(r["file"] for r in validation["branches"]):  # one gpu_grid_<gpu>.json per GPU
    grid = {"grid": [r for r in validation["branches"] if r["file"] == name]}
    prov = validation["files"][name]
    print(f"{name}: {prov['gpu']}, {prov['date']}, torch {prov['torch']}, transformers {prov['transformers']}, "
          f"bitsandbytes {prov['bitsandbytes']}, {prov['dtype']}, {prov['seq_len']} tokens per row")
    branches = pd.DataFrame(grid["grid"]).set_index("step").rename(columns={"measured_gib": "measured GiB",
                                                                             "estimated_gib": "estimated GiB"})
    branches["relative error"] = (branches["estimated GiB"] - branches["measured GiB"]) / branches["measured GiB"]
    branches["seconds per step"] = branches["step_s"]
    branches = branches[["measured GiB", "estimated GiB", "relative error", "seconds per step"]]
    branch_error = float(branches["relative error"].abs().max())
    results.record(f"branch_max_rel_error_{name.removesuffix('.json')}", round(branch_error, 4))
    assert branch_error <= validation["tolerance"]["branches"], branches  # 5%
branches.round(3)

# %%
fig = plots.measured_branches(grid, branches, title=f"Llama-3-8B training steps on an {prov['gpu']}")
plots.show(fig, "05_measured_branches")

# %% [markdown]
# Every branch lands within a few percent, always slightly low: by a few tens of MiB at batch 4 and
# 8, by a few hundred at batch 16 and 32 with label-position logits, a gap the estimator does not
# explain. The figure draws the sixteen unpadded AdamW steps (the padded, 8-bit and fp32 rows are in
# the table only); on the left a 2% gap is smaller than a dot, so read the gaps in the table. The
# right panel shows what memory alone does not. Each time is the median of three steps in one run,
# which spread by up to a quarter of a second (the bars). Gradient checkpointing takes the batch-8
# step from 13.986 to 7.268 GiB and about doubles its time (0.338 to 0.730 s; 0.347 to 0.690 s with
# label logits; 1.6 to 2.2 times across the grid): backward runs each block's forward again. And a
# step of 32 rows takes only about 30% longer than a step of 4 (0.380 against 0.296 s): on a GPU
# this fast, at 86 tokens a row, most of a step is a fixed cost per pass through the 32 blocks (many
# small kernels launched, each 4-bit matrix unpacked), not arithmetic on the rows. So the way to
# train faster here is more rows per step, which checkpointing makes room for; a T4, with a
# fifteenth of the arithmetic, spends more of its step on the rows themselves.
#
# The last row is what the notebooks do not do: peft's `prepare_model_for_kbit_training` (notebook 4,
# section 3), called with `use_gradient_checkpointing=False` so that only its fp32 cast is measured.
# It costs far more than the 1.96 GiB its fp32 weights add: the fp32 embeddings and norms
# hand fp32 hidden states to every block, so the activations the step keeps grow too. The estimator's
# `upcast=True` models that crudely, as fp32 compute throughout (only the 4-bit matmuls stay in bf16),
# which is why it lands furthest off of all the rows, though still within the 5% we ask of it.

# %%
plain, upcast = branches.loc[["batch 8, tutorial loss", "batch 8, tutorial loss, fp32 upcast"], "measured GiB"]
print(f"tutorial's step, batch 8: {plain:.2f} GiB; after prepare_model_for_kbit_training: {upcast:.2f} GiB "
      f"(+{upcast - plain:.2f} GiB)")

# %% [markdown]
# ## 6. What if: other GPUs, other knobs
#
# With a formula we can try what we cannot run. The baseline is the tutorial's step with padded
# batches (batch 8, 86 tokens, bf16, AdamW, r = 8); each variant changes one knob. The budget for
# tensors on a GPU is its capacity minus its own CUDA context (section 1).

# %%
budgets = {gpu: spec["capacity_gib"] - contexts[gpu] for gpu, spec in memory.GPUS.items()}  # GiB for tensors
print("budget = capacity - CUDA context:", {gpu: f"{spec['capacity_gib']} - {contexts[gpu]:.2f} = {budgets[gpu]:.2f}"
                                            for gpu, spec in memory.GPUS.items()})
base = dict(batch_size=8, seq_len=86)
variants = {"tutorial recipe": {}, "batch 16": {"batch_size": 16}, "sequence 256": {"seq_len": 256},
            "gradient checkpointing": {"grad_checkpointing": True}, "label-position logits": {"logits": "label"},
            "8-bit AdamW": {"optimizer": "adamw8bit"}, "double quantization": {"double_quant": True},
            "LoRA r = 64": {"lora_r": 64}, "label logits + checkpointing": {"logits": "label", "grad_checkpointing": True}}
what_if = {name: memory.estimate_training_memory(LLAMA3_8B_CONFIG, **{**base, **knobs}) for name, knobs in variants.items()}
pd.DataFrame(what_if).T.round(2)

# %%
xmax = 40  # GiB: the bars end near 31; the 80 GB cards' lines (78.6) would squeeze them
off_axis = " / ".join(gpu for gpu, b in budgets.items() if b >= xmax)
fig = plots.memory_components(what_if, budgets, xmax=xmax, title="Llama-3-8B training step, one knob at a time\n"
                              f"(red: capacity minus CUDA context; {off_axis} beyond the axis)")
plots.show(fig, "05_what_if_knobs")

# %% [markdown]
# Of what training adds to the weights, activations dominate every variant except checkpointing, and
# in the tutorial's recipe the logits come second. Which fit where,
# with each GPU's own cuBLAS workspace (negative: out of memory):

# %%
headroom = pd.DataFrame({
    gpu: {name: budgets[gpu] - memory.estimate_training_memory(
        LLAMA3_8B_CONFIG, **{**base, **knobs}, workspace_mib=spec["workspace_mib"])["total"]
        for name, knobs in variants.items()}
    for gpu, spec in memory.GPUS.items()})
fig = plots.fits_heatmap(headroom)
plots.show(fig, "05_fits_heatmap")
print("GiB left on the T4:", headroom["T4 16 GB"].round(2).to_dict())

# %% [markdown]
# Every single knob fits the T4 except a bigger batch, a longer sequence and rank 64. Even the
# tutorial's recipe with plain AdamW fits, with about a third of a GiB left; its 8-bit Adam adds
# about 0.1 GiB more room. Label-position logits alone leave about 1.4 GiB, checkpointing over seven.
# How far does each recipe stretch the batch? One line per recipe, the GPUs as horizontal lines:

# %%
recipes = {"tutorial": {}, "label logits": {"logits": "label"}, "checkpointing": {"grad_checkpointing": True},
           "label logits + checkpointing": {"logits": "label", "grad_checkpointing": True}}
sizes = [1, 2, 4, 8, 12, 16, 24, 32, 48, 64]
curves = {name: (sizes, [memory.estimate_training_memory(LLAMA3_8B_CONFIG, batch_size=b, seq_len=86, **knobs)["total"]
                         for b in sizes]) for name, knobs in recipes.items()}
fig = plots.memory_sweep(curves, budgets, title="Llama-3-8B step, 86-token prompts (red: capacity minus CUDA context)")
plots.show(fig, "05_batch_sweep")

# %%
t4_spec = memory.GPUS["T4 16 GB"]
t4_peak = memory.estimate_training_memory(LLAMA3_8B_CONFIG, batch_size=8, seq_len=86, optimizer="adamw8bit",
                                          dtype=torch.float16, workspace_mib=t4_spec["workspace_mib"])["total"]
results.record("t4_tutorial_step_estimated_gib", round(t4_peak, 3))
results.record("h100_tutorial_step_estimated_gib", round(h100_check.loc["train_step_tutorial_recipe", "estimated_gib"], 3))
t4_context = contexts["T4 16 GB"]
print(f"the estimator says: the tutorial's T4 step (fp16, 8-bit AdamW, padded batch of 8): {t4_peak:.2f} GiB of tensors at the peak, "
      f"+ {t4_context:.2f} GiB context = {t4_peak + t4_context:.2f} of {t4_spec['capacity_gib']} GiB, "
      f"{t4_spec['capacity_gib'] - t4_peak - t4_context:.2f} GiB left")

# %% [markdown]
# So the tutorial's step fitted its T4 with room, though not much: about 14.1 GiB of tensors at the
# peak, 14.3 with the T4's own 0.19 GiB context, on a 14.75 GiB card, half a GiB left. Its driver's
# count of 14.68 is the caching allocator filling that room with freed blocks, not tensors that
# needed it. With the H100's 0.64 GiB context the same step would have had almost nothing left: the
# context is worth measuring on the card you plan for. Exercise 1 finds how far the lean recipe goes
# on the same card.
#
# ## 7. Explore
#
# Move the sliders to see the estimate for any setting (in Jupyter or Colab; a rendered notebook
# shows the default setting's figure). The red lines are the GPUs' capacities minus their CUDA context.

# %%
plots.memory_explorer(LLAMA3_8B_CONFIG, budgets)

# %%
course.finish("05_gpu_memory", profile)  # the time taken against the plan; the model loads checked

# %% [markdown]
# ## Summary
#
# - `nvidia-smi` counts tensors + PyTorch's cache + the CUDA context; `max_memory_allocated` counts
#   tensors at the peak, the number that decides whether a step fits.
# - Llama-3-8B in NF4 is 5.6 GiB; LoRA and AdamW add 0.2 GiB; a training step of 8 × 86 tokens adds
#   6.8 GiB of activations and, with logits for every position, 1.15 GiB of logits.
# - Each component is a byte count with a reason; together they predict every phase measured on the
#   H100 and the H200 within 1%, every branch measured on the H200 (micro-batch, loss, checkpointing,
#   padding, 8-bit AdamW) within a few percent, and this run's own measurements within a few percent.
# - Label-position logits and gradient checkpointing change no gradient and save the most memory;
#   8-bit Adam and double quantization save little for LoRA. The tutorial's T4 step fitted with
#   about half a GiB to spare, once the T4's own CUDA context (0.19 GiB, not the H100's 0.64) is used.
#
# ## Exercises
#
# **1. The largest batch on a free T4.** With label-position logits, gradient checkpointing,
# 8-bit AdamW and fp16 (the T4 has no fast bf16), padded 86-token batches: what is the largest
# batch size whose step fits the T4 with its CUDA context? *Hint:* loop over batch sizes with
# `memory.estimate_training_memory(..., workspace_mib=t4_spec["workspace_mib"])` and compare
# `total + t4_context` with `t4_spec["capacity_gib"]`.

# %%
t4_max_batch = None  # your answer: an int

# %%
if t4_max_batch is None:
    print("Exercise 1 not answered yet: set t4_max_batch.")
else:
    lean_t4 = dict(seq_len=86, logits="label", grad_checkpointing=True, optimizer="adamw8bit", dtype=torch.float16,
                   workspace_mib=t4_spec["workspace_mib"])

    def fits(b):
        return memory.estimate_training_memory(LLAMA3_8B_CONFIG, batch_size=b, **lean_t4)["total"] + t4_context <= t4_spec["capacity_gib"]

    assert fits(t4_max_batch) and not fits(t4_max_batch + 1), "not the largest batch that fits"
    print(f"Right: {t4_max_batch} sequences per step, against the tutorial's 8.")

# %% [markdown]
# **2. The price of LoRA dropout.** In evaluation mode dropout does nothing, so its masks are not
# saved. Count the saved tensors of one forward pass of `model` in `model.eval()` mode as in
# section 4, and give how many MiB fewer are saved than in training mode. *Hint:* reuse `keep`
# and `saved` (empty it first); the estimator's answer is the difference between `lora_dropout=0.05`
# and `lora_dropout=0.0`.

# %%
dropout_saving_mib = None  # your answer: MiB saved in eval mode compared with train mode

# %%
if dropout_saving_mib is None:
    print("Exercise 2 not answered yet: set dropout_saving_mib.")
else:
    kw = dict(batch_size=batch_size, seq_len=seq_len, dtype=profile.compute_dtype, device=profile.device, padding=False)
    expected = (memory.estimate_training_memory(config, **kw)["activations"]
                - memory.estimate_training_memory(config, **kw, lora_dropout=0.0)["activations"]) * 1024
    assert abs(dropout_saving_mib - expected) < 0.1 * expected, f"the formula says {expected:.2f} MiB"
    print(f"Right: {dropout_saving_mib:.2f} MiB (formula {expected:.2f} MiB).")

# %% [markdown]
# **3. Double quantization by hand.** Double quantization stores each block's absmax as one byte
# instead of four, plus one fp32 scale per 256 blocks. How many MiB does it save for Llama-3-8B?
# *Hint:* `n_4bit` from section 4 counts the 4-bit weights; there is one absmax per 64 of them.

# %%
dq_saving_mib = None  # your answer

# %%
if dq_saving_mib is None:
    print("Exercise 3 not answered yet: set dq_saving_mib.")
else:
    est = {dq: memory.estimate_training_memory(LLAMA3_8B_CONFIG, batch_size=1, seq_len=1, double_quant=dq)
           for dq in (False, True)}
    expected = (est[False]["quantized_weights"] - est[True]["quantized_weights"]) * 1024
    assert abs(dq_saving_mib - expected) < 0.01 * expected, f"the estimator says {expected:.1f} MiB"
    print(f"Right: {dq_saving_mib:.0f} MiB, {dq_saving_mib / 1024 / est[False]['total']:.1%} of the model.")
