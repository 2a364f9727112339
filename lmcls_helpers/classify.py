"""Save a trained classifier to a folder, load it back and classify new text (notebook 9).

An adapter alone is not a classifier: the scores also depend on the template that wraps each
sentence, the label words read (or, for a linear head, which class its sigmoid stands for) and the
base model the adapter was trained on. :func:`save_classifier` writes all of them next to the
adapter, in a ``classifier.json`` a person can read; :func:`load_classifier` checks them and returns
a :class:`Classifier` whose ``predict_proba`` computes what the notebook's evaluation computed.

From a shell: ``python -m lmcls_helpers.classify FOLDER TEXT [TEXT ...]`` or ``--file PATH`` (one text
a line, blank lines skipped) prints one line per text: the predicted label, a tab, its probability.
Loading needs the folder and the base model only: not the corpus the profile trained on, and not a
GPU (a classifier saved on a GPU profile loads on the CPU when none is visible, and says so).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import __version__
from .heads import LinearHead, head_logits, load_linear_head, require_saved_head
from .models import base_model, load_model
from .paths import build_dir
from .profiles import Profile, get_profile
from .prompts import PATTERN, PromptTemplate
from .scoring import label_logits
from .tokens import load_tokenizer

METADATA = "classifier.json"
READ_OUTS = {"label_words": "softmax over the label words' logits at the last real token",
             "linear_head": "sigmoid of the head's logit at the last real token = P(class_names[1])"}


def base_model_id(profile: Profile) -> str:
    """The base model as a saved classifier names it: a hub id, or the tiny world's folder relative to ``build/``.

    A relative name keeps a classifier valid when the checkout moves; random weights (``shapes``) are marked.
    """
    path, build = Path(profile.model_id).resolve(), build_dir().resolve()
    name = f"build/{path.relative_to(build).as_posix()}" if path.is_dir() and path.is_relative_to(build) else profile.model_id
    return name + (" (random weights)" if profile.model_config else "")


def save_classifier(folder: str | Path, model, profile: Profile, template: PromptTemplate | str = PATTERN, *,
                    label_words: Sequence[str] | None = None, class_names: Sequence[str] | None = None) -> Path:
    """Write ``model``'s adapter (with its head, for a linear head) and ``classifier.json`` to ``folder``.

    A :class:`heads.LinearHead` output layer needs ``class_names`` (label 0 first); label words default
    to the profile's. ``classifier.json`` is written last: a folder that has it is complete.
    """
    if not hasattr(model, "peft_config"):
        raise ValueError("save_classifier saves a LoRA adapter, and this model has none: pass get_peft_model's PeftModel.")
    lm, text = base_model(model), getattr(template, "text", template)
    if (trained_on := getattr(lm.config, "name_or_path", "")) and not profile.model_config and trained_on != profile.model_id:
        raise ValueError(f"The model was loaded from {trained_on!r}, profile {profile.name!r} names {profile.model_id!r}: "
                         "pass the profile the model was loaded with.")
    heads = [m for m in lm.get_output_embeddings().modules() if isinstance(m, LinearHead)]  # peft may wrap the head
    if (head := bool(heads)) and heads[0].out_features != 1:
        raise ValueError(f"This head has {heads[0].out_features} outputs; a saved classifier holds one logit (sigmoid = "
                         "P(label 1)) or label words: notebook 8's k-class heads cannot be saved this way yet.")
    if head and (label_words is not None or class_names is None):
        raise ValueError("A linear head reads no label words and its logit has no names: pass class_names=(label 0, label 1).")
    if head:
        PromptTemplate(text)  # refuses a template without its {sentence} slot
    else:
        label_words = tuple(profile.label_words if label_words is None else label_words)
        PromptTemplate(text, tokenizer=load_tokenizer(profile), label_words=label_words)  # each word one token after it
        class_names = [w.strip() for w in label_words] if class_names is None else class_names
    class_names = [str(c) for c in class_names]
    if len(class_names) != 2 or len(set(class_names)) != 2 or not all(c.strip() for c in class_names):
        raise ValueError(f"class_names must be two distinct non-empty names (label 0 first), got {class_names}.")
    folder, method = Path(folder), "linear_head" if head else "label_words"
    (folder / METADATA).unlink(missing_ok=True)  # an interrupted save must not leave an old, complete-looking folder
    model.save_pretrained(folder)
    if head:
        require_saved_head(folder)
    meta = {"method": method, "class_names": class_names, "label_words": None if head else list(label_words), "template": text,
            "read_out": READ_OUTS[method], "base_model": base_model_id(profile), "profile": profile.name, "lmcls_version": __version__}
    (folder / METADATA).write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n")
    return folder


def _check_texts(texts: Sequence[str]) -> list[str]:
    if isinstance(texts, str):
        raise TypeError("Pass a list of texts, e.g. [text]: a single string would be classified letter by letter.")
    for i, text in enumerate(texts):
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"Text {i} is {text!r}: there is no sentence to classify. Drop empty texts first.")
    return list(texts)


@dataclass
class Classifier:
    """A loaded classifier: ``predict_proba`` gives one column per class, in the order of ``class_names``."""

    model: torch.nn.Module
    tokenizer: object
    template: PromptTemplate
    method: str
    class_names: tuple[str, ...]
    batch_size: int = 16

    @torch.inference_mode()
    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), classes) probabilities, computed as the notebooks' evaluation does, in batches."""
        texts, probs = _check_texts(texts), [torch.zeros(0, len(self.class_names))]
        prompts, device = [self.template.format(t) for t in texts], next(self.model.parameters()).device
        context = getattr(base_model(self.model).config, "max_position_embeddings", None)  # what it was trained to read
        for i, n in enumerate(len(ids) for ids in self.tokenizer(prompts)["input_ids"]):
            if context and n > context:  # refused, not truncated: a cut prompt loses its end, where the answer is read
                raise ValueError(f"Text {i} ({texts[i][:30]!r}...) makes a prompt of {n:,} tokens, more than the "
                                 f"{context:,} the model can read (its context): split it into sentences, one a text.")
        for start in range(0, len(texts), self.batch_size):
            batch = self.tokenizer(prompts[start : start + self.batch_size], return_tensors="pt", padding=True).to(device)
            if self.method == "label_words":  # as scoring.evaluate(...).probs, for every column
                chunk = torch.softmax(label_logits(self.model, batch, self.template.label_ids).float(), dim=1)
            else:  # one logit: sigmoid is P(label 1)
                p1 = torch.sigmoid(head_logits(self.model, batch).float())
                chunk = torch.stack([1 - p1, p1], dim=1)
            probs.append(chunk.cpu())
        return torch.cat(probs).numpy()

    def predict(self, texts: Sequence[str]) -> list[str]:
        """The most probable class name for each text."""
        return [self.class_names[k] for k in self.predict_proba(texts).argmax(axis=1)]


