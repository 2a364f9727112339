"""Memory of 4-bit LoRA fine-tuning: measured per phase, and predicted from the config (notebook 5).

Three different numbers get called "GPU memory used" (notebook 5, section 2):

* **allocated** (``torch.cuda.memory_allocated``, peak: ``max_memory_allocated``): bytes of live tensors.
* **reserved** (``torch.cuda.memory_reserved``): what PyTorch's caching allocator holds from the driver,
  allocated plus freed blocks it keeps for reuse.
* **driver** (``torch.cuda.mem_get_info``, ``nvidia-smi``): reserved plus the CUDA context (kernels,
  library handles) and anything else on the GPU. The Llama 3 tutorial's figures are of this kind.

:func:`estimate_training_memory` predicts the peak of *allocated* during a training step from the
architecture alone, one commented formula per component; section 5 derives each term. Its check
against every shipped GPU measurement lives in ``benchmarks/memory_validation.py``, which writes the
table notebook 5 shows (:data:`VALIDATION`).
"""

from __future__ import annotations

import json
import math
import weakref
from collections.abc import Iterable, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from .models import LLAMA_PROJECTIONS as PROJECTIONS
from .paths import MEASUREMENTS as MEASURED
from .quant import llama_shapes, predicted_table

GIB, MIB = 2**30, 2**20
#: The Llama 3 tutorial's few-shot CoLA prompt is 86 Llama 3 tokens; its figures are for batches of 8.
TUTORIAL_SEQ_LEN = 86
#: The reference measurement (H100), in the folder of every shipped measurement (package data).
MEASUREMENTS = MEASURED / "gpu_measurements.json"
#: The estimator against every shipped measurement, per phase and per measured branch (notebook 5, section 6);
#: ``python -m benchmarks.memory_validation`` writes it from the files next to it.
VALIDATION = MEASURED / "estimator_validation.json"
#: Memory visible to CUDA (GiB, about what ``torch.cuda.get_device_properties(0).total_memory`` reports;
#: the T4 figure is the tutorial's) and PyTorch's default cuBLAS workspace per handle (MiB): 32 on
#: Hopper, ``:4096:2:16:8`` = 8.125 on older GPUs.
GPUS = {gpu: {"capacity_gib": capacity, "workspace_mib": workspace} for gpu, capacity, workspace in (
    ("T4 16 GB", 14.75, 8.125), ("L4 24 GB", 22.0, 8.125), ("A100 40 GB", 39.4, 8.125),
    ("A100 80 GB", 79.2, 8.125), ("H100 80 GB", 79.2, 32.0))}


#: The suite's one rule for "fits" (notebook 5, section 7): a step fits a GPU when its estimated peak of allocated
#: tensors plus HEADROOM_GIB is at most the GPU's capacity minus its CUDA context. The headroom is for what the
#: peak leaves out, the allocator's reserved but unused (fragmented) blocks: at the tutorial's step 0.35 GiB (H200)
#: and 0.47 GiB (H100) above the peak.
HEADROOM_GIB = 0.5


def fits(peak_gib: float, capacity_gib: float, context_gib: float) -> bool:
    """Whether a step whose estimated peak is ``peak_gib`` fits a GPU: peak + :data:`HEADROOM_GIB` <= capacity - context."""
    return peak_gib + HEADROOM_GIB <= capacity_gib - context_gib


def fits_in_memory(nbytes: int, device: str) -> bool:
    """Whether a model of ``nbytes`` of weights can be loaded and scored in the GPU's free memory.

    Scoring needs room beyond the weights (activations, a batch's logits: about 1 GiB for Llama 3 at
    16 prompts of 86 tokens), so the weights may use 80% of the free memory; :func:`memory.fits` adds
    notebook 5's headroom on top. On the CPU the answer is yes: the tiny model is small.
    """
    free_gib = torch.cuda.mem_get_info()[0] / 2**30 if device == "cuda" else 0.0  # free memory: net of the context
    return device != "cuda" or fits(1.25 * nbytes / 2**30, free_gib, 0.0)


