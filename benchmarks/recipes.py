"""The tutorial's recipe against the lean one, in one process, on the same data.

    python -m benchmarks.recipes --device cpu|cuda [--json] [--ablate] [--repeats N] [--threads N] [--examples N] [--out DIR]

*Tutorial recipe* (the Llama 3 CoLA tutorial): logits for every position and the whole vocabulary,
loss through ``model(..., labels=...)``, micro-batch 8, no gradient checkpointing, batches in
random order, every batch padded to the longest example in the data (the tutorial tokenized its whole
training set in one call with ``padding="longest"``: 86 tokens on CoLA); scoring keeps
``(batch, seq, vocab)`` logits and picks one row.
*Lean recipe*: the LM head only where the label is predicted (``batches.label_loss(lean=True)``,
``scoring.last_token_logits(lean=True)``), gradient checkpointing, micro-batch 32, dynamic padding
(each batch to its own longest example) with batches grouped by length.

Fair training: both recipes take the same optimizer steps of ``STEP_EXAMPLES`` (32) examples;
the tutorial accumulates 4 micro-batches of 8, the lean recipe runs 1 of 32. Each micro-batch's
loss is the *summed* label-word cross-entropy divided by the step's example count, so a step's
gradient is the mean over its 32 examples whatever the micro-batch size (the scaling
``batches.label_loss`` is designed for). Scoring runs at the recipe's micro-batch size.

``--ablate`` adds the switches one at a time (cumulative rows): tutorial; + label-position logits;
+ gradient checkpointing; + micro-batch 32; + dynamic padding; + length grouping (= lean); on
``cuda`` also + fused AdamW. SDPA attention has no row: transformers already loads Llama with
``attn_implementation="sdpa"`` by default, so the tutorial recipe has it too.

On ``cuda`` the model is the real Llama-3-8B shape (``shapes`` profile: random weights, 4-bit) and
peak memory is ``torch.cuda.max_memory_allocated`` during training. On ``cpu`` it is a scaled model
that keeps Llama 3's 128,256-token vocabulary and a small body, so the LM head is costly as at 8B
(more so: about 95% of the matrix work here, 7% at 8B); memory there is *estimated*, by
``memory.estimate_training_memory`` at the Llama-3-8B shape on a GPU, for the same micro-batches.
``--repeats N`` measures every recipe N times, round robin, and keeps each one's best (on a shared
machine other work only ever slows a run down). ``--threads 1`` when other jobs share the
cores: torch's threads wait for each other at every operation, and two threads on two busy cores
ran up to 10x slower than one and swung 4x from repeat to repeat. Prints a table (with ``--json``:
only JSON on stdout, the table on stderr), writes a chart and the report (on ``cuda`` as
``lmcls_helpers/measurements/recipes_cuda_<gpu>.json``, with every shipped measurement). Benchmarks
are not tests: nothing here asserts a speed.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from lmcls_helpers.batches import collate, label_loss
from lmcls_helpers.data import load_cola
from lmcls_helpers.memory import estimate_training_memory
from lmcls_helpers.models import load_model
from lmcls_helpers.paths import MEASUREMENTS, build_dir
from lmcls_helpers.profiles import LABEL_WORDS, LLAMA3_8B_CONFIG, get_profile, library_versions
from lmcls_helpers.prompts import PromptTemplate
from lmcls_helpers.scoring import last_token_logits
from lmcls_helpers.tokens import load_reference_tokenizer
from lmcls_helpers.training import lora_config
from lmcls_tools.world import ensure_world

#: The CPU stand-in: Llama 3's vocabulary and head, a body small enough for two cores.
CPU_SCALED = dict(LLAMA3_8B_CONFIG, hidden_size=256, intermediate_size=896, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2)

#: Llama 3's ``<|end_of_text|>``, used as the pad token (notebook 1: Llama 3 ships no pad token).
PAD_ID = LLAMA3_8B_CONFIG["eos_token_id"]

#: Examples per optimizer step, the same for every recipe (so each takes the same steps).
STEP_EXAMPLES = 32


@dataclass(frozen=True)
class Recipe:
    name: str
    logits: str  # "all": every position (tutorial); "label": only where the label is predicted
    grad_checkpointing: bool
    micro_batch_size: int
    group_by_length: bool
    dynamic_padding: bool = True  # False: every batch padded to the data's longest example (tutorial)
    fused_adamw: bool = False  # torch.optim.AdamW(fused=True): one kernel for all parameters (CUDA)


TUTORIAL = Recipe("tutorial", "all", False, 8, False, dynamic_padding=False)
LEAN = Recipe("lean", "label", True, 32, True)

#: Row labels for the table and the chart.
LABELS = {"tutorial": "tutorial", "label_logits": "+ label-position logits", "checkpointing": "+ grad checkpointing",
          "micro32": "+ micro-batch 32", "dynamic_padding": "+ dynamic padding", "lean": "+ length grouping (= lean)",
          "fused_adamw": "+ fused AdamW"}


def ablation(device: str) -> list[Recipe]:
    """The cumulative rows of ``--ablate``: each switches on one more thing than the row before."""
    rows = [TUTORIAL, replace(TUTORIAL, name="label_logits", logits="label")]
    rows.append(replace(rows[-1], name="checkpointing", grad_checkpointing=True))
    rows.append(replace(rows[-1], name="micro32", micro_batch_size=32))
    rows.append(replace(rows[-1], name="dynamic_padding", dynamic_padding=True))
    rows.append(LEAN)
    if device == "cuda":
        rows.append(replace(LEAN, name="fused_adamw", fused_adamw=True))
    return rows


def examples(n: int | None, cola_root: Path | None = None) -> list[list[int]]:
    """The first ``n`` training examples (prompt + label word; None: all) with Llama 3's tokenizer: the tiny
    CoLA set, or the real one.

    ``cola_root``: a folder holding real CoLA's ``raw/in_domain_train.tsv`` (the tutorial's data, whose
    longest prompt sets the tutorial's padding); default: the tiny world's synthetic sentences.
    """
    if cola_root is None:
        profile = get_profile("tiny")
        ensure_world(profile)
        cola_root = profile.cola_root
    tokenizer = load_reference_tokenizer("llama-3")
    train = load_cola(cola_root)["in_domain_train"].iloc[:n]
    template = PromptTemplate()
    return [tokenizer(template.format(s, LABEL_WORDS[y]))["input_ids"] for s, y in zip(train.sentence, train.label)]


def _order(data: list[list[int]], recipe: Recipe) -> list[int]:
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(0)).tolist()
    if recipe.group_by_length:
        order = sorted(order, key=lambda i: len(data[i]))  # stable: equal lengths stay in random order
    return order


def micro_batches(data: list[list[int]], recipe: Recipe) -> list[list[list[int]]]:
    """Scoring batches: random order in chunks; the lean recipe sorts by length so each batch pads little."""
    order, size = _order(data, recipe), recipe.micro_batch_size
    return [[data[i] for i in order[k : k + size]] for k in range(0, len(order), size)]


def step_plan(data: list[list[int]], recipe: Recipe, step_examples: int = STEP_EXAMPLES) -> list[list[list[list[int]]]]:
    """Training: optimizer steps of ``step_examples`` examples, each a list of micro-batches.

    Random order; with ``group_by_length`` the examples are sorted by length before being cut into
    steps (each step pads little) and the steps are then shuffled, so lengths still arrive at random.
    The last step may be smaller.
    """
    if step_examples % recipe.micro_batch_size:
        raise ValueError(f"step_examples ({step_examples}) must be a multiple of the micro-batch size "
                         f"({recipe.micro_batch_size}) of recipe {recipe.name!r}.")
    order = _order(data, recipe)
    steps = [order[k : k + step_examples] for k in range(0, len(order), step_examples)]
    if recipe.group_by_length:
        steps = [steps[i] for i in torch.randperm(len(steps), generator=torch.Generator().manual_seed(1)).tolist()]
    size = recipe.micro_batch_size
    return [[[data[i] for i in step[k : k + size]] for k in range(0, len(step), size)] for step in steps]


def tutorial_loss(model, batch) -> torch.Tensor:
    """The tutorial's loss: transformers computes full logits, shifts, upcasts and averages."""
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"])
    return out.loss * len(batch["input_ids"])  # summed over the batch, like label_loss


