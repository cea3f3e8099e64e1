"""The examples train for real, as a user runs them.

- The README's first command (less its ``pip install``) runs in a copy of ``examples/``: the
  digits classifier reaches val accuracy >= 0.95 and writes every record and the report image.
- The tagging and detection examples are measured against their untrained model in the same
  run (``model.json`` keeps the validation before training): tagging val mAP at least 0.2
  above it, detection val AP50 at least 0.1 above it.
- ``kubevision predict`` on each example's exported bundle reproduces the trainer's own
  predictions on the validation images (tests/examples_predict.py).
- On the trained detection example, optimal LRP per concept agrees with vernier, and
  ``kubevision evaluate`` of its best checkpoint reproduces the run's ``evaluation.json``.
- Every run writes its final evaluation (docs/metrics.md, "Artifacts"): ``evaluation.json``
  read back through its schema, the task's figure and ``report.png`` opened (size, not blank),
  and ``model.json``'s serving thresholds, which are the evaluation's.

Each prints its figures (``-s`` shows them)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from kubevision_api.bundle import Postprocessing
from kubevision_api.evaluation import Evaluation
from kubevision_api.plan import TrainingPlan
from kubevision_trainer import local
from kubevision_trainer.evaluation.predictions import DetectionImage, DetectionPredictions
from kubevision_trainer.settings import TrainerSettings
from tests import examples_predict
from tests.trainer.test_evaluation_detection import compare_with_vernier, shown_gaps
from tests.trainer.trainer_helpers import assert_drawn

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of ``examples/`` without its prepared data, as in a fresh clone."""
    work = tmp_path_factory.mktemp("examples")
    shutil.copytree(ROOT / "examples", work / "examples", ignore=shutil.ignore_patterns("data"))
    return work


def _env(work: Path) -> dict[str, str]:
    bin_dir = str(Path(sys.executable).parent)
    return {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "KUBEVISION_CACHE_DIR": str(work / "cache"),
    }


def _card(work: Path, name: str) -> dict[str, Any]:
    card: dict[str, Any] = json.loads((work / "runs" / "default" / name / "model.json").read_text())
    return card


def check_evaluation(work: Path, name: str) -> Evaluation:
    """The run's evaluation artifacts and the model card's part of them; returns the
    evaluation."""
    out = work / "runs" / "default" / name
    card = _card(work, name)
    evaluation = Evaluation.model_validate_json((out / "evaluation.json").read_text())
    assert evaluation.split.value == "validation"
    assert evaluation.best_epoch == card["metrics"]["bestEpoch"]
    assert evaluation.concepts == card["concepts"]
    figure = "confusion_matrix.png" if evaluation.classification else "pr_curves.png"
    assert card["evaluation"]["artifacts"] == {
        "evaluation": "evaluation.json",
        "confusionMatrix" if evaluation.classification else "prCurves": figure,
        "report": "report.png",
    }
    assert card["evaluation"]["summary"] == evaluation.summary.model_dump(
        mode="json", by_alias=True
    )
    assert_drawn((out / figure).read_bytes(), 400, 300)
    assert_drawn((out / "report.png").read_bytes(), 800, 200)
    serving = card["serving"]
    if evaluation.tagging is not None:
        expected = {
            c.concept: None if c.best is None else c.best.threshold
            for c in evaluation.tagging.concepts
        }
        assert serving["thresholds"] == expected and serving["thresholdOf"] == "probability"
        assert any(value is not None for value in expected.values())
    elif evaluation.detection is not None:
        boxes = evaluation.detection
        expected = {
            c.concept: None if c.optimal_lrp is None else c.optimal_lrp.threshold
            for c in boxes.concepts
        }
        assert serving["thresholds"] == expected and serving["thresholdOf"] == "score"
        assert serving["nmsIou"] == boxes.nms_iou == 0.5  # Faster R-CNN's box NMS
    else:
        assert serving == {"thresholds": None, "thresholdOf": None, "nmsIou": None}
    return evaluation


def readme_first_command() -> str:
    """The first command of the README's first bash block."""
    text = (ROOT / "README.md").read_text()
    block = re.search(r"```bash\n(.*?)```", text, re.S)
    assert block is not None, "README.md has no bash block"
    commands = [line for line in block.group(1).splitlines() if line and not line.startswith("#")]
    return commands[0]


