"""Training examples and batches for label-word fine-tuning (taught in notebook 4, sections 1-5).

A training example is the prompt followed by its label word. Every position's target is -100
(ignored by the loss) except the label word's own position, so the model learns one thing only:
which label word comes after the prompt. :func:`label_loss` computes that loss two ways, the
textbook way (logits for every position) and the lean way (the LM head only where the label is
predicted); both give the same numbers, the lean one without a (batch, seq, vocab) tensor.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import torch
import torch.nn.functional as F

from .prompts import PromptTemplate
from .scoring import lean_logits
from .tokens import last_token_index

#: PyTorch's ``cross_entropy`` skips targets equal to this (its default ``ignore_index``).
IGNORE_INDEX = -100


def train_val_split(df: pd.DataFrame, val_fraction: float = 0.1, seed: int = 42) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Shuffle with a fixed seed, then hold out ``val_fraction`` for validation (notebook 4, section 1)."""
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be between 0 and 1, got {val_fraction}.")
    if (n_val := round(len(df) * val_fraction)) in (0, len(df)):
        raise ValueError(f"Splitting {len(df)} rows with val_fraction={val_fraction} leaves an empty split; "
                         "use more rows or another fraction.")
    shuffled = df.sample(frac=1.0, random_state=seed).reset_index(drop=True)
    return shuffled.iloc[n_val:].reset_index(drop=True), shuffled.iloc[:n_val].reset_index(drop=True)


def encode_examples(tokenizer, sentences: Sequence[str], labels: Sequence[int], template: PromptTemplate,
                    label_words: Sequence[str]) -> list[list[int]]:
    """Token ids of ``prompt + label word`` for each sentence; the label word must be the last token.

    ``template.check`` proves on a probe sentence that each label word stays one token after the
    prompt; here every real example is checked too, because one odd sentence end is enough to
    move the label (and a tokenizer that appends EOS would move every one).
    """
    if len(sentences) == 0 or len(sentences) != len(labels):
        raise ValueError(f"{len(sentences)} sentences but {len(labels)} labels: pass one label per sentence, and a "
                         "split that is not empty (check the data path and max_train_examples).")
    label_ids = template.check(tokenizer, label_words)
    encoded = []
    for sentence, label in zip(sentences, labels):
        if int(label) not in range(len(label_words)):
            raise ValueError(f"Label {label!r} is not one of 0..{len(label_words) - 1}.")
        ids = tokenizer(template.format(sentence, label_words[int(label)]))["input_ids"]
        if ids[-1] != label_ids[int(label)]:
            raise ValueError(f"The label word {label_words[int(label)]!r} is not the last token of the example for "
                             f"{sentence!r} (last tokens: {tokenizer.convert_ids_to_tokens(ids[-3:])}). The tokenizer "
                             "must not append tokens (such as EOS) and the label word must not merge with the prompt.")
        encoded.append(ids)
    return encoded


def collate(examples: Sequence[Sequence[int]], pad_id: int, padding_side: str = "right",
            pad_to: int | None = None) -> dict[str, torch.Tensor]:
    """Pad token-id lists into a batch whose ``labels`` are -100 except at each label word.

    Returns ``input_ids``, ``attention_mask`` and ``labels``, all (batch, seq). The label word is
    the last real token, found with ``last_token_index`` so that either padding side works.
    ``seq`` is the batch's longest example (dynamic padding), or ``pad_to``: the CoLA tutorial
    tokenized its whole training set in one call, so every batch was as long as the longest example.
    """
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}.")
    if len(examples) == 0 or any(len(ids) < 2 for ids in examples):
        raise ValueError("Each example needs at least two tokens (a prompt and its label word), and a batch at least one.")
    width = max(map(len, examples)) if pad_to is None else pad_to
    if width < max(map(len, examples)):
        raise ValueError(f"pad_to={pad_to} is shorter than the batch's longest example ({max(map(len, examples))} "
                         "tokens): pass the longest length in the data, or None for dynamic padding.")
    pad = [(0, width - len(ids)) if padding_side == "right" else (width - len(ids), 0) for ids in examples]
    input_ids = torch.stack([F.pad(torch.as_tensor(ids, dtype=torch.long), p, value=pad_id) for ids, p in zip(examples, pad)])
    attention_mask = torch.stack([F.pad(torch.ones(len(ids), dtype=torch.long), p) for ids, p in zip(examples, pad)])
    labels = torch.full_like(input_ids, IGNORE_INDEX)
    rows, label_pos = torch.arange(len(examples)), last_token_index(attention_mask)  # (batch,) each
    labels[rows, label_pos] = input_ids[rows, label_pos]
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def step_batches(lengths: Sequence[int], train_batch_size: int, micro_batch_size: int, seed: int,
                 epoch: int = 0) -> list[list[list[int]]]:
    """One epoch's plan: optimizer steps, each a list of micro-batches of example indices.

    The examples of a step are drawn at random (seeded by ``seed`` and ``epoch``, so a resumed
    run replays the same order); inside a step they are sorted by length before being cut into
    micro-batches, which wastes less padding and cannot change the step's summed gradient.
    The last step may be smaller than ``train_batch_size``.
    """
    if len(lengths) == 0:
        raise ValueError("No examples to batch: the training split is empty.")
    if micro_batch_size < 1 or train_batch_size % micro_batch_size:
        raise ValueError(f"train_batch_size ({train_batch_size}) must be a multiple of micro_batch_size ({micro_batch_size}).")
    order = torch.randperm(len(lengths), generator=torch.Generator().manual_seed(seed + epoch)).tolist()
    plan = []
    for start in range(0, len(order), train_batch_size):
        step = sorted(order[start : start + train_batch_size], key=lambda i: (lengths[i], i))
        plan.append([step[i : i + micro_batch_size] for i in range(0, len(step), micro_batch_size)])
    return plan


def _label_positions(labels: torch.Tensor) -> torch.LongTensor:
    """The one non-ignored position per row; anything else is a batching bug worth stopping for."""
    targets = labels != IGNORE_INDEX
    if not bool((targets.sum(dim=1) == 1).all()) or bool(targets[:, 0].any()):
        raise ValueError(f"Each row needs exactly one target (the label word), after position 0 (nothing comes before "
                         f"it to predict it); found {targets.sum(dim=1).tolist()} at {targets.nonzero().tolist()}.")
    return targets.float().argmax(dim=1)


def label_loss(model, batch: dict[str, torch.Tensor], lean: bool = True) -> torch.Tensor:
    """Summed cross-entropy of the label words (a scalar); divide by the step's example count.

    ``lean=False``: logits at every position (batch, seq, vocab), shifted by one so position t
    predicts token t+1, padded targets ignored (what ``model(..., labels=...)`` does inside).
    ``lean=True``: hidden states at the position *before* each label word, then the LM head on
    those rows only, (batch, vocab). Same loss and gradients (notebook 4, section 4).
    """
    labels = batch["labels"]
    if not lean:
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), reduction="sum")
    label_pos = _label_positions(labels)  # (batch,)
    logits = lean_logits(model, batch, label_pos - 1)  # (batch, vocab): where each label word is predicted
    return F.cross_entropy(logits.float(), labels.gather(1, label_pos[:, None])[:, 0], reduction="sum")
