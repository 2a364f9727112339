"""The shared training loop and read-out helpers (notebooks 6 and 7) on a tiny random Llama: fast, CPU, fp32."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from transformers import BatchEncoding, LlamaConfig, LlamaForCausalLM

from lmcls_helpers import training
from lmcls_helpers.heads import HEAD_MODULE, LinearHead, require_saved_head

PAD = 1


class CharTokenizer:
    """Characters to ids (2..63), right-padded with PAD: just enough of a tokenizer for the helpers."""

    pad_token_id = PAD

    def __call__(self, texts, return_tensors=None, padding=False, padding_side="right"):
        ids = [[2 + ord(ch) % 62 for ch in t] for t in ([texts] if isinstance(texts, str) else texts)]
        if not return_tensors:
            return {"input_ids": ids}
        width = max(len(r) for r in ids)
        rows, mask = [], []
        for r in ids:
            pad = [PAD] * (width - len(r))
            rows.append(pad + r if padding_side == "left" else r + pad)
            m = [1] * len(r)
            mask.append([0] * len(pad) + m if padding_side == "left" else m + [0] * len(pad))
        return BatchEncoding({"input_ids": torch.tensor(rows), "attention_mask": torch.tensor(mask)})


PROFILE = SimpleNamespace(seed=0, lora_r=4, lora_alpha=8, lora_dropout=0.0, device="cpu", train_batch_size=4,
                          micro_batch_size=2, lr=5e-3, weight_decay=0.0, warmup_steps=2, max_grad_norm=1.0, max_steps=12,
                          gradient_checkpointing=False, eval_batch_size=3, compute_dtype=torch.float32)
TEXTS = ["good day", "bad", "good good", "bad bad day", "a good one", "a bad one", "good", "bad night"]
LABELS = [1, 0, 1, 0, 1, 0, 1, 0]


def tiny_base() -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, max_position_embeddings=64, bos_token_id=0, eos_token_id=PAD)
    return LlamaForCausalLM(config).eval()


def test_strip_adapter_gives_back_the_same_base_and_a_fresh_run_equals_the_first():
    tok, base = CharTokenizer(), tiny_base()
    model = training.head_model(PROFILE, base=base)
    first = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    assert any(HEAD_MODULE in n for n in first), "the head must train (modules_to_save)"
    training.train(model, training.head_loss(tok, PROFILE), TEXTS, LABELS, tok, PROFILE)
    stripped = training.strip_adapter(model)
    assert stripped is base and not hasattr(stripped, "peft_config")
    assert not any("lora_" in n for n, _ in stripped.named_parameters())
    again = training.head_model(PROFILE, base=stripped)
    for n, p in again.named_parameters():
        if p.requires_grad:
            torch.testing.assert_close(p, first[n], msg=f"{n}: a fresh run must start where the first did")
    with pytest.raises(ValueError, match="no adapter"):
        training.strip_adapter(stripped)


def test_train_learns_a_separable_toy_task_and_is_deterministic():
    tok = CharTokenizer()
    scores = []
    for _ in range(2):
        model = training.head_model(PROFILE, base=tiny_base())
        before = training.metrics(training.head_scores(model, TEXTS, tok, PROFILE), LABELS)
        seconds = training.train(model, training.head_loss(tok, PROFILE), TEXTS, LABELS, tok, PROFILE, num_steps=40)
        scores.append(training.head_scores(model, TEXTS, tok, PROFILE))
        assert seconds > 0 and isinstance(model.get_output_embeddings().modules_to_save["default"], LinearHead)
    np.testing.assert_array_equal(scores[0], scores[1])
    assert training.metrics(scores[0], LABELS)["accuracy"] > before["accuracy"] or before["accuracy"] == 1.0
    with pytest.raises(ValueError, match="num_steps"):
        training.train(model, training.head_loss(tok, PROFILE), TEXTS, LABELS[:3], tok, PROFILE)


def test_a_disabled_grad_scaler_leaves_the_steps_unchanged():
    """Outside fp16 train()'s GradScaler is off: the weights equal those of the same loop written without it."""
    from lmcls_helpers.batches import step_batches

    tok, steps = CharTokenizer(), 5
    model = training.head_model(PROFILE, base=tiny_base())
    training.train(model, training.head_loss(tok, PROFILE), TEXTS, LABELS, tok, PROFILE, num_steps=steps)
    plain = training.head_model(PROFILE, base=tiny_base())  # the same start, trained by a loop without a scaler
    trainable = [p for p in plain.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=PROFILE.lr, weight_decay=PROFILE.weight_decay)
    warmup = min(PROFILE.warmup_steps, steps // 4)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: training.lr_factor(i, warmup, steps))
    loss_fn, lengths = training.head_loss(tok, PROFILE), [len(ids) for ids in tok(TEXTS)["input_ids"]]
    plan = [s for epoch in range(3) for s in step_batches(lengths, PROFILE.train_batch_size, PROFILE.micro_batch_size,
                                                          PROFILE.seed, epoch)]  # 2 steps an epoch, cycled
    torch.manual_seed(PROFILE.seed)
    plain.train()
    for micro_batches in plan[:steps]:
        n = sum(len(m) for m in micro_batches)
        for m in micro_batches:
            (loss_fn(plain, [TEXTS[i] for i in m], [LABELS[i] for i in m]) / n).backward()
        torch.nn.utils.clip_grad_norm_(trainable, PROFILE.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
    ours = dict(model.named_parameters())
    for name, p in plain.named_parameters():
        if p.requires_grad:
            torch.testing.assert_close(ours[name], p, rtol=0, atol=0, msg=name)


def test_head_scores_agree_across_layouts_for_the_last_real_token():
    tok, model = CharTokenizer(), training.head_model(PROFILE, base=tiny_base())
    right = training.head_scores(model, TEXTS, tok, PROFILE)
    for kwargs in (dict(padding_side="left"), dict(unpadded=True)):
        np.testing.assert_allclose(training.head_scores(model, TEXTS, tok, PROFILE, **kwargs), right, rtol=1e-4, atol=1e-5)
    left_minus_one = training.head_scores(model, TEXTS, tok, PROFILE, "minus_one", padding_side="left")
    np.testing.assert_allclose(left_minus_one, right, rtol=1e-4, atol=1e-5)


def test_metrics_bootstrap_and_pads():
    assert training.metrics([1.0, -1.0, 2.0, -2.0], [1, 0, 1, 0]) == {"MCC": 1.0, "accuracy": 1.0}
    s = np.array([0.5, -0.5, 0.2, -0.1, 0.3, -0.4])
    labels = [1, 0, 1, 1, 0, 0]
    assert training.bootstrap_sd(labels, s, s) == 0.0
    assert training.bootstrap_sd(labels, s, seed=1) == training.bootstrap_sd(labels, s, seed=1) > 0
    table = training.pads_per_row(TEXTS, TEXTS, CharTokenizer(), PROFILE)
    assert list(table.columns) == ["mean", "50%", "max"] and (table["max"] >= 0).all()


def test_require_saved_head_refuses_an_adapter_without_its_head(tmp_path):
    tok = CharTokenizer()
    without = training.head_model(PROFILE, save_head=False, base=tiny_base())
    without.save_pretrained(tmp_path / "without")
    with pytest.raises(ValueError, match="no 'lm_head'"):
        require_saved_head(tmp_path / "without")
    with_head = training.head_model(PROFILE, base=training.strip_adapter(without))
    training.train(with_head, training.head_loss(tok, PROFILE), TEXTS, LABELS, tok, PROFILE, num_steps=1)
    with_head.save_pretrained(tmp_path / "with")
    assert require_saved_head(tmp_path / "with")


def _trained_weights(profile, step_loss=None, steps: int = 5) -> dict[str, torch.Tensor]:
    tok = CharTokenizer()
    model = training.head_model(profile, base=tiny_base())
    training.train(model, step_loss or training.head_loss(tok, profile), TEXTS, LABELS, tok, profile, num_steps=steps)
    return {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}


def test_fp16_loss_scaling_without_overflow_gives_the_unscaled_steps():
    """With the scaler on (fp16) and no inf, scaling by a power of 2 and back changes no weight."""
    plain = _trained_weights(PROFILE)
    scaled = _trained_weights(SimpleNamespace(**{**vars(PROFILE), "compute_dtype": torch.float16}))
    for name, weight in plain.items():
        torch.testing.assert_close(scaled[name], weight, rtol=0, atol=0, msg=name)


def test_an_overflowing_fp16_step_is_skipped_and_the_schedule_waits(recwarn):
    """An inf loss: that step changes no weight, the schedule does not advance, and no warning reaches the student."""
    fp16 = SimpleNamespace(**{**vars(PROFILE), "compute_dtype": torch.float16})
    tok, calls = CharTokenizer(), []
    head = training.head_loss(tok, fp16)

    def overflow_once(model, texts, labels):
        calls.append(len(texts))
        loss = head(model, texts, labels)
        return loss * float("inf") if len(calls) == 1 else loss  # the first micro-batch of the first step

    start = _trained_weights(fp16, steps=1, step_loss=lambda m, t, y: head(m, t, y) * 0)  # lr is 0 at step 1
    after_skip = _trained_weights(fp16, steps=1, step_loss=overflow_once)
    for name, weight in start.items():
        torch.testing.assert_close(after_skip[name], weight, rtol=0, atol=0, msg=name)
    assert not [w for w in recwarn if "lr_scheduler.step()" in str(w.message)], "the scheduler stepped before the optimizer"


def test_fp16_loss_scaling_refuses_half_precision_trainable_weights():
    fp16 = SimpleNamespace(**{**vars(PROFILE), "compute_dtype": torch.float16})
    tok = CharTokenizer()
    model = training.head_model(fp16, base=tiny_base())
    next(p for p in model.parameters() if p.requires_grad).data = torch.zeros(1, dtype=torch.float16)
    with pytest.raises(ValueError, match="float32 trainable weights"):
        training.train(model, training.head_loss(tok, fp16), TEXTS, LABELS, tok, fp16, num_steps=1)


@pytest.mark.parametrize(("warmup", "total"), [(0, 3), (1, 5), (10, 57), (100, 450)])
def test_every_step_learns_and_the_rate_peaks_at_the_end_of_warmup(warmup, total):
    factors = [training.lr_factor(i, warmup, total) for i in range(total)]
    assert all(0 < f <= 1 for f in factors), "no step at rate 0, none above the peak"
    peak = max(warmup, 1)
    assert factors[peak - 1] == 1 and factors.index(1) == peak - 1, "the peak is step warmup (step 1 without warm-up)"
    assert factors[:peak] == sorted(factors[:peak]) and all(a > b for a, b in zip(factors[peak - 1:], factors[peak:]))
    assert training.lr_factor(total, warmup, total) == 0, "0 one step after the last"
