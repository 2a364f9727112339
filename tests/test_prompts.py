import pytest

from lmcls_helpers.profiles import LABEL_WORDS
from lmcls_helpers.prompts import PATTERN, VARIANTS, PromptTemplate


def test_format_ends_right_before_the_label():
    prompt = PromptTemplate().format("  The cat sat. ")
    assert prompt.endswith(" The cat sat. -")
    assert PromptTemplate().format("The cat sat.", " acceptable").endswith(" - acceptable")


@pytest.mark.parametrize("text, message", [("no slot here -", "no '{sentence}' slot"),
                                           ("{sentence} and {sentence} -", "exactly one"),
                                           ("{sentence} - ", "ends with a space")])
def test_bad_templates_fail_at_construction(text, message):
    with pytest.raises(ValueError, match=message):
        PromptTemplate(text)


@pytest.mark.parametrize("name", list(VARIANTS))
def test_every_variant_keeps_label_words_single_tokens_for_llama3(llama3_tokenizer, name):
    assert PromptTemplate(VARIANTS[name]).check(llama3_tokenizer, LABEL_WORDS) == [44085, 22281]


def test_a_template_that_merges_with_the_label_is_rejected(llama3_tokenizer):
    # "... Verdict: un" + "acceptable" is read as the single token " unacceptable", not "un" + "acceptable".
    with pytest.raises(ValueError, match="'acceptable' does not tokenize as its own token"):
        PromptTemplate("{sentence} Verdict: un").check(llama3_tokenizer, ["acceptable", " good"])


def test_pattern_is_the_default():
    assert PromptTemplate().text == PATTERN


def test_label_words_are_checked_at_construction(llama3_tokenizer):
    template = PromptTemplate(PATTERN, llama3_tokenizer, LABEL_WORDS)
    assert template.label_ids == (44085, 22281)
    with pytest.raises(ValueError, match="' bad grammar' is 2 tokens"):
        PromptTemplate(PATTERN, llama3_tokenizer, (" bad grammar", " acceptable"))
    with pytest.raises(ValueError, match="both a tokenizer and label_words"):
        PromptTemplate(PATTERN, llama3_tokenizer)