def test_readme_first_command_trains_digits(workdir: Path) -> None:
    command = readme_first_command()
    install, _, rest = command.partition(" && ")
    assert install.startswith("pip install")
    started = time.monotonic()
    done = subprocess.run(
        ["bash", "-c", rest],
        cwd=workdir,
        env=_env(workdir),
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )
    seconds = time.monotonic() - started
    assert done.returncode == 0, done.stderr[-3000:]
    out = workdir / "runs" / "default" / "digits-resnet18"
    for name in (
        "metrics.jsonl",
        "batches.jsonl",
        "dataset.json",
        "model.json",
        "report.png",
        "checkpoints/best.pt",
        "checkpoints/last.pt",
    ):
        assert (out / name).stat().st_size > 0, name
    assert (out / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    card = _card(workdir, "digits-resnet18")
    evaluation = check_evaluation(workdir, "digits-resnet18")
    assert evaluation.summary.value == pytest.approx(card["metrics"]["accuracy"])
    assert f"accuracy {card['metrics']['accuracy']:.4f}" in done.stdout + done.stderr
    print(
        f"\ndigits: val accuracy {card['metrics']['accuracy']:.4f} "
        f"(before training {card['metrics']['initial']['accuracy']:.4f}), {seconds:.0f} s"
    )
    assert card["metrics"]["accuracy"] >= 0.95


@pytest.fixture(scope="module")
def train_example(workdir: Path) -> Callable[[str], tuple[subprocess.CompletedProcess[str], float]]:
    """``kubevision train -f examples/FOLDER`` in ``workdir``, once per folder in this module:
    the run and its wall time in seconds."""
    runs: dict[str, tuple[subprocess.CompletedProcess[str], float]] = {}

    def train(folder: str) -> tuple[subprocess.CompletedProcess[str], float]:
        if folder not in runs:
            prepare = subprocess.run(
                [sys.executable, "examples/prepare.py"],
                cwd=workdir,
                capture_output=True,
                text=True,
                check=False,
            )
            assert prepare.returncode == 0, prepare.stderr
            started = time.monotonic()
            done = subprocess.run(
                ["kubevision", "train", "-f", f"examples/{folder}"],
                cwd=workdir,
                env=_env(workdir),
                capture_output=True,
                text=True,
                timeout=2400,
                check=False,
            )
            runs[folder] = (done, time.monotonic() - started)
        return runs[folder]

    return train


# Detection trains ~5 minutes alone on 2 cores; a busy machine can triple that.
@pytest.mark.timeout(2700)
@pytest.mark.parametrize(
    ("folder", "name", "metric", "margin"),
    [
        ("02-tagging-digits", "digits-pairs-resnet18", "mAP", 0.2),
        ("03-detection-digits", "digits-on-canvas-frcnn", "ap50", 0.1),
    ],
)
def test_example_beats_its_untrained_model(
    workdir: Path,
    train_example: Callable[[str], tuple[subprocess.CompletedProcess[str], float]],
    folder: str,
    name: str,
    metric: str,
    margin: float,
) -> None:
    done, seconds = train_example(folder)
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = _card(workdir, name)["metrics"]
    before, after = metrics["initial"][metric], metrics[metric]
    evaluation = check_evaluation(workdir, name)
    summary = evaluation.summary
    print(
        f"\n{folder}: val {metric} {after:.4f} vs {before:.4f} untrained, {seconds:.0f} s; "
        f"final evaluation {summary.indicator.value} {summary.value}"
    )
    assert after >= before + margin
    # The console's last line leads with the first indicator.
    line = f"done: best epoch {metrics['bestEpoch']}: {summary.indicator.value} "
    assert line in done.stdout + done.stderr


def _detections(plan: TrainingPlan, settings: TrainerSettings) -> DetectionPredictions:
    """The trained detector's detections on the validation split (its own score threshold),
    from its best checkpoint (``examples_predict.trainer_outputs``)."""
    _, outputs, targets = examples_predict.trainer_outputs(plan, settings)
    return DetectionPredictions(
        images=[
            DetectionImage(
                gt_boxes=target["boxes"].double().numpy(),
                gt_labels=target["labels"].numpy(),
                dt_boxes=output["boxes"].double().numpy(),
                dt_labels=output["labels"].numpy(),
                dt_scores=output["scores"].double().numpy(),
            )
            for output, target in zip(outputs, targets, strict=True)
        ]
    )


@pytest.mark.timeout(2700)
def test_detection_example_evaluation_agrees_with_vernier_and_evaluate(
    workdir: Path,
    train_example: Callable[[str], tuple[subprocess.CompletedProcess[str], float]],
    tmp_path: Path,
) -> None:
    """On the trained detection example: optimal LRP per concept agrees with vernier
    (``compare_with_vernier``'s bounds), and ``kubevision evaluate`` of its best checkpoint on
    its validation split reproduces the run's own ``evaluation.json`` byte for byte."""
    folder = "03-detection-digits"
    done, _ = train_example(folder)
    assert done.returncode == 0, done.stderr[-3000:]
    out = workdir / "runs" / "default" / "digits-on-canvas-frcnn"
    plan = local.plan_from_manifests([workdir / "examples" / folder], output=str(out))
    predictions = _detections(plan, TrainerSettings(cache_dir=workdir / "cache"))
    gaps = compare_with_vernier(predictions, len(plan.concepts))
    detections = sum(len(image.dt_scores) for image in predictions.images)
    print(
        f"\ndetector: {len(predictions.images)} images, {detections} detections; "
        f"(exact oLRP, vernier - exact) per concept {shown_gaps(gaps)}"
    )
    assert len(gaps) == len(plan.concepts)
    # A trained detector: every concept has true positives at its optimum.
    assert max(exact for exact, _ in gaps) < 1.0

    evaluate = subprocess.run(
        [
            "kubevision",
            "evaluate",
            "-f",
            f"examples/{folder}",
            "--model",
            str(out / "checkpoints" / "best.pt"),
            "--output",
            str(tmp_path / "again"),
            "--device",
            "cpu",
        ],
        cwd=workdir,
        env=_env(workdir),
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )
    assert evaluate.returncode == 0, evaluate.stderr[-3000:]
    again = (tmp_path / "again" / "evaluation.json").read_bytes()
    assert again == (out / "evaluation.json").read_bytes()
    ours = Evaluation.model_validate_json(again)
    assert ours.detection is not None and ours.detection.mean_optimal_lrp is not None
    assert ours.detection.mean_optimal_lrp < 1.0


@pytest.mark.timeout(2700)
@pytest.mark.parametrize(
    ("folder", "name"),
    [
        ("01-classification-digits", "digits-resnet18"),
        ("02-tagging-digits", "digits-pairs-resnet18"),
        ("03-detection-digits", "digits-on-canvas-frcnn"),
    ],
)
def test_predict_reproduces_the_trainers_evaluation_predictions(
    workdir: Path,
    train_example: Callable[[str], tuple[subprocess.CompletedProcess[str], float]],
    folder: str,
    name: str,
) -> None:
    """``kubevision predict`` on the exported bundle of each trained example, over its
    validation images, against the best checkpoint through the trainer's own validation
    loader: the same top concept, concept sets at the thresholds, boxes (tests/
    examples_predict.py)."""
    done, _ = train_example(folder)
    assert done.returncode == 0, done.stderr[-3000:]
    out = workdir / "runs" / "default" / name
    plan = local.plan_from_manifests([workdir / "examples" / folder], output=str(out))
    uris, ours, _ = examples_predict.trainer_outputs(
        plan, TrainerSettings(cache_dir=workdir / "cache")
    )
    post = Postprocessing.model_validate_json((out / "export" / "postprocessing.json").read_text())
    assert post.concepts == plan.concepts
    lines = examples_predict.run_predict(out, uris, workdir, _env(workdir))
    found = examples_predict.compare(post, ours, lines)
    print(
        f"\n{name}: predict vs the trainer on {found.images} validation images: {found.items} "
        f"items agree, {found.ties} within {examples_predict.TIE} of their threshold left out; "
        f"max |score diff| {found.score_diff:.2e}, max |box diff| {found.box_diff:.2e} px"
    )
    assert found.items > 0
