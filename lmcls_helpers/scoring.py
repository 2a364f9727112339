"""Label-word scoring: read two logits at the last real token (taught in notebook 2).

One forward pass per batch; the class is whichever label word the model finds likelier as the
next token. Notebooks 4-6 and the benchmarks reuse these functions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import accuracy_score, matthews_corrcoef

from .models import base_model as _causal_lm
from .progress import tqdm
from .prompts import PromptTemplate
from .tokens import last_token_index, require_pad_token


def last_token_logits(model, batch, lean: bool = True) -> torch.Tensor:
    """Full-vocabulary logits at each row's last real token. (batch, vocab)

    ``lean=False`` is the textbook way: logits for every position (batch, seq, vocab), then pick
    one row each. ``lean=True`` gathers the hidden states first and applies the LM head only there:
    the same numbers, without a (batch, seq, 128k) tensor (notebook 2, section 5).
    """
    last = last_token_index(batch["attention_mask"])  # (batch,)
    rows = torch.arange(len(last), device=last.device)
    if not lean:
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        return logits[rows, last]  # (batch, vocab)
    lm = _causal_lm(model)
    hidden = lm.get_decoder()(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    return lm.get_output_embeddings()(hidden[rows, last])  # (batch, vocab)


def label_logits(model, batch, label_ids: Sequence[int], lean: bool = True) -> torch.Tensor:
    """The label words' logits at the last real token. (batch, num_labels); column i is label i."""
    return last_token_logits(model, batch, lean=lean)[:, list(label_ids)]


@dataclass
class EvalResult:
    """Scores and metrics for one split. ``scores`` are raw label-word logits."""

    scores: np.ndarray  # (n, 2) logits of [" unacceptable", " acceptable"]
    labels: np.ndarray  # (n,)
    loss: float  # mean full-vocabulary cross-entropy of the true label word (what training minimizes)

    @property
    def probs(self) -> np.ndarray:
        """P(acceptable) from a softmax over the two label logits only."""
        return torch.softmax(torch.from_numpy(self.scores).float(), dim=1)[:, 1].numpy()

    @property
    def preds(self) -> np.ndarray:
        return self.scores.argmax(axis=1)

    @property
    def mcc(self) -> float:
        return float(matthews_corrcoef(self.labels, self.preds))

    @property
    def accuracy(self) -> float:
        return float(accuracy_score(self.labels, self.preds))


@torch.inference_mode()
def evaluate(
    model,
    tokenizer,
    sentences: Sequence[str],
    labels: Sequence[int],
    template: PromptTemplate,
    label_ids: Sequence[int],
    batch_size: int = 16,
    lean: bool = True,
    progress: bool = False,
) -> EvalResult:
    """Score every sentence few-shot style and compute MCC / accuracy / label-word loss."""
    if len(sentences) == 0:
        raise ValueError("Nothing to evaluate: the split is empty.")
    if len(sentences) != len(labels):
        raise ValueError(f"{len(sentences)} sentences but {len(labels)} labels.")
    require_pad_token(tokenizer)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    targets = torch.tensor([label_ids[int(y)] for y in labels])
    scores, losses = [], []
    starts = range(0, len(sentences), batch_size)
    for start in tqdm(starts, desc="scoring", disable=not progress, leave=False):
        prompts = [template.format(s) for s in sentences[start : start + batch_size]]
        batch = tokenizer(prompts, return_tensors="pt", padding=True).to(device)
        logits = last_token_logits(model, batch, lean=lean).float()  # (batch, vocab)
        losses.append(torch.nn.functional.cross_entropy(logits, targets[start : start + batch_size].to(device), reduction="sum"))
        scores.append(logits[:, list(label_ids)].cpu())
    model.train(was_training)
    return EvalResult(
        scores=torch.cat(scores).numpy(),
        labels=np.asarray(labels, dtype=int),
        loss=float(torch.stack(losses).sum() / len(sentences)),
    )


def recall_by_kind(kinds: pd.DataFrame, preds: np.ndarray) -> pd.DataFrame:
    """Per error kind: how many sentences, and the share the classifier got right (notebooks 2 and 4).

    ``kinds`` is one split's frame from ``data.error_kinds`` (a ``kind`` column, row-aligned with the
    split; "none" marks acceptable sentences). For an error kind, "right" means predicted
    unacceptable (label 0), which is that kind's recall; for "none" it means predicted acceptable.
    This is how a reader sees *which* errors a model catches, not just how many.
    """
    preds = np.asarray(preds)
    if len(kinds) != len(preds):
        raise ValueError(f"{len(kinds)} rows of kinds but {len(preds)} predictions: pass the same split for both.")
    frame = pd.DataFrame({"kind": np.asarray(kinds["kind"]), "pred": preds})
    frame["right"] = np.where(frame["kind"] == "none", frame["pred"] == 1, frame["pred"] == 0)
    table = frame.groupby("kind", sort=True).agg(sentences=("right", "size"), right=("right", "sum"))
    table["recall"] = table["right"] / table["sentences"]
    return table


