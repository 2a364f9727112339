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
# *Measure each phase of 4-bit LoRA fine-tuning, predict it from the architecture alone, and decide what fits on a T4.*
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/lmcls-org/lmcls/blob/main/notebooks/05_gpu_memory.ipynb)
#
# Chris McCormick's [Fine-Tuning Llama 3 for Sentence Classification](https://github.com/chrisjmccormick/llm-tuning-examples/blob/main/sentence-classification/Fine-Tuning%20Llama%203%20for%20Sentence%20Classification.ipynb) (from here on, the
# Llama 3 tutorial) trained Llama-3-8B on a free 16 GB T4 and reported "14.68 of 14.748 GB used":
# barely fitting. Was it? What you will learn:
#
# - which knob buys the most room;
# - the three numbers called "GPU memory used", and why out-of-memory depends on more than your tensors;
# - what a 4-bit model stores, and why Llama-3-8B weighs 5.6 GiB in NF4, not "8B × half a byte";
# - one formula per component that predicts a training step's peak from the architecture alone,
#   checked against GPU measurements;
# - one rule for "fits", and what it decides for a T4.

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
import bitsandbytes as bnb
import pandas as pd
import torch
from peft import get_peft_model

from lmcls_helpers import memory, plots, quant, training
from lmcls_helpers.batches import label_loss
from lmcls_helpers.models import bnb_config, llama_config, load_model
from lmcls_helpers.profiles import LLAMA3_8B_CONFIG
from lmcls_tools import diagrams

torch.manual_seed(profile.seed)
shipped = memory.load_measurements()  # the project's reference H100 figures, shipped with the package
GIB, MIB = memory.GIB, memory.MIB
contexts = memory.cuda_context_gib(shipped)  # GiB per GPU beyond the tensors: section 2
budgets = {gpu: spec["capacity_gib"] - contexts[gpu] for gpu, spec in memory.GPUS.items()}  # GiB for tensors

# %% [markdown]
# ## 1. One knob at a time
#
# Each bar is the estimated peak of one training step of Llama-3-8B in NF4 with
# LoRA r = 8, 8 prompts of 86 tokens: first the Llama 3 tutorial's recipe, then each knob changed alone.
# The red lines are what each GPU has for tensors. The rest of the notebook takes the bars apart.

# %%
base = dict(batch_size=8, seq_len=86)  # padded batches, bf16, AdamW, r = 8, logits at every position
variants = {"tutorial recipe": {}, "batch 16": {"batch_size": 16}, "sequence 256": {"seq_len": 256},
            "gradient checkpointing": {"grad_checkpointing": True}, "label-position logits": {"logits": "label"},
            "8-bit AdamW": {"optimizer": "adamw8bit"}, "double quantization": {"double_quant": True},
            "LoRA r = 64": {"lora_r": 64}, "label logits + checkpointing": {"logits": "label", "grad_checkpointing": True}}
what_if = {name: memory.estimate_training_memory(LLAMA3_8B_CONFIG, **{**base, **knobs}) for name, knobs in variants.items()}
xmax = 40  # GiB: the 80 GB cards' lines would squeeze the bars
fig = plots.memory_components(what_if, budgets, xmax=xmax, title="Llama-3-8B training step, one knob at a time\n"
                              "(red: capacity minus CUDA context; the 80 GB cards beyond the axis)")
plots.show(fig, "05_what_if_knobs")

# %% [markdown]
# The weights take 5.6 GiB in every bar (5.3 with double quantization). Of what training adds, the activations
# dominate every variant except checkpointing, and in the tutorial's recipe the logits come second. A longer sequence
# or a bigger batch grows both; 8-bit Adam and double quantization barely move anything.
#
# ## 2. Three numbers called "memory used"
#
# The tutorial asked the driver (`nvidia-smi`) and found PyTorch's `torch.cuda.memory_allocated()` to
# "severely under-report". Neither is wrong: they count different things, nested like this.
#
# | number | PyTorch call | what it counts |
# |---|---|---|
# | **allocated** | `memory_allocated()`, peak: `max_memory_allocated()` | bytes of live tensors |
# | **reserved** | `memory_reserved()` | allocated + freed blocks the caching allocator keeps for reuse |
# | **driver** | `mem_get_info()` (total − free), `nvidia-smi` | reserved + the CUDA context (kernels, cuBLAS) + other processes |
#
# A formula can predict the first. **Out of memory** is decided by the other two. A tensor needs one
# contiguous block: the allocator first looks among its reserved blocks, then asks the driver for more,
# and when the driver has none left it returns its whole cache and tries once more. A request can fail
# while allocated + request is below the capacity: the free bytes exist, but split into reserved blocks
# too small for it (*fragmentation*; the error message reports them as "reserved but unallocated").
# So a step fits only with some room beyond its allocated peak, which section 6 turns into a rule.

