"""Time budgets: how long a notebook will take on this runtime, printed before any work starts.

A class hour is the constraint the full profile is built around: every notebook's compute must
fit 35 minutes on a free Colab T4, model loads included, leaving the rest of the hour to read it.
Each notebook's *plan* (base-model loads, training examples, scored examples, prompt length) is
written down here once, as a function of
the profile's sizes; :func:`estimate` multiplies it by per-unit rates measured on real runtimes
(``measurements/runtime_rates.json``, with provenance). ``python -m benchmarks.colab_budget``
prints the table for every notebook under the full profile, and a unit test holds each to 35
minutes. At the end of a notebook :func:`check_loads` compares the planned loads with
``load_model``'s count, so a plan cannot silently drift from the code it describes.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, fields
from importlib import resources

import torch

from lmcls_helpers import memory, quant
from lmcls_helpers.categories import CATEGORY_NAMES, ledger_categories
from lmcls_helpers.data import load_cola, load_ledger
from lmcls_helpers.models import llama_config, load_count
from lmcls_helpers.prompts import PATTERN, VARIANTS

#: Rows per split of the real CoLA corpus (the full and small profiles); the tiny world's are read from disk.
COLA_SIZES = {"in_domain_train": 8551, "in_domain_dev": 527, "out_of_domain_dev": 516}
#: Lines in the ledger data set (synthetic on every profile; ``world.SIZES["ledger"]``, checked by a test).
LEDGER_SIZE = 1800
#: The budget a notebook must fit on a free Colab T4 under the full profile.
CLASS_MINUTES = 35.0


@dataclass(frozen=True)
class Plan:
    """The work a notebook does: what its time is made of."""

    loads: int  # base-model loads (from_pretrained + 4-bit quantization)
    train_examples: int  # examples through forward and backward, summed over every training run
    scored_examples: int  # examples through a forward pass only
    seq_len: int = 86  # typical prompt length in tokens (work scales with it); 86: the tutorial's (memory.TUTORIAL_SEQ_LEN)
    recompute: bool = False  # gradient checkpointing: backward recomputes each block's forward
    cut: str = ""  # what the full profile leaves out to fit the class, said where the budget is printed


@dataclass(frozen=True)
class Rates:
    """Seconds per unit on one runtime, at ``seq_len`` tokens; ``assumed`` names the unmeasured ones."""

    name: str
    load_s: float
    reload_s: float
    train_example_s: float
    score_example_s: float
    seq_len: int
    source: str
    checkpointing_factor: float = 1.0  # training time with gradient checkpointing / without
    assumed: tuple[str, ...] = ()
    overhead_s: float = 0.0  # what every notebook spends outside its plan: kernel, imports, figures, checks
    install_s: float = 0.0  # the Colab cell's pip installs, paid by every notebook on a fresh Colab runtime


def load_rates() -> dict[str, Rates]:
    """The shipped per-unit rates, by runtime name ("T4", "H100", "CPU (tiny)", "CPU (small)")."""
    text = resources.files("lmcls_helpers").joinpath("measurements", "runtime_rates.json").read_text()
    known = {f.name for f in fields(Rates)}  # the file's *_why keys are provenance for readers
    return {name: Rates(name=name, **{k: tuple(v) if k == "assumed" else v for k, v in r.items() if k in known})
            for name, r in json.loads(text)["runtimes"].items()}


def estimate(plan: Plan, rates: Rates) -> dict[str, float]:
    """Seconds for each part of ``plan`` at ``rates``: installs, the first load, reloads, training, scoring, overhead, total."""
    scale = plan.seq_len / rates.seq_len
    recompute = rates.checkpointing_factor if plan.recompute else 1.0  # backward recomputes each block's forward
    parts = {"install_s": rates.install_s, "load_s": rates.load_s if plan.loads else 0.0,
             "reload_s": max(plan.loads - 1, 0) * rates.reload_s,
             "train_s": plan.train_examples * rates.train_example_s * scale * recompute,
             "score_s": plan.scored_examples * rates.score_example_s * scale, "overhead_s": rates.overhead_s}
    return {**parts, "total_s": sum(parts.values())}


def this_runtime(profile) -> str:
    """The rates that describe this machine: the GPU's name when we have its rates, else the T4's, or the CPU's."""
    if profile.device == "cuda" and torch.cuda.is_available():
        return next((key for key in load_rates() if key in torch.cuda.get_device_name(0)), "T4")
    return f"CPU ({profile.name})" if f"CPU ({profile.name})" in load_rates() else "CPU (tiny)"  # this model's CPU rates


