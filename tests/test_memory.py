"""The memory estimator: its formulas by hand, its shape (monotone, knobs), and against measurements.

Measurements come from two places: the H100 figures shipped with the package, and the CPU, where
``memory.TensorBytes`` counts the live bytes of every tensor during a real 4-bit LoRA training step.
"""

from __future__ import annotations

import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import BitsAndBytesConfig, LlamaConfig

import benchmarks.gpu_memory as gpu_memory
import benchmarks.memory_validation as validation
from benchmarks.memory_validation import estimate_forward_memory
from lmcls_helpers import memory
from lmcls_helpers.memory import GIB, MIB, estimate_training_memory
from lmcls_helpers.profiles import LLAMA3_8B_CONFIG

#: Small enough to compute by hand: head_dim 16, two KV heads for four query heads.
HAND = {"vocab_size": 256, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 1,
        "num_attention_heads": 4, "num_key_value_heads": 2, "tie_word_embeddings": False}
TINY = {**HAND, "num_hidden_layers": 2}


def test_weight_lora_and_optimizer_terms_by_hand():
    est = estimate_training_memory(TINY, batch_size=2, seq_len=8, lora_r=8, padding=False)
    # projections per block: q 64x64, k 64x32, v 64x32, o 64x64, gate/up/down 64x128 -> 36,864 weights; 2 blocks
    # 4 bits each = 36,864 bytes, plus one fp32 absmax per 64 weights = 4,608 bytes
    assert est["quantized_weights"] * GIB == 36_864 + 4_608
    # embedding + LM head (256 x 64 each) + 5 norms of 64, in bf16
    assert est["weights_16bit"] * GIB == 2 * (2 * 256 * 64 + 5 * 64)
    # r * (in + out) per projection: 1024 + 768 + 768 + 1024 + 3 * 1536 = 8192 per block, fp32
    assert est["lora_weights"] * GIB == 4 * 2 * 8192
    assert est["optimizer_state"] * GIB == 8 * 2 * 8192  # AdamW: two fp32 moments
    assert est["gradients"] == 0  # freed by zero_grad(set_to_none=True) before the next forward
    assert estimate_training_memory(TINY, batch_size=2, seq_len=8, grad_accum_steps=2)["gradients"] * GIB == 4 * 2 * 8192


def test_activation_and_logit_terms_by_hand():
    est = estimate_training_memory(HAND, batch_size=2, seq_len=8, padding=False)  # T = 16 tokens, one block
    T = 16
    norm = 4 * T * 64 + 4 * T  # block 0: only the second norm keeps its fp32 input (+ 1/rms)
    attention = 2 * T * (64 + 64 + 32 + 32) + 4 * 2 * 4 * 8  # q, output, k, v in bf16 + log-sum-exp
    mlp = 3 * 2 * T * 128
    lora = 4 * T * (64 * 6 + 128) + 1 * T * (64 * 3 + 128) + 7 * 4 * T * 8  # fp32 inputs, masks (not q/k/v), B inputs
    outside = 4 * T * 64 + 4 * T + 2 * 2 * 8 * 16  # final norm; RoPE cos/sin
    assert est["activations"] * GIB == norm + attention + mlp + lora + outside
    # the peak is at the loss: bf16 logits + fp32 log-softmax + its two fp32 gradients, + int64 targets
    assert est["logits"] * GIB == (2 + 4 + 4 + 4) * T * 256 + 8 * T
    assert est["workspace"] * GIB == 2 * 32 * MIB  # two cuBLAS workspaces (Hopper default)


def test_eight_bit_adam_applies_to_large_tensors_only():
    small = estimate_training_memory(TINY, batch_size=1, seq_len=4, optimizer="adamw8bit")
    assert small["optimizer_state"] == estimate_training_memory(TINY, batch_size=1, seq_len=4)["optimizer_state"]
    big = estimate_training_memory(LLAMA3_8B_CONFIG, batch_size=1, seq_len=4, optimizer="adamw8bit")
    lora_values = big["lora_weights"] * GIB / 4
    # uint8 moments (2 bytes per value) + fp32 scales per 256 values; all 8B LoRA tensors are >= 4096 values
    assert big["optimizer_state"] * GIB == pytest.approx(2 * lora_values + 8 * lora_values / 256, rel=1e-3)


