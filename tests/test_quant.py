"""The quantization helpers, checked against bitsandbytes itself and against real (tiny) Llama models."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lmcls_helpers import memory, quant
from lmcls_helpers.profiles import LLAMA3_8B_CONFIG

bnbf = pytest.importorskip("bitsandbytes.functional", reason="bitsandbytes is not installed")

NF4 = bnbf.get_4bit_type("nf4", device="cpu")
FP4 = bnbf.get_4bit_type("fp4", device="cpu")
TINY = {
    "vocab_size": 96,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 64,
    "tie_word_embeddings": False,
}

weights = st.builds(
    lambda rows, blocks, seed, scale, dtype: (torch.Generator().manual_seed(seed), rows, blocks, scale, dtype),
    rows=st.integers(1, 8),
    blocks=st.integers(1, 6),
    seed=st.integers(0, 2**16),
    scale=st.sampled_from([1e-3, 0.02, 1.0, 50.0]),
    dtype=st.sampled_from([torch.float32, torch.bfloat16, torch.float16]),
)


def _weight(spec, blocksize: int) -> torch.Tensor:
    gen, rows, blocks, scale, dtype = spec
    return (torch.randn(rows, blocks * blocksize, generator=gen) * scale).to(dtype)


@settings(max_examples=40, deadline=None)
@given(spec=weights, blocksize=st.sampled_from([64, 128]), quant_type=st.sampled_from(["nf4", "fp4"]))
def test_hand_quantizer_equals_bitsandbytes_bit_for_bit(spec, blocksize, quant_type):
    weight = _weight(spec, blocksize)
    levels = NF4 if quant_type == "nf4" else FP4
    packed, absmax = quant.quantize_4bit_by_hand(weight, levels, blocksize)
    packed_bnb, state = bnbf.quantize_4bit(weight, blocksize=blocksize, quant_type=quant_type)
    assert packed.dtype == torch.uint8 and packed.numel() * 2 == weight.numel()
    assert absmax.dtype == state.absmax.dtype == torch.float32
    assert torch.equal(absmax, state.absmax)
    assert torch.equal(packed, packed_bnb.flatten())
    ours = quant.dequantize_4bit_by_hand(packed, absmax, levels, blocksize).reshape(weight.shape)
    assert torch.equal(ours.to(weight.dtype), bnbf.dequantize_4bit(packed_bnb, state))


def test_exact_ties_round_like_bitsandbytes():
    """bf16 weights often land exactly halfway between two FP4 levels; both sides must break the tie alike."""
    weight = torch.randn(256, 1024, generator=torch.Generator().manual_seed(0)).to(torch.bfloat16)
    packed, _ = quant.quantize_4bit_by_hand(weight, FP4)
    assert torch.equal(packed, bnbf.quantize_4bit(weight, blocksize=64, quant_type="fp4")[0].flatten())


def test_first_code_goes_in_the_high_nibble():
    weight = torch.zeros(64)
    weight[0], weight[1] = -1.0, 1.0  # codes 0 and 15 in NF4
    packed, _ = quant.quantize_4bit_by_hand(weight, NF4)
    assert packed[0].item() == 0x0F
    assert packed[0].item() == bnbf.quantize_4bit(weight, blocksize=64, quant_type="nf4")[0].flatten()[0].item()


@given(st.lists(st.integers(0, 15), min_size=2, max_size=64).filter(lambda c: len(c) % 2 == 0))
def test_unpack_inverts_packing(codes):
    codes = torch.tensor(codes, dtype=torch.uint8)
    packed = (codes[0::2] << 4) | codes[1::2]
    assert torch.equal(quant.unpack_codes(packed), codes)


def test_hand_quantizer_rejects_bad_input():
    with pytest.raises(ValueError, match="16 levels"):
        quant.quantize_4bit_by_hand(torch.randn(64), NF4[:8])
    with pytest.raises(ValueError, match="blocks of 64"):
        quant.quantize_4bit_by_hand(torch.randn(100), NF4)


def test_llama_shapes_match_a_real_model():
    from transformers import LlamaConfig, LlamaForCausalLM

    for tied in (False, True):
        config = {**TINY, "tie_word_embeddings": tied}
        model = LlamaForCausalLM(LlamaConfig(**config))
        real = {name: tuple(p.shape) for name, p in model.named_parameters()}
        assert quant.llama_shapes(config) == real
        table = quant.parameter_table(model)
        assert table.equals(quant.predicted_table(config, dtype=torch.float32, quantize=False))


def test_llama_shapes_needs_a_llama_config():
    with pytest.raises(ValueError, match="missing"):
        quant.llama_shapes({"hidden_size": 8})


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    """A tiny Llama saved twice: one file, and sharded with an index (the 8B layout)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**TINY))
    single, sharded = tmp_path_factory.mktemp("single"), tmp_path_factory.mktemp("sharded")
    model.save_pretrained(single)
    model.save_pretrained(sharded, max_shard_size="40KB")
    assert (sharded / "model.safetensors.index.json").exists()
    return model, single, sharded