# --- Label words of several tokens (issue 17) ------------------------------------------------------


def _choice_token_ids(tokenizer, choices: Sequence[str]) -> list[list[int]]:
    """Each choice's tokens on its own (no BOS), refusing a choice that gives no token to score."""
    out = []
    for k, choice in enumerate(choices):
        if not isinstance(choice, str) or not choice:
            raise ValueError(f"Choice {k} is {choice!r}: every choice must be a non-empty string such as ' acceptable'.")
        ids = tokenizer.encode(choice, add_special_tokens=False)
        if not ids:
            raise ValueError(f"Choice {k} ({choice!r}) tokenizes to no token at all: there is nothing to score. "
                             "Use a word the tokenizer keeps (check it with tokens.token_table).")
        out.append(ids)
    return out


def choice_token_counts(tokenizer, choices: Sequence[str]) -> list[int]:
    """How many tokens each choice costs after a prompt: the divisor of ``choice_logprobs(reduce="mean")``."""
    return [len(ids) for ids in _choice_token_ids(tokenizer, choices)]


@torch.inference_mode()
def choice_logprobs(
    model,
    tokenizer,
    prompts: Sequence[str],
    choices: Sequence[str],
    batch_size: int = 16,
    reduce: str = "sum",
) -> torch.Tensor:
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
    if reduce not in ("sum", "mean"):
        raise ValueError(f"reduce must be 'sum' or 'mean', got {reduce!r}.")
    if len(prompts) == 0 or len(choices) == 0:
        raise ValueError(f"Need at least one prompt and one choice, got {len(prompts)} prompts and {len(choices)} choices.")
    require_pad_token(tokenizer)
    choice_ids = _choice_token_ids(tokenizer, choices)
    prompt_ids = [tokenizer(p)["input_ids"] for p in prompts]
    empty = [i for i, ids in enumerate(prompt_ids) if not ids]
    if empty:
        raise ValueError(f"Prompts {empty} tokenize to nothing: a choice needs at least one token before it.")
    lm = _causal_lm(model)
    decoder, head = lm.get_decoder(), lm.get_output_embeddings()
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        scores = _score_choices(decoder, head, prompt_ids, choice_ids, tokenizer.pad_token_id, batch_size, device)
    finally:
        model.train(was_training)
    if reduce == "mean":
        scores = scores / torch.tensor([len(ids) for ids in choice_ids], dtype=torch.float32)
    return scores


def _score_choices(decoder, head, prompt_ids, choice_ids, pad_id: int, batch_size: int, device) -> torch.Tensor:
    """The loop of :func:`choice_logprobs`: summed log-probabilities, (prompts, choices), on the CPU."""
    scores = torch.zeros(len(prompt_ids), len(choice_ids), dtype=torch.float32)
    for start in range(0, len(prompt_ids), batch_size):
        chunk = prompt_ids[start : start + batch_size]
        width = max(map(len, chunk))
        input_ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for r, ids in enumerate(chunk):  # left padding: every prompt's last token sits at position width - 1
            input_ids[r, width - len(ids) :] = torch.tensor(ids)
            attention_mask[r, width - len(ids) :] = 1
        attention_mask = attention_mask.to(device)
        positions = (attention_mask.cumsum(dim=1) - 1).clamp(min=0)  # 0 at each prompt's first real token
        out = decoder(input_ids=input_ids.to(device), attention_mask=attention_mask, position_ids=positions,
                      use_cache=True)
        cache = out.past_key_values  # the prompts' keys and values, reused by every choice
        first = head(out.last_hidden_state[:, -1]).float().log_softmax(dim=-1)  # (chunk, vocab): each choice's 1st token
        for k, ids in enumerate(choice_ids):
            total = first[:, ids[0]]
            if len(ids) > 1:  # the choice's other tokens, each predicted from the one before it
                rest = torch.tensor(ids[:-1], device=device).expand(len(chunk), -1)  # (chunk, n - 1)
                mask = torch.cat([attention_mask, torch.ones_like(rest)], dim=1)
                steps = torch.arange(len(ids) - 1, device=device)
                hidden = decoder(input_ids=rest, attention_mask=mask, position_ids=positions[:, -1:] + 1 + steps,
                                 past_key_values=cache, use_cache=True).last_hidden_state
                logprobs = head(hidden).float().log_softmax(dim=-1)  # (chunk, n - 1, vocab)
                total = total + logprobs[:, steps, torch.tensor(ids[1:], device=device)].sum(dim=1)
                cache.crop(-(len(ids) - 1))  # drop those tokens again (a negative count, in transformers 5)
            scores[start : start + len(chunk), k] = total.cpu()
    return scores