def test_double_quant_saves_about_three_bytes_per_64_weights():
    kw = dict(batch_size=1, seq_len=8)
    plain = estimate_training_memory(LLAMA3_8B_CONFIG, **kw)["quantized_weights"]
    dq = estimate_training_memory(LLAMA3_8B_CONFIG, **kw, double_quant=True)["quantized_weights"]
    blocks = 6_979_321_856 / 64  # 4-bit weights of Llama-3-8B, one absmax each
    assert (plain - dq) * GIB == pytest.approx(blocks * (4 - 1 - 4 / 256), rel=1e-3)


knobs = st.fixed_dictionaries({
    "logits": st.sampled_from(["all", "label"]), "grad_checkpointing": st.booleans(), "padding": st.booleans(),
    "optimizer": st.sampled_from(["adamw", "adamw8bit"]), "quant": st.sampled_from(["nf4", None]),
    "lora_r": st.integers(1, 64), "device": st.sampled_from(["cuda", "cpu"]),
})


@settings(max_examples=60, deadline=None)
@given(knobs=knobs, batch=st.integers(1, 32), seq=st.integers(1, 512), config=st.sampled_from([TINY, LLAMA3_8B_CONFIG]))
def test_total_grows_with_batch_size_and_sequence_length(knobs, batch, seq, config):
    total = estimate_training_memory(config, batch_size=batch, seq_len=seq, **knobs)["total"]
    assert estimate_training_memory(config, batch_size=batch + 1, seq_len=seq, **knobs)["total"] > total
    assert estimate_training_memory(config, batch_size=batch, seq_len=seq + 1, **knobs)["total"] > total
    forward = estimate_forward_memory(config, batch_size=batch, seq_len=seq)["total"]
    assert estimate_forward_memory(config, batch_size=batch + 1, seq_len=seq)["total"] > forward


@settings(max_examples=30, deadline=None)
@given(batch=st.integers(1, 16), seq=st.integers(8, 512), logits=st.sampled_from(["all", "label"]))
def test_checkpointing_lowers_activations_and_label_logits_lower_logits(batch, seq, logits):
    kw = dict(batch_size=batch, seq_len=seq, logits=logits)
    plain = estimate_training_memory(LLAMA3_8B_CONFIG, **kw)
    assert estimate_training_memory(LLAMA3_8B_CONFIG, **kw, grad_checkpointing=True)["activations"] < plain["activations"]
    all_logits = estimate_training_memory(LLAMA3_8B_CONFIG, batch_size=batch, seq_len=seq)
    assert estimate_training_memory(LLAMA3_8B_CONFIG, batch_size=batch, seq_len=seq, logits="label")["total"] <= all_logits["total"]


def test_total_by_hand_and_config_objects_work():
    """The whole peak of one step of HAND (one block, T = 16 tokens), every byte counted by hand."""
    T, r = 16, 8
    weights = (18_432 + 2_304) + 2 * (2 * 256 * 64 + 3 * 64)  # 4-bit projections + absmax; bf16 embed, head, 3 norms
    lora = 4 * r * (64 + 64 + 64 + 32 + 64 + 32 + 64 + 64 + 64 + 128 + 64 + 128 + 128 + 64)  # fp32 A and B, 7 adapters
    adam = 2 * lora  # two fp32 moments per LoRA value
    activations = (4 * T * 64 + 4 * T) + (2 * T * 192 + 4 * 2 * 4 * 8) + 3 * 2 * T * 128  # norm, attention, SwiGLU
    activations += 4 * T * (64 * 6 + 128) + T * (64 * 3 + 128) + 7 * 4 * T * r  # LoRA inputs, masks, B's inputs
    activations += 4 * T * 64 + 4 * T + 2 * 2 * 8 * 16  # final norm; RoPE cos/sin
    logits = (2 + 4 + 4 + 4) * T * 256 + 8 * T  # the peak is at the loss's backward (see above)
    workspace = 2 * 32 * MIB
    hand = weights + lora + adam + activations + logits + workspace
    assert hand == 67_420_288  # 64 MiB of workspaces + 311,424 bytes of model and step
    est = estimate_training_memory(LlamaConfig(**HAND), batch_size=2, seq_len=8, padding=False)
    assert est["total"] * GIB == pytest.approx(hand, rel=1e-12)
    assert est == estimate_training_memory(HAND, batch_size=2, seq_len=8, padding=False)


@pytest.mark.parametrize("bad", [{"logits": "some"}, {"quant": "int3"}, {"optimizer": "lion"}, {"lora_r": 0},
                                 {"lora_targets": ["qkv"]}, {"batch_size": 0}])
def test_bad_input_says_what_to_fix(bad):
    with pytest.raises(ValueError):
        estimate_training_memory(TINY, **{"batch_size": 2, "seq_len": 8, **bad})
    with pytest.raises(ValueError, match="missing"):
        estimate_training_memory({"hidden_size": 8}, batch_size=1, seq_len=1)


