"""The tutorial's recipe against the lean one, in one process, on the same data.

    python -m benchmarks.recipes --device cpu|cuda [--json] [--examples N]

*Tutorial recipe* (the Llama 3 CoLA seed): logits for every position and the whole vocabulary,
loss through ``model(..., labels=...)``, micro-batch 8, no gradient checkpointing, batches in
random order; scoring keeps ``(batch, seq, vocab)`` logits and picks one row.
*Lean recipe*: the LM head only where the label is predicted (``batches.label_loss(lean=True)``,
``scoring.last_token_logits(lean=True)``), gradient checkpointing, micro-batch 32, batches grouped
by length (dynamic padding).

On ``cuda`` the model is the real Llama-3-8B shape (``shapes`` profile: random weights, 4-bit).
On ``cpu`` it is a scaled model that keeps Llama 3's 128,256-token vocabulary and a small body,
so the LM head's share of the cost stays realistic; memory there comes from the estimator.
Prints a table (and JSON with ``--json``) of examples/s and peak memory, and writes a chart.
Benchmarks are not tests: nothing here asserts a speed.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from dataclasses import asdict, dataclass

import torch

from lmcls_helpers.batches import collate, label_loss
from lmcls_helpers.data import load_cola
from lmcls_helpers.models import LLAMA_PROJECTIONS, load_model
from lmcls_helpers.paths import build_dir
from lmcls_helpers.profiles import LABEL_WORDS, LLAMA3_8B_CONFIG, get_profile
from lmcls_helpers.prompts import PromptTemplate
from lmcls_helpers.scoring import last_token_logits
from lmcls_helpers.tokens import load_reference_tokenizer
from lmcls_helpers.world import ensure_world

#: The CPU stand-in: Llama 3's vocabulary and head, a body small enough for two cores.
CPU_SCALED = dict(LLAMA3_8B_CONFIG, hidden_size=256, intermediate_size=896, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2)


@dataclass(frozen=True)
class Recipe:
    name: str
    logits: str  # "all": every position (tutorial); "label": only where the label is predicted
    grad_checkpointing: bool
    micro_batch_size: int
    group_by_length: bool


TUTORIAL = Recipe("tutorial", "all", False, 8, False)
LEAN = Recipe("lean", "label", True, 32, True)


def examples(n: int) -> list[list[int]]:
    """``n`` training examples (prompt + label word) from the tiny CoLA set, with Llama 3's tokenizer."""
    profile = get_profile("tiny")
    ensure_world(profile)
    tokenizer = load_reference_tokenizer("llama-3")
    train = load_cola(profile.cola_root)["in_domain_train"].iloc[:n]
    template = PromptTemplate()
    return [tokenizer(template.format(s, LABEL_WORDS[y]))["input_ids"] for s, y in zip(train.sentence, train.label)]


def micro_batches(data: list[list[int]], recipe: Recipe) -> list[list[list[int]]]:
    """Random order in chunks; the lean recipe sorts by length so each batch pads little."""
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(0)).tolist()
    if recipe.group_by_length:
        order = sorted(order, key=lambda i: len(data[i]))
    size = recipe.micro_batch_size
    return [[data[i] for i in order[k : k + size]] for k in range(0, len(order), size)]


def tutorial_loss(model, batch) -> torch.Tensor:
    """The seed's loss: transformers computes full logits, shifts, upcasts and averages."""
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"])
    return out.loss * len(batch["input_ids"])  # summed over the batch, like label_loss


def loss_for(recipe: Recipe, model, batch) -> torch.Tensor:
    return tutorial_loss(model, batch) if recipe.logits == "all" else label_loss(model, batch, lean=True)


def build_model(device: str):
    """A 4-bit model with LoRA on all seven projections, loaded like the notebooks load theirs."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if device == "cuda":
        profile = get_profile("shapes")
    else:
        from transformers import LlamaConfig, LlamaForCausalLM

        folder = build_dir("bench", "cpu-scaled")
        if not (folder / "config.json").exists():
            torch.manual_seed(0)
            config = LlamaConfig(**{k: v for k, v in CPU_SCALED.items() if k != "model_type"})
            LlamaForCausalLM(config).save_pretrained(folder)
        profile = get_profile("tiny").with_(model_id=str(folder))
    model = load_model(profile)
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    lora = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.05, target_modules=list(LLAMA_PROJECTIONS), task_type="CAUSAL_LM")
    return get_peft_model(model, lora), profile


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _reset_peak(device: str) -> None:
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def _peak_gib(device: str) -> float | None:
    return torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None


def train_throughput(model, data, recipe: Recipe, device: str, pad_id: int) -> dict:
    """Examples/s for forward + backward + AdamW step over ``data``, one step per micro-batch."""
    if recipe.grad_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_disable()
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    chunks = micro_batches(data, recipe)
    warm = collate(chunks[0], pad_id)  # one untimed step: allocator and kernels warm up
    loss_for(recipe, model, {k: v.to(device) for k, v in warm.items()}).backward()
    optimizer.zero_grad(set_to_none=True)
    _reset_peak(device)
    _sync(device)
    start = time.perf_counter()
    for chunk in chunks:
        batch = {k: v.to(device) for k, v in collate(chunk, pad_id).items()}
        (loss_for(recipe, model, batch) / len(chunk)).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    _sync(device)
    seconds = time.perf_counter() - start
    return {"examples_per_s": len(data) / seconds, "seconds": seconds, "peak_gib": _peak_gib(device)}


@torch.inference_mode()
def score_throughput(model, data, recipe: Recipe, device: str, pad_id: int) -> dict:
    """Examples/s for reading the label position's logits (the label word itself is dropped)."""
    model.eval()
    prompts = [ids[:-1] for ids in data]
    chunks = micro_batches(prompts, recipe)
    lean = recipe.logits == "label"
    _reset_peak(device)
    _sync(device)
    start = time.perf_counter()
    for chunk in chunks:
        batch = {k: v.to(device) for k, v in collate(chunk, pad_id).items()}  # its "labels" go unused
        last_token_logits(model, batch, lean=lean)
    _sync(device)
    seconds = time.perf_counter() - start
    return {"examples_per_s": len(prompts) / seconds, "seconds": seconds, "peak_gib": _peak_gib(device)}


