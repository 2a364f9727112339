"""Scoring on a fake model whose logits we know: P(unacceptable) rises with each " bad" token."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lmcls_helpers.prompts import PromptTemplate
from lmcls_helpers.scoring import evaluate, label_logits

LABEL_IDS = [44085, 22281]  # " unacceptable", " acceptable" in Llama 3


class CountingLM(torch.nn.Module):
    """hidden[t] = (number of " bad" tokens in real tokens <= t, 1); the LM head turns that into
    logit(" unacceptable") = 2 * bad - 1 and logit(" acceptable") = 0. Padding never counts."""

    def __init__(self, bad_id: int, vocab: int = 128256):
        super().__init__()
        self.bad_id = bad_id
        self.head = torch.nn.Linear(2, vocab, bias=False)
        with torch.no_grad():
            self.head.weight.zero_()
            self.head.weight[LABEL_IDS[0]] = torch.tensor([2.0, -1.0])
        self.anchor = torch.nn.Parameter(torch.zeros(1))  # gives the model a device

    def _hidden(self, input_ids, attention_mask):
        bad = ((input_ids == self.bad_id) & attention_mask.bool()).float().cumsum(dim=1)
        return torch.stack([bad, torch.ones_like(bad)], dim=-1)  # (batch, seq, 2)

    def get_decoder(self):
        return lambda input_ids, attention_mask: SimpleNamespace(last_hidden_state=self._hidden(input_ids, attention_mask))

    def get_output_embeddings(self):
        return self.head

    def forward(self, input_ids, attention_mask):
        return SimpleNamespace(logits=self.head(self._hidden(input_ids, attention_mask)))


SENTENCES = ["The cat sat.", "The bad cat sat.", "A bad bad day.", "Fine.", "Nothing bad here at all today."]
EXPECTED = np.array([1, 0, 0, 1, 0])


@pytest.fixture(scope="module")
def fake(llama3_tokenizer):
    bad_id = llama3_tokenizer.encode(" bad", add_special_tokens=False)[0]
    return CountingLM(bad_id)


@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("lean", [True, False])
def test_known_logits_give_the_expected_predictions(fake, llama3_tokenizer, side, lean):
    llama3_tokenizer.padding_side = side
    result = evaluate(fake, llama3_tokenizer, SENTENCES, EXPECTED, PromptTemplate(), LABEL_IDS, batch_size=2, lean=lean)
    np.testing.assert_array_equal(result.preds, EXPECTED)
    assert result.mcc == 1.0 and result.accuracy == 1.0
    bads = np.array([s.count(" bad") + s.startswith("bad") for s in SENTENCES])
    np.testing.assert_allclose(result.scores[:, 0], 2 * bads - 1)
    assert result.probs.shape == (5,) and ((result.probs > 0.5) == EXPECTED).all()


@settings(max_examples=15, deadline=None)
@given(batch_size=st.integers(1, 6), side=st.sampled_from(["left", "right"]))
def test_scores_do_not_depend_on_batching_or_padding(fake, llama3_tokenizer, batch_size, side):
    llama3_tokenizer.padding_side = "left"
    reference = evaluate(fake, llama3_tokenizer, SENTENCES, EXPECTED, PromptTemplate(), LABEL_IDS, batch_size=1)
    llama3_tokenizer.padding_side = side
    other = evaluate(fake, llama3_tokenizer, SENTENCES, EXPECTED, PromptTemplate(), LABEL_IDS, batch_size=batch_size)
    np.testing.assert_allclose(other.scores, reference.scores)
    assert other.loss == pytest.approx(reference.loss)


def test_label_logits_reads_the_last_real_token_not_the_last_column(fake, llama3_tokenizer):
    llama3_tokenizer.padding_side = "right"
    batch = llama3_tokenizer(["bad bad bad", "ok"], return_tensors="pt", padding=True)
    scores = label_logits(fake, batch, LABEL_IDS)  # (2, 2)
    assert scores.shape == (2, 2)
    assert scores[1, 0].item() == -1.0  # "ok" has no " bad", though its row ends in padding


def test_bad_inputs(fake, llama3_tokenizer):
    with pytest.raises(ValueError, match="empty"):
        evaluate(fake, llama3_tokenizer, [], [], PromptTemplate(), LABEL_IDS)
    with pytest.raises(ValueError, match="2 sentences but 1 labels"):
        evaluate(fake, llama3_tokenizer, ["a", "b"], [1], PromptTemplate(), LABEL_IDS)
    llama3_tokenizer.pad_token = None
    try:
        with pytest.raises(ValueError, match="no pad token"):
            evaluate(fake, llama3_tokenizer, ["a"], [1], PromptTemplate(), LABEL_IDS)
    finally:
        llama3_tokenizer.pad_token = llama3_tokenizer.eos_token
