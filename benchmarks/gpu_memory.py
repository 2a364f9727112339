"""Measured against estimated memory, and seconds per step, at the Llama-3-8B shape on a GPU.

    python -m benchmarks.gpu_memory [--device cuda|cpu] [--out DIR]

What notebook 5 measures (and more) in one process, for a machine you hold only for minutes: the
``shapes`` profile builds Llama-3-8B's architecture with random weights in NF4 (no download), so
memory and speed are the real model's. Writes, under ``--out`` (default on a GPU
``lmcls_helpers/measurements/``, the folder every shipped measurement lives in; ``build/bench/`` for
a CPU rehearsal):

* ``gpu_measurements_<gpu>.json``: notebook 5's seven phases (batch 8 × 86 tokens, unpadded,
  AdamW) in the shipped format (:func:`save_measurements`, below). ``benchmarks/memory_validation.py``
  and ``tests/test_memory.py`` check the estimator on every such file in ``lmcls_helpers/measurements/``;
  rerun ``python -m benchmarks.memory_validation`` afterwards for the table notebook 5 shows.
* ``gpu_grid_<gpu>.json``: one training step per variant, each with a fresh optimizer: micro-batch
  4/8/16/32 × the tutorial's loss or label-position logits × gradient checkpointing off/on, a
  padded batch, 8-bit AdamW, and peft's ``prepare_model_for_kbit_training`` (its fp32 upcast).
  For each: the measured peak (``max_memory_allocated``), the estimator's, and seconds per step;
  then seconds per scored example for both read-outs.

``--device cpu`` runs the same code on a small Llama on the CPU (peaks are tensor bytes): a
rehearsal of the script, not a measurement of anything a notebook plans with.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import re
import statistics
import sys
import time
from collections.abc import Mapping
from functools import partial
from pathlib import Path

import torch

from benchmarks.memory_validation import compare, estimate_measurement
from benchmarks.recipes import set_grad_checkpointing
from lmcls_helpers import memory
from lmcls_helpers.batches import label_loss
from lmcls_helpers.models import free_gpu_memory, load_model
from lmcls_helpers.paths import MEASUREMENTS, build_dir
from lmcls_helpers.profiles import get_profile
from lmcls_helpers.scoring import last_token_logits
from lmcls_helpers.training import lora_config

#: The CPU rehearsal's model: Llama's layout, small enough for two cores.
CPU_CONFIG = dict(model_type="llama", vocab_size=4096, hidden_size=128, intermediate_size=448, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=False)

SEQ_LEN = memory.TUTORIAL_SEQ_LEN  # the tutorial's padded few-shot prompt: 86 tokens
TIMED_STEPS = 3  # per variant, after one untimed step that creates the optimizer's state
GRID_ABOUT = ("One training step per branch of memory.estimate_training_memory at the profile's shape, random tokens, "
              f"{SEQ_LEN} per row (padded rows: {SEQ_LEN} down to {SEQ_LEN // 2 + 1} real tokens), LoRA on all 7 "
              "projections; then seconds per scored example (last-token logits, batches of 8/16/32).")
GRID_SOURCE = ("benchmarks/gpu_memory.py, the same run (one process) as the gpu_measurements file; 'peak_gib' = "
               "torch.cuda.max_memory_allocated during one steady-state step, each with a fresh optimizer after one "
               "untimed step; 'step_s' = median of 3 timed steps")


# --- The shipped measurement format ----------------------------------------------------------------------


#: Keys of a measurement file (the shipped reference and every ``gpu_measurements_<gpu>.json`` a GPU run writes).
MEASUREMENT_KEYS = ("about", "provenance", "model_config", "batch_size", "seq_len", "phases")
#: Keys of its ``provenance``: the machine, the library versions and the recipe the figures depend on.
PROVENANCE_KEYS = ("source", "gpu", "torch", "cuda", "transformers", "peft", "bitsandbytes", "dtype", "quant",
                   "double_quant", "lora", "optimizer", "gradient_checkpointing", "padding", "date", "units")
UNITS = ("GiB = bytes / 2**30; 'allocated'/'peak' = torch.cuda.memory_allocated/max_memory_allocated, 'reserved' = "
         "torch.cuda.memory_reserved, 'smi' = mem_get_info total - free (the driver's count, as nvidia-smi shows)")


def check_measurements(data: Mapping, source: str = "measurements") -> dict:
    """``data`` if it has every key of the shipped format, else a ValueError naming what is missing."""
    missing = [k for k in MEASUREMENT_KEYS if k not in data]
    missing += [f"provenance.{k}" for k in PROVENANCE_KEYS if k not in data.get("provenance", {})]
    missing += [f"provenance.lora.{k}" for k in ("r", "alpha", "targets") if k not in data.get("provenance", {}).get("lora", {})]
    if missing:
        raise ValueError(f"{source} is not in the shipped format: missing {missing}. Write it with save_measurements.")
    bad = [p for p, m in data["phases"].items() if not {"allocated", "peak", "smi"} & set(m)]
    if bad:
        raise ValueError(f"{source}: phases {bad} have none of allocated, peak, smi.")
    return dict(data)


def measurement_filename(gpu: str | None = None) -> str:
    """``gpu_measurements_<gpu>.json`` for this machine's GPU (or ``gpu``), e.g. ``gpu_measurements_nvidia_h200.json``."""
    gpu = gpu or (torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu")
    return f"gpu_measurements_{re.sub(r'[^a-z0-9]+', '_', gpu.lower()).strip('_')}.json"


def training_recipe(model, optimizer, *, padding: bool) -> dict:
    """The recipe facts a measurement depends on, read off the measured model and optimizer (not retyped)."""
    qc = getattr(model.config, "quantization_config", None)
    qc = qc.to_dict() if hasattr(qc, "to_dict") else dict(qc or {})
    quantized = bool(qc.get("load_in_4bit"))
    lora = getattr(model, "peft_config", {}).get("default")
    if lora is None:
        raise ValueError("No LoRA adapter on the model: attach one with peft.get_peft_model before measuring.")
    targets = lora.target_modules
    return {
        "dtype": str(qc.get("bnb_4bit_compute_dtype") if quantized else model.dtype).removeprefix("torch."),
        "quant": qc.get("bnb_4bit_quant_type") if quantized else None,
        "double_quant": bool(qc.get("bnb_4bit_use_double_quant", False)),
        "lora": {"r": lora.r, "alpha": lora.lora_alpha, "dropout": lora.lora_dropout,
                 "targets": targets if isinstance(targets, str) else sorted(targets)},
        "optimizer": f"{type(optimizer).__module__}.{type(optimizer).__qualname__}",
        "gradient_checkpointing": bool(getattr(model, "is_gradient_checkpointing", False)),
        "padding": padding,
    }


def save_measurements(phases: Mapping, path: str | Path, *, config: Mapping, batch_size: int, seq_len: int,
                      recipe: Mapping, about: str) -> Path:
    """Write this run's phases in the shipped format; :func:`benchmarks.memory_validation.all_measurements` reads it back.

    ``recipe``: :func:`training_recipe` of the measured model and optimizer. The provenance adds
    the GPU, the library versions, the cuBLAS workspace and the date.
    """
    import bitsandbytes
    import peft
    import transformers

    missing = [k for k in ("dtype", "quant", "double_quant", "lora", "optimizer", "gradient_checkpointing", "padding")
               if k not in recipe]
    if missing:
        raise ValueError(f"recipe is missing {missing}: pass training_recipe(model, optimizer, padding=...).")
    on_gpu = torch.cuda.is_available()
    provenance = {
        "source": "measured by lmcls benchmarks/gpu_memory.py (memory.MemoryMeter), written by its save_measurements",
        "gpu": torch.cuda.get_device_name(0) if on_gpu else "none", "python": platform.python_version(),
        "torch": torch.__version__, "cuda": torch.version.cuda, "transformers": transformers.__version__,
        "peft": peft.__version__, "bitsandbytes": bitsandbytes.__version__, **recipe,
        "cublas_workspace_mib": memory.cublas_workspace_mib("cuda" if on_gpu else "cpu"),
        "date": datetime.date.today().isoformat(), "units": UNITS,
    }
    data = {"about": about, "provenance": provenance, "model_config": dict(config), "batch_size": batch_size,
            "seq_len": seq_len, "phases": {k: {n: round(v, 4) for n, v in m.items()} for k, m in phases.items()}}
    check_measurements(data)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")
    return path


def profile_for(device: str):
    if device == "cuda":
        return get_profile("shapes")
    return get_profile("tiny").with_(model_config=CPU_CONFIG, torch_threads=None)


def make_batch(config: dict, batch_size: int, device: str, padded: bool = False, seed: int = 0) -> dict:
    """Random tokens, the label at each row's last real token (the tutorial's targets: -100 elsewhere).

    ``padded``: row i has ``SEQ_LEN - 6 i`` real tokens (86 down to 44 for 8 rows) and right padding,
    so the model gets a real padding mask, as a batch of CoLA prompts does.
    """
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, config["vocab_size"], (batch_size, SEQ_LEN), generator=g)
    lengths = [SEQ_LEN - (6 * i) % (SEQ_LEN // 2) if padded else SEQ_LEN for i in range(batch_size)]
    mask = torch.tensor([[1] * n + [0] * (SEQ_LEN - n) for n in lengths])
    labels = torch.full_like(ids, -100)
    for row, n in enumerate(lengths):
        labels[row, n - 1] = ids[row, n - 1]
    return {k: v.to(device) for k, v in {"input_ids": ids, "attention_mask": mask, "labels": labels}.items()}


def attach_lora(model, profile):
    """LoRA with the profile's rank, alpha and dropout on all seven projections, as notebook 5 attaches it."""
    from peft import get_peft_model

    return get_peft_model(model, lora_config(profile))


def make_optimizer(model, kind: str):
    params = [p for p in model.parameters() if p.requires_grad]
    if kind == "adamw8bit":
        import bitsandbytes as bnb

        return bnb.optim.AdamW8bit(params, lr=1e-5)
    return torch.optim.AdamW(params, lr=1e-5)


def train_step(model, optimizer, batch: dict, logits: str) -> None:
    """One optimizer step: the tutorial's loss (``out`` held through backward) or label-position logits."""
    if logits == "all":
        out = model(**batch)
        out.loss.backward()
    else:
        (label_loss(model, batch, lean=True) / len(batch["input_ids"])).backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def timed(fn, device: str, repeats: int) -> list[float]:
    """Seconds of ``repeats`` calls of ``fn``, each between two synchronizations (GPU work is asynchronous)."""
    seconds = []
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - start)
    return seconds


def measure_variant(model, profile, config: dict, *, batch_size: int, logits: str, checkpointing: bool,
                    padded: bool = False, optimizer: str = "adamw", upcast: bool = False) -> dict:
    """Peak GiB of one steady-state step (measured and estimated) and the median seconds of a few."""
    device = profile.device
    batch = make_batch(config, batch_size, device, padded=padded)
    set_grad_checkpointing(model, checkpointing)
    model.train()
    opt = make_optimizer(model, optimizer)
    train_step(model, opt, batch, logits)  # creates the optimizer's state: we measure steady-state steps
    meter = memory.MemoryMeter(device)
    with meter.phase("step", model, opt):
        train_step(model, opt, batch, logits)
    seconds = timed(partial(train_step, model, opt, batch, logits), device, TIMED_STEPS)
    set_grad_checkpointing(model, False)
    del opt
    free_gpu_memory()
    estimate = memory.estimate_training_memory(
        config, batch_size=batch_size, seq_len=SEQ_LEN, logits=logits, grad_checkpointing=checkpointing,
        padding=padded, optimizer=optimizer, dtype=profile.compute_dtype, lora_r=profile.lora_r,
        lora_dropout=profile.lora_dropout, device=device, workspace_mib=memory.cublas_workspace_mib(device),
        upcast=upcast)
    peak = meter.phases["step"]["peak"]
    return {"batch_size": batch_size, "logits": logits, "checkpointing": checkpointing, "padded": padded,
            "optimizer": optimizer, "upcast_fp32": upcast, "peak_gib": round(peak, 4), "estimated_gib": round(estimate["total"], 4),
            "relative_error": round((estimate["total"] - peak) / peak, 4),
            "step_s": round(statistics.median(seconds), 4), "all_step_s": [round(s, 4) for s in seconds]}


@torch.inference_mode()
def score_seconds(model, profile, config: dict, batch_size: int, lean: bool, batches: int = 5) -> float:
    """Median seconds per scored example: logits at the last token, all positions' (tutorial) or one row's."""
    model.eval()
    batch = make_batch(config, batch_size, profile.device)
    batch = {k: batch[k] for k in ("input_ids", "attention_mask")}
    last_token_logits(model, batch, lean=lean)  # warm-up
    return statistics.median(timed(lambda: last_token_logits(model, batch, lean=lean), profile.device, batches)) / batch_size


def notebook5_phases(profile, config: dict) -> tuple[dict, object, object]:
    """Notebook 5's seven phases (sections 3-4), measured the same way; returns them, the LoRA model and its AdamW."""
    device = profile.device
    batch = make_batch(config, profile.micro_batch_size, device)
    meter = memory.MemoryMeter(device)
    start = time.perf_counter()
    with meter.phase("model_loaded_4bit"):
        model = load_model(profile)
        meter.track(model)
    build_s = time.perf_counter() - start  # the phase ends with a synchronization on a GPU
    with meter.phase("forward_eval_tutorial_recipe", model), torch.no_grad():
        out = model(**batch)
    del out
    with meter.phase("lora_attached", model):
        model = attach_lora(model, profile)
        meter.track(model)
    optimizer = make_optimizer(model, "adamw")
    model.train()
    train_step(model, optimizer, batch, "all")
    for name, logits in (("train_step_tutorial_recipe", "all"), ("train_step_label_position_logits", "label")):
        with meter.phase(name, model, optimizer):
            train_step(model, optimizer, batch, logits)
    model.eval()
    with meter.phase("eval_batch_tutorial_recipe", model, optimizer), torch.no_grad():
        out = model(**batch)  # labels given: logits at every position, upcast and log-softmaxed for the loss
    del out
    with meter.phase("eval_batch_gather_label_logits", model, optimizer), torch.no_grad():
        last_token_logits(model, {k: batch[k] for k in ("input_ids", "attention_mask")}, lean=True)
    return {"phases": meter.phases, "build_s": build_s}, model, optimizer


def log(message: str) -> None:
    """Progress on stderr with the clock time: on a borrowed machine, what ran before a timeout matters."""
    print(f"[gpu_memory {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def run(device: str, out_dir: Path) -> dict:
    profile = profile_for(device)
    config = dict(profile.model_config)
    torch.manual_seed(profile.seed)
    report = {"device": device, "machine": torch.cuda.get_device_name(0) if device == "cuda" else "cpu",
              "dtype": str(profile.compute_dtype).removeprefix("torch."), "seq_len": SEQ_LEN,
              "model": {k: config[k] for k in ("vocab_size", "hidden_size", "num_hidden_layers")}}

    phases, model, optimizer = notebook5_phases(profile, config)
    report["build_s"] = round(phases["build_s"], 2)
    recipe = training_recipe(model, optimizer, padding=False)
    del optimizer
    free_gpu_memory()
    name = measurement_filename() if device == "cuda" else "gpu_measurements_cpu_rehearsal.json"
    saved = save_measurements(phases["phases"], out_dir / name, config=config,
                              batch_size=profile.micro_batch_size, seq_len=SEQ_LEN, recipe=recipe,
                              about="benchmarks/gpu_memory.py: notebook 5's phases, profile "
                                    f"{profile.name}, random-token batches of {SEQ_LEN} tokens, no padding")
    shipped = json.loads(saved.read_text())
    keep = ("gpu", "python", "torch", "cuda", "transformers", "peft", "bitsandbytes", "quant", "double_quant", "lora",
            "cublas_workspace_mib", "date", "units")
    report = {"about": GRID_ABOUT, "provenance": {"source": GRID_SOURCE, **{k: shipped["provenance"][k] for k in keep}},
              "model_config": config, **report}
    errors = compare(phases["phases"], estimate_measurement(shipped))
    report["phases_relative_error"] = errors["relative error"].round(4).to_dict()
    log(f"phases written to {saved}; estimator errors {report['phases_relative_error']}")

    variants = [dict(batch_size=b, logits=lg, checkpointing=ck)
                for b in (4, 8, 16, 32) for lg in ("all", "label") for ck in (False, True)]
    variants += [dict(batch_size=8, logits="all", checkpointing=False, padded=True),
                 dict(batch_size=8, logits="label", checkpointing=True, padded=True),
                 dict(batch_size=8, logits="all", checkpointing=False, optimizer="adamw8bit")]
    report["grid"] = []
    for v in variants:
        row = measure_variant(model, profile, config, **v)
        report["grid"].append(row)
        log(f"{v}: peak {row['peak_gib']:.3f} GiB, estimated {row['estimated_gib']:.3f} "
            f"({row['relative_error']:+.1%}), {row['step_s']:.3f} s/step")
    report["score_example_s"] = {f"{'lean' if lean else 'tutorial'} batch {b}":
                                 round(score_seconds(model, profile, config, b, lean), 5)
                                 for b in (8, 16, 32) for lean in (False, True)}
    log(f"scoring: {report['score_example_s']}")

    # peft's prepare_model_for_kbit_training on a fresh base: every 16-bit weight outside the 4-bit layers
    # (embeddings, LM head, norms) becomes fp32, as most QLoRA recipes do and the notebooks do not.
    del model
    free_gpu_memory()
    from peft import prepare_model_for_kbit_training

    base = load_model(profile)
    upcast = attach_lora(prepare_model_for_kbit_training(base, use_gradient_checkpointing=False), profile)
    del base
    row = measure_variant(upcast, profile, config, batch_size=8, logits="all", checkpointing=False, upcast=True)
    fp32_params = sum(p.numel() for p in upcast.parameters() if p.dtype == torch.float32 and not p.requires_grad)
    row["fp32_frozen_params"] = fp32_params
    report["grid"].append(row)
    log(f"fp32 upcast ({fp32_params:,} frozen fp32 values): peak {row['peak_gib']:.3f} GiB, "
        f"estimated {row['estimated_gib']:.3f}, {row['step_s']:.3f} s/step")
    worst = max(abs(r["relative_error"]) for r in report["grid"])
    report["grid_max_relative_error"] = round(worst, 4)
    path = out_dir / name.replace("gpu_measurements", "gpu_grid")
    path.write_text(json.dumps(report, indent=2) + "\n")
    log(f"grid written to {path}; worst estimator error {worst:.1%}")
    return report


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, default=None,
                        help="folder for the JSON files (default: lmcls_helpers/measurements on cuda, where they ship; "
                             "build/bench for a cpu rehearsal)")
    args = parser.parse_args(argv)
    out_dir = args.out or (MEASUREMENTS if args.device == "cuda" else build_dir("bench"))
    out_dir.mkdir(parents=True, exist_ok=True)
    return run(args.device, out_dir)


if __name__ == "__main__":
    main()
