"""The memory estimator against every shipped GPU measurement: the table notebook 5 shows.

    python -m benchmarks.memory_validation

Reads every ``gpu_measurements*.json`` (notebook 5's phases, one file per GPU) and ``gpu_grid_*.json``
(one training step per branch of :func:`lmcls_helpers.memory.estimate_training_memory`) in
``lmcls_helpers/measurements/``, estimates each phase and step again from the settings the file
records, and writes the result to ``lmcls_helpers/measurements/estimator_validation.json``: per phase
and per branch the measured and estimated GiB and their ratio. Notebook 5 reads that file (so it needs
neither this module nor a GPU); ``tests/test_memory.py`` re-checks the estimator against the raw files
and that the shipped table is up to date. Rerun this after changing the estimator or adding a measurement.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from pathlib import Path

import torch

from lmcls_helpers.memory import (
    COMPONENTS,
    GIB,
    MEASUREMENTS,
    MIB,
    VALIDATION,
    _optimizer_bytes,
    _sizes,
    _weights,
    estimate_training_memory,
    load_measurements,
)

#: Largest |estimated / measured - 1| allowed: notebook 5's phases, and the grid's branches.
TOLERANCE = {"phases": 0.10, "branches": 0.05}


def estimate_forward_memory(
    config, *, batch_size: int, seq_len: int, quant: str | None = "nf4", double_quant: bool = False, lora_r: int = 0,
    lora_targets="all-linear", logits: str = "all", loss: bool = True, use_cache: bool = True,
    dtype=torch.bfloat16, optimizer: str | None = None, device: str = "cuda", workspace_mib: float | None = None,
) -> dict[str, float]:
    """GiB per component at the peak of one forward pass under ``torch.no_grad()`` (evaluation).

    ``loss``: labels are passed, so the logits are upcast to fp32 and log-softmaxed (the tutorial's
    evaluation). ``lora_r > 0``: adapters attached. ``optimizer``: evaluating in the middle of training,
    so its state and the backward thread's cuBLAS workspace are still allocated.
    """
    if logits not in ("all", "label"):
        raise ValueError(f"logits must be 'all' (every position, the tutorial) or 'label', got {logits!r}.")
    z = _sizes(config, batch_size, seq_len, lora_r, lora_targets, dtype)
    T, H, M, V, c = z.T, z.H, z.M, z.V, z.c
    N = T if logits == "all" else z.B
    ws = (32.0 if device == "cuda" else 0.0) if workspace_mib is None else workspace_mib
    quantized, weights16 = _weights(z, quant, double_quant)
    cache = 2 * c * T * z.kv * z.L if use_cache else 0  # the KV cache: every block's keys and values
    # At the end: the last hidden state and the logits; with a loss also their fp32 copy (16-bit compute) and
    # the fp32 log-softmax. Inside the last MLP: a dequantized weight, two token x M tensors, two hidden states.
    end = (c * T * H, c * N * V + (((4 if c != 4 else 0) + 4) * N * V if loss else 0), 0)
    block = (2 * c * T * M + 2 * c * T * H, 0, c * H * M if quant else 0)
    activations, logit_bytes, transient = max(end, block, key=sum)
    parts = {"quantized_weights": quantized, "weights_16bit": weights16, "lora_weights": 4.0 * sum(z.lora_numels),
             "gradients": 0.0, "optimizer_state": _optimizer_bytes(z.lora_numels, optimizer),
             "activations": cache + activations, "logits": logit_bytes,
             "workspace": (2 if optimizer else 1) * ws * MIB + transient}
    out = {k: parts[k] / GIB for k in COMPONENTS}
    out["total"] = sum(out.values())
    return out


def estimate_phases(config, *, batch_size: int, seq_len: int, lora_r: int = 8, **common) -> dict[str, dict]:
    """The estimators' components for each phase name notebook 5 (sections 3-4) and ``gpu_memory`` measure.

    ``common`` goes to both estimators (quant, double_quant, dtype, device, workspace_mib);
    ``padding`` (default True), ``grad_checkpointing`` and ``lora_dropout`` to the training one.
    Phases after training keep the AdamW state, as measured.
    """
    train_only = {k: common.pop(k) for k in ("padding", "grad_checkpointing", "lora_dropout") if k in common}
    fwd = dict(config=config, batch_size=batch_size, seq_len=seq_len, **common)
    train = dict(fwd, lora_r=lora_r, **{"padding": True, **train_only})
    loaded = estimate_forward_memory(**fwd)
    weights = {k: (v if k in ("quantized_weights", "weights_16bit") else 0.0) for k, v in loaded.items()}
    weights["total"] = weights["quantized_weights"] + weights["weights_16bit"]
    with_lora = estimate_forward_memory(**fwd, lora_r=lora_r)
    lora = {k: (v if k in ("quantized_weights", "weights_16bit", "lora_weights", "workspace") else 0.0)
            for k, v in with_lora.items()}  # allocated after a forward: the weights, LoRA and one cuBLAS workspace
    lora["total"] = sum(v for k, v in lora.items() if k != "total")
    return {
        "model_loaded_4bit": weights,
        "forward_eval_tutorial_recipe": loaded,
        "lora_attached": lora,
        "train_step_tutorial_recipe": estimate_training_memory(**train),
        "train_step_label_position_logits": estimate_training_memory(**train, logits="label"),
        "eval_batch_tutorial_recipe": estimate_forward_memory(**fwd, lora_r=lora_r, optimizer="adamw"),
        "eval_batch_gather_label_logits": estimate_forward_memory(**fwd, lora_r=lora_r, optimizer="adamw", loss=False),
    }


def estimate_measurement(data: Mapping, **overrides) -> dict[str, dict]:
    """:func:`estimate_phases` for the shapes and recipe a measurement file records.

    What its provenance leaves unrecorded gets the estimator's default (``padding``: unpadded,
    like notebook 5's batches; cuBLAS workspace: Hopper's); ``overrides`` replace any of it.
    The optimizer is taken to be AdamW, the one notebook 5 measures.
    """
    prov = data["provenance"]
    lora = prov["lora"]
    known = {"quant": prov["quant"], "double_quant": prov["double_quant"], "dtype": getattr(torch, prov["dtype"]),
             "lora_r": lora["r"], "lora_dropout": lora.get("dropout", 0.05),
             "lora_targets": lora["targets"] if isinstance(lora["targets"], list) else "all-linear",
             "padding": prov["padding"] if isinstance(prov["padding"], bool) else False,
             "grad_checkpointing": prov["gradient_checkpointing"], "workspace_mib": prov.get("cublas_workspace_mib")}
    known.update(overrides)
    return estimate_phases(data["model_config"], batch_size=data["batch_size"], seq_len=data["seq_len"], **known)


def compare(measured: Mapping[str, Mapping[str, float]], estimates: Mapping[str, Mapping[str, float]]):
    """Measured next to estimated GiB for every phase in both, as a DataFrame.

    Loading and attaching LoRA are compared by what stays allocated (the estimate is of the weights,
    not of the loader's temporary copies); the other phases by their peak.
    """
    import pandas as pd

    rows = []
    for phase, m in measured.items():
        key = "allocated" if phase in ("model_loaded_4bit", "lora_attached") and "allocated" in m else "peak"
        if phase in estimates and key in m:
            value, est = m[key], estimates[phase]["total"]
            rows.append({"phase": phase, "measured GiB": value, "estimated GiB": est,
                         "estimated / measured": est / value, "relative error": (est - value) / value})
    if not rows:
        raise ValueError(f"No phase is both measured and estimated: {sorted(measured)} vs {sorted(estimates)}.")
    return pd.DataFrame(rows).set_index("phase")


def all_measurements(folder: str | Path = MEASUREMENTS.parent) -> dict[str, dict]:
    """Every ``gpu_measurements*.json`` in ``folder`` (the package data), by file name, the reference first."""
    paths = sorted(Path(folder).glob("gpu_measurements*.json"), key=lambda p: (p.name != MEASUREMENTS.name, p.name))
    if not paths:
        raise FileNotFoundError(f"No gpu_measurements*.json in {folder}: reinstall the package.")
    return {p.name: load_measurements(p) for p in paths}


def grid_files(folder: str | Path = MEASUREMENTS.parent) -> dict[str, dict]:
    """Every ``gpu_grid_*.json`` in ``folder`` (written by ``benchmarks/gpu_memory.py``, one per GPU), by file name."""
    return {p.name: json.loads(p.read_text()) for p in sorted(Path(folder).glob("gpu_grid_*.json"))}


def step_name(r: Mapping) -> str:
    """A grid row's settings in words, e.g. ``batch 8, tutorial loss, checkpointing``."""
    return (f"batch {r['batch_size']}, {'tutorial loss' if r['logits'] == 'all' else 'label logits'}"
            + ", checkpointing" * r["checkpointing"] + ", padded" * r["padded"]
            + (", 8-bit AdamW" if r["optimizer"] == "adamw8bit" else "") + ", fp32 upcast" * r.get("upcast_fp32", False))


def grid_peak(grid: Mapping, *, batch_size: int = 8, logits: str = "all", checkpointing: bool = False,
              padded: bool = False, optimizer: str = "adamw", upcast_fp32: bool = False) -> float:
    """The measured peak GiB of one step of a grid file (default: the tutorial's step, batch 8)."""
    want = (batch_size, logits, checkpointing, padded, optimizer, upcast_fp32)
    for r in grid["grid"]:
        if (r["batch_size"], r["logits"], r["checkpointing"], r["padded"], r["optimizer"], r.get("upcast_fp32", False)) == want:
            return r["peak_gib"]
    raise KeyError(f"No step with batch_size, logits, checkpointing, padded, optimizer, upcast_fp32 = {want} in this grid.")


def grid_table(grid: Mapping):
    """Measured peak next to the estimator's, recomputed now from each row's settings, as a DataFrame."""
    import pandas as pd

    prov = grid["provenance"]
    config, dtype, lora = grid["model_config"], getattr(torch, grid["dtype"]), prov["lora"]
    rows = []
    for r in grid["grid"]:
        est = estimate_training_memory(
            config, batch_size=r["batch_size"], seq_len=grid["seq_len"], logits=r["logits"],
            grad_checkpointing=r["checkpointing"], padding=r["padded"], optimizer=r["optimizer"], dtype=dtype,
            lora_r=lora["r"], lora_dropout=lora["dropout"], device=grid["device"],
            workspace_mib=prov["cublas_workspace_mib"], upcast=r.get("upcast_fp32", False))["total"]
        rows.append({"step": step_name(r), "measured GiB": r["peak_gib"], "estimated GiB": est,
                     "relative error": (est - r["peak_gib"]) / r["peak_gib"], "seconds per step": r["step_s"]})
    return pd.DataFrame(rows).set_index("step")


def validation(folder: str | Path = MEASUREMENTS.parent) -> dict:
    """The table :func:`main` writes: every shipped phase and grid step, measured next to estimated."""
    out = {"about": __doc__.splitlines()[0] + " Written by `python -m benchmarks.memory_validation`; GiB = bytes / 2**30, "
           "ratio = estimated / measured (phases: what stays allocated for loading and LoRA, else the peak).",
           "tolerance": TOLERANCE, "files": {}, "phases": [], "branches": []}
    versions = ("gpu", "date", "torch", "transformers", "bitsandbytes")
    for name, data in all_measurements(folder).items():
        out["files"][name] = {k: data["provenance"].get(k) for k in versions}
        for phase, row in compare(data["phases"], estimate_measurement(data)).iterrows():
            out["phases"].append({"file": name, "phase": phase, "measured_gib": row["measured GiB"],
                                  "estimated_gib": row["estimated GiB"], "ratio": row["estimated / measured"]})
    for name, grid in grid_files(folder).items():
        out["files"][name] = {**{k: grid["provenance"].get(k) for k in versions}, "dtype": grid["dtype"],
                              "seq_len": grid["seq_len"]}
        for r, (step, row) in zip(grid["grid"], grid_table(grid).iterrows()):
            out["branches"].append({"file": name, "step": step, **{k: r.get(k, False) for k in (
                "batch_size", "logits", "checkpointing", "padded", "optimizer", "upcast_fp32")},
                "measured_gib": row["measured GiB"], "estimated_gib": row["estimated GiB"],
                "ratio": row["estimated GiB"] / row["measured GiB"], "step_s": r["step_s"],
                "all_step_s": r.get("all_step_s", [r["step_s"]])})
    return out


def dumps(table: Mapping) -> str:
    """JSON with one line per phase or step, so that a rerun's diff shows what moved."""
    items = [json.dumps(k) + ": " + ("[\n" + ",\n".join("  " + json.dumps(r) for r in v) + "\n ]" if isinstance(v, list)
                                    else json.dumps(v, indent=1).replace("\n", "\n ")) for k, v in table.items()]
    return "{\n " + ",\n ".join(items) + "\n}\n"


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=VALIDATION, help="the JSON file to write (default: the shipped one)")
    args = parser.parse_args(argv)
    args.out.write_text(dumps(validation()))
    print(f"wrote {args.out}")
    return args.out


if __name__ == "__main__":
    main()
