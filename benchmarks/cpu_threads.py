"""How the small profile's work speeds up with CPU threads: scoring and LoRA training at 1, 2, 4, ... threads.

    python -m benchmarks.cpu_threads [--threads 1 2 4] [--json]

The small profile's suite was timed on 2 cores; its target is a 4-core laptop. This measures the
ratio between the two on one machine: SmolLM2-135M's architecture with random weights (same
matrices, so the same arithmetic as the real model), in NF4 through bitsandbytes, fp32 compute,
prompts of the small profile's padded length (60 tokens), scoring at batch 64 with the label
position's logits only, training steps of 16 (2 micro-batches of 8) with LoRA r = 8 on all seven
projections. Seconds per example are the median of a few batches. Run it on an idle machine with
at least as many cores as the largest thread count; nothing here asserts a speed. To ship a
run, save its ``--json`` report in ``lmcls_helpers/measurements/`` as ``cpu_threads_<cpu>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys

import torch

from benchmarks.gpu_memory import attach_lora, timed
from lmcls_helpers.batches import collate, label_loss
from lmcls_helpers.models import load_model
from lmcls_helpers.profiles import get_profile, library_versions
from lmcls_helpers.scoring import last_token_logits

#: SmolLM2-135M-Instruct's architecture (build/small/config.json), so no download is needed.
SMOLLM2_135M = dict(model_type="llama", vocab_size=49152, hidden_size=576, intermediate_size=1536,
                    num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=8192,
                    rope_theta=100000.0, rms_norm_eps=1e-5, tie_word_embeddings=True)
SEQ_LEN = 60  # the pattern prompt on real CoLA dev, padded at batch 64 (the small profile's prompt_tokens)


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up: allocations, kernel choice
    return statistics.median(timed(fn, "cpu", repeats))


def run(thread_counts: list[int], repeats: int = 3) -> dict:
    profile = get_profile("tiny").with_(model_config=SMOLLM2_135M, torch_threads=None)
    model = attach_lora(load_model(profile), profile)  # random weights, quantized to NF4 as they are built
    g = torch.Generator().manual_seed(0)
    prompts = torch.randint(0, SMOLLM2_135M["vocab_size"], (64, SEQ_LEN), generator=g).tolist()
    score_batch = collate(prompts, pad_id=0)
    score_batch = {k: score_batch[k] for k in ("input_ids", "attention_mask")}
    micro = [collate(prompts[i : i + 8], pad_id=0) for i in (0, 8)]  # labels: each row's last token
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-5)

    @torch.inference_mode()
    def score():
        model.eval()
        last_token_logits(model, score_batch, lean=True)

    def train():
        model.train()
        for batch in micro:
            (label_loss(model, batch, lean=True) / 16).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    rows, before = {}, torch.get_num_threads()
    try:
        for n in thread_counts:
            torch.set_num_threads(n)
            rows[n] = {"score_example_s": median_seconds(score, repeats) / 64,
                       "train_example_s": median_seconds(train, repeats) / 16}
            print(f"{n} threads: scoring {rows[n]['score_example_s'] * 1e3:.1f} ms/example, "
                  f"training {rows[n]['train_example_s'] * 1e3:.1f} ms/example", file=sys.stderr, flush=True)
    finally:
        torch.set_num_threads(before)
    ref = rows[2] if 2 in rows else rows[min(rows)]
    for row in rows.values():
        row["score_speedup_vs_2"] = ref["score_example_s"] / row["score_example_s"]
        row["train_speedup_vs_2"] = ref["train_example_s"] / row["train_example_s"]
    return {"machine": cpu_model(), "cores_visible": len(os.sched_getaffinity(0)),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(), "versions": library_versions(),
            "seq_len": SEQ_LEN, "threads": rows}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    if min(args.threads) < 1:
        parser.error("thread counts must be at least 1")
    report = run(args.threads, args.repeats)
    print(json.dumps(report, indent=2) if args.json else
          "\n".join(f"{n} threads: scoring x{r['score_speedup_vs_2']:.2f}, training x{r['train_speedup_vs_2']:.2f} "
                    "(against 2 threads)" for n, r in report["threads"].items()))
    return report


if __name__ == "__main__":
    main()