MEASUREMENT_FILES = sorted(validation.all_measurements())


@pytest.mark.parametrize("name", MEASUREMENT_FILES)
def test_estimates_within_ten_percent_of_every_shipped_measurement(name):
    """Every gpu_measurements*.json in the package data; the reference, whose padding is not recorded, both ways."""
    shipped = gpu_memory.check_measurements(validation.all_measurements()[name], name)  # in the format the benchmark writes
    recorded = shipped["provenance"]["padding"]
    for padding in [recorded] if isinstance(recorded, bool) else [False, True]:
        table = validation.compare(shipped["phases"], validation.estimate_measurement(shipped, padding=padding))
        assert {"model_loaded_4bit", "lora_attached", "train_step_tutorial_recipe"} <= set(table.index)
        assert table["relative error"].abs().max() < 0.10, (padding, table)


def test_the_shipped_validation_table_is_up_to_date():
    """Notebook 5 shows estimator_validation.json: it must be what the estimator and the raw files give now."""
    shipped = memory.load_measurements(memory.VALIDATION)
    assert shipped == json.loads(validation.dumps(validation.validation())), "rerun python -m benchmarks.memory_validation"
    for kind in ("phases", "branches"):
        assert all(abs(r["ratio"] - 1) < shipped["tolerance"][kind] for r in shipped[kind]), kind


def test_upcast_estimates_fp32_compute_around_the_4bit_weights():
    """peft's fp32 upcast: the 16-bit weights double, the 4-bit ones stay, hidden states and logits go fp32."""
    plain = estimate_training_memory(LLAMA3_8B_CONFIG, batch_size=8, seq_len=86)
    upcast = estimate_training_memory(LLAMA3_8B_CONFIG, batch_size=8, seq_len=86, upcast=True)
    assert upcast == estimate_training_memory(LLAMA3_8B_CONFIG, batch_size=8, seq_len=86, dtype=torch.float32)
    assert upcast["weights_16bit"] == pytest.approx(2 * plain["weights_16bit"])
    assert upcast["quantized_weights"] == plain["quantized_weights"]
    assert upcast["activations"] > plain["activations"] and upcast["logits"] > plain["logits"]


GRID_FILES = sorted(validation.grid_files())


def test_a_measured_grid_ships():
    """At least one GPU's grid (benchmarks/gpu_memory.py) is package data, so the branches below are tested."""
    assert GRID_FILES, "no gpu_grid_*.json in lmcls_helpers/measurements/"


@pytest.mark.parametrize("name", GRID_FILES)
def test_every_estimator_branch_within_five_percent_of_its_measured_step(name):
    """Micro-batches 4-32, both losses, checkpointing, padding, 8-bit AdamW: each row re-estimated now."""
    grid = validation.grid_files()[name]
    table = validation.grid_table(grid)
    # 4 sizes x 2 losses x checkpointing on/off, + padded x 2, + 8-bit AdamW, + peft's fp32 upcast
    assert len(table) >= 20 and table["estimated GiB"].notna().all(), table
    assert table["relative error"].abs().max() <= 0.05, table
    # the upcast costs at least the weights it doubles (notebook 4)
    upcast_weights = estimate_training_memory(grid["model_config"], batch_size=8, seq_len=86)["weights_16bit"]  # 2 -> 4 bytes
    assert validation.grid_peak(grid, upcast_fp32=True) > validation.grid_peak(grid) + upcast_weights
    with pytest.raises(KeyError, match="No step"):
        validation.grid_peak(grid, batch_size=3)


def test_cuda_context_per_gpu_from_the_driver_counts_after_loading():
    """T4 from the tutorial's figure, H100 from its own; the others get the larger, never the smaller."""
    data = memory.load_measurements()
    ctx = memory.cuda_context_gib(data)
    assert set(ctx) == set(memory.GPUS)
    assert ctx["T4 16 GB"] == pytest.approx(5.85 - 5.66) and ctx["H100 80 GB"] == pytest.approx(6.298 - 5.66)
    assert all(v == max(ctx.values()) for gpu, v in ctx.items() if gpu not in ("T4 16 GB", "H100 80 GB"))
    without_tutorial = {k: v for k, v in data.items() if k != "tutorial_T4_figures_GB"}
    assert set(memory.cuda_context_gib(without_tutorial).values()) == {ctx["H100 80 GB"]}


