"""The mechanism diagrams of notebooks 3 (one NF4 block) and 5 (memory over one training step)."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from lmcls_tools import diagrams  # noqa: E402

NF4 = [-1.0, -0.6962, -0.5251, -0.3949, -0.2844, -0.1848, -0.0911, 0.0,
       0.0796, 0.1609, 0.2461, 0.3379, 0.4407, 0.5626, 0.7230, 1.0]


def _texts(fig):
    return [t.get_text() for ax in fig.axes for t in ax.texts] + [ax.get_title(loc="left") for ax in fig.axes]


def test_nf4_block_draws_every_weights_code_and_the_blocks_absmax():
    block = np.random.default_rng(0).normal(0, 0.02, 64)
    fig = diagrams.nf4_block(block, NF4)
    assert isinstance(fig, plt.Figure)
    texts = _texts(fig)
    codes = [t for t in texts if t.isdigit()]
    assert len(codes) == 64 and all(0 <= int(c) <= 15 for c in codes)
    assert any(f"{np.abs(block).max():.3g}" in t for t in texts)  # the absmax the notebook prints
    plt.close(fig)


def test_nf4_block_puts_the_absmax_on_an_end_level():
    block = np.array([0.5, -2.0, 0.0, 1.0])
    fig = diagrams.nf4_block(block, NF4)
    codes = [int(t) for t in _texts(fig) if t.isdigit()]
    assert codes[1] == 0 and codes[2] == 7  # -absmax is level -1 (code 0); an exact zero is code 7
    plt.close(fig)


@pytest.mark.parametrize("block, levels, match", [(np.zeros(64), NF4, "nonzero"), (np.ones(64), NF4[:8], "16"),
                                                  (np.ones(64), NF4[::-1], "increasing")])
def test_nf4_block_refuses_bad_input(block, levels, match):
    with pytest.raises(ValueError, match=match):
        diagrams.nf4_block(block, levels)


def _estimate():
    from lmcls_helpers.memory import estimate_training_memory
    from lmcls_helpers.profiles import LLAMA3_8B_CONFIG

    return estimate_training_memory(LLAMA3_8B_CONFIG, batch_size=8, seq_len=86)


def test_memory_over_step_peaks_at_the_estimators_total():
    est = _estimate()
    fig = diagrams.memory_over_step(est, num_layers=32)
    assert isinstance(fig, plt.Figure)
    ax = fig.axes[0]
    top = max(max(p.get_paths()[0].vertices[:, 1]) for p in ax.collections)
    assert top == pytest.approx(est["total"], rel=1e-6)  # the stack reaches the estimated peak, not beyond
    assert any(f"{est['total']:.2f} GiB" in t.get_text() for t in ax.texts)
    plt.close(fig)


def test_memory_over_step_refuses_bad_input():
    with pytest.raises(ValueError, match="estimate lacks"):
        diagrams.memory_over_step({"total": 1.0}, num_layers=2)
    with pytest.raises(ValueError, match="num_layers"):
        diagrams.memory_over_step(_estimate(), num_layers=0)