# %%
if torch.cuda.is_available():
    free, total = torch.cuda.mem_get_info()
    print(f"{torch.cuda.get_device_name(0)}: {total / GIB:.2f} GiB visible to CUDA, {(total - free) / GIB:.2f} GiB "
          f"already used by the driver's count, {torch.cuda.memory_allocated() / GIB:.2f} GiB in tensors")
else:
    print("No GPU here: below we count tensor bytes on the CPU (the same phases, in miniature); the GPU figures\n"
          f"come from measurements shipped with the package: {shipped['provenance']['gpu']}, torch "
          f"{shipped['provenance']['torch']}, bitsandbytes {shipped['provenance']['bitsandbytes']}.")

# %% [markdown]
# The tutorial's T4 figures (driver's count) next to the shipped H100 figures for the same recipe. The
# tutorial used 8-bit Adam and fp16, the H100 AdamW and bf16: compare the pattern, not single values.

# %%
tutorial = shipped["tutorial_T4_figures_GB"]  # nvidia-smi MiB / 1024, so in fact GiB
h100 = shipped["phases"]
phase_names = {"model loaded": "model_loaded_4bit", "forward pass": "forward_eval_tutorial_recipe",
               "LoRA attached": "lora_attached", "training step": "train_step_tutorial_recipe"}
pd.DataFrame({
    "T4, driver's count (tutorial)": [tutorial[k] for k in ("model", "forward", "with_lora", "training")],
    "H100, driver's count": [h100[p].get("smi") for p in phase_names.values()],
    "H100, tensors allocated after": [h100[p].get("allocated") for p in phase_names.values()],
    "H100, tensors at the peak": [h100[p].get("peak") for p in phase_names.values()],
}, index=list(phase_names)).round(2)

# %% [markdown]
# On the H100 the driver's count is 0.6 to 1.1 GiB above the tensors'
# peak: the CUDA context and the allocator's cache. Right after loading it is mostly the context. The
# T4's context was never measured; we **assume** it from the tutorial's figure after loading minus the
# H100's tensors, which holds only if the tutorial's model had the same tensors:

# %%
loaded = h100["model_loaded_4bit"]
dq_shift = (memory.estimate_training_memory(LLAMA3_8B_CONFIG, batch_size=1, seq_len=1)["quantized_weights"]
            - memory.estimate_training_memory(LLAMA3_8B_CONFIG, batch_size=1, seq_len=1, double_quant=True)["quantized_weights"])
print(f"H100, measured: {loaded['smi']:.3f} GiB driver's count - {loaded['allocated']:.2f} GiB allocated = "
      f"{contexts['H100 80 GB']:.2f} GiB\nT4, assumed:   {tutorial['model']:.2f} GiB driver's count - {loaded['allocated']:.2f} "
      f"GiB allocated (H100) = {contexts['T4 16 GB']:.2f} GiB\ndouble quantization alone moves the model by "
      f"{dq_shift:.2f} GiB: had the tutorial used it, the T4's context would be {contexts['T4 16 GB'] + dq_shift:.2f} GiB")

# %% [markdown]
# So the T4's context is an assumption, uncertain by more than its own size. Each GPU's budget for
# tensors is its capacity minus its context (cards without a figure get the H100's larger one); the
# red lines in section 1.
#
# ## 3. What a 4-bit model stores
#
# To know what a phase costs, reset the peak counter, run it, read the peak. `memory.MemoryMeter` does
# the bookkeeping: on a GPU it reads the numbers above; on the CPU it counts the bytes of every live
# tensor. **Phase 1: load the model**, with the config `load_model` passes to `from_pretrained`.

# %%
quantization_config = bnb_config(profile, quant_type="nf4")
meter = memory.MemoryMeter(profile.device)
with meter.phase("model_loaded_4bit"):
    model = load_model(profile)  # 4-bit NF4 projections; embeddings, norms and LM head in the compute dtype
    meter.track(model)  # tells the CPU counter about the weights (a GPU's allocator sees them anyway)
assert model.config.quantization_config.to_dict() == quantization_config.to_dict(), "loaded with another config"
{k: v for k, v in quantization_config.to_dict().items() if k.startswith(("load_in_4bit", "bnb_4bit"))}

# %% [markdown]
# `bnb_4bit_compute_dtype` is the dtype a layer dequantizes into for its matrix products; storage stays
# 4-bit. `bnb_4bit_quant_storage` only labels the tensor holding the packed codes: the **ledger
# tutorial** (the course's second source: Mistral-7B with a `Linear(4096, 1)` head classifies Income /
# Expense lines; notebook 6 takes it apart) sets `bfloat16`, four codes
# per element instead of two per `uint8`, the same bytes. `quant.parameter_table` lists each parameter
# as stored, with its scales (`state_bytes`) and the weights it stands for; we show the first block.