def cuda_context_gib(data: Mapping | None = None) -> dict[str, float]:
    """GiB the driver counts beyond the tensors right after loading, per GPU of :data:`GPUS` (notebook 5).

    The CUDA context (kernels, library handles) plus the allocator's first cache: the budget for
    tensors is a GPU's capacity minus this. H100: the shipped measurement's driver's count minus its
    allocated bytes. T4: the tutorial's driver's count after loading minus the same allocated bytes
    (the loaded 4-bit model has the same tensors on any GPU). GPUs without a figure of their own get
    the larger of the two, a cautious budget.
    """
    data = load_measurements() if data is None else data
    loaded = data["phases"]["model_loaded_4bit"]
    known = {"H100 80 GB": loaded["smi"] - loaded["allocated"]}
    if "tutorial_T4_figures_GB" in data:  # the reference file carries the tutorial's T4 figures
        known["T4 16 GB"] = data["tutorial_T4_figures_GB"]["model"] - loaded["allocated"]
    return {gpu: known.get(gpu, max(known.values())) for gpu in GPUS}


def cublas_workspace_mib(device: str) -> float:
    """PyTorch's default cuBLAS workspace per thread on this machine's GPU (0 on the CPU)."""
    return 0.0 if device != "cuda" else 32.0 if torch.cuda.get_device_capability()[0] >= 9 else 8.125


COMPONENTS = ("quantized_weights", "weights_16bit", "lora_weights", "gradients", "optimizer_state",
              "activations", "logits", "workspace")


def _sizes(config, batch_size: int, seq_len: int, lora_r: int, lora_targets, dtype) -> SimpleNamespace:
    """The sizes the formulas use: T tokens, H hidden, M MLP width, V vocabulary, c bytes per compute value."""
    cfg = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    layer0 = {k.split(".")[-2]: v for k, v in llama_shapes(cfg).items()  # ValueError if not a Llama config
              if k.startswith("model.layers.0.") and k.endswith("_proj.weight")}  # projection: (out, in)
    if batch_size < 1 or seq_len < 1 or lora_r < 0:
        raise ValueError(f"Need batch_size >= 1, seq_len >= 1, lora_r >= 0; got {batch_size}, {seq_len}, {lora_r}.")
    targets = PROJECTIONS if lora_targets == "all-linear" else tuple(lora_targets)
    if not targets or set(targets) - set(PROJECTIONS):
        raise ValueError(f"lora_targets must be 'all-linear' or some of {PROJECTIONS}, got {lora_targets!r}.")
    heads, H = cfg["num_attention_heads"], cfg["hidden_size"]
    hd, kv_heads = cfg.get("head_dim") or H // heads, cfg.get("num_key_value_heads") or heads
    z = SimpleNamespace(cfg=cfg, V=cfg["vocab_size"], H=H, M=cfg["intermediate_size"], L=cfg["num_hidden_layers"],
                        heads=heads, kv_heads=kv_heads, hd=hd, q=heads * hd, kv=kv_heads * hd, B=batch_size,
                        S=seq_len, T=batch_size * seq_len, r=lora_r, targets=targets,
                        c=torch.empty((), dtype=getattr(torch, dtype) if isinstance(dtype, str) else dtype).element_size())
    z.inputs = {t: shape[1] for t, shape in layer0.items()}
    z.lora_numels = [lora_r * n for t in targets for n in layer0[t]] * z.L  # A (r x in) and B (out x r) per block
    return z


def _weights(z, quant: str | None, double_quant: bool) -> tuple[float, float]:
    """(4-bit, 16-bit) bytes, from notebook 3's per-parameter table (:func:`quant.predicted_table`)."""
    if quant not in ("nf4", "fp4", None):
        raise ValueError(f"quant must be 'nf4', 'fp4' or None (16-bit weights), got {quant!r}.")
    table = predicted_table(z.cfg, dtype={2: torch.bfloat16, 4: torch.float32}[z.c], quantize=quant is not None,
                            double_quant=double_quant)
    stored = table["bytes"] + table["state_bytes"]  # NF4 and FP4 store the same: 4 bits + the block scales
    return float(stored[table["quantized"]].sum()), float(stored[~table["quantized"]].sum())


