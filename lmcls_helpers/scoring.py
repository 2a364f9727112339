"""Label-word scoring: read two logits at the last real token (taught in notebook 2).

One forward pass per batch; the class is whichever label word the model finds likelier as the
next token. Notebooks 4-6 and the benchmarks reuse these functions.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import accuracy_score, matthews_corrcoef
from torch.nn.utils.rnn import pad_sequence
from tqdm.auto import tqdm

from .models import base_model
from .prompts import PromptTemplate
from .tokens import last_token_index, require_pad_token


def lean_logits(model, batch, positions: torch.Tensor) -> torch.Tensor:
    """Full-vocabulary logits at one position per row, (batch, vocab): the LM head runs on those rows only.

    The lean read-out of notebooks 2 and 4: no (batch, seq, vocab) tensor, the same numbers.
    """
    lm = base_model(model)
    hidden = lm.get_decoder()(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    return lm.get_output_embeddings()(hidden[torch.arange(len(positions), device=positions.device), positions])


def last_token_logits(model, batch, lean: bool = True) -> torch.Tensor:
    """Full-vocabulary logits at each row's last real token. (batch, vocab)

    ``lean=False`` is the textbook way: logits for every position (batch, seq, vocab), then one row
    each; ``lean=True`` is :func:`lean_logits` (notebook 2, section 5).
    """
    last = last_token_index(batch["attention_mask"])  # (batch,)
    if lean:
        return lean_logits(model, batch, last)
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return logits[torch.arange(len(last), device=last.device), last]  # (batch, vocab)


def label_logits(model, batch, label_ids: Sequence[int], lean: bool = True) -> torch.Tensor:
    """The label words' logits at the last real token. (batch, num_labels); column i is label i."""
    return last_token_logits(model, batch, lean=lean)[:, list(label_ids)]


@dataclass
class EvalResult:
    """Scores and metrics for one split. ``scores`` are raw label-word logits; the rest is derived from them.

    ``probs``: P(acceptable) from a softmax over the two label logits only; ``preds``: the likelier label word.
    """

    scores: np.ndarray  # (n, 2) logits of [" unacceptable", " acceptable"]
    labels: np.ndarray  # (n,)
    loss: float  # mean full-vocabulary cross-entropy of the true label word (what training minimizes)

    def __post_init__(self) -> None:
        self.probs = torch.softmax(torch.from_numpy(self.scores).float(), dim=1)[:, 1].numpy()
        self.preds = self.scores.argmax(axis=1)
        self.mcc, self.accuracy = float(matthews_corrcoef(self.labels, self.preds)), float(accuracy_score(self.labels, self.preds))


@torch.inference_mode()
def evaluate(model, tokenizer, sentences: Sequence[str], labels: Sequence[int], template: PromptTemplate,
             label_ids: Sequence[int], batch_size: int = 16, lean: bool = True, progress: bool = False) -> EvalResult:
    """Score every sentence few-shot style and compute MCC / accuracy / label-word loss."""
    if len(sentences) == 0 or len(sentences) != len(labels):
        raise ValueError(f"{len(sentences)} sentences but {len(labels)} labels: pass one label per sentence, "
                         "and a split that is not empty.")
    require_pad_token(tokenizer)
    was_training, device = model.training, next(model.parameters()).device
    model.eval()
    targets = torch.tensor([label_ids[int(y)] for y in labels], device=device)
    scores, losses = [], []
    off = not progress or bool(os.environ.get("TQDM_DISABLE"))  # tqdm.notebook ignores TQDM_DISABLE on its own
    for start in tqdm(range(0, len(sentences), batch_size), desc="scoring", disable=off, leave=False):
        prompts = [template.format(s) for s in sentences[start : start + batch_size]]
        logits = last_token_logits(model, tokenizer(prompts, return_tensors="pt", padding=True).to(device), lean).float()
        losses.append(torch.nn.functional.cross_entropy(logits, targets[start : start + batch_size], reduction="sum"))
        scores.append(logits[:, list(label_ids)].cpu())
    model.train(was_training)
    return EvalResult(torch.cat(scores).numpy(), np.asarray(labels, dtype=int), float(torch.stack(losses).sum() / len(sentences)))


def recall_by_kind(kinds: pd.DataFrame, preds: np.ndarray) -> pd.DataFrame:
    """Per error kind: how many sentences, and the share the classifier got right (notebooks 2 and 4).

    ``kinds`` is one split's frame from ``data.error_kinds`` (a ``kind`` column, row-aligned with the
    split; "none" marks acceptable sentences). For an error kind, "right" means predicted
    unacceptable (label 0), which is that kind's recall; for "none" it means predicted acceptable.
    This is how a reader sees *which* errors a model catches, not just how many.
    """
    if len(kinds) != len(preds):
        raise ValueError(f"{len(kinds)} rows of kinds but {len(preds)} predictions: pass the same split for both.")
    frame = pd.DataFrame({"kind": np.asarray(kinds["kind"]), "pred": np.asarray(preds)})
    frame["right"] = np.where(frame["kind"] == "none", frame["pred"] == 1, frame["pred"] == 0)
    table = frame.groupby("kind", sort=True).agg(sentences=("right", "size"), right=("right", "sum"))
    table["recall"] = table["right"] / table["sentences"]
    return table


# --- Label words of several tokens (issue 17) ------------------------------------------------------


