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

from .progress import tqdm
from .prompts import PromptTemplate
from .tokens import last_token_index, require_pad_token


def _causal_lm(model):
    """The causal LM under a PEFT wrapper (LoRA layers stay injected), or the model itself."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


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

    ``kinds`` is one split's frame from ``world.error_kinds`` (a ``kind`` column, row-aligned with the
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
    the tokens before it, so its log-probability is a sum: one forward pass over ``prompt + choice``
    scores every token at once (the logits at position t predict token t + 1). Each (prompt, choice)
    pair is one row; rows are padded on ``tokenizer.padding_side`` and run ``batch_size`` at a time.

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
    pairs = [(i, k) for i in range(len(prompts)) for k in range(len(choices))]
    lm = _causal_lm(model)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    totals = torch.zeros(len(pairs), dtype=torch.float32)
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start : start + batch_size]
        seqs = [prompt_ids[i] + choice_ids[k] for i, k in chunk]
        width = max(map(len, seqs))
        input_ids = torch.full((len(seqs), width), tokenizer.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(seqs), width), dtype=torch.long)
        rows, cols, targets = [], [], []  # one entry per scored choice token
        for r, ((i, k), seq) in enumerate(zip(chunk, seqs)):
            offset = width - len(seq) if tokenizer.padding_side == "left" else 0
            input_ids[r, offset : offset + len(seq)] = torch.tensor(seq)
            attention_mask[r, offset : offset + len(seq)] = 1
            first = offset + len(prompt_ids[i])  # where the choice's first token sits
            for j, token in enumerate(choice_ids[k]):
                rows.append(r)
                cols.append(first + j - 1)  # the position whose logits predict that token
                targets.append(token)
        hidden = lm.get_decoder()(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device)).last_hidden_state
        logits = lm.get_output_embeddings()(hidden[rows, cols]).float()  # (tokens, vocab): the LM head only where needed
        token_logprobs = logits.log_softmax(dim=-1).gather(1, torch.tensor(targets, device=device)[:, None])[:, 0]
        totals.index_add_(0, torch.tensor(rows) + start, token_logprobs.cpu())
    model.train(was_training)
    scores = totals.view(len(prompts), len(choices))
    if reduce == "mean":
        scores = scores / torch.tensor([len(ids) for ids in choice_ids], dtype=torch.float32)
    return scores
