"""A run that diverges (learning rate 10) ends with the NonFiniteLoss outcome, through the
Job's entry point, and leaves only finite tensors in its checkpoints; a NaN never reaches
metrics.jsonl."""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from kubevision_api import contract
from kubevision_trainer import checkpoint, finite, main
from tests.trainer.trainer_helpers import classification_plan, write_digits_imagefolder


def test_learning_rate_10_fails_non_finite_and_saves_nothing_non_finite(
    tmp_path: Path, monkeypatch: object
) -> None:
    data = write_digits_imagefolder(tmp_path / "data", (0, 1, 2), per_class=12, size=32)
    out = tmp_path / "out"
    # A constant rate of 10 with room to diverge: under a cosine schedule over 3 epochs the
    # rate decays to 0 first, and whether the losses (1e37 after epoch 1) overflow depended on
    # the machine's thread count (finite on one thread). Here the outputs overflow after epoch
    # 3 on 1, 2 and 4 threads alike, 5 epochs before the end.
    plan = classification_plan(
        data,
        out.as_uri() + "/",
        (0, 1, 2),
        epochs=8,
        learningRate=10.0,
        weightDecay=0.0,
        lrSchedule={"policy": "constant", "warmupEpochs": 0},
    )
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(plan.model_dump_json(by_alias=True))
    log = tmp_path / "termination-log"

    code = main.run_plan_file(str(plan_file), device="cpu", termination_log=str(log))

    line = log.read_text()
    assert code == contract.Outcome.NON_FINITE_LOSS.exit_code == 4, line
    parsed = contract.parse_termination(line)
    assert parsed is not None and parsed[0] is contract.Outcome.NON_FINITE_LOSS, line
    assert " epoch " in line and "spec.training.learningRate 10)" in line, line
    assert "spec.training.learningRate" in line
    saved = (
        [p for p in (out / "checkpoints").glob("*.pt")] if (out / "checkpoints").exists() else []
    )
    for path in saved:
        state = torch.load(path, map_location="cpu", weights_only=True)
        assert finite.first_non_finite(state) is None, path
        for name, tensor in state["model"].items():
            if tensor.is_floating_point():
                assert bool(torch.isfinite(tensor).all()), (path.name, name)
    metrics = out / "metrics.jsonl"
    if metrics.exists():
        for record in map(json.loads, metrics.read_text().splitlines()):
            assert all(
                v is None or not isinstance(v, float) or math.isfinite(v) for v in record.values()
            ), record


def test_first_non_finite_names_the_tensor() -> None:
    state = {"model": {"a": torch.ones(2), "bn.running_var": torch.tensor([1.0, math.inf])}}
    assert finite.first_non_finite(state) == "model.bn.running_var"
    assert finite.first_non_finite({"x": [1.0, float("nan")]}) == "x[1]"
    assert finite.first_non_finite({"steps": torch.tensor([3]), "lr": 0.1}) is None
    store = checkpoint.CheckpointStore("file:///nonexistent/")
    try:
        store.save_last(state)
    except ValueError as exc:
        assert "model.bn.running_var is not finite" in str(exc)
    else:
        raise AssertionError("a non-finite checkpoint was saved")
