"""Profiles: the one place where sizes, model ids and data paths are chosen.

Every notebook runs the same code on two worlds. ``tiny`` (the default) is CPU-only and
offline: a locally built tiny Llama and synthetic data under ``build/tiny/``. ``full`` is the
Colab-GPU world of the Llama 3 CoLA tutorial: the real 8B model and the real CoLA data.
``shapes`` is the real 8B *architecture* with random weights, for measuring memory and speed
on any GPU without a download. ``small`` sits between: a real pre-trained Llama (SmolLM2-135M,
built once under ``build/small/`` by ``make small``) in 4-bit NF4 on the CPU, on the real CoLA.
Choose with ``LMCLS_PROFILE`` or ``get_profile("full")``. On ``small`` and ``full``,
``LMCLS_MODEL`` (a hub id or a local folder) swaps in another Llama-architecture model and
``LMCLS_COLA_DIR`` points at an unzipped ``cola_public/`` folder.
"""

from __future__ import annotations

import importlib.util
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from .memory import GPUS, TUTORIAL_SEQ_LEN, cublas_workspace_mib, cuda_context_gib, estimate_training_memory, fits
from .paths import build_dir

#: Label 0 is "unacceptable", label 1 is "acceptable", as in CoLA. Leading spaces matter (notebook 1).
LABEL_WORDS = (" unacceptable", " acceptable")

#: Meta-Llama-3-8B's config, copied from its config.json, so the 8B shape is known offline.
LLAMA3_8B_CONFIG = {"model_type": "llama", "vocab_size": 128256, "hidden_size": 4096, "intermediate_size": 14336,
                    "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
                    "max_position_embeddings": 8192, "rope_theta": 500000.0, "rms_norm_eps": 1e-05,
                    "tie_word_embeddings": False, "bos_token_id": 128000, "eos_token_id": 128001}


@dataclass(frozen=True)
class Profile:
    """Everything size- or world-dependent that a notebook needs, as plain data."""

    name: str
    model_id: str  # a hub id, or a local folder for the tiny world
    tokenizer_id: str
    cola_root: Path  # a folder holding ``raw/in_domain_train.tsv`` etc.
    ledger_path: Path  # CSV with columns ``text``, ``label`` (0 = Expense, 1 = Income)
    device: str
    compute_dtype: torch.dtype
    load_in_4bit: bool = True
    label_words: tuple[str, str] = LABEL_WORDS
    # scoring
    eval_batch_size: int = 16
    max_eval_examples: int | None = None  # None: the whole split
    # training (notebook 4); names shared by all notebooks
    train_batch_size: int = 8  # the batch size the maths wants
    micro_batch_size: int = 8  # the batch size the device holds at once
    gradient_checkpointing: bool = False  # recompute activations in backward: less memory, about 30% more time
    num_epochs: int = 1
    lr: float = 1e-4
    weight_decay: float = 0.05
    warmup_steps: int = 100
    eval_every: int = 200  # optimizer steps between validations
    max_grad_norm: float = 1.0
    max_train_examples: int | None = None
    max_steps: int | None = None  # optimizer steps per run where a notebook compares many runs (notebooks 6 and 7)
    sample_sizes: tuple[int, ...] = (32, 128, 512)  # training-set sizes of notebook 7's sample-efficiency grid
    readout_steps: int | None = None  # optimizer steps per run in notebook 7's six or nine runs (None: max_steps)
    ledger_max_lines: int | None = None  # ledger lines a notebook uses (None: all)
    resume_replay_steps: int | None = None  # notebook 4 replays this many steps after a resume (None: to the next checkpoint)
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    seed: int = 42
    # time plans (lmcls_tools.budget): tokens of the pattern prompt with a CoLA sentence as batches pad it
    # (Llama 3: the tutorial's 86), and of a ledger line, on this profile's tokenizer
    prompt_tokens: int = 86
    ledger_tokens: int = 32
    torch_threads: int | None = None  # CPU threads for torch, set by get_profile (None: torch's default)
    model_config: dict = field(default_factory=dict)  # for ``shapes``: build from this, no weights

    @property
    def grad_accum_steps(self) -> int:
        """Micro-batches per optimizer step, so that ``micro * accum == train_batch_size``."""
        return self.train_batch_size // self.micro_batch_size

    @property
    def tolerance(self) -> dict[str, float]:
        """``rtol``/``atol`` for comparing two computations of the same logits in ``compute_dtype``.

        fp32 agrees to about 1e-5; bf16 keeps 8 bits of mantissa, so a logit near 16 moves in
        steps of 0.06 when padding or batching changes the order of a sum; fp16 keeps 11 bits.
        """
        return {torch.float32: {"rtol": 1e-4, "atol": 1e-3}, torch.float16: {"rtol": 1e-2, "atol": 5e-2},
                torch.bfloat16: {"rtol": 3e-2, "atol": 2e-1}}[self.compute_dtype]

    def with_(self, **changes) -> Profile:
        """A copy with some fields changed (e.g. for an exercise)."""
        return replace(self, **changes)