@pytest.mark.parametrize("double_quant", [False, True])
@pytest.mark.parametrize("quant_type", ["nf4", "fp4"])
def test_parameter_table_of_a_loaded_4bit_model_matches_the_prediction(tiny_checkpoint, quant_type, double_quant):
    from lmcls_helpers.models import load_model
    from lmcls_helpers.profiles import get_profile

    _, single, _ = tiny_checkpoint
    profile = get_profile("tiny").with_(model_id=str(single))
    model = load_model(profile, quantize=True, quant_type=quant_type, double_quant=double_quant)
    table = quant.parameter_table(model)
    predicted = quant.predicted_table(model.config.to_dict(), dtype=profile.compute_dtype, double_quant=double_quant)
    assert table.equals(predicted)
    packed = table[table["quantized"]]
    assert len(packed) == 7 * TINY["num_hidden_layers"]
    assert (packed["numel"] * 2 == packed["weights"]).all() and (packed["dtype"] == "uint8").all()
    assert set(table.loc[~table["quantized"], "kind"]) == {"embedding", "norm", "lm_head"}
    state = model.model.layers[0].self_attn.q_proj.weight.quant_state
    expected_state = state.absmax.nbytes + (state.state2.absmax.nbytes + state.offset.nbytes if double_quant else 0)
    assert packed.iloc[0]["state_bytes"] == expected_state


def test_llama3_8b_footprint():
    nf4 = quant.predicted_table(LLAMA3_8B_CONFIG)
    assert nf4["weights"].sum() == 8_030_261_248  # Meta-Llama-3-8B's published parameter count
    projections = nf4.loc[nf4["quantized"], "weights"].sum()
    others = nf4.loc[~nf4["quantized"], "weights"].sum()
    assert quant.total_bytes(nf4) == projections // 2 + 4 * projections // 64 + 2 * others
    dq = quant.predicted_table(LLAMA3_8B_CONFIG, double_quant=True)
    saved = quant.total_bytes(nf4) - quant.total_bytes(dq)
    assert saved / projections == pytest.approx((0.5 - 8 / 64 - 32 / (64 * 256)) / 8, rel=1e-3)
    bf16 = quant.predicted_table(LLAMA3_8B_CONFIG, quantize=False)
    assert quant.total_bytes(bf16) == 2 * 8_030_261_248


def test_by_kind_adds_up():
    table = quant.predicted_table(LLAMA3_8B_CONFIG)
    summary = quant.by_kind(table)
    assert summary.loc["total", "bytes"] == table["bytes"].sum()
    assert summary.loc["total", "GiB"] == pytest.approx(quant.total_bytes(table) / 2**30)


def test_checkpoint_tensor_reads_single_and_sharded_checkpoints(tiny_checkpoint):
    model, single, sharded = tiny_checkpoint
    name = "model.layers.1.mlp.down_proj.weight"
    for folder in (single, sharded):
        assert torch.equal(quant.checkpoint_tensor(str(folder), name), model.state_dict()[name])
        with pytest.raises(ValueError, match="names look like"):
            quant.checkpoint_tensor(str(folder), "model.layers.9.nope.weight")