def read_metadata(folder: str | Path) -> dict:
    """``classifier.json``, after checking it and that the folder holds every file a load needs."""
    folder = Path(folder)
    if not (folder / METADATA).is_file():
        raise ValueError(f"{folder} has no {METADATA}, so no classifier was saved there (or its save stopped): use save_classifier.")
    try:
        meta = json.loads((folder / METADATA).read_text(encoding="utf-8"))
        valid = meta["method"] in READ_OUTS and {"class_names", "template", "base_model", "profile"} <= set(meta) \
            and len(meta["class_names"]) == 2 and (meta["method"] != "label_words" or len(meta.get("label_words") or ()) == 2)
    except (ValueError, TypeError, KeyError):  # not JSON (a JSONDecodeError is a ValueError), or not an object
        valid = False
    if not valid:
        raise ValueError(f"{folder / METADATA} is corrupt or incomplete: copy it again from where the classifier was saved, "
                         "or save the classifier again with save_classifier.")
    if missing := [n for n in ("adapter_config.json", "adapter_model.safetensors") if not (folder / n).is_file()]:
        raise ValueError(f"{folder} lacks {', '.join(missing)}: copy the whole folder, or save it again with save_classifier.")
    return meta


def saved_profile(name: str) -> Profile:
    """Profile ``name`` as a load needs it: without the corpus it trains on, and on the CPU when no GPU is visible."""
    profile = get_profile(name, require_device=False)  # 'small' checks for real CoLA, 'full' for a GPU: training needs them
    if profile.device == "cuda" and not torch.cuda.is_available():  # bitsandbytes runs NF4 on the CPU too, slowly
        print(f"No GPU visible: loading the {name!r} classifier on the CPU, in float32 (slow for a large model).", file=sys.stderr)
        profile = profile.with_(device="cpu", compute_dtype=torch.float32)
    return profile


