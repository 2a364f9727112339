"""The LoRA-beside-NF4 diagram of notebook 4, section 3: it draws the sizes it is given and refuses nonsense."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from lmcls_tools.diagrams import lora_beside_nf4  # noqa: E402


def _texts(fig) -> str:
    return " | ".join(t.get_text() for ax in fig.axes for t in ax.texts) + fig.axes[0].get_title()


def test_lora_diagram_shows_the_given_shapes():
    fig = lora_beside_nf4(4096, 1024, 8, 16, compute_dtype="torch.bfloat16")
    try:
        assert isinstance(fig, plt.Figure)
        text = _texts(fig)
        for part in ("W  1,024 × 4,096", "A  8 × 4,096", "B  1,024 × 8", "16/8", "bfloat16", "(…, 4,096)", "(…, 1,024)"):
            assert part in text, part
        assert f"{8 * (4096 + 1024):,}" in text  # the trainable count printed beside the picture
    finally:
        plt.close(fig)


@pytest.mark.parametrize("kwargs, message", [(dict(d_in=64, d_out=64, r=0, alpha=16), "positive integers"),
                                             (dict(d_in=64, d_out=64, r=8, alpha=0), "positive integers"),
                                             (dict(d_in=4, d_out=64, r=8, alpha=16), r"r <= min")])
def test_lora_diagram_refuses_bad_sizes(kwargs, message):
    with pytest.raises(ValueError, match=message):
        lora_beside_nf4(**kwargs)
