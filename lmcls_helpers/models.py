"""Loading the profile's causal LM, in 4-bit NF4 when the profile says so (notebooks 2-6).

The tiny profile goes through the very same ``from_pretrained`` + ``BitsAndBytesConfig`` call
as the 8B model: bitsandbytes quantizes and runs ``Linear4bit`` on the CPU too.
"""

from __future__ import annotations

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


def load_model(profile, quantize: bool | None = None, quant_type: str = "nf4", double_quant: bool = False):
    """The profile's causal LM in eval mode: 4-bit if ``quantize`` (default: the profile's choice).

    The ``shapes`` profile builds the 8B architecture from its config with random weights.
    """
    quantize = profile.load_in_4bit if quantize is None else quantize
    kwargs = {"dtype": profile.compute_dtype}
    if quantize:
        require_bitsandbytes()
        kwargs["quantization_config"] = bnb_config(profile, quant_type, double_quant)
    if profile.device == "cuda":
        kwargs["device_map"] = {"": 0}
    if profile.model_config:
        from transformers import LlamaConfig

        config = LlamaConfig(**{k: v for k, v in profile.model_config.items() if k != "model_type"})
        model = _random_model(config, kwargs)
    else:
        model = AutoModelForCausalLM.from_pretrained(profile.model_id, **kwargs)
    model.eval()
    return model


def _random_model(config, kwargs):
    """The ``shapes`` profile: quantize random weights layer by layer as they are created."""
    from transformers import AutoModelForCausalLM as auto

    torch.manual_seed(0)
    return auto.from_config(config, **{k: v for k, v in kwargs.items() if k != "device_map"})


def model_config(profile) -> dict:
    """The architecture as a plain dict (for the memory estimator) without loading weights."""
    if profile.model_config:
        return dict(profile.model_config)
    return AutoConfig.from_pretrained(profile.model_id).to_dict()