def load_classifier(folder: str | Path, profile: Profile | None = None, batch_size: int | None = None) -> Classifier:
    """The classifier saved in ``folder``, on a freshly loaded base model (by default, :func:`saved_profile`'s).

    Refuses a folder made on another base model: an adapter only means something on its own weights.
    Expect the notebook's scores up to the saved profile's ``tolerance`` (about 1e-6 when both ran in fp32).
    """
    meta = read_metadata(folder)
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}.")
    if meta["base_model"].startswith("build/") and not (build_dir().parent / meta["base_model"]).is_dir():
        raise ValueError(f"Its base model {meta['base_model']} is missing: build it first (`make world`, or `make small` "
                         f"for 'small'; in Python: ensure_world(get_profile({meta['profile']!r}))).")
    profile = saved_profile(meta["profile"]) if profile is None else profile
    if base_model_id(profile) != meta["base_model"]:
        raise ValueError(f"{folder} was trained on {meta['base_model']!r}, but profile {profile.name!r} loads {base_model_id(profile)!r}. "
                         f"Load it with the profile it was made on (get_profile({meta['profile']!r})), or train and save one on this base.")
    tokenizer, base = load_tokenizer(profile, padding_side="right"), load_model(profile)  # right: as notebooks 4 and 6
    if meta["method"] == "linear_head":
        model, template = load_linear_head(base, folder, seed=profile.seed), PromptTemplate(meta["template"])
    else:
        from peft import PeftModel

        template = PromptTemplate(meta["template"], tokenizer=tokenizer, label_words=tuple(meta["label_words"]))
        model = PeftModel.from_pretrained(base, str(folder)).eval()
    return Classifier(model, tokenizer, template, meta["method"], tuple(meta["class_names"]), batch_size or profile.eval_batch_size)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: one ``label<TAB>probability`` line per text, in the order given."""
    parser = argparse.ArgumentParser(prog="python -m lmcls_helpers.classify", description=__doc__.splitlines()[0])
    parser.add_argument("folder", help="a folder written by save_classifier, e.g. build/classifiers/09_label_words")
    parser.add_argument("texts", nargs="*", help="texts to classify")
    parser.add_argument("--file", type=Path, help="a UTF-8 file with one text a line (blank lines are skipped)")
    parser.add_argument("--batch-size", type=int, default=None, help="texts per forward pass (at least 1)")
    args = parser.parse_args(argv)
    if args.file is not None and not args.file.is_file():
        parser.error(f"--file {args.file}: no such file.")
    try:
        lines = args.file.read_text(encoding="utf-8").splitlines() if args.file else []
    except (OSError, UnicodeDecodeError) as err:
        parser.error(f"--file {args.file}: cannot read it as UTF-8 text ({err}).")
    texts = args.texts + [line for line in lines if line.strip()]
    if not texts:
        parser.error("nothing to classify: give texts, or --file PATH with one text a line.")
    try:
        _check_texts(texts)  # before the model loads: a blank line fails in a second, not after a minute
        classifier = load_classifier(args.folder, batch_size=args.batch_size)
        probs = classifier.predict_proba(texts)
    except (ValueError, RuntimeError, OSError) as err:  # bad input, or a profile/hub problem: the message names the fix
        parser.error(f"{err}" + ("\nThe base model cannot be loaded: download it, or set LMCLS_MODEL to a local copy of it."
                                 if isinstance(err, OSError) else ""))
    for row in probs:
        print(f"{classifier.class_names[row.argmax()]}\t{row.max():.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