def _tiny(require_device: bool = True) -> Profile:
    root = build_dir("tiny")
    return Profile(name="tiny", model_id=str(root / "model"), tokenizer_id=str(root / "tokenizer-bpe"),
                   cola_root=root / "cola_public", ledger_path=root / "ledger" / "ledger.csv", device="cpu",
                   compute_dtype=torch.float32, eval_batch_size=64, train_batch_size=16, lr=2e-3, weight_decay=0.0,
                   warmup_steps=10, eval_every=25, max_steps=50,
                   sample_sizes=(32, 128),  # notebook 7's curve: 32, 128 and all 3,000 sentences
                   prompt_tokens=50, ledger_tokens=28,  # the tiny tokenizer: about 50 per prompt, 28 per ledger line
                   torch_threads=1)  # a 64-wide model gains nothing from a second thread (see get_profile)


def _require_gpu_and_bitsandbytes(name: str) -> None:
    """Stop with the fix when there is no GPU, no bitsandbytes, or a bitsandbytes whose CUDA kernels do not load."""
    if not torch.cuda.is_available():
        raise RuntimeError(f"The '{name}' profile needs a CUDA GPU and none is visible. In Colab choose Runtime > Change runtime "
                           "type > T4 GPU (or better); on this machine use the default 'tiny' profile (unset LMCLS_PROFILE).")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise RuntimeError(f"The '{name}' profile loads the model in 4 bits and needs bitsandbytes: `pip install bitsandbytes`, then restart.")
    try:  # installed is not enough: its CUDA kernels must load for this GPU and driver
        from bitsandbytes.functional import quantize_4bit

        quantize_4bit(torch.zeros(64, device="cuda", dtype=torch.float16), quant_type="nf4")
    except Exception as err:
        raise RuntimeError(f"bitsandbytes is installed but cannot quantize on this GPU ({type(err).__name__}: {err}). Reinstall "
                           "it for this CUDA version (`pip install -U bitsandbytes`), restart the runtime, or use 'tiny'.") from err


def _full(require_device: bool = True, name: str = "full") -> Profile:
    """The tutorial's sizes on a Colab GPU; without one (planning from a laptop, ``require_device=False``) a free T4.

    The compute dtype is bf16 where the GPU does it natively (Ampere, compute capability 8.0, and
    newer), else fp16: ``torch.cuda.is_bf16_supported()`` answers True on a T4 too, because bf16
    can be emulated there, and emulated bf16 is slow. A T4 has 14.75 GiB visible.
    """
    gpu = require_device or torch.cuda.is_available()
    if gpu:
        _require_gpu_and_bitsandbytes(name)
    dtype = torch.bfloat16 if gpu and torch.cuda.get_device_capability()[0] >= 8 else torch.float16
    t4 = GPUS["T4 16 GB"]
    gib = torch.cuda.get_device_properties(0).total_memory / 2**30 if gpu else t4["capacity_gib"]
    # micro-batch 8 as the tutorial, which held it on a T4 without checkpointing: we checkpoint only where notebook 5's
    # estimator (86-token prompts, the label-position loss) says the step does not fit, by the suite's one rule
    contexts = cuda_context_gib()
    context = contexts["T4 16 GB"] if gib < 15 else max(contexts.values())  # a T4's assumed context, else the larger
    peak = estimate_training_memory(LLAMA3_8B_CONFIG, batch_size=8, seq_len=TUTORIAL_SEQ_LEN, logits="label", dtype=dtype,
                                    workspace_mib=cublas_workspace_mib("cuda") if gpu else t4["workspace_mib"])["total"]
    model_id = _custom_model() or "meta-llama/Meta-Llama-3-8B"
    return Profile(name="full", model_id=model_id, tokenizer_id=model_id, cola_root=_cola_root(),
                   ledger_path=build_dir("tiny", "ledger", "ledger.csv"), device="cuda", compute_dtype=dtype,
                   eval_batch_size=16 if dtype == torch.bfloat16 else 8,
                   gradient_checkpointing=not fits(peak, gib, context), eval_every=150,  # 3 validations of 450 steps
                   max_steps=80,  # notebook 6 trains 2 grammar heads of 640 examples each within a class hour on a T4
                   sample_sizes=(64,), readout_steps=60, ledger_max_lines=400,  # notebook 7: 6 runs of 480 examples
                   max_train_examples=4000,  # 3,600 to train on, 400 to validate: a class hour on a T4
                   resume_replay_steps=10)  # notebook 4 replays 10 steps after its resume