# %%
table = quant.parameter_table(model)
table[~table["name"].str.contains(r"layers\.(?!0\.)")]  # skip blocks 1, 2, ...: they repeat block 0

# %% [markdown]
# Packed projections show half the `numel`, as `uint8` (two codes per byte, notebook 3). Their scales
# live in each layer's `quant_state`, so `named_parameters()` and `get_memory_footprint()` never see
# them. Embedding, norms and LM head stay in the compute dtype: bitsandbytes replaces only the
# projections, and transformers keeps every model's output layer unquantized.

# %%
quantized = table[table["quantized"]]
assert (quantized["numel"] * 2 == quantized["weights"]).all(), "a 4-bit weight should store 2 weights per byte"
assert not table.loc[table["kind"].isin(["embedding", "norm", "lm_head"]), "quantized"].any()
predicted = quant.predicted_table(model.config.to_dict(), dtype=profile.compute_dtype)
assert predicted.equals(table), "the config-based prediction should match the loaded model row for row"
print(f"get_memory_footprint: {model.get_memory_footprint():,} bytes; parameters {table['bytes'].sum():,} "
      f"+ scales {table['state_bytes'].sum():,} = {quant.total_bytes(table):,}; the config predicts every row")
quant.by_kind(table)

# %% [markdown]
# A prediction that matches a loaded model row for row can price one we never load. Llama-3-8B from its
# config (`profiles.LLAMA3_8B_CONFIG`), next to what an H100 allocated after loading it:

# %%
tables_8b = {"bf16": quant.predicted_table(LLAMA3_8B_CONFIG, dtype=torch.bfloat16, quantize=False),
             "NF4": quant.predicted_table(LLAMA3_8B_CONFIG, dtype=torch.bfloat16),
             "NF4 + double quant": quant.predicted_table(LLAMA3_8B_CONFIG, dtype=torch.bfloat16, double_quant=True)}
nf4_8b_weights_gib = quant.total_bytes(tables_8b["NF4"]) / GIB
print({name: f"{quant.total_bytes(t) / GIB:.2f} GiB" for name, t in tables_8b.items()})
print(f"NF4: estimate {nf4_8b_weights_gib:.3f} GiB, memory_allocated on the H100 {loaded['allocated']:.2f} GiB "
      f"(shipped), estimate / measured = {nf4_8b_weights_gib / loaded['allocated']:.3f}")
quant.by_kind(tables_8b["NF4"])

# %% [markdown]
# 4 bits shrink the projections about 3.5× (4.5 bits with the scales, instead of 16); the 16-bit
# embedding and LM head are untouched and now make up a third of the model. The estimate explains 99%
# of the measurement; the rest, about 47 MiB, is most likely the allocator rounding each of the 448
# packed weights and scales up to its block size.
#
# **"7B × 0.5 byte = 3.5 GB"?** The ledger tutorial sizes its 4-bit Mistral-7B that way. Its own config
# (NF4, double quantization, bf16; Llama's layout with a 32,000-token vocabulary) prices it properly:

# %%
mistral = quant.predicted_table({**LLAMA3_8B_CONFIG, "vocab_size": 32000, "tie_word_embeddings": False},
                                dtype=torch.bfloat16, double_quant=True)
half_byte_gb = mistral["weights"].sum() * 0.5 / 1e9
packed_gb, scales_gb = mistral.loc[mistral["quantized"], "bytes"].sum() / 1e9, mistral["state_bytes"].sum() / 1e9
kept_gb = mistral.loc[~mistral["quantized"], "bytes"].sum() / 1e9  # embedding, norms, LM head in bf16
print(f"Mistral-7B: half-byte rule {half_byte_gb:.2f} GB; 4-bit projections {packed_gb:.2f} + scales {scales_gb:.2f} "
      f"+ bf16 embedding/norms/LM head {kept_gb:.2f} = {quant.total_bytes(mistral) / 1e9:.2f} GB")

# %% [markdown]
# The rule gets the projections right and forgets the scales and the embedding and LM-head weights that
# stay at 2 bytes each, four times the rule.
#
# ## 4. A training step, phase by phase
#
# We follow the Llama 3 tutorial's order after loading: an evaluation forward pass, LoRA attached, training
# steps. The batch is random token ids (memory depends on shapes, not words), labelled only at the last
# position, as the tutorial's targets.

# %%
config = llama_config(profile)  # the architecture as a plain dict
batch_size, seq_len = profile.micro_batch_size, memory.TUTORIAL_SEQ_LEN  # the tutorial's prompt: 86 tokens
device = "cuda:0" if profile.device == "cuda" else "cpu"
input_ids = torch.randint(0, config["vocab_size"], (batch_size, seq_len))  # (batch, seq)
labels = torch.full_like(input_ids, -100)  # ignored everywhere ...
labels[:, -1] = input_ids[:, -1]  # ... except the last token, which stands for the label word
batch = {k: v.to(device) for k, v in
         {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids), "labels": labels}.items()}