def loss_for(recipe: Recipe, model, batch) -> torch.Tensor:
    """The summed label-word loss of one micro-batch (checkpointing is switched by :func:`set_grad_checkpointing`)."""
    return tutorial_loss(model, batch) if recipe.logits == "all" else label_loss(model, batch, lean=True)


def set_grad_checkpointing(model, on: bool) -> None:
    """Switch activation (gradient) checkpointing; non-reentrant, so frozen embeddings need no input grads."""
    if on:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.activation_checkpointing_disable()


def pad_length(data: list[list[int]], recipe: Recipe, longest: int | None = None) -> int | None:
    """``collate``'s ``pad_to``: None (each batch to its own longest), or ``longest`` (default: the data's longest).

    The tutorial padded to the longest prompt of its whole training set (86 tokens on CoLA), which a
    sample of it may not contain: ``run`` passes that length when it trains on real CoLA.
    """
    return None if recipe.dynamic_padding else max(longest or 0, *map(len, data))


def accumulate_step(recipe: Recipe, model, step: list[list[list[int]]], pad_id: int, device: str = "cpu",
                    pad_to: int | None = None) -> torch.Tensor:
    """Forward and backward over one step's micro-batches; the gradients add up to the step's mean loss.

    Returns that mean loss (detached). The caller steps the optimizer.
    """
    n = sum(len(chunk) for chunk in step)
    total = torch.zeros((), device=device)
    for chunk in step:
        batch = {k: v.to(device) for k, v in collate(chunk, pad_id, pad_to=pad_to).items()}
        loss = loss_for(recipe, model, batch) / n
        loss.backward()
        total += loss.detach()
    return total


