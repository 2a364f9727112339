"""A one-logit classification head on a causal LM's last real token (taught in notebook 6, used in 7).

The Mistral ledger tutorial swaps the 32,000-word LM head for ``Linear(4096, 1)`` and trains it
with binary cross-entropy: one logit, a sigmoid, a threshold. Three details decide whether that
works, and each has a function here: which position is read (:func:`head_logits`, via
``last_token_index`` rather than ``-1``), whether the new head is trained and saved with the LoRA
adapter (:data:`HEAD_MODULE` in ``modules_to_save``), and whether a reload restores it
(:func:`load_linear_head` refuses an adapter that lacks it).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .tokens import last_token_index

#: The attribute :func:`add_linear_head` replaces; name it in ``LoraConfig(modules_to_save=[HEAD_MODULE])``.
HEAD_MODULE = "lm_head"
#: Where :func:`head_logits` reads: the last real token, or the last column (the seed's ``logits[:, -1, :]``).
READS = ("last_real", "minus_one")


class LinearHead(nn.Linear):
    """``Linear(hidden, num_labels)`` with a bias, in float32: with one logit, ``sigmoid(logit) = P(label 1)``.

    Unlike the tutorial's bias-free head it learns the threshold too, and it casts bf16 hidden states up.
    ``seed`` draws its initial values from a private generator: the same head on any model, the global RNG untouched.
    """

    def __init__(self, hidden_size: int, seed: int | None = None, num_labels: int = 1) -> None:
        if not all(isinstance(n, int) and n >= 1 for n in (hidden_size, num_labels)):
            raise ValueError(f"hidden_size and num_labels must be positive ints, got {hidden_size!r} and {num_labels!r}.")
        with torch.random.fork_rng(devices=[], enabled=seed is not None):  # nn.Linear draws from the global RNG
            super().__init__(hidden_size, num_labels, bias=True, dtype=torch.float32)
        if seed is not None:  # nn.Linear's default range, drawn from our own generator
            generator, bound = torch.Generator().manual_seed(seed), 1 / hidden_size**0.5
            with torch.no_grad():
                self.weight.uniform_(-bound, bound, generator=generator)
                self.bias.uniform_(-bound, bound, generator=generator)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """(..., hidden) -> (..., num_labels)."""
        if hidden_states.shape[-1] != self.in_features:
            raise ValueError(f"The head expects hidden states of size {self.in_features}, but the model produced "
                             f"{hidden_states.shape[-1]}: build it with add_linear_head(model) on the model it sits on.")
        return super().forward(hidden_states.to(self.weight.dtype))


def add_linear_head(model, seed: int | None = None, num_labels: int = 1):
    """Replace the causal LM's vocabulary head with a :class:`LinearHead`; returns ``model``.

    Afterwards ``model(**batch).logits`` is (batch, seq, num_labels); notebook 8 uses k > 1 labels.
    Call it before ``get_peft_model`` and before ``PeftModel.from_pretrained``.
    """
    if hasattr(model, "peft_config"):
        raise ValueError("The model is already wrapped by PEFT. Add the head to the plain causal LM first, then "
                         f"call get_peft_model(model, LoraConfig(..., modules_to_save=[{HEAD_MODULE!r}])).")
    config = getattr(model, "config", None)
    hidden = getattr(config.get_text_config() if hasattr(config, "get_text_config") else config, "hidden_size", None)
    if not isinstance(hidden, int) or not hasattr(model, "set_output_embeddings"):
        raise ValueError(f"{type(model).__name__} has no config.hidden_size or no output layer to replace: pass a "
                         "causal LM from models.load_model(profile) (or AutoModelForCausalLM), before LoRA wraps it.")
    old = model.get_output_embeddings()
    model.set_output_embeddings(LinearHead(hidden, seed, num_labels).to(old.weight.device if old is not None else next(model.parameters()).device))
    # A tied LM head shares the input embeddings' matrix; the new head must not be re-tied to it.
    for config in {id(c): c for c in (model.config, model.config.get_text_config())}.values():
        config.tie_word_embeddings = False
    return model




def head_logits(model, batch, read: str = "last_real", num_labels: int = 1) -> torch.Tensor:
    """The head's logits at each row's last real token (``"last_real"``) or last column: (batch,), or (batch, k).

    ``"minus_one"`` is ``logits[:, -1]``: right for left padding, a pad token's score for
    every shorter row of a right-padded batch. It is here so notebook 6 can measure the bug.
    """
    if read not in READS:
        raise ValueError(f"read must be one of {READS}, got {read!r}.")
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits  # (batch, seq, k)
    if logits.dim() != 3 or logits.shape[-1] != num_labels:
        raise ValueError(f"The model returns {tuple(logits.shape)} logits, not (batch, seq, {num_labels}): either it still has "
                         "its vocabulary head (call add_linear_head(model, num_labels=...) before wrapping it with LoRA), "
                         f"or its head has {logits.shape[-1]} outputs (pass num_labels={logits.shape[-1]}).")
    if read == "minus_one":
        picked = logits[:, -1]
    else:
        last = last_token_index(batch["attention_mask"])  # (batch,)
        picked = logits[torch.arange(len(last), device=logits.device), last]  # (batch, k)
    return picked[:, 0] if num_labels == 1 else picked


def saved_head_keys(folder: str | Path) -> list[str]:
    """Names of the head's tensors inside a saved adapter (empty: the head was not saved)."""
    from safetensors import safe_open

    if not (path := Path(folder) / "adapter_model.safetensors").exists():
        raise FileNotFoundError(f"{path} is missing: save the adapter with model.save_pretrained({str(folder)!r}).")
    with safe_open(str(path), framework="pt") as f:
        return [k for k in f.keys() if f".{HEAD_MODULE}." in f".{k}"]


def require_saved_head(folder: str | Path) -> list[str]:
    """The head's tensor names in a saved adapter; ``ValueError`` when it was saved without them.

    A check on the folder alone, so a notebook can ask before loading a base model (notebook 9).
    """
    if keys := saved_head_keys(folder):
        return keys
    raise ValueError(f"The adapter in {Path(folder).name} was saved without its head (no {HEAD_MODULE!r} tensors), so "
                     f"it would come back random: train again with LoraConfig(modules_to_save=[{HEAD_MODULE!r}]).")


def load_linear_head(model, folder: str | Path, seed: int | None = None):
    """A fresh causal LM + its saved LoRA adapter and head, ready to score (eval mode).

    Refuses an adapter saved without ``modules_to_save=[HEAD_MODULE]``: it would keep a freshly drawn
    random head, and predictions that depend on that draw (notebook 9).
    """
    from peft import PeftModel

    require_saved_head(folder)
    return PeftModel.from_pretrained(add_linear_head(model, seed=seed), str(folder)).eval()
