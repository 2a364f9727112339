"""Prompt templates with a ``{sentence}`` slot, checked against a tokenizer (notebook 2).

The main template is the CoLA tutorial's final, pattern-style prompt: a line of context, two
examples, then the sentence followed by `` -`` so the next token is the label word. Every line
starts with a space, and the label words are quoted with their leading space inside the quotes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from .tokens import label_token_ids

PATTERN = (
    " Examples of sentences that are grammatically ' acceptable' or ' unacceptable':\n"
    " Him and me are going to the store. - unacceptable\n"
    " Him and I are going to the store. - acceptable\n"
    " {sentence} -"
)

#: The tutorial's two examples, shown before the sentence in every prompt.
EXAMPLES = (("Him and me are going to the store.", "unacceptable"), ("Him and I are going to the store.", "acceptable"))


def _instruction(question: str, lead: str = " ") -> str:
    """A prompt of the tutorial's instruction style: the question, each example answered after ``A:``."""
    shots = "".join(f"{lead}{question}: {sentence}\n{lead}A: {label}\n\n" for sentence, label in EXAMPLES)
    return f"{shots}{lead}{question}: {{sentence}}\n{lead}A:"


#: The variants of the tutorial's prompt ablation, in the order it tried them (notebook 2).
VARIANTS = {  # the tutorial's first line also began with a space, an accident of its triple quotes
    "instruction": _instruction("Classify this sentence as grammatically acceptable or unacceptable", lead=""),
    "instruction + leading spaces": _instruction("Classify this sentence as grammatically acceptable or unacceptable"),
    "quoted labels": _instruction("Classify the grammar of this sentence as 'acceptable' or 'unacceptable'"),
    "space inside quotes": _instruction("Classify the grammar of this sentence as ' acceptable' or ' unacceptable'"),
    "pattern": PATTERN,
}


@dataclass(frozen=True)
class PromptTemplate:
    """A few-shot template; ``format(sentence)`` ends right before the label word.

    ``format(sentence, label_word)`` appends the label word, for training (notebook 4). Given a
    ``tokenizer`` and ``label_words``, construction also runs :meth:`check` and keeps the ids in
    ``label_ids``: a template that cannot work with this tokenizer never exists.
    """

    text: str = PATTERN
    tokenizer: object = field(default=None, repr=False, compare=False)
    label_words: Sequence[str] | None = None
    label_ids: tuple[int, ...] | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        if (n := self.text.count("{sentence}")) != 1:
            raise ValueError(f"The template has {n or 'no'} '{{sentence}}' slot{'s' * (n > 1)}: put exactly one where "
                             "the sentence goes.")
        if self.text.endswith(" "):
            raise ValueError("The template ends with a space. The label word brings its own leading space "
                             "(' acceptable'), so a trailing space would make it a different token.")
        if (self.tokenizer is None) != (self.label_words is None):
            raise ValueError("Pass both a tokenizer and label_words (to check them now), or neither.")
        if self.tokenizer is not None:
            object.__setattr__(self, "label_ids", tuple(self.check(self.tokenizer, self.label_words)))

    def format(self, sentence: str, label_word: str = "") -> str:
        return self.text.replace("{sentence}", sentence.strip()) + label_word

    def check(self, tokenizer, label_words) -> list[int]:
        """Label ids, after checking each label word stays one token at the end of this prompt."""
        ids = label_token_ids(tokenizer, label_words)
        probe = self.format("The cat sat.")
        base = tokenizer.encode(probe, add_special_tokens=False)
        for word, token_id in zip(label_words, ids):
            full = tokenizer.encode(probe + word, add_special_tokens=False)
            if full[:-1] != base or full[-1] != token_id:
                raise ValueError(f"After this prompt, {word!r} does not tokenize as its own token {token_id}: the "
                                 f"prompt's last tokens merge with it ({tokenizer.convert_ids_to_tokens(full[-3:])}). "
                                 "End the template with a character that does not merge, such as ' -' or ':'.")
        return ids
