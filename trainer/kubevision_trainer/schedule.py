"""Optimizers and per-batch learning-rate schedules built from ``spec.training``."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch.optim.lr_scheduler import LambdaLR

from kubevision_api.modelversion import LrPolicy, Optimizer, TrainingOptions

#: Warmup starts at this fraction of the peak learning rate (torchvision's references use
#: ``lr_warmup_decay=0.01``).
WARMUP_START = 0.01
#: OneCycle's defaults from ``torch.optim.lr_scheduler.OneCycleLR``: rise over 30 % of the
#: steps from lr/25, then cosine down to lr/(25 * 1e4).
ONECYCLE_PCT, ONECYCLE_DIV, ONECYCLE_FINAL_DIV = 0.3, 25.0, 1e4


def optimizer(
    params: Iterable[torch.nn.Parameter], options: TrainingOptions
) -> torch.optim.Optimizer:
    """The ``torch.optim`` optimizer of the spec. Adam and AdamW take ``momentum`` as beta1."""
    params = [p for p in params if p.requires_grad]
    lr, wd = options.learning_rate, options.weight_decay
    if options.optimizer is Optimizer.SGD:
        return torch.optim.SGD(params, lr=lr, momentum=options.momentum, weight_decay=wd)
    betas = (options.momentum, 0.999)
    if options.optimizer is Optimizer.ADAM:
        return torch.optim.Adam(params, lr=lr, betas=betas, weight_decay=wd)
    return torch.optim.AdamW(params, lr=lr, betas=betas, weight_decay=wd)


def lr_factor(step: int, options: TrainingOptions, steps_per_epoch: int) -> float:
    """Multiplier of the peak learning rate at batch ``step`` (0-based, counted over the whole
    run). Warmup is linear from ``WARMUP_START``; then the policy: constant; step (times gamma
    every ``stepEpochs`` epochs from the start); cosine, reaching 0 one step after the last
    batch (SGDR without
    restarts, Loshchilov & Hutter 2017); onecycle (Smith 2018, ``OneCycleLR``'s defaults,
    warmup epochs replacing its 30 % rise when given)."""
    schedule = options.lr_schedule
    total = max(1, options.epochs * steps_per_epoch)
    warmup = min(total - 1, schedule.warmup_epochs * steps_per_epoch)
    if schedule.policy is LrPolicy.ONECYCLE:
        rise = warmup if warmup > 0 else max(1, int(ONECYCLE_PCT * total))
        start, end = 1.0 / ONECYCLE_DIV, 1.0 / (ONECYCLE_DIV * ONECYCLE_FINAL_DIV)
        if step < rise:
            return start + (1.0 - start) * step / rise
        t = (step - rise) / max(1, total - rise - 1)
        return end + (1.0 - end) * 0.5 * (1.0 + math.cos(math.pi * min(1.0, t)))
    if step < warmup:
        return WARMUP_START + (1.0 - WARMUP_START) * step / warmup
    if schedule.policy is LrPolicy.CONSTANT:
        return 1.0
    if schedule.policy is LrPolicy.STEP:
        return float(schedule.gamma ** (step // (schedule.step_epochs * steps_per_epoch)))
    t = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, t)))


def scheduler(
    opt: torch.optim.Optimizer, options: TrainingOptions, steps_per_epoch: int
) -> LambdaLR:
    """A ``LambdaLR`` stepped once per batch; its state (the step count) is saved in
    ``last.pt``."""
    return LambdaLR(opt, lambda step: lr_factor(step, options, steps_per_epoch))
