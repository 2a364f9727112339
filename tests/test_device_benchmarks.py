"""The two device-time scripts, rehearsed on the CPU with small shapes (what they measure needs a GPU or more cores).

``benchmarks/gpu_memory.py`` runs once per lent GPU and its files ship with the package, so its
output format is what these tests hold: the measurement file must load as notebook 5 loads it, and
the grid must carry every estimator branch. ``benchmarks/cpu_threads.py`` must report each thread count.
"""

from __future__ import annotations

import json

import pytest

import benchmarks.cpu_threads as cpu_threads
import benchmarks.gpu_memory as gpu_memory
import benchmarks.memory_validation as validation
from lmcls_helpers import memory

SMALL = dict(model_type="llama", vocab_size=256, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
             num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=128, tie_word_embeddings=False)


@pytest.fixture()
def one_model_rule_lifted(monkeypatch):
    # gpu_memory loads a second base model for the fp32-upcast row after freeing the first; under
    # `make test` (LMCLS_ONE_MODEL=1) another test's model may still be alive in this worker.
    monkeypatch.delenv("LMCLS_ONE_MODEL", raising=False)


def test_padded_batches_have_their_label_at_each_rows_last_real_token():
    batch = gpu_memory.make_batch(SMALL, 8, "cpu", padded=True)
    lengths = batch["attention_mask"].sum(1).tolist()
    assert lengths == [86, 80, 74, 68, 62, 56, 50, 44]
    for row, n in enumerate(lengths):
        assert (batch["labels"][row] != -100).nonzero().flatten().tolist() == [n - 1]
        assert batch["labels"][row, n - 1] == batch["input_ids"][row, n - 1]
    assert gpu_memory.make_batch(SMALL, 4, "cpu")["attention_mask"].all()


def test_gpu_memory_writes_the_shipped_formats(tmp_path, monkeypatch, one_model_rule_lifted):
    monkeypatch.setattr(gpu_memory, "CPU_CONFIG", SMALL)
    monkeypatch.setattr(gpu_memory, "TIMED_STEPS", 1)
    report = gpu_memory.main(["--device", "cpu", "--out", str(tmp_path)])
    phases = gpu_memory.check_measurements(memory.load_measurements(tmp_path / "gpu_measurements_cpu_rehearsal.json"))
    assert set(phases["phases"]) == set(validation.estimate_measurement(phases))
    grid = json.loads((tmp_path / "gpu_grid_cpu_rehearsal.json").read_text())
    assert grid["grid"] == report["grid"] and len(grid["grid"]) == 20
    table = validation.grid_table(grid)  # the shipped file's reader works on what the script wrote
    assert table["estimated GiB"].notna().all() and table["measured GiB"].gt(0).all()
    assert validation.grid_peak(grid, batch_size=32, logits="label", checkpointing=True) < validation.grid_peak(grid, batch_size=32)


def test_cpu_threads_reports_every_thread_count(monkeypatch, one_model_rule_lifted):
    monkeypatch.setattr(cpu_threads, "SMOLLM2_135M", SMALL)
    report = cpu_threads.run([1, 2], repeats=1)
    assert set(report["threads"]) == {1, 2}
    for row in report["threads"].values():
        assert row["score_example_s"] > 0 and row["train_example_s"] > 0
    assert report["threads"][2]["score_speedup_vs_2"] == 1.0