def split_sizes(profile) -> dict[str, int]:
    """Rows per CoLA split for ``profile``: read from the tiny world's files, the real corpus's sizes otherwise."""
    if profile.name == "tiny":
        return {name: len(df) for name, df in load_cola(profile.cola_root).items()}
    return dict(COLA_SIZES)


def plan_for(stem: str, profile, sizes: dict[str, int] | None = None) -> Plan:
    """The plan of notebook ``stem`` (like '04_training_loop') under ``profile``'s sizes."""
    if stem not in PLANS:
        raise ValueError(f"No time plan for {stem!r}: add one to lmcls_tools.budget.PLANS (known: {sorted(PLANS)}).")
    sizes = split_sizes(profile) if sizes is None else sizes  # and the rows the notebooks use, capped by the profile:
    return PLANS[stem](profile, {**sizes, "train": _first(sizes["in_domain_train"], profile.max_train_examples),
                                 "dev": _first(sizes["in_domain_dev"], profile.max_eval_examples),
                                 "ood": _first(sizes["out_of_domain_dev"], profile.max_eval_examples)})


_started: dict[str, float] = {}
_loads_before: dict[str, int] = {}


def report(stem: str, profile, plan: Plan | None = None) -> str:
    """The lines a notebook prints after choosing its profile: its plan, and minutes on this runtime and a T4."""
    # loads count from here: a world built by ensure_world just before loads a model too, not this plan's
    _started[stem], _loads_before[stem] = time.perf_counter(), load_count()
    plan, rates, here = plan or plan_for(stem, profile), load_rates(), this_runtime(profile)
    lines = [f"plan: {plan.loads} model load(s), {plan.train_examples:,} training examples, {plan.scored_examples:,} "
             "scored examples" + (f", counted as prompts of about {plan.seq_len} tokens (a longer prompt counts as "
                                  "several)" if plan.train_examples or plan.scored_examples else "")]
    for name in dict.fromkeys([here, "T4"]) if profile.device == "cuda" else [here]:
        total, r = estimate(plan, rates[name])["total_s"], rates[name]
        lines.append(f"about {total / 60:.1f} min on {name}"
                     + (f" ({r.install_s:.0f} s of it the Colab cell's installs)" if r.install_s else "")
                     + (f" (assumed: {', '.join(r.assumed)})" if r.assumed else "")
                     + (" (rates of a slow laptop CPU; a busy one takes longer)" if name.startswith("CPU") else ""))
    return "\n".join(lines + ([f"cut to fit a class hour: {plan.cut}"] if plan.cut else []))


def check_loads(stem: str, profile, plan: Plan | None = None) -> int:
    """Assert that the notebook loaded as many base models as its plan says, since its plan was printed."""
    planned, done = (plan or plan_for(stem, profile)).loads, load_count() - _loads_before.get(stem, 0)
    if planned != done:
        raise AssertionError(f"{stem} loaded {done} base model(s) but its plan in lmcls_tools.budget says {planned}: "
                             "update the plan so the printed time budget stays true.")
    return done


def finish(stem: str, profile) -> str:
    """The closing line of a notebook: time taken against the plan printed at the top, loads checked."""
    plan = plan_for(stem, profile)  # once: on tiny it reads the world's CoLA files
    loads, here = check_loads(stem, profile, plan), this_runtime(profile)
    planned = estimate(plan, load_rates()[here])["total_s"]
    taken = time.perf_counter() - _started.get(stem, time.perf_counter())
    return (f"{stem}: {taken / 60:.1f} min from course.start to here, planned about {planned / 60:.1f} min "
            f"on {here}; {loads} model load(s), as planned")


