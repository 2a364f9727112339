"""Checkpoints: an exact round trip (adapter, optimizer, scheduler, step, RNG), an exact resume, and
clear errors for a checkpoint from another model or LoRA config (notebook 4, section 8)."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from peft import LoraConfig, get_peft_model, get_peft_model_state_dict
from transformers import LlamaConfig, LlamaForCausalLM, get_linear_schedule_with_warmup

from lmcls_helpers.batches import collate, label_loss
from lmcls_helpers.checkpoints import load_checkpoint, model_signature, save_checkpoint
from lmcls_helpers.models import LLAMA_PROJECTIONS

VOCAB = 64


def build(seed: int = 0, r: int = 4, hidden: int = 32, name: str = "tiny-a"):
    """A fresh 'process': base model (fixed weights per name), LoRA, AdamW, warm-up schedule."""
    torch.manual_seed(123)  # the base weights do not depend on ``seed``
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False)
    base = LlamaForCausalLM(config)
    base.config._name_or_path = name
    torch.manual_seed(seed)
    model = get_peft_model(base, LoraConfig(r=r, lora_alpha=2 * r, lora_dropout=0.2, target_modules=list(LLAMA_PROJECTIONS)))
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-2, weight_decay=0.01)
    scheduler = get_linear_schedule_with_warmup(optimizer, num_warmup_steps=2, num_training_steps=10)
    return model, optimizer, scheduler


def batches(n: int):
    g = torch.Generator().manual_seed(0)
    return [collate([torch.randint(2, VOCAB, (6,), generator=g).tolist() for _ in range(3)], pad_id=1) for _ in range(n)]


def train(model, optimizer, scheduler, steps) -> list[float]:
    """Dropout is on, so the losses depend on the global RNG as well as on the weights."""
    model.train()
    losses = []
    for batch in steps:
        loss = label_loss(model, batch) / 3
        loss.backward()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    return losses


def test_round_trip_restores_every_piece_exactly(tmp_path):
    model, optimizer, scheduler = build()
    train(model, optimizer, scheduler, batches(3))
    save_checkpoint(tmp_path / "ckpt", model, optimizer, scheduler, step=3, extra={"note": "hi"})
    expected_rng = (torch.rand(4), random.random(), np.random.rand())
    saved_adapter = {k: v.clone() for k, v in get_peft_model_state_dict(model).items()}
    saved_opt = optimizer.state_dict()

    other, other_opt, other_sched = build(seed=99)  # different LoRA init, empty optimizer state
    train(other, other_opt, other_sched, batches(1))
    state = load_checkpoint(tmp_path / "ckpt", other, other_opt, other_sched)

    assert state == {"step": 3, "extra": {"note": "hi"}}
    restored = get_peft_model_state_dict(other)
    assert restored.keys() == saved_adapter.keys()
    for k, v in saved_adapter.items():
        assert torch.equal(restored[k], v), k
    for (pid, s), (pid2, s2) in zip(saved_opt["state"].items(), other_opt.state_dict()["state"].items()):
        assert pid == pid2 and all(torch.equal(torch.as_tensor(s[k]), torch.as_tensor(s2[k])) for k in s)
    assert other_sched.state_dict()["last_epoch"] == scheduler.state_dict()["last_epoch"] == 3
    assert other_opt.param_groups[0]["lr"] == optimizer.param_groups[0]["lr"]
    assert torch.equal(torch.rand(4), expected_rng[0])
    assert random.random() == expected_rng[1]
    assert np.random.rand() == expected_rng[2]


def test_resumed_run_retraces_the_uninterrupted_one(tmp_path):
    steps = batches(6)
    torch.manual_seed(5)
    model, optimizer, scheduler = build()
    first = train(model, optimizer, scheduler, steps[:3])
    save_checkpoint(tmp_path / "mid", model, optimizer, scheduler, step=3)
    uninterrupted = first + train(model, optimizer, scheduler, steps[3:])

    model, optimizer, scheduler = build(seed=7)  # a new process
    torch.manual_seed(1234)  # its RNG is elsewhere until the checkpoint restores it
    state = load_checkpoint(tmp_path / "mid", model, optimizer, scheduler)
    resumed = train(model, optimizer, scheduler, steps[state["step"] :])
    assert resumed == uninterrupted[3:]


def test_resume_without_the_rng_state_would_differ(tmp_path):
    """Guards the test above: dropout really does draw from the RNG, so restoring it matters."""
    steps = batches(4)
    model, optimizer, scheduler = build()
    train(model, optimizer, scheduler, steps[:2])
    save_checkpoint(tmp_path / "mid", model, optimizer, scheduler, step=2)
    torch.manual_seed(0)
    a = train(model, optimizer, scheduler, steps[2:])
    model, optimizer, scheduler = build()
    load_checkpoint(tmp_path / "mid", model, optimizer, scheduler)
    torch.manual_seed(1)
    b = train(model, optimizer, scheduler, steps[2:])
    assert a != b


@pytest.mark.parametrize("change, message", [
    ({"r": 8}, "lora r"),
    ({"hidden": 64}, "hidden_size"),
    ({"name": "another-model"}, "base model"),
])
def test_a_checkpoint_from_another_setup_is_refused(tmp_path, change, message):
    model, optimizer, scheduler = build()
    save_checkpoint(tmp_path / "ckpt", model, optimizer, scheduler, step=1)
    other, other_opt, other_sched = build(**change)
    before = {k: v.clone() for k, v in get_peft_model_state_dict(other).items()}
    with pytest.raises(ValueError, match=message):
        load_checkpoint(tmp_path / "ckpt", other, other_opt, other_sched)
    after = get_peft_model_state_dict(other)
    assert all(torch.equal(after[k], v) for k, v in before.items()), "nothing is overwritten before the check"


def test_other_target_modules_are_refused(tmp_path):
    model, optimizer, scheduler = build()
    save_checkpoint(tmp_path / "ckpt", model, optimizer, scheduler, step=1)
    torch.manual_seed(123)
    base = LlamaForCausalLM(model.get_base_model().config)
    narrow = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.2, target_modules=["q_proj", "v_proj"]))
    opt = torch.optim.AdamW([p for p in narrow.parameters() if p.requires_grad])
    with pytest.raises(ValueError, match="target_modules"):
        load_checkpoint(tmp_path / "ckpt", narrow, opt, get_linear_schedule_with_warmup(opt, 2, 10))


def test_a_folder_that_is_not_a_checkpoint(tmp_path):
    model, optimizer, scheduler = build()
    with pytest.raises(FileNotFoundError, match="not a checkpoint"):
        load_checkpoint(tmp_path, model, optimizer, scheduler)


def test_model_signature_survives_moving_a_local_model(tmp_path):
    model, _, _ = build(name=str(tmp_path / "a" / "tiny" / "model"))
    moved, _, _ = build(name="/elsewhere/tiny/model")
    assert model_signature(model) == model_signature(moved)


def test_latest_checkpoint_is_the_newest_complete_folder(tmp_path):
    from lmcls_helpers.checkpoints import ADAPTER_FILE, STATE_FILE, latest_checkpoint

    assert latest_checkpoint(tmp_path) is None
    for step, complete in ((5, True), (40, True), (100, False)):  # step 100 was cut off while being written
        folder = tmp_path / f"step-{step:05d}"
        folder.mkdir()
        (folder / ADAPTER_FILE).write_bytes(b"")
        if complete:
            (folder / STATE_FILE).write_bytes(b"")
    assert latest_checkpoint(tmp_path) == tmp_path / "step-00040"