def test_checkpoint_tensor_names_the_fix_when_the_hub_refuses(monkeypatch):
    """A gated or private repository is an access problem, not a missing checkpoint."""
    from types import SimpleNamespace

    import huggingface_hub
    from huggingface_hub.errors import EntryNotFoundError, GatedRepoError

    response = SimpleNamespace(headers={}, request=None, status_code=401)  # all the error reads of a response

    def gated(repo_id, filename, **kw):
        raise GatedRepoError("401 Client Error", response=response)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", gated)
    with pytest.raises(RuntimeError, match="accept the licence") as info:
        quant.checkpoint_tensor("meta-llama/Meta-Llama-3-8B", "model.norm.weight")
    assert "HF_TOKEN" in str(info.value) and isinstance(info.value.__cause__, GatedRepoError)

    def missing(repo_id, filename, **kw):
        raise EntryNotFoundError(f"{filename} not found")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", missing)
    with pytest.raises(FileNotFoundError, match="No safetensors checkpoint"):
        quant.checkpoint_tensor("someone/no-weights", "model.norm.weight")


def test_fits_in_memory_compares_with_the_gpus_free_memory(monkeypatch):
    free, total = 10 * 2**30, 16 * 2**30
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda *a, **kw: (free, total))
    assert memory.fits_in_memory(int(7.6 * 2**30), "cuda")  # 1.25 x 7.6 GiB for scoring + 0.5 GiB headroom <= 10 GiB free
    assert not memory.fits_in_memory(int(7.7 * 2**30), "cuda")  # 9.6 + 0.5 GiB > 10 GiB
    assert memory.fits_in_memory(10**15, "cpu")  # the CPU answers yes: the tiny model is small


def test_missing_bitsandbytes_says_how_to_install_it(monkeypatch):
    import sys

    from lmcls_helpers.models import require_bitsandbytes

    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # `import bitsandbytes` now raises ImportError
    with pytest.raises(RuntimeError, match="pip install bitsandbytes") as info:
        require_bitsandbytes()
    assert isinstance(info.value.__cause__, ImportError)


def test_shipped_measurement_explains_the_8b_estimate():
    """Weights plus scales, predicted from the config, account for 97-100% of the H100 measurement."""
    ratio = quant.total_bytes(quant.predicted_table(LLAMA3_8B_CONFIG)) / 2**30 / memory.load_measurements()["phases"]["model_loaded_4bit"]["allocated"]
    assert 0.97 < ratio <= 1.0, ratio


def test_mistral_7b_in_nf4_exceeds_the_half_byte_rule():
    """Notebook 5, section 3: scales and the bf16 embedding/LM head put a 4-bit Mistral-7B above 0.5 byte/weight."""
    mistral = quant.predicted_table({**LLAMA3_8B_CONFIG, "vocab_size": 32000, "tie_word_embeddings": False},
                                    dtype=torch.bfloat16, double_quant=True)
    naive = mistral["weights"].sum() * 0.5
    assert quant.total_bytes(mistral) > 1.1 * naive
    assert mistral["weights"].sum() == 7_241_732_096  # Mistral-7B-v0.1's published parameter count


@pytest.mark.parametrize("blocksize", [128, 256])
def test_hand_dequantizer_is_right_when_blocks_span_rows(blocksize):
    """bitsandbytes 0.50's CPU dequantize_4bit mis-scales blocks longer than a row; ours must not.

    The same numbers laid out in rows as long as a block give bitsandbytes' kernel no row to cross.
    """
    weight = torch.randn(32, 64, generator=torch.Generator().manual_seed(1))
    packed, absmax = quant.quantize_4bit_by_hand(weight, NF4, blocksize)
    wide = weight.reshape(-1, blocksize)
    packed_bnb, state = bnbf.quantize_4bit(wide, blocksize=blocksize, quant_type="nf4")
    assert torch.equal(packed, packed_bnb.flatten())
    ours = quant.dequantize_4bit_by_hand(packed, absmax, NF4, blocksize)
    assert torch.equal(ours, bnbf.dequantize_4bit(packed_bnb, state).flatten())