def _choice_token_ids(tokenizer, choices: Sequence[str]) -> list[list[int]]:
    """Each choice's tokens on its own (no BOS), refusing a choice that gives no token to score."""
    ids = [tokenizer.encode(c, add_special_tokens=False) if isinstance(c, str) else [] for c in choices]
    if empty := [k for k, i in enumerate(ids) if not i]:
        raise ValueError(f"Choice {empty[0]} is {choices[empty[0]]!r}, which tokenizes to no token: every choice must be a "
                         "non-empty string the tokenizer keeps, such as ' acceptable' (check it with tokens.token_table).")
    return ids


def choice_token_counts(tokenizer, choices: Sequence[str]) -> list[int]:
    """How many tokens each choice costs after a prompt: the divisor of ``choice_logprobs(reduce="mean")``."""
    return [len(ids) for ids in _choice_token_ids(tokenizer, choices)]


@torch.inference_mode()
def choice_logprobs(model, tokenizer, prompts: Sequence[str], choices: Sequence[str], batch_size: int = 16,
                    reduce: str = "sum") -> torch.Tensor:
    """log P(choice | prompt) for every prompt and candidate continuation. (len(prompts), len(choices))

    A label word of several tokens (``" grammatical"`` might be ``" gram" + "matical"``) has no single
    logit to read. Its probability is the product of each token's probability given the prompt and
    the tokens before it, so its log-probability is a sum. By definition that is one forward pass
    over ``prompt + choice``, reading the logits at position t for token t + 1.

    The prompt is the same for every choice, so it runs once: ``batch_size`` prompts at a time,
    left-padded so that each ends at the same position, with positions counted from each prompt's
    first real token (as ``generate`` counts them), keeping their keys and values (the KV cache).
    Its last position scores every choice's first token. For a choice of n > 1 tokens, its first
    n - 1 tokens then run on top of the cache in one short pass, predicting its other tokens, and
    the cache is cropped back to the prompts, so choices never see each other. A prompt of hundreds
    of tokens costs one pass rather than k. The numbers equal the definition's (a test holds them to
    a plain loop over tokens, one unpadded row at a time).

    The prompt (with the tokenizer's BOS, as :func:`evaluate` tokenizes it) and the choice are
    tokenized *separately* and their ids concatenated, so the scored tokens are exactly
    ``tokenizer.encode(choice, add_special_tokens=False)``: tokenizing the joined text could merge
    the prompt's last characters with the choice's first. The leading space belongs to the choice
    (``" acceptable"``, not ``"acceptable"``: another token, rarely seen after ``" -"``); SentencePiece
    tokenizers may add their own ``▁`` to a text encoded alone, so look at the pieces
    (:func:`tokens.token_table`) before trusting a score.

    ``reduce="sum"`` is the log-probability of the whole choice; ``"mean"`` divides by its token count
    (:func:`choice_token_counts`), which removes the bias against longer words that a sum has, and
    changes what is being compared. When every choice is one token, the sum is the full-vocabulary
    log-softmax of :func:`last_token_logits` at those token ids.
    """
    if reduce not in ("sum", "mean") or len(prompts) == 0 or len(choices) == 0:
        raise ValueError(f"Need at least one prompt and one choice (got {len(prompts)} and {len(choices)}), and "
                         f"reduce must be 'sum' or 'mean' (got {reduce!r}).")
    require_pad_token(tokenizer)
    choice_ids = _choice_token_ids(tokenizer, choices)
    prompt_ids = [tokenizer(p)["input_ids"] for p in prompts]
    if not all(prompt_ids):
        raise ValueError("A prompt tokenizes to nothing: a choice needs at least one token before it.")
    lm, was_training, device = base_model(model), model.training, next(model.parameters()).device
    decoder, head = lm.get_decoder(), lm.get_output_embeddings()
    scores = torch.zeros(len(prompt_ids), len(choice_ids), dtype=torch.float32)
    model.eval()
    try:
        for start in range(0, len(prompt_ids), batch_size):
            chunk = [torch.tensor(ids) for ids in prompt_ids[start : start + batch_size]]
            # left padding: every prompt's last token sits at the last column
            input_ids = pad_sequence(chunk, batch_first=True, padding_value=tokenizer.pad_token_id, padding_side="left")
            mask = pad_sequence([torch.ones_like(c) for c in chunk], batch_first=True, padding_side="left").to(device)
            positions = (mask.cumsum(dim=1) - 1).clamp(min=0)  # 0 at each prompt's first real token
            out = decoder(input_ids=input_ids.to(device), attention_mask=mask, position_ids=positions, use_cache=True)
            cache = out.past_key_values  # the prompts' keys and values, reused by every choice
            first = head(out.last_hidden_state[:, -1]).float().log_softmax(dim=-1)  # (chunk, vocab): 1st tokens
            for k, ids in enumerate(choice_ids):
                total = first[:, ids[0]]
                if len(ids) > 1:  # the choice's other tokens, each predicted from the one before it
                    rest = torch.tensor(ids[:-1], device=device).expand(len(chunk), -1)  # (chunk, n - 1)
                    steps = torch.arange(len(ids) - 1, device=device)
                    hidden = decoder(input_ids=rest, attention_mask=torch.cat([mask, torch.ones_like(rest)], dim=1),
                                     position_ids=positions[:, -1:] + 1 + steps, past_key_values=cache,
                                     use_cache=True).last_hidden_state
                    logprobs = head(hidden).float().log_softmax(dim=-1)  # (chunk, n - 1, vocab)
                    total = total + logprobs[:, steps, torch.tensor(ids[1:], device=device)].sum(dim=1)
                    cache.crop(-(len(ids) - 1))  # drop those tokens again (a negative count, in transformers 5)
                scores[start : start + len(chunk), k] = total.cpu()
    finally:
        model.train(was_training)
    return scores / torch.tensor([len(ids) if reduce == "mean" else 1 for ids in choice_ids], dtype=torch.float32)