# --- each notebook's plan ------------------------------------------------------------------------
def _first(n: int, limit: int | None) -> int:
    return n if limit is None else min(n, limit)


def variants_weight(sentence_chars: int = 40) -> float:
    """Notebook 2's five prompt variants, in pattern prompts: each weighed by its length in characters.

    The instruction variants are longer than the pattern; tokens follow characters closely enough
    for a budget (a test holds them within 10% on the tiny tokenizer; SmolLM2: 7.50 tokens, 7.41 here).
    """
    return sum(len(text) + sentence_chars for text in VARIANTS.values()) / (len(PATTERN) + sentence_chars)


def _plan_02(profile, sizes) -> Plan:
    # dev: left-padded, right-padded, five prompt variants; out of domain once (exercise 1 scores dev once more)
    return Plan(1, 0, round((2 + variants_weight()) * sizes["dev"]) + sizes["ood"], seq_len=profile.prompt_tokens)


def _plan_03(profile, sizes) -> Plan:
    # notebook 3 skips the unquantized baseline where its weights alone do not fit (a T4 at 8B; planned from a laptop)
    fits = profile.device != "cuda" or (torch.cuda.is_available() and memory.fits_in_memory(quant.total_bytes(
        quant.predicted_table(llama_config(profile), dtype=profile.compute_dtype, quantize=False)), profile.device))
    precisions = 4 + fits  # NF4, NF4 + double quant, FP4, FP4 + double quant (+ 16-bit)
    # each precision: scored once with the prompt, once for perplexity; perplexity reads the bare sentence
    # (about a third of the prompt's tokens, with logits at every one): half an example
    return Plan(precisions, 0, round(precisions * 1.5 * sizes["dev"]), seq_len=profile.prompt_tokens)


def _plan_04(profile, sizes) -> Plan:
    pool, test = sizes["train"], sizes["ood"]
    train, val = pool - round(0.1 * pool), _first(round(0.1 * pool), profile.max_eval_examples)  # train_val_split's 10%
    steps = profile.num_epochs * math.ceil(train / profile.train_batch_size)
    replay = min(profile.resume_replay_steps or profile.eval_every, profile.eval_every)
    # few-shot test and validation; each validation; the test after training; three forwards of one micro-batch
    # (the loss three ways). Trained: the run, the resume's replay, three backwards of the first step (accumulation)
    scored = test + val + math.ceil(steps / profile.eval_every) * val + test + 3 * profile.micro_batch_size
    cut = "" if pool == sizes["in_domain_train"] else (
        f"one pass over {train:,} of in_domain_train's {sizes['in_domain_train']:,} sentences "
        f"(the tutorial trained on 7,696), validating on {val:,}.")
    return Plan(1, (steps + replay + 3) * profile.train_batch_size, scored,
                seq_len=profile.prompt_tokens, recompute=profile.gradient_checkpointing, cut=cut)


def _plan_06(profile, sizes) -> Plan:
    dev, pads = sizes["dev"], 3 * 17  # pads: three sentences under 0..16 pads, per head
    # grammar: the -1 head and the last-real-token head, each max_steps steps (a small set is cycled); scored: the -1
    # head's dev in 3 layouts + pads, the last-real head's 3 layouts + left/-1 + pads, the loss check (two micro-batches)
    grammar_train, grammar_scored = 2 * profile.max_steps * profile.train_batch_size, 7 * dev + 2 * pads + 2 * profile.micro_batch_size
    # the ledger tutorial's pipeline (section 7): two heads (-1, last real token), one pass over the training lines
    # padded to the file's longest line (planned at 1.5 x the mean line); each scores the test lines padded and alone
    lines = _first(len(_read_ledger(profile)) if profile.ledger_path.exists() else LEDGER_SIZE, profile.ledger_max_lines)
    test = round(0.25 * lines)
    ledger_run = profile.num_epochs * math.ceil((lines - test) / profile.train_batch_size) * profile.train_batch_size
    padded, alone = round(1.5 * profile.ledger_tokens), profile.ledger_tokens
    ledger_train, ledger_scored = 2 * ledger_run, 4 * test
    work = grammar_train + grammar_scored + ledger_train + ledger_scored
    mean_len = round((((grammar_train + grammar_scored) * profile.prompt_tokens)
                      + (ledger_train + 2 * test) * padded + 2 * test * alone) / work)
    cut = "" if profile.device != "cuda" else (
        f"{profile.max_steps} optimizer steps per grammar head (not 250), "
        + (f"the first {lines:,} ledger lines." if profile.ledger_max_lines else "every ledger line."))
    return Plan(1, grammar_train + ledger_train, grammar_scored + ledger_scored, seq_len=mean_len,
                recompute=profile.gradient_checkpointing, cut=cut)