def test_cuda_contexts_are_small_next_to_the_loaded_model():
    """Notebook 5, section 2: driver's count minus tensors is positive and well under the 4-bit model."""
    data = memory.load_measurements()
    loaded = data["phases"]["model_loaded_4bit"]["allocated"]
    assert all(0 < v < loaded / 4 for v in memory.cuda_context_gib(data).values())


def test_the_tutorials_t4_step_fits_a_t4_and_the_lean_recipe_needs_less():
    """Notebook 5, section 7: the tutorial's step ran on a T4, so its estimate must fit."""
    t4 = memory.GPUS["T4 16 GB"]
    context = memory.cuda_context_gib()["T4 16 GB"]
    budget = t4["capacity_gib"] - context
    as_run = estimate_training_memory(LLAMA3_8B_CONFIG, batch_size=8, seq_len=86, optimizer="adamw8bit",
                                      dtype=torch.float16, workspace_mib=t4["workspace_mib"])["total"]
    assert as_run <= budget
    for b in (8, 16, 32):
        tutorial = estimate_training_memory(LLAMA3_8B_CONFIG, batch_size=b, seq_len=86, workspace_mib=t4["workspace_mib"])
        lean = estimate_training_memory(LLAMA3_8B_CONFIG, batch_size=b, seq_len=86, logits="label",
                                        grad_checkpointing=True, workspace_mib=t4["workspace_mib"])
        assert lean["total"] < tutorial["total"]
        if b == 8:  # AdamW and bf16, notebook 4's comparison: fits, with less than a GiB to spare
            assert 0 <= budget - tutorial["total"] < 1


def test_phase_segments_split_each_bar_into_what_each_number_adds():
    rows = memory.phase_segments({
        "gpu": {"allocated": 5.0, "peak": 7.0, "reserved": 8.0, "smi": 8.5},
        "shipped": {"peak": 6.0, "smi": 6.9},
        "tutorial": {"smi": 7.6},
        "cpu": {"allocated": 1.0, "peak": 1.5},
    })
    by_phase = {}
    for r in rows:
        by_phase.setdefault(r["phase"], {})[r["segment"]] = r["GiB"]
    assert by_phase["gpu"] == pytest.approx({"tensors alive after the phase": 5.0, "extra tensors at the peak": 2.0,
                                             "reserved by PyTorch, not in tensors": 1.0, "CUDA context and others": 0.5})
    assert sum(by_phase["shipped"].values()) == pytest.approx(6.9)  # the bar's top is what the driver shows
    assert "allocator cache + CUDA context" in by_phase["shipped"]
    assert sum(by_phase["cpu"].values()) == pytest.approx(1.5)
    assert by_phase["tutorial"] == {"driver's count (tensors, cache, CUDA context)": 7.6}
    with pytest.raises(ValueError):
        memory.phase_segments({"empty": {"reserved": 3.0}})


def test_tensor_bytes_counts_live_and_peak_bytes():
    tracker = memory.TensorBytes()
    with tracker:
        a = torch.ones(1000)  # 4,000 bytes
        b = a * 2  # 4,000 more
        del b
        c = a.view(10, 100)  # a view: no new storage
    assert tracker.now == 4000 and tracker.peak == 8000
    del a, c
    assert tracker.now == 0


def _tiny_4bit(double_quant=False):
    from lmcls_helpers.models import random_model

    q = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=double_quant,
                           bnb_4bit_compute_dtype=torch.float32)
    return random_model(LlamaConfig(**TINY), dtype=torch.float32, device="cpu", quantization_config=q)


@pytest.mark.parametrize("double_quant", [False, True])
def test_random_model_is_built_in_4bit_without_a_16bit_copy(double_quant):
    import bitsandbytes as bnb

    tracker = memory.TensorBytes()
    with tracker:
        model = _tiny_4bit(double_quant)
    linears = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert len(linears) == 7 * TINY["num_hidden_layers"] and all(m.weight.bnb_quantized for m in linears)
    assert type(model.lm_head) is torch.nn.Linear and model.is_loaded_in_4bit
    assert not any(t.is_meta for t in (*model.parameters(), *model.buffers()))
    est = estimate_training_memory(TINY, batch_size=1, seq_len=1, dtype=torch.float32, double_quant=double_quant)
    from lmcls_helpers.quant import parameter_table, total_bytes

    table = parameter_table(model)
    assert total_bytes(table[table["quantized"]]) == est["quantized_weights"] * GIB
    # the build never held more than the finished model plus one 16-bit projection (the largest: 64 x 128 fp32)
    held = memory.TensorBytes()
    held.track(model)
    assert tracker.peak <= held.now + 4 * 64 * 128 + 4096, (tracker.peak, held.now)


