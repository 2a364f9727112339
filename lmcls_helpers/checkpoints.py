"""Checkpoints that resume training exactly (taught in notebook 4, section 8).

Resuming needs more than the adapter: the optimizer's moment estimates, the scheduler's
position, the step counter and the random-number state (LoRA dropout draws from it). A
checkpoint folder holds the adapter in PEFT's own format (``adapter_model.safetensors``,
loadable on its own) plus ``training_state.pt`` with the rest and a signature of the model
and LoRA config, so that loading into a different setup stops with a clear error.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .models import base_model

STATE_FILE = "training_state.pt"
ADAPTER_FILE = "adapter_model.safetensors"


def rng_state() -> dict[str, Any]:
    """Every random-number generator a training step may draw from, as tensors and plain numbers."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    numpy = {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos), "has_gauss": int(has_gauss),
             "cached": float(cached)}
    cuda = {"cuda": torch.cuda.get_rng_state_all()} if torch.cuda.is_available() else {}
    return {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": numpy, **cuda}


def model_signature(model) -> dict[str, Any]:
    """What must match for a checkpoint to fit: base model, LoRA config, trainable tensor shapes."""
    config = base_model(model).config
    name = str(getattr(config, "_name_or_path", "") or getattr(config, "name_or_path", ""))
    if Path(name).is_absolute():  # a local folder: its last two parts survive a move to another machine
        name = "/".join(Path(name).parts[-2:])
    arch = {k: getattr(config, k, None) for k in ("model_type", "vocab_size", "hidden_size", "intermediate_size",
                                                   "num_hidden_layers", "num_attention_heads", "num_key_value_heads")}
    lora = getattr(model, "peft_config", {}).get("default")
    lora = {} if lora is None else {"r": lora.r, "lora_alpha": lora.lora_alpha, "lora_dropout": lora.lora_dropout,
                                    "target_modules": sorted(lora.target_modules or [])}
    trainable = {n: list(p.shape) for n, p in model.named_parameters() if p.requires_grad}
    return {"model": name, "architecture": arch, "lora": lora, "trainable": trainable}


def _differences(saved: dict[str, Any], live: dict[str, Any]) -> list[str]:
    out = []
    if saved["model"] != live["model"]:
        out.append(f"base model: checkpoint {saved['model']!r}, this model {live['model']!r}")
    for key in ("architecture", "lora"):
        for field in sorted(set(saved[key]) | set(live[key])):
            if saved[key].get(field) != live[key].get(field):
                out.append(f"{key} {field}: checkpoint {saved[key].get(field)!r}, this model {live[key].get(field)!r}")
    if not out and saved["trainable"] != live["trainable"]:
        out.append(f"trainable tensors: checkpoint has {len(saved['trainable'])}, this model {len(live['trainable'])}")
    return out


def save_checkpoint(path: str | Path, model, optimizer, scheduler, step: int, extra: dict | None = None) -> Path:
    """Write adapter + optimizer + scheduler + step + RNG state to the folder ``path``."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)  # adapter_config.json + adapter_model.safetensors, loadable by PeftModel alone
    torch.save({"step": int(step), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "rng": rng_state(), "signature": model_signature(model), "extra": extra or {}}, path / STATE_FILE)
    return path


def latest_checkpoint(root: str | Path) -> Path | None:
    """The newest complete ``step-NNNNN`` folder under ``root`` (what a run cut off by a disconnect resumes from)."""
    done = [p for p in Path(root).glob("step-*") if (p / STATE_FILE).exists() and (p / ADAPTER_FILE).exists()]
    return max(done, key=lambda p: int(p.name.split("-")[1]), default=None)


def load_checkpoint(path: str | Path, model, optimizer, scheduler) -> dict[str, Any]:
    """Restore a :func:`save_checkpoint` folder into live objects; returns ``{"step", "extra"}``.

    Checks the signature first: a checkpoint from another base model or LoRA config raises
    ``ValueError`` listing what differs, before anything is overwritten.
    """
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    path = Path(path)
    if not (path / STATE_FILE).exists() or not (path / ADAPTER_FILE).exists():
        raise FileNotFoundError(f"{path} is not a checkpoint folder: it needs {ADAPTER_FILE} and {STATE_FILE}.")
    state = torch.load(path / STATE_FILE, weights_only=True)  # tensors and plain data only: no pickled code
    if problems := _differences(state["signature"], model_signature(model)):
        raise ValueError(f"Checkpoint {path} was saved from a different setup: {'; '.join(problems)}. Load it into "
                         "the same base model with the same LoraConfig, or start a new run.")
    device = next(p for p in model.parameters() if p.requires_grad).device
    result = set_peft_model_state_dict(model, load_file(path / ADAPTER_FILE, device=str(device)))
    if result.unexpected_keys:
        raise ValueError(f"Checkpoint {path} holds tensors this model lacks: {result.unexpected_keys[:3]}...")
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    rng = state["rng"]  # put back what rng_state() captured
    torch.set_rng_state(rng["torch"])
    random.setstate((rng["python"][0], tuple(rng["python"][1]), rng["python"][2]))
    n = rng["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    return {"step": state["step"], "extra": state["extra"]}
