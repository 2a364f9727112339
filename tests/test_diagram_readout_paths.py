"""Notebook 7's diagram of the three read-outs: it draws the sizes it is given and refuses bad input."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from lmcls_tools.diagrams import readout_paths  # noqa: E402


def _texts(fig) -> str:
    return "\n".join(t.get_text() for t in fig.axes[0].texts)


def test_readout_paths_draws_the_three_heads_at_the_given_width():
    fig = readout_paths(4096)
    assert isinstance(fig, plt.Figure)
    texts = _texts(fig)
    assert "Linear(4,096, 1)" in texts and "4,097 weights" in texts  # (b): hidden + 1
    assert "Linear(4,096, 2)" in texts and "8,192 weights" in texts  # (c): 2 x hidden, no bias
    assert "' acceptable'" in texts and "' unacceptable'" in texts  # (a): the label words' rows
    assert texts.count("log-odds of label 1") == 3
    plt.close(fig)


def test_readout_paths_names_other_label_words_and_widths():
    fig = readout_paths(64, (" no", " yes"))
    texts = _texts(fig)
    assert "Linear(64, 1)" in texts and "65 weights" in texts and "' yes'" in texts and "' no'" in texts
    plt.close(fig)


@pytest.mark.parametrize("hidden_size", [0, -3, 2.5, True, "4096"])
def test_readout_paths_refuses_a_bad_width(hidden_size):
    with pytest.raises(ValueError, match="hidden_size"):
        readout_paths(hidden_size)


@pytest.mark.parametrize("words", [(" yes",), (" a", " b", " c"), (" yes", " "), (" yes", 3)])
def test_readout_paths_refuses_other_than_two_label_words(words):
    with pytest.raises(ValueError, match="label_words"):
        readout_paths(64, words)