@pytest.mark.parametrize("grad_checkpointing, batch, recipe", [
    (False, 4, "tutorial"), (False, 2, "lean"), (True, 4, "tutorial"), (True, 2, "lean"), (False, 4, "full logits"),
])
def test_estimate_within_ten_percent_of_a_cpu_training_step(grad_checkpointing, batch, recipe):
    """tutorial: model(..., labels=...) with the output held; full logits / lean: notebook 4's label_loss."""
    from peft import LoraConfig, get_peft_model

    from lmcls_helpers.batches import label_loss

    torch.manual_seed(0)
    model = get_peft_model(_tiny_4bit(), LoraConfig(r=8, lora_alpha=16, lora_dropout=0.05,
                                                    target_modules="all-linear", task_type="CAUSAL_LM"))
    if grad_checkpointing:
        model.gradient_checkpointing_enable()
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    ids = torch.randint(0, TINY["vocab_size"], (batch, 32))
    labels = torch.full_like(ids, -100)
    labels[:, -1] = ids[:, -1]
    batch_dict = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}
    meter = memory.MemoryMeter("cpu")
    for _ in range(2):  # the second step, with the optimizer state already there, is the one we compare
        with meter.phase("step", model, optimizer):
            out = model(**batch_dict) if recipe == "tutorial" else None
            loss = out.loss if recipe == "tutorial" else label_loss(model, batch_dict, lean=recipe == "lean")
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            del loss, out
    est = estimate_training_memory(TINY, batch_size=batch, seq_len=32, dtype=torch.float32, device="cpu",
                                   padding=False, grad_checkpointing=grad_checkpointing,
                                   logits="label" if recipe == "lean" else "all", hold_logits=recipe == "tutorial")
    assert est["total"] == pytest.approx(meter.phases["step"]["peak"], rel=0.10)


def test_measurements_round_trip_in_the_shipped_format(tmp_path):
    """benchmarks/gpu_memory.py writes the reference's schema, so notebook 5 reads a GPU run's file like the reference."""
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(_tiny_4bit(), LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad])
    recipe = gpu_memory.training_recipe(model, optimizer, padding=False)
    assert recipe == {"dtype": "float32", "quant": "nf4", "double_quant": False,
                      "lora": {"r": 4, "alpha": 8, "dropout": 0.0, "targets": ["q_proj", "v_proj"]},
                      "optimizer": "torch.optim.adamw.AdamW", "gradient_checkpointing": False, "padding": False}
    phases = {"model_loaded_4bit": {"allocated": 1.25, "peak": 1.5, "smi": 2.0},
              "train_step_tutorial_recipe": {"peak": 3.0, "reserved": 3.5, "smi": 4.0}}
    name = gpu_memory.measurement_filename("NVIDIA H200")
    assert name == "gpu_measurements_nvidia_h200.json"
    shipped_path = tmp_path / "gpu_measurements.json"
    shipped_path.write_text(memory.MEASUREMENTS.read_text())
    gpu_memory.save_measurements(phases, tmp_path / name, config=TINY, batch_size=2, seq_len=8, recipe=recipe, about="test")
    found = validation.all_measurements(tmp_path)
    assert list(found) == ["gpu_measurements.json", name]  # the reference first, then every GPU's own
    loaded, shipped = found[name], found["gpu_measurements.json"]
    assert loaded["phases"] == phases and loaded["model_config"] == TINY and loaded["batch_size"] == 2
    assert set(gpu_memory.MEASUREMENT_KEYS) <= set(loaded) and set(gpu_memory.MEASUREMENT_KEYS) <= set(shipped)
    assert set(gpu_memory.PROVENANCE_KEYS) <= set(loaded["provenance"]) & set(shipped["provenance"])
    assert loaded["provenance"]["torch"] == torch.__version__ and loaded["provenance"]["lora"]["r"] == 4
    assert validation.estimate_measurement(loaded)["train_step_tutorial_recipe"] == estimate_training_memory(
        TINY, batch_size=2, seq_len=8, lora_r=4, lora_targets=["q_proj", "v_proj"], lora_dropout=0.0,
        dtype=torch.float32, padding=False, workspace_mib=0.0)  # the CPU records no cuBLAS workspace
    with pytest.raises(ValueError, match="recipe is missing"):
        gpu_memory.save_measurements(phases, tmp_path / "x.json", config=TINY, batch_size=2, seq_len=8, recipe={}, about="")