def _shapes(require_device: bool = True) -> Profile:
    return replace(_full(require_device, name="shapes"), name="shapes", model_config=dict(LLAMA3_8B_CONFIG))


def _cola_root() -> Path:
    """``$LMCLS_COLA_DIR`` when set (a folder holding ``raw/in_domain_train.tsv`` etc.), else ``./cola_public``."""
    env = os.environ.get("LMCLS_COLA_DIR")
    return Path(env).expanduser().resolve() if env else Path.cwd() / "cola_public"


def _cola_reachable(timeout: float = 5.0) -> bool:
    """Whether CoLA's zip can be downloaded from here (one HEAD request)."""
    import urllib.request

    from .data import COLA_URL

    try:
        with urllib.request.urlopen(urllib.request.Request(COLA_URL, method="HEAD"), timeout=timeout):
            return True
    except Exception:  # no network, DNS failure, proxy refusal: all mean "offline" here
        return False


def _require_cola(root: Path) -> None:
    """Stop now, with the ways to get it, when real CoLA is neither on disk nor downloadable.

    Downloadable is enough: the notebooks download it into the working directory (data.download_cola).
    """
    from .data import COLA_SPLITS

    missing = [f"raw/{s}.tsv" for s in COLA_SPLITS if not (root / "raw" / f"{s}.tsv").exists()]
    if missing and os.environ.get("LMCLS_COLA_DIR"):
        raise RuntimeError(f"LMCLS_COLA_DIR={root} lacks {', '.join(missing)}: point it at an unzipped cola_public/ "
                           "folder (`lmcls_helpers.data.download_cola(dest)` creates one under dest).")
    if missing and not _cola_reachable():
        raise RuntimeError(f"The 'small' profile runs on the real CoLA corpus, which is not in {root} and cannot be downloaded "
                           "(no network). Either run `from lmcls_helpers.data import download_cola; download_cola(DEST)` once on "
                           "a machine with network access and set LMCLS_COLA_DIR=DEST/cola_public, or copy an unzipped "
                           "cola_public/ folder here, or use the offline 'tiny' profile (unset LMCLS_PROFILE).")


def _custom_model() -> str | None:
    """``$LMCLS_MODEL`` (hub id or local folder); :func:`ensure_world` checks it (Llama projections, label words).

    A value that is no folder here and cannot be a hub id (``owner/name``) is a mistyped folder: say so, not the hub.
    """
    value = os.environ.get("LMCLS_MODEL", "").strip()
    if value and not Path(value).is_dir() and (value.startswith((".", "/", "~")) or not re.fullmatch(r"[\w.-]+(/[\w.-]+)?", value)):
        raise ValueError(f"LMCLS_MODEL={value} names no folder here (and no hub model): set it to the folder that holds the model's "
                         "config.json and weights (an absolute path), or a hub id like 'HuggingFaceTB/SmolLM2-135M', or unset it.")
    return value or None