def _optimizer_bytes(numels: Iterable[int], optimizer: str | None) -> float:
    """Optimizer state for the LoRA matrices."""
    if optimizer not in ("adamw", "adamw8bit", "sgd", None):  # plain SGD (no momentum) keeps nothing
        raise ValueError(f"optimizer must be 'adamw', 'adamw8bit' or 'sgd', got {optimizer!r}.")
    if optimizer == "adamw8bit":  # bitsandbytes: two uint8 states + one fp32 scale per 256 values each;
        return float(sum(2 * n + 8 * math.ceil(n / 256) if n >= 4096 else 8 * n for n in numels))  # small ones: fp32
    return 8.0 * sum(numels) if optimizer == "adamw" else 0.0  # AdamW: exp_avg and exp_avg_sq, fp32 like LoRA's


def _block_activations(z, mask: int, dropout: float, padding: bool, first: bool = False) -> float:
    """Bytes autograd keeps from one decoder block's forward until its backward.

    ``mask``: bytes per dropout-mask value (CUDA keeps a bool mask, the CPU an fp32 noise tensor).
    ``first``: block 0 reads the embedding output, which needs no gradient, so its first norm and
    the dropout masks of the q/k/v adapters are not kept.
    """
    T, H, M, c = z.T, z.H, z.M, z.c
    total = (1 if first else 2) * (4 * T * H + 4 * T)  # each RMSNorm keeps its fp32 input and 1/rms per token
    total += c * T * (2 * z.q + 2 * z.kv)  # SDPA keeps query (after RoPE), key, value (also the KV cache), output
    total += 4 * z.B * z.heads * z.S  # + one fp32 log-sum-exp per head and token
    if padding:  # with a padding mask transformers repeats K and V to all heads: SDPA keeps the copies and the mask
        total += (2 * c * T * z.q if z.kv_heads != z.heads else 0) + c * z.B * z.S * z.S
    total += 3 * c * T * M  # SwiGLU keeps gate(x) for SiLU's backward, SiLU(gate(x)) and up(x) for the product
    shared = {"k_proj": "q_proj", "v_proj": "q_proj", "up_proj": "gate_proj"}  # projections that read the same x
    for name in z.targets:  # LoRA path: x -> fp32 copy -> dropout -> A -> B
        n_in = z.inputs[name]
        if dropout > 0:  # A keeps its fp32 (dropped-out) input, dropout its mask
            total += (4 + (0 if first and name in ("q_proj", "k_proj", "v_proj") else mask)) * T * n_in
        elif c != 4 or (name != "o_proj" and shared.get(name) not in z.targets):  # A keeps an fp32 copy of x per
            total += 4 * T * n_in  # adapter in 16-bit compute; in fp32, x itself: shared by q/k/v, by gate/up, and
            # for o_proj it is SDPA's output, already kept
        total += 4 * T * z.r  # B keeps A's output: r fp32 values per token
    return total


