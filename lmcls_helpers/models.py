"""Loading the profile's causal LM, in 4-bit NF4 when the profile says so (notebooks 2-6).

The tiny profile goes through the very same ``from_pretrained`` + ``BitsAndBytesConfig`` call
as the 8B model: bitsandbytes quantizes and runs ``Linear4bit`` on the CPU too.
"""

from __future__ import annotations

import gc
import os
import sys
import weakref
from contextlib import contextmanager
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, BitsAndBytesConfig

#: The seven projections of a Llama block: LoRA goes on all of them (QLoRA paper, section 4).
LLAMA_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def bnb_config(profile, quant_type: str = "nf4", double_quant: bool = False) -> BitsAndBytesConfig:
    """4-bit storage, computation in the profile's dtype (bf16/fp16 on GPU, fp32 on CPU)."""
    if quant_type not in ("nf4", "fp4"):
        raise ValueError(f"quant_type must be 'nf4' or 'fp4', got {quant_type!r}.")
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=quant_type,
        bnb_4bit_use_double_quant=double_quant,
        bnb_4bit_compute_dtype=profile.compute_dtype,
    )


def require_bitsandbytes() -> None:
    """Fail early, with the fix, when bitsandbytes cannot be imported."""
    try:
        import bitsandbytes  # noqa: F401
    except Exception as err:  # ImportError, or a broken native library
        raise RuntimeError(
            f"bitsandbytes could not be loaded ({type(err).__name__}: {err}). Install it with "
            "`pip install bitsandbytes` (0.50 or newer also runs 4-bit layers on the CPU)."
        ) from err


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


def _names_holding(model) -> list[str]:
    """Notebook variables that refer to ``model`` or to a peft wrapper around it (for the error message)."""
    names = []
    for name, value in list(vars(sys.modules["__main__"]).items()):
        try:
            base = value.get_base_model() if hasattr(value, "get_base_model") else None
        except Exception:  # an object whose attribute lookup fails is not a peft model
            base = None
        if not name.startswith("_") and (value is model or base is model):
            names.append(name)
    return names


def require_no_live_model() -> None:
    """Refuse to load a second base model while one lives, naming the variables that keep it alive."""
    if _LIVE_MODELS:
        gc.collect()  # a model whose names are all gone may still sit in a reference cycle
    if not _LIVE_MODELS:
        return
    # No local may refer to a live model when we raise: the traceback (kept by IPython) would keep it alive.
    names = sorted({n for m in list(_LIVE_MODELS) for n in _names_holding(m)})
    held = f"held by {', '.join(names)}" if names else "held by an object that still refers to it"
    fix = f"`del {', '.join(names)}`" if names else "`del` every variable that refers to it (a peft model, a list)"
    raise RuntimeError(
        f"A base model is already loaded ({held}), and this profile loads one at a time (two 8B models do not "
        f"fit a T4; LMCLS_ONE_MODEL=1 applies the rule on the CPU). Run {fix}, then "
        "`free_gpu_memory()` (from lmcls_helpers.models), and load again."
    )


