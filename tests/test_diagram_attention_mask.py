"""The attention-mask diagram of notebook 6: a figure that draws the row it is given and refuses bad input."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from lmcls_tools.diagrams import COLORS, attention_under_right_padding  # noqa: E402

TOKENS = ["<s>", "▁The", "▁cat", "▁sat", ".", "</s>", "</s>", "</s>"]


def _cells(fig) -> dict[tuple[int, int], str]:
    """(query, key) -> face colour of each filled cell of the grid."""
    ax = fig.axes[0]
    return {(round(p.get_y() + 0.5), round(p.get_x() + 0.5)): matplotlib.colors.to_hex(p.get_facecolor())
            for p in ax.patches if isinstance(p, Rectangle) and p.get_fill()}


def test_it_draws_the_tokens_it_is_given_and_marks_both_reads():
    fig = attention_under_right_padding(TOKENS, n_pads=3)
    ax = fig.axes[0]
    assert isinstance(fig, plt.Figure)
    assert [t.get_text() for t in ax.get_xticklabels()] == TOKENS
    texts = " ".join(t.get_text() for t in ax.texts)
    assert "last real token" in texts and "position -1" in texts
    plt.close(fig)


def test_causal_triangle_pads_masked_as_keys_but_computed_as_queries():
    fig = attention_under_right_padding(TOKENS, n_pads=3)
    cells, real = _cells(fig), len(TOKENS) - 3
    assert all(k <= q for q, k in cells), "no query attends to a later key"
    assert len(cells) == len(TOKENS) * (len(TOKENS) + 1) // 2, "every earlier-or-same key is drawn"
    for (q, k), color in cells.items():
        if k >= real:  # a pad as key
            assert color == COLORS["masked"], (q, k)
        elif q >= real:  # a pad as query still reads the real tokens
            assert color == COLORS["trained"], (q, k)
        else:
            assert color == COLORS["read"], (q, k)
    plt.close(fig)


def test_without_pads_the_last_real_token_is_position_minus_one():
    fig = attention_under_right_padding(TOKENS[:5], n_pads=0)
    assert "last real token = position -1" in [t.get_text() for t in fig.axes[0].texts]
    assert COLORS["masked"] not in _cells(fig).values()
    plt.close(fig)


@pytest.mark.parametrize("n_pads", [-1, 8, 9, 1.5, True])
def test_refuses_a_pad_count_that_leaves_no_real_token(n_pads):
    with pytest.raises(ValueError, match="n_pads must be an int"):
        attention_under_right_padding(TOKENS, n_pads=n_pads)


def test_refuses_a_row_too_long_to_read():
    with pytest.raises(ValueError, match="at most 40 tokens"):
        attention_under_right_padding(["a"] * 41, n_pads=1)