def attach_lora(model, profile):
    """The profile's LoRA (r=8) on all seven projections of a 4-bit model, as the notebooks attach it.

    No ``prepare_model_for_kbit_training``: neither the tutorial nor the notebooks call it, and its
    fp32 upcast of embeddings, LM head and norms costs both recipes memory and time (on an H200 at
    the 8B shape, 4.9 GiB more at the tutorial's step: ``benchmarks/gpu_memory.py``).
    """
    from peft import get_peft_model

    return get_peft_model(model, lora_config(profile))


def build_model(device: str):
    """A 4-bit model with random weights and LoRA: the 8B shape on cuda, :data:`CPU_SCALED` on cpu."""
    profile = get_profile("shapes") if device == "cuda" else get_profile("tiny").with_(model_config=dict(CPU_SCALED))
    return attach_lora(load_model(profile), profile), profile


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _reset_peak(device: str) -> None:
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def _peak_gib(device: str) -> float | None:
    return torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None


def train_throughput(model, data, recipe: Recipe, device: str, pad_id: int = PAD_ID,
                     step_examples: int = STEP_EXAMPLES, longest: int | None = None) -> dict:
    """Examples/s for forward + backward + AdamW over ``data``, one optimizer step per ``step_examples``."""
    set_grad_checkpointing(model, recipe.grad_checkpointing)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-5, **({"fused": True} if recipe.fused_adamw else {}))
    plan, pad_to = step_plan(data, recipe, step_examples), pad_length(data, recipe, longest)
    accumulate_step(recipe, model, plan[0][:1], pad_id, device, pad_to)  # one untimed micro-batch: allocator and kernels
    optimizer.zero_grad(set_to_none=True)
    _reset_peak(device)
    _sync(device)
    start = time.perf_counter()
    for step in plan:
        accumulate_step(recipe, model, step, pad_id, device, pad_to)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    _sync(device)
    seconds = time.perf_counter() - start
    set_grad_checkpointing(model, False)
    return {"examples_per_s": len(data) / seconds, "seconds": seconds, "optimizer_steps": len(plan),
            "micro_batches_per_step": step_examples // recipe.micro_batch_size, "peak_gib": _peak_gib(device)}


@torch.inference_mode()
def score_throughput(model, data, recipe: Recipe, device: str, pad_id: int = PAD_ID, longest: int | None = None) -> dict:
    """Examples/s for reading the label position's logits (the label word itself is dropped)."""
    model.eval()
    prompts = [ids[:-1] for ids in data]
    chunks, pad_to = micro_batches(prompts, recipe), pad_length(prompts, recipe, longest and longest - 1)
    lean = recipe.logits == "label"
    _reset_peak(device)
    _sync(device)
    start = time.perf_counter()
    for chunk in chunks:
        batch = {k: v.to(device) for k, v in collate(chunk, pad_id, pad_to=pad_to).items()}  # its "labels" go unused
        last_token_logits(model, batch, lean=lean)
    _sync(device)
    seconds = time.perf_counter() - start
    return {"examples_per_s": len(prompts) / seconds, "seconds": seconds, "peak_gib": _peak_gib(device)}


def estimated_peak(config: dict, recipe: Recipe, seq_len: int, step_examples: int = STEP_EXAMPLES) -> float:
    """The estimator's training peak (GiB) for this recipe's micro-batches padded to ``seq_len``.

    ``hold_logits=False``: :func:`tutorial_loss` keeps only the loss, not the model's output.
    """
    return estimate_training_memory(config, batch_size=recipe.micro_batch_size, seq_len=seq_len,
                                    grad_checkpointing=recipe.grad_checkpointing, logits=recipe.logits,
                                    grad_accum_steps=step_examples // recipe.micro_batch_size,
                                    hold_logits=False)["total"]


def run(device: str, n_examples: int, ablate: bool = False, repeats: int = 1, cola_root: Path | None = None) -> dict:
    """Measure each recipe ``repeats`` times and keep its best examples/s; ratios are to the tutorial's."""
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}.")
    torch.manual_seed(0)
    if cola_root is None:
        data, longest = examples(n_examples), None
    else:  # the tutorial padded to the longest prompt of its whole training set: tokenize it all once
        every = examples(None, cola_root)
        data, longest = every[:n_examples], max(map(len, every))
    model, profile = build_model(device)
    config = dict(profile.model_config)
    recipes = ablation(device) if ablate else [TUTORIAL, LEAN]
    report = {"device": device, "machine": _machine(device), "versions": library_versions(), "n_examples": len(data),
              "repeats": repeats,
              "data": f"real CoLA in_domain_train ({cola_root})" if cola_root else "the tiny world's synthetic CoLA",
              "step_examples": STEP_EXAMPLES,
              "mean_seq_len": round(sum(map(len, data)) / len(data), 1), "max_seq_len": max(map(len, data)),
              "tutorial_pad_to": pad_length(data, TUTORIAL, longest),
              "model": {k: config[k] for k in ("vocab_size", "hidden_size", "num_hidden_layers")},
              "attn_implementation": model.config._attn_implementation,
              "recipes": {r.name: asdict(r) for r in recipes}, "train": {}, "score": {}}
    for repeat in range(repeats):  # round robin, so a busy spell on a shared machine hits every recipe alike
        for recipe in recipes:
            print(f"[{repeat + 1}/{repeats}] measuring {LABELS[recipe.name]} ...", file=sys.stderr, flush=True)
            for key, measure in (("train", train_throughput), ("score", score_throughput)):
                result, best = measure(model, data, recipe, device, longest=longest), report[key].get(recipe.name)
                result["all_examples_per_s"] = (best["all_examples_per_s"] if best else []) + [result["examples_per_s"]]
                if best is None or result["examples_per_s"] > best["examples_per_s"]:
                    report[key][recipe.name] = result  # the best of the repeats: interference only slows down
                else:
                    best["all_examples_per_s"] = result["all_examples_per_s"]
    for recipe in recipes:
        if device != "cuda":  # the longest micro-batch sets the peak
            seq_len = pad_length(data, recipe, longest) or max(len(ex) for step in step_plan(data, recipe)
                                                               for chunk in step for ex in chunk)
            report["train"][recipe.name]["peak_gib"] = estimated_peak(LLAMA3_8B_CONFIG, recipe, seq_len)
    report["memory_source"] = ("measured: torch.cuda.max_memory_allocated" if device == "cuda"
                               else "estimated: memory.estimate_training_memory, Llama-3-8B shape on a GPU")
    t = report["train"]["tutorial"]
    for recipe in recipes:
        row = report["train"][recipe.name]
        row["speedup"] = row["examples_per_s"] / t["examples_per_s"]
        row["peak_ratio"] = row["peak_gib"] / t["peak_gib"] if row["peak_gib"] and t["peak_gib"] else None
        score = report["score"][recipe.name]
        score["speedup"] = score["examples_per_s"] / report["score"]["tutorial"]["examples_per_s"]
    report["train_speedup"] = report["train"]["lean"]["speedup"]
    report["score_speedup"] = report["score"]["lean"]["speedup"]
    report["peak_memory_ratio"] = report["train"]["lean"]["peak_ratio"]
    return report


