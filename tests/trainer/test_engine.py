"""The engine end to end on a tiny real dataset: records, best checkpoint, early stopping,
and an exact resume from a stop in the middle of an epoch (the SIGTERM path)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import torch

from kubevision_api.contract import StepName
from kubevision_api.errors import InputError
from kubevision_api.evaluation import Evaluation, EvaluationStatus
from kubevision_api.status import BestMetric, CheckpointStatus, EpochMetrics, StepState
from kubevision_trainer import checkpoint, engine, main
from kubevision_trainer.report.prometheus import PrometheusReporter
from kubevision_trainer.report.reporter import (
    BatchEvent,
    NullReporter,
    Reporter,
    ResumePoint,
    Selection,
)
from kubevision_trainer.settings import TrainerSettings
from tests.trainer.trainer_helpers import classification_plan, write_digits_imagefolder

DIGITS = (0, 1)


class Recorder(NullReporter):
    """Keeps every event."""

    def __init__(self) -> None:
        self.steps: list[tuple[StepName, StepState, str | None]] = []
        self.epochs: list[tuple[EpochMetrics, BestMetric | None]] = []
        self.checkpoints: list[CheckpointStatus] = []
        self.resumed_at: list[ResumePoint] = []
        self.evaluations: list[tuple[EvaluationStatus, list[Evaluation]]] = []
        self.batches = 0

    def step(self, name: StepName, state: StepState, message: str | None = None) -> None:
        self.steps.append((name, state, message))

    def resumed(self, at: ResumePoint) -> None:
        self.resumed_at.append(at)

    def batch(self, event: BatchEvent) -> None:
        self.batches += 1

    def epoch(self, metrics: EpochMetrics, best: BestMetric | None, selection: Selection) -> None:
        self.epochs.append((metrics, best))

    def checkpoint(self, status: CheckpointStatus) -> None:
        self.checkpoints.append(status)

    def evaluation(self, status: EvaluationStatus, evaluations: Sequence[Evaluation]) -> None:
        self.evaluations.append((status, list(evaluations)))


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("digits")
    return write_digits_imagefolder(root, DIGITS, per_class=20, size=32)


def _run(plan: Any, tmp: Path, *others: Reporter, **kwargs: Any) -> tuple[dict[str, Any], Recorder]:
    recorder = Recorder()
    card = main.run(
        plan,
        device="cpu",
        reporters=[recorder, *others],
        settings=TrainerSettings(cache_dir=tmp / "cache"),
        **kwargs,
    )
    return card, recorder


def test_records_best_checkpoint_and_steps(digits: Path, tmp_path: Path) -> None:
    plan = classification_plan(digits, f"file://{tmp_path}/out/", DIGITS, epochs=2)
    card, rec = _run(plan, tmp_path)
    names = [(name.value, state.value) for name, state, _ in rec.steps]
    assert names == [
        ("LoadingDataset", "Running"),
        ("LoadingDataset", "Succeeded"),
        ("Training", "Running"),
        ("Training", "Succeeded"),
        ("Evaluating", "Running"),
        ("Evaluating", "Succeeded"),
        ("Exporting", "Running"),
        ("Exporting", "Succeeded"),
    ]
    dataset = json.loads((tmp_path / "out" / "dataset.json").read_text())
    train = sum(image["split"] == "train" for image in dataset["images"])
    assert len(dataset["images"]) == 40
    steps = -(-train // 8)
    assert rec.batches == 2 * steps
    lines = (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["epoch"] for r in records] == [1, 2]
    assert records == [m.model_dump(mode="json", by_alias=True) for m, _ in rec.epochs]
    best_epoch = max(records, key=lambda r: (r["accuracy"], -r["epoch"]))["epoch"]
    assert card["metrics"]["bestEpoch"] == best_epoch
    best = checkpoint.from_bytes((tmp_path / "out/checkpoints/best.pt").read_bytes(), "best")
    assert best["epoch"] == best_epoch == rec.checkpoints[-1].epoch
    assert card["metrics"]["initial"]["accuracy"] is not None
    assert card["concepts"] == ["one", "zero"]
    assert len((tmp_path / "out" / "batches.jsonl").read_text().splitlines()) == 2 * steps

    # The final evaluation of best.pt on the validation split: its files, the reporters' event
    # and the model card's summary agree with each other and with the final metrics.
    out = f"file://{tmp_path}/out"
    [(status, [evaluation])] = rec.evaluations
    written = Evaluation.model_validate_json((tmp_path / "out/evaluation.json").read_text())
    assert written == evaluation
    assert evaluation.split.value == "validation" and evaluation.best_epoch == best_epoch
    assert evaluation.model_version == "tests/digits-test"
    assert evaluation.images == len(dataset["images"]) - train
    assert evaluation.classification is not None
    matrix = evaluation.classification.confusion_matrix
    assert sum(map(sum, matrix)) == evaluation.images
    assert evaluation.summary.value == evaluation.classification.accuracy
    assert evaluation.classification.accuracy == pytest.approx(card["metrics"]["accuracy"])
    assert status.indicator.value == "accuracy" and status.value == evaluation.summary.value
    assert status.artifacts.evaluation == f"{out}/evaluation.json"
    assert status.artifacts.confusion_matrix == f"{out}/confusion_matrix.png"
    assert status.artifacts.report == f"{out}/report.png" and status.artifacts.pr_curves is None
    for png in ("confusion_matrix.png", "report.png"):
        assert (tmp_path / "out" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
    assert card["serving"] == {"thresholds": None, "thresholdOf": None, "nmsIou": None}
    assert card["evaluation"] == {
        "summary": evaluation.summary.model_dump(mode="json", by_alias=True),
        "artifacts": {
            "evaluation": "evaluation.json",
            "confusionMatrix": "confusion_matrix.png",
            "report": "report.png",
        },
    }
    assert json.loads((tmp_path / "out/model.json").read_text()) == card


def test_early_stopping(digits: Path, tmp_path: Path) -> None:
    # A learning rate of 1e-9 changes nothing: accuracy cannot improve after epoch 1.
    plan = classification_plan(
        digits,
        f"file://{tmp_path}/out/",
        DIGITS,
        epochs=5,
        learningRate=1e-9,
        earlyStopping={"patience": 2, "minDelta": 0.01},
    )
    card, rec = _run(plan, tmp_path)
    assert [m.epoch for m, _ in rec.epochs] == [1, 2, 3]
    assert (StepName.TRAINING, StepState.SUCCEEDED, "early stop after epoch 3") in rec.steps
    assert card["metrics"]["bestEpoch"] == 1


def test_stop_mid_epoch_resumes_at_that_batch_exactly(digits: Path, tmp_path: Path) -> None:
    straight = classification_plan(digits, f"file://{tmp_path}/a/", DIGITS, epochs=2, seed=3)
    _run(straight, tmp_path)

    stopped = classification_plan(digits, f"file://{tmp_path}/b/", DIGITS, epochs=2, seed=3)
    calls = {"n": 0}

    def stop_at_epoch_2_batch_2() -> bool:
        calls["n"] += 1
        # Polled after each batch and at each epoch end: 5 batches + 1 in epoch 1 (36 train
        # images), then batches 1 and 2 of epoch 2.
        return calls["n"] == 8

    with pytest.raises(engine.PreemptedError, match="epoch 2, batch 2"):
        _run(stopped, tmp_path, should_stop=stop_at_epoch_2_batch_2)
    last = checkpoint.from_bytes((tmp_path / "b/checkpoints/last.pt").read_bytes(), "last")
    assert (last["progress"]["epoch"], last["progress"]["batch"]) == (1, 2)
    prometheus = PrometheusReporter(namespace="tests", view="digits", modelversion="b")
    _, rec = _run(stopped, tmp_path, prometheus)

    # Every reporter heard where the run resumed: epoch 1 done (5 batches of 36 images, the
    # lone last image joining the 5th), then 2 batches of 8 in epoch 2.
    (at,) = rec.resumed_at
    assert (at.epoch, at.batch, at.batches, at.epochs) == (1, 2, 5, 2)
    assert (at.batches_total, at.images_total) == (5 + 2, 36 + 16)
    assert [m.epoch for m in at.history] == [1] and at.selection == "accuracy"
    assert rec.batches == 5 - 2
    # Prometheus' counters continued from there: epochs x batches, every image of each epoch.
    labels = {"namespace": "tests", "view": "digits", "modelversion": "b"}
    registry = prometheus.registry
    assert registry.get_sample_value("kubevision_train_batches_total", labels) == 2 * 5
    assert registry.get_sample_value("kubevision_train_images_total", labels) == 2 * 36

    a = checkpoint.from_bytes((tmp_path / "a/checkpoints/last.pt").read_bytes(), "a")
    b = checkpoint.from_bytes((tmp_path / "b/checkpoints/last.pt").read_bytes(), "b")
    for key, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][key]), key
    for index, state in a["optimizer"]["state"].items():
        assert torch.equal(
            state["momentum_buffer"], b["optimizer"]["state"][index]["momentum_buffer"]
        )
    assert (tmp_path / "a/metrics.jsonl").read_text() == (tmp_path / "b/metrics.jsonl").read_text()
    assert (tmp_path / "a/batches.jsonl").read_text() == (tmp_path / "b/batches.jsonl").read_text()


def test_resume_refuses_another_plan(digits: Path, tmp_path: Path) -> None:
    plan = classification_plan(digits, f"file://{tmp_path}/out/", DIGITS, epochs=1)
    _run(plan, tmp_path)
    other = classification_plan(
        digits, f"file://{tmp_path}/out/", DIGITS, epochs=1, learningRate=0.5
    )
    with pytest.raises(InputError, match="another plan"):
        _run(other, tmp_path)
