"""Save a trained classifier to a folder, load it back and classify new text (notebooks 4 and 6).

An adapter alone is not a classifier: the scores also depend on the template that wraps each
sentence, the label words read (or, for a linear head, which class its sigmoid stands for) and the
base model the adapter was trained on. :func:`save_classifier` writes all of them next to the
adapter, in a ``classifier.json`` a person can read; :func:`load_classifier` checks them and returns
a :class:`Classifier` whose ``predict_proba`` computes what the notebook's evaluation computed.

From a shell: ``python -m lmcls_helpers.classify FOLDER TEXT [TEXT ...]`` or ``--file PATH`` (one text
a line) prints one line per text: the predicted label, a tab, its probability.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import __version__
from .heads import BinaryHead, head_logits, load_head_classifier, saved_head_keys
from .models import load_model
from .paths import build_dir
from .profiles import Profile, get_profile
from .prompts import PATTERN, PromptTemplate
from .scoring import _causal_lm, label_logits
from .tokens import load_tokenizer

METADATA = "classifier.json"
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
READ_OUTS = {
    "label_words": "softmax over the label words' logits at the last real token",
    "linear_head": "sigmoid of the head's logit at the last real token = P(class_names[1])",
}


def base_model_id(profile: Profile) -> str:
    """The base model as a saved classifier names it: a hub id, or the tiny world's folder relative to ``build/``.

    A relative name keeps a classifier valid when the checkout moves; random weights (the ``shapes``
    profile) are marked, since an adapter trained on them means nothing on the real model.
    """
    model_id = profile.model_id
    if Path(model_id).is_dir():
        try:
            model_id = "build/" + Path(model_id).resolve().relative_to(build_dir().resolve()).as_posix()
        except ValueError:  # a folder outside build/: keep its path
            pass
    return model_id + (" (random weights)" if profile.model_config else "")


def save_classifier(folder: str | Path, model, profile: Profile, template: PromptTemplate | str = PATTERN, *,
                    label_words: Sequence[str] | None = None, class_names: Sequence[str] | None = None) -> Path:
    """Write ``model``'s adapter (with its head, for a linear head) and ``classifier.json`` to ``folder``.

    The method follows from the model: a :class:`heads.BinaryHead` output layer makes it a linear
    head, which needs ``class_names`` (label 0 first; its sigmoid is P(class_names[1])). Otherwise it
    reads ``label_words`` (default: the profile's), and the class names default to those words
    without their leading space. ``classifier.json`` is written last: a folder that has it is complete.
    """
    if not hasattr(model, "peft_config"):
        raise ValueError("save_classifier saves a LoRA adapter, and this model has none: pass the PeftModel "
                         "returned by get_peft_model(...) (a plain base model has nothing of its own to save).")
    lm = _causal_lm(model)
    trained_on = getattr(lm.config, "name_or_path", "")
    if trained_on and not profile.model_config and trained_on != profile.model_id:
        raise ValueError(f"The model was loaded from {trained_on!r} but profile {profile.name!r} names {profile.model_id!r}: "
                         "pass the profile the model was loaded with.")
    text = template.text if isinstance(template, PromptTemplate) else template
    if any(isinstance(m, BinaryHead) for m in lm.get_output_embeddings().modules()):  # peft may wrap the head
        method = "linear_head"
        if label_words is not None:
            raise ValueError("A linear head reads no label words: pass class_names=(name of label 0, name of label 1).")
        if class_names is None:
            raise ValueError("A linear head's logit has no names: pass class_names=(name of label 0, name of label 1), "
                             "e.g. ('unacceptable', 'acceptable') or ('Expense', 'Income').")
        PromptTemplate(text)  # refuses a template without its {sentence} slot
    else:
        method = "label_words"
        label_words = tuple(profile.label_words if label_words is None else label_words)
        PromptTemplate(text, tokenizer=load_tokenizer(profile), label_words=label_words)  # each word one token after it
        class_names = [w.strip() for w in label_words] if class_names is None else class_names
    class_names = [str(c) for c in class_names]
    if len(class_names) != 2 or len(set(class_names)) != 2 or not all(c.strip() for c in class_names):
        raise ValueError(f"class_names must be two distinct non-empty names (label 0 first), got {class_names}.")
    folder = Path(folder)
    (folder / METADATA).unlink(missing_ok=True)  # an interrupted save must not leave an old, complete-looking folder
    model.save_pretrained(folder)
    if method == "linear_head" and not saved_head_keys(folder):
        raise ValueError("The adapter was saved without its head (the head would come back random): build the model "
                         "with LoraConfig(modules_to_save=[heads.HEAD_MODULE]) and train it again.")
    meta = {"method": method, "class_names": class_names, "label_words": None if label_words is None else list(label_words),
            "template": text, "read_out": READ_OUTS[method], "base_model": base_model_id(profile),
            "profile": profile.name, "lmcls_version": __version__}
    (folder / METADATA).write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n")
    return folder


def _check_texts(texts: Sequence[str]) -> list[str]:
    if isinstance(texts, str):
        raise TypeError("Pass a list of texts, e.g. [text]: a single string would be classified letter by letter.")
    texts = list(texts)
    for i, text in enumerate(texts):
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"Text {i} is {text!r}: there is no sentence to classify. Drop empty texts first.")
    return texts


@dataclass
class Classifier:
    """A loaded classifier: ``predict_proba`` gives one column per class, in the order of ``class_names``."""

    model: torch.nn.Module
    tokenizer: object
    template: PromptTemplate
    method: str
    class_names: tuple[str, ...]
    profile: Profile
    batch_size: int = 16

    @torch.inference_mode()
    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), classes) probabilities, computed as the notebooks' evaluation does, in batches."""
        texts = _check_texts(texts)
        device = next(self.model.parameters()).device
        probs = [torch.zeros(0, len(self.class_names))]
        for start in range(0, len(texts), self.batch_size):
            prompts = [self.template.format(t) for t in texts[start : start + self.batch_size]]
            batch = self.tokenizer(prompts, return_tensors="pt", padding=True).to(device)
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
    """``classifier.json``, after checking that the folder holds every file a load needs."""
    folder = Path(folder)
    if not (folder / METADATA).is_file():
        raise ValueError(f"{folder} has no {METADATA}: it is not a saved classifier (or its save did not finish). "
                         "Write one with save_classifier(folder, model, profile, template, ...).")
    meta = json.loads((folder / METADATA).read_text())
    if meta.get("method") not in READ_OUTS:
        raise ValueError(f"{folder / METADATA} names method {meta.get('method')!r}, not one of {sorted(READ_OUTS)}.")
    missing = [name for name in ADAPTER_FILES if not (folder / name).is_file()]
    if missing:
        raise ValueError(f"{folder} lacks {', '.join(missing)}: copy the whole folder, or save it again with save_classifier.")
    return meta


def load_classifier(folder: str | Path, profile: Profile | None = None, batch_size: int | None = None) -> Classifier:
    """The classifier saved in ``folder``, on a freshly loaded base model (default: the profile it was saved with).

    Refuses a folder made on another base model than ``profile``'s: the adapter's numbers only mean
    something on the weights it was trained on. On a GPU expect scores equal to the notebook's up to
    ``profile.tolerance``; on the CPU (fp32) they agree to about 1e-6.
    """
    meta = read_metadata(folder)
    profile = get_profile(meta["profile"]) if profile is None else profile
    if base_model_id(profile) != meta["base_model"]:
        raise ValueError(f"{folder} was trained on {meta['base_model']!r}, but profile {profile.name!r} loads "
                         f"{base_model_id(profile)!r}. Load it with the profile it was made on "
                         f"(get_profile({meta['profile']!r})), or train and save a classifier on this base model.")
    tokenizer = load_tokenizer(profile, padding_side="right")  # as notebooks 4 and 6 score
    if meta["method"] == "linear_head":
        model = load_head_classifier(load_model(profile), folder, seed=profile.seed)
        template = PromptTemplate(meta["template"])
    else:
        from peft import PeftModel

        template = PromptTemplate(meta["template"], tokenizer=tokenizer, label_words=tuple(meta["label_words"]))
        model = PeftModel.from_pretrained(load_model(profile), str(folder)).eval()
    return Classifier(model=model, tokenizer=tokenizer, template=template, method=meta["method"],
                      class_names=tuple(meta["class_names"]), profile=profile,
                      batch_size=batch_size or profile.eval_batch_size)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: one ``label<TAB>probability`` line per text, in the order given."""
    parser = argparse.ArgumentParser(prog="python -m lmcls_helpers.classify", description=__doc__.splitlines()[0])
    parser.add_argument("folder", help="a folder written by save_classifier, e.g. build/classifiers/04_label_words")
    parser.add_argument("texts", nargs="*", help="texts to classify")
    parser.add_argument("--file", type=Path, help="a UTF-8 file with one text a line")
    parser.add_argument("--batch-size", type=int, default=None)
    args = parser.parse_args(argv)
    texts = list(args.texts)
    if args.file is not None:
        if not args.file.is_file():
            parser.error(f"--file {args.file}: no such file.")
        texts += args.file.read_text(encoding="utf-8").splitlines()
    if not texts:
        parser.error("nothing to classify: give texts, or --file PATH with one text a line.")
    try:
        _check_texts(texts)  # before the model loads: a blank line fails in a second, not after a minute
        classifier = load_classifier(args.folder, batch_size=args.batch_size)
        probs = classifier.predict_proba(texts)
    except ValueError as err:
        parser.error(str(err))
    for row in probs:
        k = int(row.argmax())
        print(f"{classifier.class_names[k]}\t{row[k]:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