def _plan_07(profile, sizes) -> Plan:
    grid = [n for n in profile.sample_sizes if n < sizes["train"]]
    steps = profile.readout_steps or profile.max_steps
    runs = 3 * (1 + len(grid))  # label words, linear head, SequenceClassification: on the full set and each grid size
    # the few-shot dev score, each run's dev score; the pad-id check: 4 prompts refused, then scored twice
    scored = (1 + runs) * sizes["dev"] + 3 * 4
    cut = "" if profile.device != "cuda" else (  # the class hour is a GPU's: say what the sizes above leave out
        f"{steps} optimizer steps per run, and training-set size{'s' * (len(grid) != 1)} "
        f"{', '.join(map(str, grid)) or 'none'} besides the full set (not 32 and 128).")
    return Plan(2, runs * steps * profile.train_batch_size, scored, seq_len=profile.prompt_tokens,
                recompute=profile.gradient_checkpointing, cut=cut)


def _read_ledger(profile):
    """The ledger as notebooks 7 and 8 read it; planned without one (a fresh clone), the lines ensure_world writes."""
    if profile.ledger_path.exists():
        return load_ledger(profile.ledger_path)
    from . import synthetic, world  # planning only: no build, just the generator

    return synthetic.ledger_lines(world.SIZES["ledger"], world.SEED)


def _plan_08(profile, sizes) -> Plan:
    held_out = round(0.25 * len(ledger_categories(_read_ledger(profile), seed=profile.seed)))  # train_val_split(0.25)
    test, k = _first(held_out, profile.max_eval_examples), len(CATEGORY_NAMES)
    # few-shot: each line's prompt, about k + 1 lines long, once (choice_logprobs caches it for the class names,
    # whose few other tokens are left out here), for the test set, the 4 lines of the mean check, the line scored by
    # hand and by the library, and the 'N/A' prior; the loss check (2); the 8 probe lines before and after each
    # label-word run (32); the fine-tuned label words (test + its prior) and aliases (test); the three heads (3 x test).
    # Training: 5 runs (label words; aliases; linear head plain, weighted, resampled)
    return Plan(1, 5 * profile.max_steps * profile.train_batch_size, (test + 7) * (k + 1) + 2 + 32 + 2 * test + 1
                + 3 * test, seq_len=48)


def _plan_09(profile, sizes) -> Plan:
    # one base for training (label words, a head left out of modules_to_save, a head kept: 20 steps each), then
    # load_classifier and the command line each load one. Scored: 64 check sentences before and after the label-word
    # run, by the lost head, its reload, the kept head, the merged model and the reloaded classifier; 12 of my
    # sentences (predict and predict_proba); 8 lines through the command line
    check, steps = _first(sizes["dev"], 64), 20
    return Plan(3, 3 * steps * profile.train_batch_size, 7 * check + 12 + 8, seq_len=profile.prompt_tokens,
                recompute=profile.gradient_checkpointing)


PLANS = {"01_tokenizer_subtleties": lambda profile, sizes: Plan(0, 0, 0),  # tokenizers only
         "02_prompt_scoring": _plan_02, "03_quantization_inspection": _plan_03, "04_training_loop": _plan_04,
         # notebook 5: the tutorial's step twice, the lean step twice, one more for the what-ifs, at 86 tokens
         "05_gpu_memory": lambda profile, sizes: Plan(1, 5 * profile.micro_batch_size, profile.micro_batch_size),
         "06_last_token_head": _plan_06, "07_readouts_compared": _plan_07, "08_beyond_two_labels": _plan_08,
         "09_save_reload_use": _plan_09}