def _small(require_device: bool = True) -> Profile:
    """SmolLM2-135M-Instruct (a real pre-trained Llama, 30 layers, width 576) in NF4 on the CPU, real CoLA.

    Sizes aim at a notebook suite in 30 minutes of a 4-core laptop. Measured on real CoLA (2-core
    AMD EPYC, 2026-12-04; the pattern prompt pads to about 60 tokens): the suite in 43 minutes
    (about 9 prompts scored and 3 examples trained per second; see ``measurements/runtime_rates.json``),
    about 27 on 4 cores by the 1.6x that 2 -> 4 threads measured (``benchmarks/cpu_threads.py``),
    and notebook 4's 57 steps of 16 leave the model at chance, as 124 steps at lr 1e-3 did, with or
    without a class-balanced loss, so this profile asserts no fine-tuning gain.
    """
    cola_root = _cola_root()
    if require_device:
        _require_cola(cola_root)
        if importlib.util.find_spec("bitsandbytes") is None:
            raise RuntimeError("The 'small' profile loads the model in 4 bits: `pip install bitsandbytes` (0.50+ runs them on the CPU).")
    model_id = _custom_model() or str(build_dir("small"))  # built by ensure_world (or `make small`)
    return Profile(name="small", model_id=model_id, tokenizer_id=model_id, cola_root=cola_root,
                   ledger_path=build_dir("tiny", "ledger", "ledger.csv"), device="cpu", compute_dtype=torch.float32,
                   eval_batch_size=64, max_eval_examples=200, train_batch_size=16, lr=3e-4, weight_decay=0.0,
                   warmup_steps=5, eval_every=15, max_train_examples=1000, max_steps=8,
                   sample_sizes=(64,), ledger_max_lines=400,  # notebook 7's grid as on full; the first 400 ledger lines
                   prompt_tokens=60)  # SmolLM2's tokenizer pads real CoLA dev to 60 at batch 64 (50 on average)


PROFILES = {"tiny": _tiny, "full": _full, "shapes": _shapes, "small": _small}


def get_profile(name: str | None = None, require_device: bool = True) -> Profile:
    """The profile called ``name``, else ``$LMCLS_PROFILE``, else ``tiny``.

    ``full`` and ``shapes`` stop here, in the first cell, when there is no GPU or no bitsandbytes.
    ``require_device=False`` gives their sizes anyway (for a T4), to plan a session without a GPU.

    It also sets torch's CPU threads to ``profile.torch_threads`` where the profile names a number.
    The tiny profile asks for one: its 64-wide matrices are too small to share between cores (a
    training step takes as long on one thread as on two), one thread sums in the same order on
    every machine, and it leaves the other core to a second notebook (``make test`` runs two at once).
    """
    name = (name or os.environ.get("LMCLS_PROFILE") or "tiny").strip().lower()
    if name not in PROFILES:
        raise ValueError(f"Unknown profile {name!r}: choose one of {sorted(PROFILES)}.")
    profile = PROFILES[name](require_device)
    if profile.torch_threads:
        torch.set_num_threads(profile.torch_threads)
    return profile


def ensure_world(profile: Profile, smollm2: str | None = None) -> Path | None:
    """What every notebook calls first: build what ``profile`` reads from ``build/`` once, then reuse it.

    The tiny world on ``tiny``; SmolLM2's folder on ``small``; a model chosen with ``LMCLS_MODEL``
    is checked. ``smollm2="model"`` or ``"tokenizer"`` returns a folder with SmolLM2's weights or
    its tokenizer alone. The build tooling lives in ``lmcls_tools`` (``make world``, ``make small``).
    """
    from lmcls_tools.world import ensure_world as build_what_is_missing

    return build_what_is_missing(profile, smollm2)


def library_versions() -> dict[str, str | None]:
    """Versions of python and the libraries that decide the numbers (None: not installed; cuda: None without)."""
    import platform
    from importlib import metadata

    versions = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda}
    # from the installed metadata: importing peft takes seconds
    return {**versions, **{dist: next((d.version for d in metadata.distributions(name=dist)), None)
                           for dist in ("transformers", "tokenizers", "peft", "bitsandbytes")}}


def environment_report(profile: Profile) -> str:
    """Library versions and the device, printed by every notebook so a pasted error has context."""
    root, model = build_dir().parent, Path(profile.model_id).resolve()
    # a folder in this checkout is shown relative to it: outputs never carry a machine's paths
    model = str(model.relative_to(root)) if model.is_relative_to(root) else profile.model_id
    versions = library_versions()
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        device = f"{props.name}, {props.total_memory / 2**30:.1f} GiB"
    else:  # the code path is AVX2 unless overridden: see lmcls_helpers/__init__.py
        threads = torch.get_num_threads()
        device = f"CPU ({threads} thread{'s' * (threads != 1)}, {torch.backends.cpu.get_cpu_capability()} code path)"
    return "\n".join([f"profile: {profile.name}   model: {model}", "   ".join(f"{k} {versions[k] or 'not installed'}" for k in (
        "python", "torch", "transformers", "peft", "bitsandbytes")), f"device: {device}, compute dtype {profile.compute_dtype}"])