with meter.phase("forward_eval_tutorial_recipe", model), torch.no_grad():
    out = model(**batch)  # labels passed: the model also computes the loss, as the tutorial's validation did
print(f"logits {tuple(out.logits.shape)} {out.logits.dtype}")  # (batch, seq, vocab)
del out
with meter.phase("lora_attached", model):
    model = get_peft_model(model, training.lora_config(profile))  # the profile's r and alpha, all seven projections
    meter.track(model)

# %% [markdown]
# **One training step**, with two losses: the tutorial's (the model's own loss over logits at *every*
# position, the output kept alive through backward as the tutorial kept `result.logits`) and notebook
# 4's lean one (the LM head only where the label word is predicted).

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


model.train()
train_step(lean=False)  # the first step creates AdamW's state; we measure steady-state steps
with meter.phase("train_step_tutorial_recipe", model, optimizer):
    train_step(lean=False)
with meter.phase("train_step_label_position_logits", model, optimizer):
    train_step(lean=True)
measured = (pd.DataFrame(meter.phases).T * 1024).round(2)  # MiB
measured

# %% [markdown]
# `allocated` is what stays after a phase, `peak` the most that was live during it, in MiB (on a GPU also
# `reserved`, `smi` and `capacity`). The same as stacked bars (with the capacity, on a GPU):

# %%
assert meter.phases["lora_attached"]["allocated"] > meter.phases["model_loaded_4bit"]["allocated"], "LoRA adds memory"
train = meter.phases["train_step_tutorial_recipe"]["peak"]
assert train > 1.5 * meter.phases["lora_attached"]["allocated"], "activations and logits add half again or more"
assert meter.phases["train_step_label_position_logits"]["peak"] < train, "label-position logits need less"
fig = plots.memory_phases(memory.phase_segments(meter.phases),
                          capacity_gib=meter.phases["train_step_tutorial_recipe"].get("capacity"),
                          title=f"this run ({profile.name} profile, batch {batch_size} × {seq_len} tokens)")
plots.show(fig, "05_phases_this_run")

# %% [markdown]
# ## 5. Predicting the peak, term by term
#
# `memory.estimate_training_memory(config, batch_size=..., seq_len=..., ...)` predicts the peak of
# `max_memory_allocated` during a step from the architecture alone: every term is a byte count with a
# reason, no constant fitted. Over one step the memory rises and falls like this (drawn from the
# estimator's own terms, Llama-3-8B, the tutorial's step):

# %%
estimate = memory.estimate_training_memory(LLAMA3_8B_CONFIG, batch_size=8, seq_len=86, padding=False)
fig = diagrams.memory_over_step(estimate, LLAMA3_8B_CONFIG["num_hidden_layers"],
                                title="Llama-3-8B, NF4, one training step of 8 × 86 tokens (estimated)")
plots.show(fig, "05_memory_over_step")

# %% [markdown]
# The weights, LoRA and AdamW's state stay resident. The forward pass keeps what each block's backward
# will need, so the activations pile up; the loss adds the logits; backward frees each block's
# activations as it makes its LoRA gradients; after the optimizer step `zero_grad(set_to_none=True)`
# frees those. The peak is at the loss.
#
# **LoRA and optimizer.** Each projection gets A (r × in) and B (out × r) in fp32; AdamW keeps two fp32
# moments per value; the gradients barely exist at the peak.

# %%
shapes = {"q_proj": (4096, 4096), "k_proj": (1024, 4096), "v_proj": (1024, 4096), "o_proj": (4096, 4096),
          "gate_proj": (14336, 4096), "up_proj": (14336, 4096), "down_proj": (4096, 14336)}  # (out, in)
lora_values = 32 * sum(profile.lora_r * (o + i) for o, i in shapes.values())
print(f"{lora_values:,} LoRA values: weights {4 * lora_values / MIB:.0f} MiB, AdamW state {8 * lora_values / MIB:.0f} MiB")
assert abs(8 * lora_values / GIB - estimate["optimizer_state"]) < 1e-9 and abs(4 * lora_values / GIB - estimate["lora_weights"]) < 1e-9

# %% [markdown]
# **Activations: what autograd keeps for backward.** `torch.autograd.graph.saved_tensors_hooks` shows
# each saved tensor; we count each storage once and leave out the weights, which exist anyway.

# %%
weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
saved = {}  # storage address -> (bytes, shape, dtype)


def keep(t):
    if t.untyped_storage().data_ptr() not in weights:
        saved[t.untyped_storage().data_ptr()] = (t.untyped_storage().nbytes(), tuple(t.shape), str(t.dtype))
    return t


