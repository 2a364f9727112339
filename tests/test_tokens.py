import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from lmcls_helpers.tokens import (
    label_token_ids,
    last_token_index,
    load_reference_tokenizer,
    require_pad_token,
    token_table,
)


def padded_mask(lengths: list[int], side: str) -> torch.Tensor:
    width = max(lengths)
    rows = []
    for n in lengths:
        ones, zeros = [1] * n, [0] * (width - n)
        rows.append(zeros + ones if side == "left" else ones + zeros)
    return torch.tensor(rows)


@given(lengths=st.lists(st.integers(1, 40), min_size=1, max_size=12), side=st.sampled_from(["left", "right"]))
def test_last_token_index_finds_last_real_token(lengths, side):
    mask = padded_mask(lengths, side)
    last = last_token_index(mask)
    assert last.shape == (len(lengths),)
    width = mask.shape[1]
    for row, (n, pos) in enumerate(zip(lengths, last.tolist())):
        assert mask[row, pos] == 1
        assert mask[row, pos + 1 :].sum() == 0
        assert pos == (width - 1 if side == "left" else n - 1)


@given(lengths=st.lists(st.integers(1, 30), min_size=2, max_size=8))
def test_left_and_right_padding_point_at_the_same_token(lengths):
    ids = [torch.arange(100, 100 + n) for n in lengths]  # distinct token per position
    width = max(lengths)
    for side in ("left", "right"):
        mask = padded_mask(lengths, side)
        rows = torch.stack(
            [torch.cat([torch.zeros(width - len(t), dtype=torch.long), t]) if side == "left"
             else torch.cat([t, torch.zeros(width - len(t), dtype=torch.long)]) for t in ids]
        )
        picked = rows[torch.arange(len(ids)), last_token_index(mask)]
        assert picked.tolist() == [t[-1].item() for t in ids]


def test_last_token_index_rejects_all_padding_row():
    with pytest.raises(ValueError, match=r"Rows \[1\] are all padding"):
        last_token_index(torch.tensor([[1, 1, 0], [0, 0, 0]]))


def test_last_token_index_rejects_wrong_rank():
    with pytest.raises(ValueError, match="batch, seq"):
        last_token_index(torch.ones(3, dtype=torch.long))


def test_llama3_label_words_have_the_real_ids(llama3_tokenizer):
    assert label_token_ids(llama3_tokenizer, [" unacceptable", " acceptable"]) == [44085, 22281]  # label 0, label 1
    assert len(llama3_tokenizer) == 128256


def test_label_word_without_space_is_rejected_with_its_pieces(llama3_tokenizer):
    with pytest.raises(ValueError, match=r"'unacceptable' is 2 tokens \['un', 'acceptable'\]"):
        label_token_ids(llama3_tokenizer, ["unacceptable"])


def test_duplicate_label_words_are_rejected(llama3_tokenizer):
    with pytest.raises(ValueError, match="same token ids"):
        label_token_ids(llama3_tokenizer, [" yes", " yes"])


def test_llama3_adds_bos_and_has_no_pad():
    tok = load_reference_tokenizer("llama-3")
    assert tok("Hi").input_ids[0] == 128000
    assert tok.pad_token is None
    with pytest.raises(ValueError, match="pad_token = tokenizer.eos_token"):
        require_pad_token(tok)


def test_mistral_splits_unacceptable_and_marks_spaces():
    tok = load_reference_tokenizer("mistral-7b")
    assert len(tok) == 32000
    assert tok.tokenize(" Income") == ["▁In", "come"]
    with pytest.raises(ValueError, match="3 tokens"):
        label_token_ids(tok, [" unacceptable"])


def test_unknown_reference_tokenizer():
    with pytest.raises(ValueError, match="choose one of"):
        load_reference_tokenizer("gpt-2")


def test_missing_reference_file_names_the_fix(tmp_root):
    with pytest.raises(FileNotFoundError, match="make world"):
        load_reference_tokenizer("llama-3")


def test_token_table_shows_pieces(llama3_tokenizer):
    table = token_table(llama3_tokenizer, " acceptable", add_special_tokens=False)
    assert table["id"].tolist() == [22281]
    assert table["piece"].tolist() == ["Ġacceptable"]


@pytest.mark.parametrize("name", ["llama-3", "mistral-7b"])
def test_token_table_keeps_the_leading_space(name):
    tok = load_reference_tokenizer(name)
    table = token_table(tok, " Him and me", add_special_tokens=False)
    assert table["text"].tolist() == [repr(" Him"), repr(" and"), repr(" me")]
    assert table["piece"].tolist()[0] in ("ĠHim", "▁Him")


def test_explorer_without_a_frontend_still_prints_every_tokenizer(llama3_tokenizer, capsys):
    from lmcls_helpers.tokens import explorer

    ui = explorer({"Llama 3": llama3_tokenizer, "again": llama3_tokenizer}, text=" unacceptable")
    printed = capsys.readouterr().out
    assert printed.count("Llama 3: 1 tokens") == 2  # the widget's output area and the static copy
    assert "again: 1 tokens" in printed and "44085" in printed
    ui.children[0].value = " un acceptable"  # typing re-renders for the new text
    assert "Llama 3: 2 tokens" in capsys.readouterr().out
