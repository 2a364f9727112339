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
    """A fake LM whose label logits we can compute by hand, and that punishes a wrong read position.

    At a position holding the prompt's final ``' -'`` token: logit(" unacceptable") = 2 * bad - 1 and
    logit(" acceptable") = 0, where ``bad`` counts the " bad" tokens among the real tokens so far.
    At any other position (padding, or a token too early): logit(" acceptable") = 5 and
    logit(" unacceptable") = 0, so a read that misses the last real token changes scores and predictions.
    """

    def __init__(self, bad_id: int, dash_id: int, vocab: int = 128256):
        super().__init__()
        self.bad_id, self.dash_id = bad_id, dash_id
        self.head = torch.nn.Linear(3, vocab, bias=False)
        with torch.no_grad():
            self.head.weight.zero_()
            self.head.weight[LABEL_IDS[0]] = torch.tensor([2.0, -1.0, 0.0])
            self.head.weight[LABEL_IDS[1]] = torch.tensor([0.0, 0.0, 5.0])
        self.anchor = torch.nn.Parameter(torch.zeros(1))  # gives the model a device

    def _hidden(self, input_ids, attention_mask):
        real = attention_mask.bool()
        bad = ((input_ids == self.bad_id) & real).float().cumsum(dim=1)
        dash = ((input_ids == self.dash_id) & real).float()
        return torch.stack([bad * dash, dash, 1 - dash], dim=-1)  # (batch, seq, 3)

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
    dash_id = llama3_tokenizer.encode(PromptTemplate().format("x"), add_special_tokens=False)[-1]  # the prompt's ' -'
    assert llama3_tokenizer.convert_ids_to_tokens(dash_id) == "Ġ-"
    return CountingLM(bad_id, dash_id)


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


@pytest.mark.parametrize("lean", [True, False])
def test_label_logits_reads_the_last_real_token_not_the_last_column(fake, llama3_tokenizer, lean):
    llama3_tokenizer.padding_side = "right"
    batch = llama3_tokenizer(["bad bad bad -", "ok -"], return_tensors="pt", padding=True)
    assert batch["attention_mask"][1, -1] == 0, "the short row must end in padding for this test to mean anything"
    scores = label_logits(fake, batch, LABEL_IDS, lean=lean)  # (2, 2)
    torch.testing.assert_close(scores, torch.tensor([[3.0, 0.0], [-1.0, 0.0]]))  # row 0: two " bad" (the first "bad" has no space)
    last_column = fake(**batch).logits[:, -1][:, LABEL_IDS]  # the naive read lands on padding in row 1
    assert last_column[1].tolist() == [0.0, 5.0]


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


def test_recall_by_kind_counts_each_kind_against_its_own_target():
    import pandas as pd

    from lmcls_helpers.scoring import recall_by_kind

    kinds = pd.DataFrame({"kind": ["none", "none", "agreement", "agreement", "pronoun_case"]})
    preds = np.array([1, 0, 0, 1, 0])  # acceptable right once; agreement caught once; pronoun caught
    table = recall_by_kind(kinds, preds)
    assert table.loc["none", "right"] == 1 and table.loc["agreement", "recall"] == 0.5
    assert table.loc["pronoun_case", "recall"] == 1.0 and table["sentences"].sum() == 5
    with pytest.raises(ValueError, match="same split"):
        recall_by_kind(kinds, preds[:3])