def _nearest_level_dequantization(weight: torch.Tensor, levels: torch.Tensor, blocksize: int) -> torch.Tensor:
    """Dequantized weights straight from the fp32 weights: absmax per block, then the closest level by distance.

    Independent of the code path under test: no midpoints, no bucketize, no packing.
    """
    blocks = weight.float().reshape(-1, blocksize)
    absmax = blocks.abs().amax(dim=1, keepdim=True)
    scaled = blocks * (1.0 / absmax)
    nearest = (scaled[..., None] - levels.float()).abs().argmin(dim=-1)  # first (lower) level wins a tie
    return (levels.float()[nearest] * absmax).reshape(weight.shape)


def cpu_has_avx512f() -> bool:
    """Whether bitsandbytes' CPU library takes its AVX-512 code paths here (notebook 3, exercise 1, asks the same)."""
    try:
        from bitsandbytes.cextension import lib

        return bool(lib.has_avx512f_cpu())
    except Exception:  # no native CPU library, or an older one without the probe
        return False


def avx512_scale_index(shape: tuple[int, int], blocksize: int) -> torch.Tensor:
    """The absmax bitsandbytes 0.50's AVX-512 CPU kernel reads per weight: ``row * (n // blocksize) + col // blocksize``.

    The true block is ``(row * n + col) // blocksize``: the same only when ``blocksize`` divides ``n``.
    Notebook 3's exercise 1 computes this index inline.
    """
    rows, n = shape
    return torch.arange(rows)[:, None] * (n // blocksize) + torch.arange(n) // blocksize


@pytest.mark.parametrize("blocksize", [32, 64, 128, 256])
def test_bitsandbytes_cpu_dequantize_with_blocks_longer_than_a_row(blocksize):
    """bitsandbytes 0.50's CPU dequantize_4bit is right on some CPUs and wrong on others: check ours either way.

    On a CPU with AVX-512F, its vectorized kernel reads ``absmax[row * (n // blocksize) + col // blocksize]``;
    with rows of 64 and blocks of 128 or 256 every weight gets the first block's absmax, so block j is off
    by absmax[0] / absmax[j]. Without AVX-512F (e.g. an AVX2-only EPYC) the scalar kernel is right.
    If bitsandbytes disagrees with us in any other way, this test fails: the bug has changed.
    """
    weight = torch.randn(32, 64, generator=torch.Generator().manual_seed(1))  # rows of 64, as in the tiny model
    packed_bnb, state = bnbf.quantize_4bit(weight, blocksize=blocksize, quant_type="nf4")
    ours = quant.dequantize_4bit_by_hand(packed_bnb.flatten(), state.absmax, NF4, blocksize).reshape(weight.shape)
    assert torch.equal(ours, _nearest_level_dequantization(weight, NF4, blocksize)), "our dequantization is wrong"
    theirs = bnbf.dequantize_4bit(packed_bnb, state)
    if torch.equal(theirs, ours):  # the scalar kernel, blocks that tile a row, or a fixed bitsandbytes
        return
    assert cpu_has_avx512f(), "bitsandbytes disagrees with us without taking its AVX-512 path: a new bug"
    assert weight.shape[1] % blocksize != 0, "the AVX-512 kernel should be right when the block divides the row"
    levels = NF4[quant.unpack_codes(packed_bnb).long()].reshape(weight.shape)
    assert torch.equal(theirs, levels * state.absmax[avx512_scale_index(weight.shape, blocksize)])
    # Precisely: block 0 is right, every other block j is scaled by absmax[0] / absmax[j].
    per_block = (theirs.reshape(-1, blocksize), ours.reshape(-1, blocksize))
    nonzero = per_block[1] != 0
    ratio = torch.where(nonzero, per_block[0] / per_block[1].where(nonzero, 1.0), float("nan"))
    expected = (state.absmax[0] / state.absmax)[:, None].expand_as(ratio)
    torch.testing.assert_close(ratio[nonzero], expected[nonzero], rtol=1e-6, atol=0)
    assert torch.equal(per_block[0][0], per_block[1][0]) and not torch.equal(per_block[0][1:], per_block[1][1:])


def test_avx512_scale_index():
    assert torch.equal(avx512_scale_index((2, 4), 2), torch.tensor([[0, 1], [2, 3]]).repeat_interleave(2, 1))
    assert torch.equal(avx512_scale_index((4, 4), 8), torch.zeros(4, 4, dtype=torch.int64))  # the bug
