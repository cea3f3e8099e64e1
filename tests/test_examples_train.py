"""The examples train for real, as a user runs them.

- The README's first command (less its ``pip install``) runs in a copy of ``examples/``: the
  digits classifier reaches val accuracy >= 0.95 and writes every record and the report image.
- The tagging and detection examples are measured against their untrained model in the same
  run (``model.json`` keeps the validation before training): tagging val mAP at least 0.2
  above it, detection val AP50 at least 0.1 above it.
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
from pathlib import Path
from typing import Any

import pytest

from kubevision_api.evaluation import Evaluation
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
    workdir: Path, folder: str, name: str, metric: str, margin: float
) -> None:
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
    seconds = time.monotonic() - started
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
