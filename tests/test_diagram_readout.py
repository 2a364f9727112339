"""The read-out diagram of notebook 2 draws the tokens and numbers it is given, and refuses bad input."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from lmcls_tools.diagrams import COLORS, readout  # noqa: E402

TOKENS = ["ĠHim", "Ġand", "ĠI", "Ġare", "Ġgoing", ".", "Ġ-"]
WORDS = (" unacceptable", " acceptable")


def _texts(fig) -> str:
    return "\n".join(t.get_text() for t in fig.axes[0].texts)


def test_readout_draws_the_last_tokens_logits_and_probabilities():
    fig = readout(TOKENS, [9.367, 14.749], WORDS, shown=4)
    text = _texts(fig)
    assert isinstance(fig, plt.Figure)
    assert all(t in text for t in TOKENS[-4:]) and "ĠHim" not in text and "…" in text  # only the last 4, after a "…"
    assert "logit 9.37" in text and "logit 14.75" in text
    assert "P = 0.005" in text and "P = 0.995" in text  # softmax over the two logits
    assert "position 6" in text
    plt.close(fig)


def test_readout_marks_the_last_real_token_not_the_pads():
    mask = [1] * len(TOKENS) + [0, 0]
    fig = readout(TOKENS + ["<pad>", "<pad>"], [0.0, 0.0], WORDS, attention_mask=mask)
    text = _texts(fig)
    assert "2 pads" in text and "P = 0.500" in text
    read = [p for p in fig.axes[0].patches if matplotlib.colors.to_hex(p.get_facecolor()) == COLORS["read"]]
    masked = [p for p in fig.axes[0].patches if matplotlib.colors.to_hex(p.get_facecolor()) == COLORS["masked"]]
    assert len(masked) == 2  # the pads
    token_boxes = sorted((p for p in read if p.get_y() > 2), key=lambda p: p.get_x())
    assert len(token_boxes) == 1  # one token is read: "Ġ-", the last real one
    plt.close(fig)


@pytest.mark.parametrize("kwargs", [
    {"tokens": [], "logits": [1.0, 2.0], "label_words": WORDS},
    {"tokens": TOKENS, "logits": [1.0], "label_words": WORDS},
    {"tokens": TOKENS, "logits": [1.0, 2.0], "label_words": WORDS, "attention_mask": [1, 1]},
    {"tokens": TOKENS, "logits": [1.0, 2.0], "label_words": WORDS, "attention_mask": [0] * len(TOKENS)},
])
def test_readout_refuses_bad_input_with_the_fix(kwargs):
    with pytest.raises(ValueError, match="pass one"):
        readout(**kwargs)