def _machine(device: str) -> str:
    if device == "cuda":
        return torch.cuda.get_device_name(0)
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{model}, {torch.get_num_threads()} threads"


def _memory_label(report: dict) -> str:
    return "peak GiB" if report["device"] == "cuda" else "est. GiB*"


def table(report: dict) -> str:
    """Examples/s, peak memory and the ratios to the tutorial recipe, one row per recipe."""
    lines = [f"{report['device']} ({report['machine']}), {report['n_examples']} examples, "
             f"mean length {report['mean_seq_len']} tokens (longest {report['max_seq_len']}; the tutorial pads to "
             f"{report['tutorial_pad_to']}), "
             f"{report['step_examples']} examples per optimizer step, best of {report['repeats']}",
             f"{'recipe':28} {'train ex/s':>10} {'score ex/s':>10} {_memory_label(report):>10} "
             f"{'train x':>8} {'score x':>8} {'memory x':>8}"]
    for name, train in report["train"].items():
        score, peak, ratio = report["score"][name], train["peak_gib"], train["peak_ratio"]
        lines.append(f"{LABELS[name]:28} {train['examples_per_s']:10.2f} {score['examples_per_s']:10.2f} "
                     f"{'n/a' if peak is None else f'{peak:.2f}':>10} {train['speedup']:7.2f}x {score['speedup']:7.2f}x "
                     f"{'n/a' if ratio is None else f'{ratio:.2f}x':>8}")
    lines.append(f"(peak memory of a training step, {report['memory_source']})")
    return "\n".join(lines)