with torch.autograd.graph.saved_tensors_hooks(keep, lambda t: t):
    out = model(**batch)  # the tutorial's forward pass, in training mode (dropout on)
vocab = config["vocab_size"]
in_loss = sum(b for b, shape, dtype in saved.values() if shape[-1:] == (vocab,) or dtype == "torch.int64")
counted = {"activations": sum(b for b, _, _ in saved.values()) - in_loss, "log-softmax and targets": in_loss}
ours = memory.estimate_training_memory(config, batch_size=batch_size, seq_len=seq_len, lora_r=profile.lora_r,
                                       dtype=profile.compute_dtype, device=profile.device, padding=False)
formula = {"activations": ours["activations"] * GIB, "log-softmax and targets": (4 * seq_len * vocab + 8 * seq_len) * batch_size}
check = pd.DataFrame({"counted MiB": counted, "formula MiB": formula}) / MIB
check["formula / counted"] = check["formula MiB"] / check["counted MiB"]
assert ((check["formula / counted"] - 1).abs() < 0.10).all(), check  # a T4's attention kernel keeps a little more
del out
check.round(3)

# %% [markdown]
# Per decoder block (T = batch × seq tokens, H hidden, M MLP width, c bytes per compute value, r the rank):
#
# $$\underbrace{2(4TH)}_{\text{norms}} + \underbrace{cT(2H + 2H_{kv})}_{\text{attention}} + \underbrace{3cTM}_{\text{SwiGLU}} + \underbrace{(4 + m)\,T(6H + M) + 7 \cdot 4Tr}_{\text{LoRA inputs, masks}}$$
#
# with m = 1 byte per dropout-mask value on a GPU (fp32 noise, 4 bytes, on the CPU). For Llama-3-8B at
# 8 × 86 tokens that is 219 MiB per block, 6.8 GiB for 32 blocks: more than the weights. The LoRA term is
# 128 of the 219 MiB: peft casts each adapter's input to fp32, and dropout keeps a mask per adapter.
#
# **Logits.** The tutorial's loss computes `(batch, seq, vocab)` logits, upcast to fp32 for the loss;
# when backward starts, four such tensors are alive. With the LM head only at the label position, one
# row per sequence:

# %%
T8, V = 8 * 86, LLAMA3_8B_CONFIG["vocab_size"]  # tokens in the batch, vocabulary (128,256)
logit_tensors = {"logits (bf16, held by the output)": 2, "log-softmax (fp32, kept by the loss)": 4,
                 "its incoming gradient (fp32)": 4, "its result gradient (fp32)": 4}
logits_mib = pd.Series({k: b * T8 * V / MIB for k, b in logit_tensors.items()})  # bytes per value x (T, V)
print(logits_mib.round(0).to_string(), f"\ntotal {logits_mib.sum():.0f} MiB; label position only: "
      f"{logits_mib.sum() / 86:.0f} MiB")

# %% [markdown]
# A lot, for one number per sequence. Label-position logits change no gradient (notebook
# 4 showed the same loss) and cut compute as well: the LM head, a 4096 × 128,256 matrix product, runs on one position
# per row instead of 86. Gradient checkpointing saves more memory, but runs every block's forward twice.
# The peak is the larger of two moments: the loss's backward (all activations and the logits), or the
# last block's backward, where `down_proj` is dequantized to 16 bits. The estimator computes both:

# %%
estimates = {"tutorial's loss": estimate,
             "label-position logits": memory.estimate_training_memory(LLAMA3_8B_CONFIG, batch_size=8, seq_len=86,
                                                                      padding=False, logits="label")}
pd.DataFrame(estimates).round(3)  # GiB

# %% [markdown]
# ## 6. Checking the estimate
#
# Every phase measured on a GPU and shipped in `lmcls_helpers/measurements/`, estimated again from the
# shapes and recipe each file records (estimated / measured, one column per file):

# %%
validation = memory.load_measurements(memory.VALIDATION)  # estimated and measured GiB per phase and per step
checks = pd.DataFrame(validation["phases"]).set_index(["file", "phase"])
checks["relative error"] = (checks["estimated_gib"] - checks["measured_gib"]) / checks["measured_gib"]
h100_check = checks.loc["gpu_measurements.json"]  # the reference: batch 8 x 86 tokens, NF4, bf16, r = 8, unpadded
max_rel_error = float(checks["relative error"].abs().max())
assert max_rel_error < validation["tolerance"]["phases"], checks  # 10%
print(f"{checks.index.levels[0].size} shipped file(s), largest error {max_rel_error:.1%}")
checks["ratio"].unstack("file").round(4)

# %% [markdown]
# And against section 4's two training steps (on the CPU the kernels differ slightly; `device="cpu"`
# accounts for it):