def estimate_training_memory(
    config, *, batch_size: int, seq_len: int, quant: str | None = "nf4", double_quant: bool = False, lora_r: int = 8,
    lora_targets="all-linear", optimizer: str = "adamw", grad_checkpointing: bool = False, logits: str = "all",
    dtype=torch.bfloat16, lora_dropout: float = 0.05, padding: bool = True, grad_accum_steps: int = 1,
    hold_logits: bool = True, device: str = "cuda", workspace_mib: float | None = None, upcast: bool = False,
) -> dict[str, float]:
    """GiB per component at the peak of one training step; ``total`` predicts ``max_memory_allocated``.

    Derived and checked in notebook 5, sections 5-6. ``logits="label"``: the LM head runs only at the
    position that predicts the label. ``dtype`` is the compute dtype; LoRA weights, gradients and
    optimizer state are fp32 (peft's default). ``padding``: the batch carries a padding mask.
    ``grad_accum_steps > 1`` keeps earlier micro-batches' gradients at the peak. ``hold_logits``: the
    caller keeps the model's output (the tutorial's ``result.logits``) through backward. ``device="cpu"``
    models PyTorch's CPU kernels. ``workspace_mib``: cuBLAS workspace per thread (default: Hopper's).
    ``upcast``: peft's ``prepare_model_for_kbit_training`` was called, so embeddings, norms and LM head
    are fp32 and so are the hidden states they hand on; estimated as fp32 compute throughout (the 4-bit
    matmuls still run in ``dtype``, so this errs a little; an H200 measured 3% more at batch 8).
    """
    if logits not in ("all", "label"):
        raise ValueError(f"logits must be 'all' (every position, the tutorial) or 'label', got {logits!r}.")
    z = _sizes(config, batch_size, seq_len, lora_r, lora_targets, torch.float32 if upcast else dtype)
    if lora_r < 1:
        raise ValueError("Training needs something to train: lora_r must be >= 1 (the base model is frozen).")
    T, H, M, V, c = z.T, z.H, z.M, z.V, z.c
    N = T if logits == "all" else z.B  # positions that go through the LM head
    mask = 1 if device == "cuda" else 4  # bytes per dropout-mask value
    ws = (32.0 if device == "cuda" else 0.0) if workspace_mib is None else workspace_mib
    parts = {
        **dict(zip(("quantized_weights", "weights_16bit"), _weights(z, quant, double_quant))),
        "lora_weights": 4.0 * sum(z.lora_numels),  # fp32 A and B
        # zero_grad(set_to_none=True) frees them after each step; accumulation carries them into the next forward
        "gradients": 4.0 * sum(z.lora_numels) if grad_accum_steps > 1 else 0.0,
        "optimizer_state": _optimizer_bytes(z.lora_numels, optimizer),
        "workspace": 2 * ws * MIB,  # one cuBLAS workspace per thread doing matmuls: forward's and autograd's
    }
    block = _block_activations(z, mask, lora_dropout, padding)
    outside = 4 * T * H + 4 * T + 2 * c * z.S * z.hd  # the final norm's fp32 input and 1/rms; RoPE's cos and sin
    if grad_checkpointing:  # each block keeps only its input; backward recomputes one block at a time
        kept, recomputed = z.L * c * T * H + outside, block
    else:
        kept, recomputed = (z.L - 1) * block + _block_activations(z, mask, lora_dropout, padding, True) + outside, 0
    # Moment 1, the loss's backward: logits (compute dtype, held by the output), the fp32 log-softmax the loss
    # keeps, and in backward its incoming gradient and its result, both fp32 (+ int64 targets). In 16-bit
    # compute, logits.float() is a copy freed before backward; in fp32 compute it is the logits themselves.
    at_loss = (kept, (c * hold_logits + 12) * N * V + 8 * N, 0.0)
    # Moment 2, backward of the last block's down_proj: its weight dequantized to the compute dtype, the input
    # gradients of the base and LoRA branches and the incoming gradient; LoRA's saved input and mask are freed.
    down = "down_proj" in z.targets
    base = (c * H * M if quant else 0) + (1 + down) * c * T * M + c * T * H - down * ((4 + mask) * T * M + 4 * T * z.r)
    lora = down * (4 * T * M + c * T * H)  # earlier: LoRA's fp32 input gradient while its saved input is held
    in_block = (kept + recomputed, c * N * V * hold_logits, max(base, lora, 0))
    activations, logit_bytes, transient = max(at_loss, in_block, key=sum)
    parts.update(activations=activations, logits=logit_bytes, workspace=parts["workspace"] + transient)
    out = {k: parts[k] / GIB for k in COMPONENTS}
    out["total"] = sum(out.values())
    return out


# --- Measuring -------------------------------------------------------------------------------------------