def chart(report: dict):
    import matplotlib.pyplot as plt

    from lmcls_helpers import plots

    names = list(report["train"])
    labels = [LABELS[n].replace(" (= lean)", "\n(= lean)") for n in names]
    colors = ["tab:green" if n == "lean" else "tab:grey" if n == "tutorial" else "tab:olive" for n in names]
    fig, axes = plt.subplots(1, 3, figsize=(3 + 2.2 * len(names), 3.6))
    memory = "training peak (GiB)" if report["device"] == "cuda" else "training peak (GiB,\nestimated, 8B shape)"
    for ax, key, ylabel in [(axes[0], "train", "training examples/s"), (axes[1], "score", "scoring examples/s"),
                            (axes[2], "peak", memory)]:
        values = [report["train"][n]["peak_gib"] or 0 for n in names] if key == "peak" else \
                 [report[key][n]["examples_per_s"] for n in names]
        ax.bar(range(len(names)), values, color=colors)
        ax.set_xticks(range(len(names)), labels, rotation=30, ha="right", fontsize=8)
        ax.set_ylabel(ylabel)
    fig.suptitle(f"lean vs tutorial recipe on {report['device']}: train {report['train_speedup']:.1f}x, "
                 f"score {report['score_speedup']:.1f}x, memory {report['peak_memory_ratio'] or float('nan'):.2f}x")
    fig.tight_layout()
    path = plots.savefig(fig, f"bench_recipes_{report['device']}")
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--examples", type=int, default=None, help="examples per recipe (default: 64 on cpu, 512 on cuda)")
    parser.add_argument("--ablate", action="store_true", help="measure each switch on its own (cumulative rows)")
    parser.add_argument("--repeats", type=int, default=1, help="measure each recipe N times, keep the best (default 1)")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for torch (default: torch's choice); 1 on a machine shared with other jobs")
    parser.add_argument("--json", action="store_true", help="print only the JSON report on stdout (the table on stderr)")
    parser.add_argument("--out", type=Path, default=None,
                        help="folder for the JSON report (default: lmcls_helpers/measurements on cuda, where shipped "
                             "measurements live; build/bench on cpu)")
    parser.add_argument("--cola", type=Path, default=None,
                        help="a cola_public/ folder: train on real CoLA sentences (default: the tiny world's)")
    args = parser.parse_args(argv)
    if args.threads is not None:
        if args.threads < 1:
            parser.error(f"--threads must be at least 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    report = run(args.device, args.examples or (64 if args.device == "cpu" else 512), ablate=args.ablate,
                 repeats=args.repeats, cola_root=args.cola)
    if args.device == "cuda":  # a GPU's report ships, named after the GPU (recipes_cuda_nvidia_h200.json)
        gpu = re.sub(r"[^a-z0-9]+", "_", torch.cuda.get_device_name(0).lower()).strip("_")
        path = (args.out or MEASUREMENTS) / f"recipes_cuda_{gpu}.json"
    else:
        path = (args.out or build_dir("bench")) / "recipes_cpu.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    human = sys.stderr if args.json else sys.stdout
    print(table(report), file=human)
    print(f"chart: {chart(report)}\nreport: {path}", file=human)
    if args.json:
        print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