# %%
run_check = pd.DataFrame({phase: {"measured GiB": meter.phases[phase]["peak"], "estimated GiB": memory.estimate_training_memory(
    config, batch_size=batch_size, seq_len=seq_len, lora_r=profile.lora_r, dtype=profile.compute_dtype, logits=logits,
    device=profile.device, padding=False, workspace_mib=memory.cublas_workspace_mib(profile.device))["total"]}
    for phase, logits in (("train_step_tutorial_recipe", "all"), ("train_step_label_position_logits", "label"))}).T
run_check["relative error"] = (run_check["estimated GiB"] - run_check["measured GiB"]) / run_check["measured GiB"]
run_error = float(run_check["relative error"].abs().max())
assert run_error < 0.10, run_check
run_check.round(4)

# %% [markdown]
# A formula is only as good as its least-tested branch. `python -m benchmarks.gpu_memory` measured one
# Llama-3-8B step per branch (micro-batches of 4 to 32, both losses, checkpointing off and on, padding,
# 8-bit AdamW, fp32 upcast); the figure shows the unpadded AdamW steps, the table all of them.

# %%
branch_errors = {}
for name in dict.fromkeys(r["file"] for r in validation["branches"]):  # one gpu_grid_<gpu>.json per GPU
    grid = {"grid": [r for r in validation["branches"] if r["file"] == name]}
    prov = validation["files"][name]
    branches = pd.DataFrame(grid["grid"]).set_index("step").rename(columns={"measured_gib": "measured GiB",
                                                                             "estimated_gib": "estimated GiB"})
    branches["relative error"] = (branches["estimated GiB"] - branches["measured GiB"]) / branches["measured GiB"]
    branches["seconds per step"] = branches["step_s"]
    branches = branches[["measured GiB", "estimated GiB", "relative error", "seconds per step"]]
    branch_errors[name] = float(branches["relative error"].abs().max())
    assert branch_errors[name] <= validation["tolerance"]["branches"], branches  # 5%
fig = plots.measured_branches(grid, branches, title=f"Llama-3-8B training steps on an {prov['gpu']}")
plots.show(fig, "05_measured_branches")
branches.round(3)

# %% [markdown]
# Every branch lands within a few percent, slightly low. Checkpointing cuts the peak by a third at micro-batch 4, by more at larger
# batches, and
# lengthens the step (backward runs each block's forward again). The last row is peft's
# `prepare_model_for_kbit_training`, which most QLoRA recipes call and these notebooks do not: it casts
# the embeddings, norms and LM head to fp32, and the fp32 hidden states they hand on grow the activations too.

# %%
plain, upcast = branches.loc[["batch 8, tutorial loss", "batch 8, tutorial loss, fp32 upcast"], "measured GiB"]
upcast_weights = memory.estimate_training_memory(LLAMA3_8B_CONFIG, **base)["weights_16bit"]  # 2 -> 4 bytes: as much again
print(f"tutorial's step, batch 8: {plain:.2f} GiB; after prepare_model_for_kbit_training: {upcast:.2f} GiB "
      f"(+{upcast - plain:.2f} GiB, of which {upcast_weights:.2f} for the weights)")

# %% [markdown]
# ## 7. What fits a T4
#
# **One rule for the whole suite** (`memory.fits`): a step fits a GPU when its estimated peak plus
# `memory.HEADROOM_GIB` is at most the GPU's capacity minus its CUDA context. The headroom is for
# the reserved but unused blocks that section 2's fragmentation leaves; the shipped measurements show
# how much the allocator reserved beyond the tutorial step's peak. The full profile decides gradient
# checkpointing with this rule, for its micro-batch of 8 with the label-position loss.

# %%
h200 = memory.load_measurements(memory.MEASURED / "gpu_measurements_nvidia_h200.json")["phases"]["train_step_tutorial_recipe"]
print(f"HEADROOM_GIB = {memory.HEADROOM_GIB}; reserved beyond the tutorial step's peak: H200 {h200['reserved'] - h200['peak']:.2f} "
      f"GiB; H100 (driver's count - peak - context) {h100['train_step_tutorial_recipe']['smi'] - h100['train_step_tutorial_recipe']['peak'] - contexts['H100 80 GB']:.2f} GiB")
t4_spec = memory.GPUS["T4 16 GB"]
t4_steps = {"the tutorial's step (fp16, 8-bit AdamW)": dict(logits="all", optimizer="adamw8bit"),
            "the full profile's step (fp16, label-position logits)": dict(logits="label")}
for name, knobs in t4_steps.items():
    peak = memory.estimate_training_memory(LLAMA3_8B_CONFIG, **base, dtype=torch.float16,
                                           workspace_mib=t4_spec["workspace_mib"], **knobs)["total"]
    verdict = memory.fits(peak, t4_spec["capacity_gib"], contexts["T4 16 GB"])
    print(f"{name}: {peak:.2f} GiB + {memory.HEADROOM_GIB} headroom vs {budgets['T4 16 GB']:.2f} GiB for tensors: "
          f"{'fits' if verdict else 'does not fit'} ({budgets['T4 16 GB'] - peak:.2f} GiB left)")
