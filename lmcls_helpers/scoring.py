"""Label-word scoring: read two logits at the last real token (taught in notebook 2).

One forward pass per batch; the class is whichever label word the model finds likelier as the
next token. Notebooks 4-6 and the benchmarks reuse these functions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.metrics import accuracy_score, matthews_corrcoef
from tqdm.auto import tqdm

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