def estimated_peak(config: dict, recipe: Recipe, seq_len: int) -> float | None:
    """The estimator's predicted training peak (GiB) for this recipe, or None if unavailable."""
    try:
        from lmcls_helpers.memory import estimate_training_memory
    except ImportError:
        return None
    return estimate_training_memory(config, batch_size=recipe.micro_batch_size, seq_len=seq_len,
                                    grad_checkpointing=recipe.grad_checkpointing, logits=recipe.logits)["total"]


def run(device: str, n_examples: int) -> dict:
    torch.manual_seed(0)
    data = examples(n_examples)
    model, profile = build_model(device)
    pad_id = 128001  # Llama 3's <|end_of_text|>, used as pad (notebook 1)
    config = dict(profile.model_config or CPU_SCALED)
    seq_len = round(sum(map(len, data)) / len(data))
    report = {"device": device, "machine": _machine(device), "n_examples": len(data), "mean_seq_len": seq_len,
              "model": {k: config[k] for k in ("vocab_size", "hidden_size", "num_hidden_layers")},
              "recipes": {r.name: asdict(r) for r in (TUTORIAL, LEAN)}, "train": {}, "score": {}}
    for recipe in (TUTORIAL, LEAN):
        report["train"][recipe.name] = train_throughput(model, data, recipe, device, pad_id)
        report["score"][recipe.name] = score_throughput(model, data, recipe, device, pad_id)
        if device != "cuda":
            report["train"][recipe.name]["peak_gib"] = estimated_peak(LLAMA3_8B_CONFIG, recipe, seq_len)
    report["memory_source"] = "max_memory_allocated" if device == "cuda" else "estimator, Llama-3-8B shape"
    t, lean = report["train"]["tutorial"], report["train"]["lean"]
    report["train_speedup"] = lean["examples_per_s"] / t["examples_per_s"]
    report["score_speedup"] = report["score"]["lean"]["examples_per_s"] / report["score"]["tutorial"]["examples_per_s"]
    report["peak_memory_ratio"] = lean["peak_gib"] / t["peak_gib"] if lean["peak_gib"] and t["peak_gib"] else None
    return report


def _machine(device: str) -> str:
    if device == "cuda":
        return torch.cuda.get_device_name(0)
    return f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"


def table(report: dict) -> str:
    lines = [f"{report['device']} ({report['machine']}), {report['n_examples']} examples, mean length {report['mean_seq_len']} tokens",
             f"{'':10} {'train ex/s':>11} {'score ex/s':>11} {'peak GiB':>9}"]
    for name in ("tutorial", "lean"):
        peak = report["train"][name]["peak_gib"]
        lines.append(f"{name:10} {report['train'][name]['examples_per_s']:11.2f} {report['score'][name]['examples_per_s']:11.2f} "
                     f"{peak if peak is None else round(peak, 2)!s:>9}")
    ratio = report["peak_memory_ratio"]
    lines.append(f"{'lean/tut.':10} {report['train_speedup']:10.2f}x {report['score_speedup']:10.2f}x "
                 f"{'n/a' if ratio is None else f'{ratio:.2f}x':>9}")
    lines.append(f"(peak memory: {report['memory_source']})")
    return "\n".join(lines)


def chart(report: dict):
    import matplotlib.pyplot as plt

    from lmcls_helpers import plots

    fig, axes = plt.subplots(1, 3, figsize=(9, 3))
    for ax, (key, label) in zip(axes, [("train", "training examples/s"), ("score", "scoring examples/s")]):
        ax.bar(["tutorial", "lean"], [report[key][n]["examples_per_s"] for n in ("tutorial", "lean")], color=["tab:grey", "tab:green"])
        ax.set_ylabel(label)
    peaks = [report["train"][n]["peak_gib"] or 0 for n in ("tutorial", "lean")]
    axes[2].bar(["tutorial", "lean"], peaks, color=["tab:grey", "tab:green"])
    axes[2].set_ylabel("training peak (GiB)")
    fig.suptitle(f"lean vs tutorial recipe on {report['device']}: train {report['train_speedup']:.1f}x, "
                 f"score {report['score_speedup']:.1f}x")
    fig.tight_layout()
    return plots.savefig(fig, f"bench_recipes_{report['device']}")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--examples", type=int, default=None, help="examples per recipe (default: 64 on cpu, 512 on cuda)")
    parser.add_argument("--json", action="store_true", help="print the JSON report too")
    args = parser.parse_args(argv)
    report = run(args.device, args.examples or (64 if args.device == "cpu" else 512))
    path = build_dir("bench", f"recipes_{args.device}.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(table(report))
    print(f"chart: {chart(report)}\nreport: {path}")
    if args.json:
        print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