t4_peak = peak  # the full profile's step: it decides checkpointing
t4_tutorial_peak = memory.estimate_training_memory(LLAMA3_8B_CONFIG, **base, dtype=torch.float16, optimizer="adamw8bit",
                                                   workspace_mib=t4_spec["workspace_mib"])["total"]

# %% [markdown]
# By the rule the Llama 3 tutorial's step does not fit: it leaves less than the headroom. It ran nonetheless,
# just: its driver's count, 14.68 of 14.75, is that step with the allocator holding all it could. The
# label-position step fits with room, so the full profile does not checkpoint on a T4, as the tutorial
# did not. Bigger micro-batches, with plain AdamW (so the tutorial's row sits a little above its 8-bit-AdamW
# step; estimated peak in GiB, and the T4 verdict):

# %%
recipes = {"tutorial (all logits)": {"logits": "all"}, "label logits": {"logits": "label"},
           "label logits + checkpointing": {"logits": "label", "grad_checkpointing": True}}
peaks = pd.DataFrame({name: {b: memory.estimate_training_memory(LLAMA3_8B_CONFIG, batch_size=b, seq_len=86,
                             dtype=torch.float16, workspace_mib=t4_spec["workspace_mib"], **kw)["total"]
                             for b in (8, 16, 32)} for name, kw in recipes.items()}).rename_axis("micro-batch")
peaks.map(lambda gib: f"{gib:.2f} " + ("fits" if memory.fits(gib, t4_spec["capacity_gib"], contexts["T4 16 GB"]) else "no"))

# %% [markdown]
# Checkpointing is what changes the picture: the activations of 32 blocks no longer pile up, and four
# times the tutorial's micro-batch fits. Every GPU against every knob of section 1, GiB left after the
# headroom (negative: does not fit):

# %%
left = pd.DataFrame({gpu: {name: budgets[gpu] - memory.HEADROOM_GIB - memory.estimate_training_memory(
    LLAMA3_8B_CONFIG, **{**base, **knobs}, workspace_mib=spec["workspace_mib"])["total"] for name, knobs in variants.items()}
    for gpu, spec in memory.GPUS.items()})
fig = plots.fits_heatmap(left, title=f"GiB left after a training step and the {memory.HEADROOM_GIB} GiB headroom")
plots.show(fig, "05_fits_heatmap")


# %% [markdown]
# **8-bit AdamW** stores Adam's two moments in 8 bits (one fp32 scale per 256 values; tensors under
# 4,096 values stay fp32). Measured here on zero tensors shaped like Llama-3-8B's LoRA weights:

# %%
def adam_state_mib(shapes, optimizer_class) -> float:
    """MiB of optimizer state for zero weights of these shapes (each storage counted once)."""
    params = [torch.nn.Parameter(torch.zeros(shape)) for shape in shapes]
    opt = optimizer_class(params, lr=profile.lr)
    if hasattr(opt, "init_state"):  # bitsandbytes creates its state here (its step on a CPU is slow)
        for i, p in enumerate(params):
            opt.init_state(opt.param_groups[0], p, 0, i)
    else:
        for p in params:
            p.grad = torch.zeros_like(p)
        opt.step()
    return sum({t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for p in params
                for t in opt.state[p].values() if torch.is_tensor(t) and t.numel() > 1}.values()) / MIB


lora_shapes = [s for _ in range(32) for out_f, in_f in shapes.values() for s in ((profile.lora_r, in_f), (out_f, profile.lora_r))]
adam_mib = {name: adam_state_mib(lora_shapes, cls) for name, cls in (("AdamW", torch.optim.AdamW), ("AdamW8bit", bnb.optim.AdamW8bit))}
saving = memory.estimate_training_memory(LLAMA3_8B_CONFIG, **base)["optimizer_state"] - memory.estimate_training_memory(
    LLAMA3_8B_CONFIG, **base, optimizer="adamw8bit")["optimizer_state"]
print(f"measured: {adam_mib['AdamW']:.0f} MiB -> {adam_mib['AdamW8bit']:.0f} MiB, saving "
      f"{(adam_mib['AdamW'] - adam_mib['AdamW8bit']) / 1024:.3f} GiB; the estimator: {saving:.3f} GiB")
assert abs((adam_mib["AdamW"] - adam_mib["AdamW8bit"]) / 1024 - saving) < 0.01

# %% [markdown]
# A tenth of a GiB: LoRA has little optimizer state to shrink. Try any setting with the sliders (in
# Jupyter or Colab; a rendered notebook shows the defaults):

# %%
plots.memory_explorer(LLAMA3_8B_CONFIG, budgets)