@contextmanager
def _quiet_progress(local: bool):
    """No "Loading weights" bar for a local model that loads in a second; a download keeps its bar."""
    from transformers.utils import logging as hf_logging

    if not local:
        yield
        return
    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def load_model(profile, quantize: bool | None = None, quant_type: str = "nf4", double_quant: bool = False,
               auto_class=AutoModelForCausalLM, **from_pretrained_kwargs):
    """The profile's causal LM in eval mode: 4-bit if ``quantize`` (default: the profile's choice).

    The ``shapes`` profile builds the 8B architecture from its config with random weights
    (:func:`random_model`): true-scale memory and speed on any GPU, with no download. On a GPU (or
    with ``LMCLS_ONE_MODEL=1``) it refuses to load while an earlier model is alive
    (:func:`require_no_live_model`). A 401/403 from the hub becomes the steps to get access.
    ``auto_class`` (e.g. ``AutoModelForSequenceClassification``, with ``num_labels=2`` among the extra
    keyword arguments) loads the same base with another head, under the same rules (notebook 7).
    """
    if one_model_at_a_time(profile):
        require_no_live_model()
    quantize = profile.load_in_4bit if quantize is None else quantize
    quantization_config = None
    if quantize:
        require_bitsandbytes()
        quantization_config = bnb_config(profile, quant_type, double_quant)
    if profile.model_config and (auto_class is not AutoModelForCausalLM or from_pretrained_kwargs):
        raise ValueError(f"Profile {profile.name!r} builds a causal LM from its config: it takes no auto_class or "
                         "from_pretrained arguments. Use the 'tiny' or 'full' profile for other heads.")
    if profile.model_config:
        from transformers import LlamaConfig

        config = LlamaConfig(**{k: v for k, v in profile.model_config.items() if k != "model_type"})
        device = "cuda:0" if profile.device == "cuda" else profile.device
        model = random_model(config, dtype=profile.compute_dtype, device=device,
                             quantization_config=quantization_config, seed=profile.seed)
    else:
        kwargs = {"dtype": profile.compute_dtype, **from_pretrained_kwargs}
        if quantization_config is not None:
            kwargs["quantization_config"] = quantization_config
        if profile.device == "cuda":
            kwargs["device_map"] = {"": 0}
        try:
            with _quiet_progress(local=Path(profile.model_id).is_dir()):
                model = auto_class.from_pretrained(profile.model_id, **kwargs)
        except OSError as err:  # transformers wraps the hub's 401/403 in an OSError
            from .hub import explain_hub_error

            explained = explain_hub_error(err, profile.model_id)
            if explained is None:
                raise
            raise explained from err
    keep_cpu_4bit_trainable(model)
    model.eval()
    _LIVE_MODELS.add(model)
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
    device = torch.device(device)
    if quantization_config is not None and not quantization_config.load_in_4bit:
        raise ValueError("random_model builds 4-bit models only: pass bnb_config(profile) (load_in_4bit=True) or None.")
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    if quantization_config is not None:
        import bitsandbytes as bnb
        from transformers.integrations.bitsandbytes import replace_with_bnb_linear

        # Like from_pretrained: the output layer stays in 16 bits (quantizing it hurts quality most).
        replace_with_bnb_linear(model, modules_to_not_convert=["lm_head"], quantization_config=quantization_config)
    std = getattr(config, "initializer_range", 0.02)
    torch.manual_seed(seed)
    for module in model.modules():
        if quantization_config is not None and isinstance(module, bnb.nn.Linear4bit):
            weight = torch.empty(module.out_features, module.in_features, dtype=dtype, device=device).normal_(0.0, std)
            packed = bnb.nn.Params4bit(
                weight, requires_grad=False, quant_type=quantization_config.bnb_4bit_quant_type,
                compress_statistics=quantization_config.bnb_4bit_use_double_quant,
                quant_storage=quantization_config.bnb_4bit_quant_storage, module=module,
            )
            module.weight = packed.to(device)  # .to() quantizes; the 16-bit matrix is freed on return
            del weight, packed
        elif any(t.is_meta for t in (*module.parameters(recurse=False), *module.buffers(recurse=False))):
            module.to_empty(device=device, recurse=False)
            model._init_weights(module)  # embeddings N(0, std), norms 1, rotary frequencies recomputed
    if quantization_config is not None:
        model.is_loaded_in_4bit = True  # what peft checks to wrap Linear4bit layers
        model.is_quantized = True
        model.quantization_method = quantization_config.quant_method
        model.config.quantization_config = quantization_config
    return model


def model_config(profile) -> dict:
    """The architecture as a plain dict (for the memory estimator) without loading weights."""
    if profile.model_config:
        return dict(profile.model_config)
    return AutoConfig.from_pretrained(profile.model_id).to_dict()