class TensorBytes(TorchDispatchMode):
    """Live and peak bytes of CPU tensors: a stand-in for the CUDA allocator's statistics (notebook 5, section 3).

    Every tensor an operation creates inside ``with tracker:`` is counted until its storage is freed;
    :meth:`track` adds tensors that existed before (a model's weights, an optimizer's state).
    No allocator rounding and no cache: on the CPU, "allocated" is all there is to count.
    """

    def __init__(self):
        super().__init__()
        self._live, self.now, self.peak = {}, 0, 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self._add_all(out := func(*args, **(kwargs or {})))
        return out

    def _add_all(self, obj) -> None:
        """Count every tensor in ``obj`` (nested lists, tuples, dicts) whose storage is not counted yet."""
        for t in tree_flatten(obj)[0]:
            if not isinstance(t, torch.Tensor) or t.device.type == "meta":
                continue
            storage = t.untyped_storage()
            key, size = storage.data_ptr(), storage.nbytes()
            if size and key not in self._live:
                self._live[key] = size
                self.now += size
                self.peak = max(self.peak, self.now)
                weakref.finalize(storage, self._free, key)  # runs when the storage's memory is released

    def _free(self, key) -> None:
        self.now -= self._live.pop(key, 0)

    def track(self, *holders) -> None:
        """Count the tensors of modules (parameters, buffers, gradients, 4-bit scales), optimizers or tensors."""
        for h in holders:
            if isinstance(h, torch.nn.Module):
                for t in (*h.parameters(), *h.buffers()):
                    self._add_all([t, t.grad])
                    qs = getattr(t, "quant_state", None)  # 4-bit scales, and their own when double-quantized
                    self._add_all([getattr(p, n, None) for p in (qs, getattr(qs, "state2", None)) for n in ("absmax", "code", "offset")])
            elif isinstance(h, torch.optim.Optimizer):
                self._add_all([list(s.values()) for s in h.state.values()])
            else:
                self._add_all(h)


class MemoryMeter:
    """GiB per phase, the same way on both profiles (notebook 5, sections 3-4).

    On a GPU: ``allocated`` and ``peak`` (``memory_allocated``/``max_memory_allocated``, tensors),
    ``reserved`` (the caching allocator's), ``smi`` (``mem_get_info`` total - free: the driver's view,
    what nvidia-smi shows) and ``capacity``. On the CPU: ``allocated`` and ``peak`` from :class:`TensorBytes`.
    """

    def __init__(self, device: str):
        self.device, self.phases, self._tracker = device, {}, None

    def track(self, *holders) -> None:
        """CPU: count tensors made outside the phase (e.g. ``meter.track(model, optimizer)``); GPU: nothing to do."""
        if self._tracker is not None:
            self._tracker.track(*holders)

    @contextmanager
    def phase(self, name: str, *holders):
        """Measure the code inside ``with meter.phase(name, model):`` as one phase."""
        if self.device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            yield self
            torch.cuda.synchronize()
            free, total = torch.cuda.mem_get_info()
            self.phases[name] = {k: v / GIB for k, v in dict(
                allocated=torch.cuda.memory_allocated(), peak=torch.cuda.max_memory_allocated(),
                reserved=torch.cuda.memory_reserved(), smi=total - free, capacity=total).items()}
            return
        self._tracker = tracker = TensorBytes()
        tracker.track(*holders)
        try:
            with tracker:
                yield self
        finally:
            self._tracker = None
        self.phases[name] = {"allocated": tracker.now / GIB, "peak": tracker.peak / GIB}


def phase_segments(phases: Mapping[str, Mapping[str, float]]) -> list[dict]:
    """Stacked-bar data for :func:`plots.memory_phases`: one row per (phase, segment, GiB), bottom up.

    Uses whichever of allocated / peak / reserved / smi a phase has; missing numbers merge segments.
    """
    rows = []
    for phase, m in phases.items():
        alloc, peak, reserved, smi = (m.get(k) for k in ("allocated", "peak", "reserved", "smi"))
        if alloc is None and peak is None and smi is None:
            raise ValueError(f"Phase {phase!r} has none of allocated, peak, smi: {dict(m)}.")
        parts = [] if alloc is None else [("tensors alive after the phase", alloc)]
        if peak is not None:
            parts.append(("tensors at the peak" if alloc is None else "extra tensors at the peak", peak - (alloc or 0)))
        top = max(alloc or 0, peak or 0)
        if reserved is not None and parts:
            parts.append(("reserved by PyTorch, not in tensors", reserved - top))
            top = max(top, reserved)
        if smi is not None:
            parts.append(("driver's count (tensors, cache, CUDA context)" if not parts else "CUDA context and others"
                          if reserved is not None else "allocator cache + CUDA context", smi - top))
        rows += [{"phase": phase, "segment": s, "GiB": max(v, 0.0)} for s, v in parts]
    return rows


def load_measurements(path: str | Path = MEASUREMENTS) -> dict:
    """One shipped measurement file (default: the reference H100 figures); ``benchmarks/gpu_memory.py`` writes them."""
    return json.loads(Path(path).read_text())  # a FileNotFoundError: reinstall the package (it ships the files)