# %% [markdown]
# This notebook's headline numbers, which `make run` prints:

# %%
results.record("measured_phases_mib", measured.to_dict(orient="index"))
results.record("nf4_8b_weights_gib", nf4_8b_weights_gib)
results.record("estimator_max_rel_error", round(max_rel_error, 4))
results.record("estimator_rel_error_by_phase", h100_check["relative error"].round(4).to_dict())
results.record("estimator_max_rel_error_this_run", round(run_error, 4))
for name, error in branch_errors.items():
    results.record(f"branch_max_rel_error_{name.removesuffix('.json')}", round(error, 4))
results.record("t4_tutorial_step_estimated_gib", round(t4_tutorial_peak, 3))
_ = results.record("h100_tutorial_step_estimated_gib", round(h100_check.loc["train_step_tutorial_recipe", "estimated_gib"], 3))

# %%
course.finish("05_gpu_memory", profile)  # the time taken against the plan; the model loads checked

# %% [markdown]
# ## Summary
#
# - `nvidia-smi` counts tensors + PyTorch's cache + the CUDA context; `max_memory_allocated` counts the
#   tensors at the peak. Out of memory also depends on fragmentation, so a step needs headroom.
# - Llama-3-8B in NF4 is 5.6 GiB: 4.5 bits per projection weight, 16 bits for the embedding and LM
#   head. "Parameters × half a byte" forgets both the scales and the 16-bit layers.
# - A step adds activations (6.8 GiB at 8 × 86 tokens) and, with logits at every position, 1.15 GiB of
#   logits; each term is a byte count, and together they predict every measured phase within a few percent.
# - Label-position logits change no gradient and save memory and compute; checkpointing saves the most
#   memory for more time; 8-bit Adam and double quantization save little for LoRA.
# - One rule decides "fits": the estimated peak plus headroom against capacity minus the (assumed, for
#   a T4) CUDA context. On a T4, micro-batch 8 with the label-position loss fits without checkpointing.
#
# ## Exercises
#
# **1. The largest batch on a free T4.** With label-position logits, gradient checkpointing, 8-bit
# AdamW and fp16, padded 86-token batches: what is the largest batch size that fits the T4 by the
# suite's rule? *Hint:* loop over batch sizes with `memory.estimate_training_memory(...,
# workspace_mib=t4_spec["workspace_mib"])` and `memory.fits(total, t4_spec["capacity_gib"], contexts["T4 16 GB"])`.

# %%
t4_max_batch = None  # your answer: an int

# %%
if t4_max_batch is None:
    print("Exercise 1 not answered yet: set t4_max_batch.")
else:
    lean_t4 = dict(seq_len=86, logits="label", grad_checkpointing=True, optimizer="adamw8bit", dtype=torch.float16,
                   workspace_mib=t4_spec["workspace_mib"])

    def fits(b):
        peak = memory.estimate_training_memory(LLAMA3_8B_CONFIG, batch_size=b, **lean_t4)["total"]
        return memory.fits(peak, t4_spec["capacity_gib"], contexts["T4 16 GB"])

    assert fits(t4_max_batch) and not fits(t4_max_batch + 1), "not the largest batch that fits"
    print(f"Right: {t4_max_batch} sequences per step, against the tutorial's 8.")

# %% [markdown]
# **2. The price of LoRA dropout.** In evaluation mode dropout does nothing, so its masks are not
# saved. Count the saved tensors of one forward pass of `model` in `model.eval()` mode as in section 5,
# and give how many MiB fewer are saved than in training mode. *Hint:* reuse `keep` and `saved` (empty
# it first); the estimator's answer is the difference between `lora_dropout=0.05` and `lora_dropout=0.0`.

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
# **3. Llama-3-70B.** Its config differs from Llama-3-8B's in `hidden_size` (8,192), `intermediate_size`
# (28,672), `num_hidden_layers` (80) and `num_attention_heads` (64). Compute `llama70b_nf4_gib`, its NF4
# footprint with double quantization in GiB. Does it fit on a 40 GB A100 (39.4 GiB), before a single
# activation? *Hint:* `quant.predicted_table({**LLAMA3_8B_CONFIG, ...}, double_quant=True)`, then `quant.total_bytes`.

# %%
llama70b_nf4_gib = None  # your answer: a float, in GiB

# %%
if llama70b_nf4_gib is None:
    print("Exercise 3 not answered yet: set llama70b_nf4_gib.")
else:
    assert 36.5 < llama70b_nf4_gib < 37.1, f"{llama70b_nf4_gib:.2f} GiB: NF4 projections, bf16 for the rest, double quant?"
    print(f"Right: {llama70b_nf4_gib:.2f} GiB of weights leaves about {39.4 - llama70b_nf4_gib:.1f} GiB of a 40 GB card "
          "for activations; without double quantization (+3 GiB of scales) the weights alone would not fit.")
