"""Learning-rate factors worked out by hand for every policy, with and without warmup, and the
optimizers built from spec.training."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

from kubevision_api.modelversion import TrainingOptions
from kubevision_trainer import schedule

#: 10 epochs of 10 batches: 100 steps, 0..99.
STEPS_PER_EPOCH = 10


def options(policy: str, warmup: int = 0, **extra: Any) -> TrainingOptions:
    return TrainingOptions.model_validate(
        {
            "epochs": 10,
            "learningRate": 0.1,
            "lrSchedule": {"policy": policy, "warmupEpochs": warmup, **extra},
        }
    )


def factor(step: int, opts: TrainingOptions) -> float:
    return schedule.lr_factor(step, opts, STEPS_PER_EPOCH)


@pytest.mark.parametrize(
    ("policy", "warmup", "step", "expected"),
    [
        # constant: 1 throughout.
        ("constant", 0, 0, 1.0),
        ("constant", 0, 99, 1.0),
        # warmup 2 epochs = 20 steps, linear from 0.01: step 10 -> 0.01 + 0.99 * 10/20.
        ("constant", 2, 0, 0.01),
        ("constant", 2, 10, 0.505),
        ("constant", 2, 19, 0.01 + 0.99 * 19 / 20),
        ("constant", 2, 20, 1.0),
        # step (stepEpochs 3, gamma 0.1): x0.1 at steps 30, 60, 90, counted from the start.
        ("step", 0, 29, 1.0),
        ("step", 0, 30, 0.1),
        ("step", 0, 60, 0.01),
        ("step", 0, 99, 0.001),
        ("step", 2, 10, 0.505),
        ("step", 2, 30, 0.1),
        # cosine over 100 steps: 0.5 * (1 + cos(pi * step / 100)).
        ("cosine", 0, 0, 1.0),
        ("cosine", 0, 25, 0.5 * (1 + math.sqrt(0.5))),  # 0.853553...
        ("cosine", 0, 50, 0.5),
        ("cosine", 0, 99, 0.5 * (1 + math.cos(0.99 * math.pi))),  # 0.000247
        # cosine after 20 warmup steps runs over the 80 left: step 60 is half way.
        ("cosine", 2, 10, 0.505),
        ("cosine", 2, 20, 1.0),
        ("cosine", 2, 60, 0.5),
        # onecycle: rise over int(0.3 * 100) = 30 steps from 1/25 = 0.04, then cosine over the
        # 69 steps 30..99 down to 0.04 / 1e4 = 4e-6. Step 53: t = 23/69 = 1/3, cos = 0.5, so
        # 4e-6 + (1 - 4e-6) * 0.75 = 0.750001.
        ("onecycle", 0, 0, 0.04),
        ("onecycle", 0, 15, 0.52),
        ("onecycle", 0, 30, 1.0),
        ("onecycle", 0, 53, 0.750001),
        ("onecycle", 0, 99, 4e-6),
        # onecycle with 1 warmup epoch: the rise takes 10 steps instead of 30.
        ("onecycle", 1, 5, 0.52),
        ("onecycle", 1, 10, 1.0),
        ("onecycle", 1, 99, 4e-6),
    ],
)
def test_lr_factor(policy: str, warmup: int, step: int, expected: float) -> None:
    # stepEpochs and gamma are read by the step policy only.
    opts = options(policy, warmup, stepEpochs=3, gamma=0.1)
    assert factor(step, opts) == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_step_policy_gamma_and_period() -> None:
    opts = options("step", stepEpochs=4, gamma=0.5)
    assert [factor(s, opts) for s in (0, 39, 40, 79, 80)] == [1.0, 1.0, 0.5, 0.5, 0.25]


def test_warmup_longer_than_the_run_is_capped() -> None:
    # 1 epoch of 4 steps with 5 warmup epochs: warmup ends at the last step (total - 1 = 3),
    # so the last step trains at the peak, not at 1 %.
    opts = TrainingOptions.model_validate(
        {"epochs": 1, "lrSchedule": {"policy": "constant", "warmupEpochs": 5}}
    )
    values = [schedule.lr_factor(s, opts, 4) for s in range(4)]
    assert values == pytest.approx([0.01, 0.34, 0.67, 1.0])


@pytest.mark.parametrize("policy", ["constant", "step", "cosine", "onecycle"])
def test_factors_stay_in_range(policy: str) -> None:
    opts = options(policy, warmup=1)
    values = [factor(s, opts) for s in range(100)]
    assert all(0 < v <= 1 for v in values)


def model() -> torch.nn.Module:
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    net[0].weight.requires_grad_(False)  # frozen tensors are not given to the optimizer
    return net


def test_sgd() -> None:
    opts = TrainingOptions(optimizer="sgd", learning_rate=0.05, momentum=0.8, weight_decay=1e-3)
    opt = schedule.optimizer(model().parameters(), opts)
    assert type(opt) is torch.optim.SGD
    group = opt.param_groups[0]
    assert (group["lr"], group["momentum"], group["weight_decay"]) == (0.05, 0.8, 1e-3)
    assert len(group["params"]) == 3  # 4 parameters, 1 frozen


@pytest.mark.parametrize(
    ("name", "cls"), [("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW)]
)
def test_adam_family_takes_momentum_as_beta1(name: str, cls: type[torch.optim.Optimizer]) -> None:
    opts = TrainingOptions(optimizer=name, learning_rate=0.001, momentum=0.85, weight_decay=0.01)
    opt = schedule.optimizer(model().parameters(), opts)
    assert type(opt) is cls
    group = opt.param_groups[0]
    assert group["lr"] == 0.001
    assert group["betas"] == (0.85, 0.999)
    assert group["weight_decay"] == 0.01
    assert len(group["params"]) == 3


def test_scheduler_drives_the_optimizer_per_batch() -> None:
    opts = options("constant", warmup=2)
    opt = schedule.optimizer(model().parameters(), opts)
    sched = schedule.scheduler(opt, opts, STEPS_PER_EPOCH)
    seen = []
    for _ in range(21):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    # The lr used at batch k is 0.1 * lr_factor(k).
    assert seen[0] == pytest.approx(0.001)
    assert seen[10] == pytest.approx(0.0505)
    assert seen[20] == pytest.approx(0.1)
    # Its state is the step count, saved in last.pt and restored on resume.
    assert sched.state_dict()["last_epoch"] == 21
