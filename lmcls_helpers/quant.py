"""4-bit quantization bookkeeping: what a quantized model holds (notebook 3), and what 8B weighs (notebook 5).

The arithmetic itself (absmax, scale, nearest level, pack two codes per byte) is taught cell by
cell in notebook 3, section 2; :func:`quantize_4bit_by_hand` is the tested copy of those cells.
Everything else here is accounting: a parameter table of a loaded model, and the same table
predicted from a config alone (so Llama-3-8B can be weighed without a download; notebook 5, section 3,
checks it against the measurement shipped in ``measurements/``, read by :mod:`lmcls_helpers.memory`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path

import pandas as pd
import torch

from .hub import explain_hub_error
from .models import LLAMA_PROJECTIONS

#: bitsandbytes' default block: 64 weights share one absmax (QLoRA, section 3).
BLOCKSIZE = 64
#: Double quantization quantizes the fp32 absmax values to 8 bits, 256 of them per block.
DQ_BLOCKSIZE = 256


def quantize_4bit_by_hand(weight: torch.Tensor, levels: torch.Tensor, blocksize: int = BLOCKSIZE) -> tuple[torch.Tensor, torch.Tensor]:
    """Blockwise absmax 4-bit quantization, as built in notebook 3, section 2; returns (packed, absmax).

    ``packed`` is uint8 of shape (numel // 2,): the first code of each pair in the high nibble,
    bitsandbytes' order. ``absmax`` is fp32 of shape (numel // blocksize,). ``levels`` are the
    16 values of the data type (``bitsandbytes.functional.get_4bit_type``), in code order.
    The nearest level is found from the midpoints between levels, as bitsandbytes does, so that
    exact ties (common with FP4's simple fractions and bf16 weights) are broken the same way.
    """
    if levels.numel() != 16:
        raise ValueError(f"A 4-bit data type has 16 levels; got {levels.numel()}. Pass get_4bit_type('nf4').")
    if weight.numel() % blocksize or blocksize % 2:
        raise ValueError(f"{weight.numel()} weights do not split into blocks of {blocksize}; pick a block size "
                         "that divides the weight count (every Llama matrix is a multiple of 64).")
    blocks = weight.detach().float().reshape(-1, blocksize)  # (n_blocks, blocksize)
    absmax = blocks.abs().amax(dim=1)  # (n_blocks,)
    scaled = blocks * (1.0 / absmax.clamp(min=1e-38))[:, None]  # bitsandbytes multiplies by the reciprocal
    order = levels.float().argsort()  # FP4's levels are in bit order, not sorted
    midpoints = (levels.float()[order][1:] + levels.float()[order][:-1]) / 2  # (15,) decision boundaries
    codes = order[torch.bucketize(scaled, midpoints)].to(torch.uint8).flatten()  # nearest level; ties go down
    packed = (codes[0::2] << 4) | codes[1::2]
    return packed, absmax


def unpack_codes(packed: torch.Tensor) -> torch.Tensor:
    """Two 4-bit codes out of each byte, high nibble first: (n,) uint8 -> (2n,) uint8 in 0..15."""
    packed = packed.flatten()
    return torch.stack([packed >> 4, packed & 0x0F], dim=1).flatten()


def dequantize_4bit_by_hand(packed: torch.Tensor, absmax: torch.Tensor, levels: torch.Tensor,
                            blocksize: int = BLOCKSIZE) -> torch.Tensor:
    """Undo :func:`quantize_4bit_by_hand`: unpack the nibbles, look up each level, multiply by its block's absmax.

    Returns a flat fp32 tensor; reshape it to the weight's shape.
    """
    values = levels.float()[unpack_codes(packed).long()].reshape(-1, blocksize)
    return (values * absmax.float()[:, None]).flatten()


def _kind(name: str) -> str:
    """Which part of a Llama a parameter belongs to, from its name."""
    parts = (("embed_tokens", "embedding"), ("lm_head", "lm_head"), ("norm", "norm"), (".self_attn.", "attention"),
             (".mlp.", "mlp"))
    return next((kind for key, kind in parts if key in name), "other")


def parameter_table(model: torch.nn.Module) -> pd.DataFrame:
    """One row per parameter: what is stored (shape, dtype, numel, bytes) and how many weights it stands for.

    A 4-bit weight is a flat uint8 tensor holding two codes per byte, so ``numel`` is half of
    ``weights``; its absmax scales are not parameters at all and appear as ``state_bytes``.
    Tied weights (embedding = LM head) appear once, as in ``named_parameters()``.
    """
    rows = []
    for name, param in model.named_parameters():
        state = getattr(param, "quant_state", None)  # the absmax scales (+ their own with double quantization)
        scales = [] if state is None else [state.absmax, *((state.state2.absmax, state.offset) if state.nested else ())]
        rows.append({"name": name, "kind": _kind(name), "shape": tuple(param.shape),
                     "dtype": str(param.dtype).removeprefix("torch."), "numel": param.numel(),
                     "bytes": param.numel() * param.element_size(), "state_bytes": sum(t.nbytes for t in scales),
                     "quantized": state is not None, "weights": param.numel() if state is None else math.prod(state.shape)})
    if not rows:
        raise ValueError("The model has no parameters; pass a loaded model, not its class or config.")
    return pd.DataFrame(rows)


def llama_shapes(config: Mapping) -> dict[str, tuple[int, ...]]:
    """Every parameter of a Llama model with its shape, from the config alone (no weights needed)."""
    c = dict(config)
    missing = [k for k in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads") if k not in c]
    if missing:
        raise ValueError(f"Not a Llama config: missing {missing}. Pass e.g. profiles.LLAMA3_8B_CONFIG or model.config.to_dict().")
    hidden, inter, vocab, heads = c["hidden_size"], c["intermediate_size"], c["vocab_size"], c["num_attention_heads"]
    head_dim = c.get("head_dim") or hidden // heads
    q, kv = heads * head_dim, (c.get("num_key_value_heads") or heads) * head_dim
    layer = {"self_attn.q_proj.weight": (q, hidden), "self_attn.k_proj.weight": (kv, hidden),
             "self_attn.v_proj.weight": (kv, hidden), "self_attn.o_proj.weight": (hidden, q),
             "mlp.gate_proj.weight": (inter, hidden), "mlp.up_proj.weight": (inter, hidden),
             "mlp.down_proj.weight": (hidden, inter), "input_layernorm.weight": (hidden,),
             "post_attention_layernorm.weight": (hidden,)}
    shapes = {"model.embed_tokens.weight": (vocab, hidden)}
    for i in range(c["num_hidden_layers"]):
        shapes.update({f"model.layers.{i}.{k}": v for k, v in layer.items()})
    shapes["model.norm.weight"] = (hidden,)
    if not c.get("tie_word_embeddings", False):
        shapes["lm_head.weight"] = (vocab, hidden)
    return shapes


def predicted_table(config: Mapping, dtype: torch.dtype = torch.bfloat16, quantize: bool = True,
                    double_quant: bool = False, blocksize: int = BLOCKSIZE) -> pd.DataFrame:
    """The :func:`parameter_table` a model with this config would have, computed without loading it.

    With ``quantize``, the seven projections of each block are 4-bit (half a byte per weight,
    one fp32 absmax per ``blocksize`` weights, or with ``double_quant`` one uint8 per block plus
    one fp32 per 256 blocks and one fp32 offset per matrix); everything else stays in ``dtype``.
    """
    size = torch.empty((), dtype=dtype).element_size()
    rows = []
    for name, shape in llama_shapes(config).items():
        n = math.prod(shape)
        quantized = quantize and name.split(".")[-2] in LLAMA_PROJECTIONS  # what transformers makes Linear4bit
        if quantized:  # half a byte per weight, rounded up; double quantization: 1 byte per block + fp32 per 256 + offset
            blocks = -(-n // blocksize)
            state = blocks + 4 * -(-blocks // DQ_BLOCKSIZE) + 4 if double_quant else 4 * blocks
            row = {"shape": (-(-n // 2), 1), "dtype": "uint8", "numel": -(-n // 2), "bytes": -(-n // 2), "state_bytes": state}
        else:
            row = {"shape": shape, "dtype": str(dtype).removeprefix("torch."), "numel": n, "bytes": n * size, "state_bytes": 0}
        rows.append({"name": name, "kind": _kind(name), **row, "quantized": quantized, "weights": n})
    return pd.DataFrame(rows)


def by_kind(table: pd.DataFrame) -> pd.DataFrame:
    """Sum a parameter table per part of the model (embedding, attention, mlp, norm, lm_head), plus a total row."""
    numbers = ["weights", "numel", "bytes", "state_bytes"]
    summary = table.groupby("kind", sort=False)[numbers].sum()
    summary.loc["total"] = summary.sum()
    summary.insert(0, "stored as", table.groupby("kind", sort=False)["dtype"].agg(lambda d: "/".join(sorted(set(d)))))
    summary.loc["total", "stored as"] = ""
    summary["GiB"] = (summary["bytes"] + summary["state_bytes"]) / 2**30
    return summary


def total_bytes(table: pd.DataFrame) -> int:
    """Everything a parameter table stores: parameters plus quantization scales."""
    return int(table["bytes"].sum() + table["state_bytes"].sum())


def checkpoint_tensor(model_id: str, name: str) -> torch.Tensor:
    """One tensor straight from a checkpoint's safetensors files, without building the model.

    Lets notebook 3 quantize a real weight matrix of an 8B model on the CPU. ``model_id`` is a
    local folder or a hub id (the shard is downloaded into the same cache ``from_pretrained`` uses).
    """
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError
    from safetensors import safe_open

    def fetch(filename: str) -> Path | None:
        if Path(model_id).is_dir():
            return Path(model_id, filename) if Path(model_id, filename).exists() else None
        try:
            return Path(hf_hub_download(model_id, filename))
        except EntryNotFoundError:  # not in the repository (or, offline, not cached): try the other layout
            return None
        except Exception as err:  # gated, private, or the hub refused the token: the steps, as load_model gives them
            explained = explain_hub_error(err, model_id)
            if explained is None:
                raise
            raise explained from err

    index = fetch("model.safetensors.index.json")  # sharded: the index names each tensor's shard
    shards = json.loads(index.read_text())["weight_map"] if index else {name: "model.safetensors"}
    path = fetch(shards.get(name, next(iter(shards.values()))))  # an unknown name: the first shard lists names
    if path is None:
        raise FileNotFoundError(f"No safetensors checkpoint found for {model_id!r} (neither model.safetensors nor an "
                                "index); offline, the files must already be in the hub cache.")
    with safe_open(str(path), framework="pt") as f:
        if name not in f.keys():
            raise ValueError(f"{name!r} is not in {model_id}; names look like {next(iter(f.keys()))!r}.")
        return f.get_tensor(name)
