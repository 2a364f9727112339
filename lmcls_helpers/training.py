"""Training: the LoRA config, notebook 4's loop as one function, and what the read-out runs share.

Notebook 4, section 7 writes the loop out; notebook 6 (section 4) trains a linear head on the last
real token with :func:`train`, and notebook 7 compares it with label words and
``AutoModelForSequenceClassification``. Every run differs only in its ``step_loss``.
:func:`strip_adapter` gives the untouched 4-bit base back after a run, so the next run needs no
reload: on a free T4 a reload of Llama-3-8B costs minutes, and only one base model fits at a time.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np
import torch
from sklearn.metrics import accuracy_score, matthews_corrcoef

from .batches import step_batches
from .heads import HEAD_MODULE, add_linear_head, head_logits
from .models import LLAMA_PROJECTIONS, load_model

#: ``step_loss(model, texts, labels)``: the **summed** loss of one micro-batch.
StepLoss = Callable[[torch.nn.Module, list, list], torch.Tensor]


def lora_config(profile, modules_to_save: Sequence[str] | None = None, task_type: str = "CAUSAL_LM"):
    """The profile's LoRA on all seven projections (notebook 4's adapter), plus whole modules to train and save."""
    from peft import LoraConfig

    return LoraConfig(r=profile.lora_r, lora_alpha=profile.lora_alpha, lora_dropout=profile.lora_dropout,
                      target_modules=list(LLAMA_PROJECTIONS),
                      modules_to_save=None if modules_to_save is None else list(modules_to_save), task_type=task_type)


def strip_adapter(model):
    """The base model under a peft model, with its LoRA layers removed: the 4-bit weights as loaded.

    LoRA never changes the frozen 4-bit weights, so a fresh adapter on this base is a fresh run,
    without the reload (notebook 6, section 5). A trained head stays in place until the next
    :func:`head_model` replaces it. The peft model must not be used afterwards: ``del`` it.
    """
    if not hasattr(model, "unload"):
        raise ValueError(f"{type(model).__name__} carries no adapter to strip: pass the model get_peft_model returned.")
    base = model.unload()
    if hasattr(base, "peft_config"):  # peft's bookkeeping; a base model with it counts as wrapped
        del base.peft_config
    return base


def head_model(profile, save_head: bool = True, base=None, num_labels: int = 1):
    """A 4-bit base + ``Linear(hidden, num_labels)`` (seed ``profile.seed``) + fresh LoRA, ready to train.

    With ``save_head`` the head is in ``modules_to_save``: it trains and is saved with the adapter
    (notebook 6, section 3). ``base`` reuses a base model (from :func:`strip_adapter`) instead of
    loading one; the result is the same model either way.
    """
    from peft import get_peft_model

    model = add_linear_head(load_model(profile) if base is None else base, seed=profile.seed, num_labels=num_labels)
    torch.manual_seed(profile.seed)  # LoRA's A matrices start random
    return get_peft_model(model, lora_config(profile, [HEAD_MODULE] if save_head else None))


def lr_factor(index: int, warmup: int, total: int) -> float:
    """The share of the peak learning rate for optimizer step ``index + 1`` of ``total`` (``LambdaLR`` counts from 0).

    Notebook 4, section 6: linear warm-up from peak/warmup at step 1 to the peak at step ``warmup``,
    then linear decay that reaches 0 one step after the last. Every step learns (transformers'
    ``get_linear_schedule_with_warmup`` runs the first at rate 0).
    """
    step, peak = index + 1, max(warmup, 1)  # without warm-up, step 1 runs at the peak
    return step / warmup if step <= warmup else (total + 1 - step) / (total + 1 - peak)


def train(model, step_loss: StepLoss, texts: Sequence[str], labels: Sequence[int], tokenizer, profile,
          num_steps: int | None = None) -> float:
    """Train for ``num_steps`` optimizer steps (default ``profile.max_steps``); returns the seconds it took.

    Notebook 4, section 7 teaches this loop: forward, the summed label-only loss over the step's
    example count, accumulate over micro-batches, clip once, AdamW step, warm-up and linear decay
    (:func:`lr_factor`, notebook 4's schedule).

    Micro-batches come from :func:`batches.step_batches` (length-sorted, seeded); a small training
    set is cycled, so every read-out gets the same number of steps. Warm-up is at most a quarter of
    the run, so a short run on a profile tuned for notebook 4's longer one still reaches its peak
    rate. With ``profile.gradient_checkpointing`` the blocks recompute their activations in backward.
    In fp16 the loss is scaled (``torch.amp.GradScaler``) so that small gradients do not underflow to 0;
    the gradient is unscaled before it is clipped. Elsewhere the scaler is off and changes nothing.
    """
    num_steps = profile.max_steps if num_steps is None else num_steps
    if not num_steps or num_steps < 1 or not len(texts) or len(texts) != len(labels):
        raise ValueError(f"Need num_steps >= 1 and as many labels as texts (got {num_steps}, {len(texts)}, {len(labels)}).")
    lengths, per_epoch = [len(ids) for ids in tokenizer(list(texts))["input_ids"]], -(-len(texts) // profile.train_batch_size)
    plan = [step for epoch in range(-(-num_steps // per_epoch))  # a small training set is cycled
            for step in step_batches(lengths, profile.train_batch_size, profile.micro_batch_size, profile.seed, epoch)]
    trainable = [p for p in model.parameters() if p.requires_grad]
    scaler = torch.amp.GradScaler(profile.device, enabled=profile.compute_dtype == torch.float16)
    if scaler.is_enabled() and any(p.dtype != torch.float32 for p in trainable):
        raise ValueError("fp16 loss scaling needs float32 trainable weights (LoRA's are): cast a new head with .float().")
    optimizer = torch.optim.AdamW(trainable, lr=profile.lr, weight_decay=profile.weight_decay)
    warmup = min(profile.warmup_steps, num_steps // 4)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: lr_factor(i, warmup, num_steps))
    if profile.gradient_checkpointing:  # notebook 5: non-reentrant, no input gradients needed
        model.get_base_model().activation_checkpointing_enable()
    torch.manual_seed(profile.seed)  # LoRA dropout masks
    model.train()
    start = time.perf_counter()
    for micro_batches in plan[:num_steps]:
        n = sum(len(micro) for micro in micro_batches)  # examples in this step
        for micro in micro_batches:
            loss = step_loss(model, [texts[i] for i in micro], [labels[i] for i in micro])  # summed
            scaler.scale(loss / n).backward()  # fp16: times the loss scale, so small gradients survive
        scaler.unscale_(optimizer)  # back to the true gradient before clipping it
        torch.nn.utils.clip_grad_norm_(trainable, profile.max_grad_norm)
        scale = scaler.get_scale()
        scaler.step(optimizer)  # skips the step if an inf or nan gradient appeared (the scale then shrinks)
        scaler.update()
        if scaler.get_scale() >= scale:  # the schedule advances with the steps taken, not the ones skipped
            scheduler.step()
        optimizer.zero_grad(set_to_none=True)
    model.eval()
    return time.perf_counter() - start


def head_loss(tokenizer, profile, read: str = "last_real") -> StepLoss:
    """The summed ``BCEWithLogitsLoss`` of a head that reads position ``read`` of a padded batch."""
    bce = torch.nn.BCEWithLogitsLoss(reduction="sum")

    def step_loss(model, texts, labels):
        batch = tokenizer(list(texts), return_tensors="pt", padding=True).to(profile.device)
        logits = head_logits(model, batch, read)  # (micro,)
        return bce(logits, torch.tensor(labels, dtype=torch.float32, device=logits.device))

    return step_loss


@torch.inference_mode()
def head_scores(model, texts: Sequence[str], tokenizer, profile, read: str = "last_real", padding_side: str = "right",
                unpadded: bool = False) -> np.ndarray:
    """The head's logit for every text, in batches padded on ``padding_side``. (n,)

    ``unpadded`` batches only texts of equal length, so every text scores as if it were alone:
    the layout of a service that classifies one request at a time.
    """
    texts, scores = list(texts), np.zeros(len(texts), dtype=np.float32)
    lengths = [len(ids) for ids in tokenizer(texts)["input_ids"]] if texts else []
    order = sorted(range(len(texts)), key=lambda i: lengths[i] if unpadded else 0)  # stable: else the given order
    while order:
        idx = order[: profile.eval_batch_size]
        if unpadded:
            idx = [i for i in idx if lengths[i] == lengths[idx[0]]]
        order = order[len(idx) :]
        batch = tokenizer([texts[i] for i in idx], return_tensors="pt", padding=True, padding_side=padding_side)
        scores[idx] = head_logits(model, batch.to(profile.device), read).float().cpu().numpy()
    return scores


def metrics(scores, labels) -> dict[str, float]:
    """MCC and accuracy of the predictions ``score > 0`` (a logit, or a log-odds: sigmoid > 0.5)."""
    preds = (np.asarray(scores) > 0).astype(int)
    return {"MCC": float(matthews_corrcoef(labels, preds)), "accuracy": float(accuracy_score(labels, preds))}


def bootstrap_sd(labels, scores, baseline=None, draws: int = 1000, seed: int = 42) -> float:
    """Standard deviation of MCC(scores) - MCC(baseline) over dev sets resampled with replacement.

    How far a margin between two classifiers (or one MCC, without ``baseline``) moves with the
    luck of the dev set: a margin of three of these is clear (notebook 6, section 5).
    """
    idx = np.random.default_rng(seed).integers(0, len(labels), (draws, len(labels)))  # a dev set per row
    y = np.asarray(labels)[idx] == 1  # (draws, n)

    def mcc(s) -> np.ndarray:  # (draws,): MCC of the predictions s > 0 on every resampled dev set at once
        p = np.asarray(s)[idx] > 0
        tp, tn, fp, fn = (p & y).sum(1), (~p & ~y).sum(1), (p & ~y).sum(1), (~p & y).sum(1)
        return (tp * tn - fp * fn) / np.maximum(np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn)), 1)

    return float(np.std(mcc(scores) - (0 if baseline is None else mcc(baseline))))


def pads_per_row(train_texts: Sequence[str], eval_texts: Sequence[str], tokenizer, profile):
    """How many pads follow a text in training micro-batches (one epoch's plan) and in evaluation batches.

    The position -1 read sees a different state for every pad count (notebook 6, section 6).
    """
    import pandas as pd

    train_lengths = np.array([len(ids) for ids in tokenizer(list(train_texts))["input_ids"]])
    eval_lengths = np.array([len(ids) for ids in tokenizer(list(eval_texts))["input_ids"]])
    plan = step_batches(train_lengths.tolist(), profile.train_batch_size, profile.micro_batch_size, profile.seed)
    train_pads = [train_lengths[m].max() - train_lengths[m] for step in plan for m in step]
    step = profile.eval_batch_size
    eval_pads = [eval_lengths[i : i + step].max() - eval_lengths[i : i + step] for i in range(0, len(eval_lengths), step)]
    return pd.DataFrame({"training micro-batches": pd.Series(np.concatenate(train_pads)).describe(),
                         f"eval batches of {step}": pd.Series(np.concatenate(eval_pads)).describe()}
                        ).T[["mean", "50%", "max"]].round(1)
