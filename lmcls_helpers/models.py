"""Loading the profile's causal LM, in 4-bit NF4 when the profile says so (notebooks 2-6).

The tiny profile goes through the very same ``from_pretrained`` + ``BitsAndBytesConfig`` call
as the 8B model: bitsandbytes quantizes and runs ``Linear4bit`` on the CPU too.
"""

from __future__ import annotations

import gc
import os
import sys
import weakref
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, BitsAndBytesConfig

#: The seven projections of a Llama block: LoRA goes on all of them (QLoRA paper, section 4).
LLAMA_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def bnb_config(profile, quant_type: str = "nf4", double_quant: bool = False) -> BitsAndBytesConfig:
    """4-bit storage, computation in the profile's dtype (bf16/fp16 on GPU, fp32 on CPU)."""
    if quant_type not in ("nf4", "fp4"):
        raise ValueError(f"quant_type must be 'nf4' or 'fp4', got {quant_type!r}.")
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=quant_type, bnb_4bit_use_double_quant=double_quant,
                              bnb_4bit_compute_dtype=profile.compute_dtype)


def require_bitsandbytes() -> None:
    """Fail early, with the fix, when bitsandbytes cannot be imported."""
    try:
        import bitsandbytes  # noqa: F401
    except Exception as err:  # ImportError, or a broken native library
        raise RuntimeError(f"bitsandbytes could not be loaded ({type(err).__name__}: {err}). Install it with "
                           "`pip install bitsandbytes` (0.50 or newer also runs 4-bit layers on the CPU).") from err


def base_model(model):
    """The causal LM under a peft wrapper, or the model itself."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


#: The base models ``load_model`` returned that are still alive (weak references: they do not keep them alive).
_LIVE_MODELS: weakref.WeakSet = weakref.WeakSet()
_LOADS = {"count": 0}


def load_count() -> int:
    """Base models loaded in this process so far (each notebook's time plan checks its own count)."""
    return _LOADS["count"]


def free_gpu_memory() -> None:
    """What really frees a model after ``del``: collect reference cycles, then return cached GPU blocks.

    ``del model`` removes one name; the weights go only when nothing refers to them, and PyTorch
    modules sit in reference cycles that only the garbage collector breaks. On a GPU, PyTorch then
    keeps the freed blocks reserved for itself until ``empty_cache`` hands them back.
    """
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def one_model_at_a_time(profile) -> bool:
    """True on a GPU (two 4-bit 8B bases do not fit a T4), or anywhere with ``LMCLS_ONE_MODEL=1`` (``make test``)."""
    return profile.device == "cuda" or os.environ.get("LMCLS_ONE_MODEL") == "1"


def require_no_live_model() -> None:
    """Refuse to load a second base model while one lives, naming the variables that keep it alive."""
    gc.collect()  # a model whose names are all gone may still sit in a reference cycle
    if not _LIVE_MODELS:
        return
    # No local may refer to a live model when we raise: the traceback (kept by IPython) would keep it alive.
    def holds(value) -> bool:  # the notebook variable is a live model, or a peft wrapper around one
        try:
            return any(value is m or base_model(value) is m for m in _LIVE_MODELS)
        except Exception:  # an object whose attribute lookup fails is not a peft model
            return False

    names = sorted(n for n, value in list(vars(sys.modules["__main__"]).items()) if not n.startswith("_") and holds(value))
    held = f"held by {', '.join(names)}" if names else "held by an object that still refers to it"
    fix = f"`del {', '.join(names)}`" if names else "`del` every variable that refers to it (a peft model, a list)"
    raise RuntimeError(f"A base model is already loaded ({held}), and this profile loads one at a time (two 8B models "
                       f"do not fit a T4; LMCLS_ONE_MODEL=1 applies the rule on the CPU). Run {fix}, then "
                       "`free_gpu_memory()` (from lmcls_helpers.models), and load again.")


def load_model(profile, quantize: bool | None = None, quant_type: str = "nf4", double_quant: bool = False,
               auto_class=AutoModelForCausalLM, **from_pretrained_kwargs):
    """The profile's causal LM in eval mode: 4-bit if ``quantize`` (default: the profile's choice).

    The ``shapes`` profile builds the 8B architecture from its config with random weights
    (:func:`random_model`): true-scale memory and speed on any GPU, with no download. On a GPU (or
    with ``LMCLS_ONE_MODEL=1``) it refuses to load while an earlier model is alive
    (:func:`require_no_live_model`). A 401/403 from the hub becomes the steps to get access.
    ``auto_class`` (e.g. ``AutoModelForSequenceClassification``, with ``num_labels=2`` among the extra
    keyword arguments) loads the same base with another head, under the same rules (notebook 7).
    A local model loads without transformers' progress bar (it takes a second); a download keeps it.
    """
    from transformers.utils import logging as hf_logging

    if one_model_at_a_time(profile):
        require_no_live_model()
    if quantize := profile.load_in_4bit if quantize is None else quantize:
        require_bitsandbytes()
    quantization_config = bnb_config(profile, quant_type, double_quant) if quantize else None
    if profile.model_config:
        if auto_class is not AutoModelForCausalLM or from_pretrained_kwargs:
            raise ValueError(f"Profile {profile.name!r} builds a causal LM from its config: it takes no auto_class or "
                             "from_pretrained arguments. Use the 'tiny' or 'full' profile for other heads.")
        model = random_model(AutoConfig.for_model(**profile.model_config), dtype=profile.compute_dtype, device="cuda:0" if profile.device == "cuda" else
                             profile.device, quantization_config=quantization_config, seed=profile.seed)
    else:
        kwargs = {"dtype": profile.compute_dtype, "quantization_config": quantization_config,
                  "device_map": {"": 0} if profile.device == "cuda" else None, **from_pretrained_kwargs}
        if quiet := Path(profile.model_id).is_dir() and hf_logging.is_progress_bar_enabled():
            hf_logging.disable_progress_bar()
        try:
            model = auto_class.from_pretrained(profile.model_id, **kwargs)
        except OSError as err:  # transformers wraps the hub's 401/403 in an OSError
            from .hub import explain_hub_error

            if (explained := explain_hub_error(err, profile.model_id)) is None:
                raise
            raise explained from err
        finally:
            if quiet:
                hf_logging.enable_progress_bar()
    keep_cpu_4bit_trainable(model)
    _LIVE_MODELS.add(model.eval())
    _LOADS["count"] += 1
    return model


def keep_cpu_4bit_trainable(model) -> None:
    """Stop bitsandbytes repacking 4-bit weights for CPU inference (bitsandbytes 0.50, AVX512-BF16 CPUs).

    On such a CPU the first eval-mode forward repacks each ``Linear4bit`` (absmax rounded to bf16)
    and from then on its matmul has no backward: LoRA gradients of every earlier layer silently
    become zero once training resumes after a validation (notebook 4 found this). It also makes
    scores depend on the CPU model. Without the repacking, eval and training share one exact path.
    """
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False


@torch.no_grad()
def random_model(config, *, dtype: torch.dtype, device: str | torch.device = "cpu",
                 quantization_config: BitsAndBytesConfig | None = None, seed: int = 0):
    """A causal LM with ``config``'s architecture and random weights, quantized as it is built.

    The skeleton is built on the ``meta`` device (shapes only, no memory). Then each module gets
    real storage on ``device`` one at a time: a projection's random 16-bit matrix exists only until
    bitsandbytes has packed it into 4 bits, so the peak is the model plus one matrix (about 0.1 GiB
    for Llama-3-8B), never the 15 GiB of a 16-bit 8B model. Same modules as ``from_pretrained``
    with a ``BitsAndBytesConfig``, so peft and the memory notebook treat both alike.
    """
    device, q = torch.device(device), quantization_config  # 4-bit (bnb_config) or None
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    if q is not None:
        import bitsandbytes as bnb
        from transformers.integrations.bitsandbytes import replace_with_bnb_linear

        # Like from_pretrained: the output layer stays in 16 bits (quantizing it hurts quality most).
        replace_with_bnb_linear(model, modules_to_not_convert=["lm_head"], quantization_config=q)
    torch.manual_seed(seed)
    for module in model.modules():
        if q is not None and isinstance(module, bnb.nn.Linear4bit):  # .to() quantizes; the 16-bit matrix goes at once
            module.weight = bnb.nn.Params4bit(
                torch.empty(module.out_features, module.in_features, dtype=dtype, device=device).normal_(0.0, config.initializer_range),
                requires_grad=False, quant_type=q.bnb_4bit_quant_type, compress_statistics=q.bnb_4bit_use_double_quant,
                quant_storage=q.bnb_4bit_quant_storage, module=module).to(device)
        elif any(t.is_meta for t in (*module.parameters(recurse=False), *module.buffers(recurse=False))):
            module.to_empty(device=device, recurse=False)
            model._init_weights(module)  # embeddings N(0, initializer_range), norms 1, rotary frequencies recomputed
    if q is not None:  # what peft checks to wrap Linear4bit layers
        model.is_loaded_in_4bit = model.is_quantized = True
        model.quantization_method, model.config.quantization_config = q.quant_method, q
    return model


def llama_config(profile) -> dict:
    """The profile's architecture as a plain dict (for the memory estimator) without loading weights."""
    return dict(profile.model_config) or AutoConfig.from_pretrained(profile.model_id).to_dict()
