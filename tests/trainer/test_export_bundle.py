"""The EXPORTING step (issue 14): a tiny real run writes ``<output>/export/`` (graphs,
preprocessing.json, postprocessing.json), the model card lists the files, and the
``ExportStatus`` told to the reporters names every file with the size and sha256 of what is in
storage; a format that fails fails the run as ``ExportFailed`` naming the format and the
architecture, with ``best.pt`` and ``evaluation.json`` kept."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from kubevision_api.bundle import Postprocessing, Preprocessing
from kubevision_api.contract import Outcome, StepName
from kubevision_api.export import ExportFormat, ExportStatus
from kubevision_api.modelversion import ImageResizer
from kubevision_api.status import StepState
from kubevision_api.view import Task
from kubevision_trainer import main, models, outcome
from kubevision_trainer.export import bundle, errors, graphs
from kubevision_trainer.report.reporter import NullReporter
from kubevision_trainer.settings import TrainerSettings
from tests.trainer.trainer_helpers import classification_plan, write_digits_imagefolder

DIGITS = (0, 1)


class Recorder(NullReporter):
    def __init__(self) -> None:
        self.exports: list[ExportStatus] = []
        self.steps: list[tuple[StepName, StepState, str | None]] = []

    def step(self, name: StepName, state: StepState, message: str | None = None) -> None:
        self.steps.append((name, state, message))

    def export(self, status: ExportStatus) -> None:
        self.exports.append(status)


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root: Path = write_digits_imagefolder(tmp_path_factory.mktemp("digits"), DIGITS, 12, 32)
    return root


def _run(plan: Any, tmp: Path) -> tuple[dict[str, Any], Recorder]:
    recorder = Recorder()
    card = main.run(
        plan,
        device="cpu",
        reporters=[recorder],
        settings=TrainerSettings(cache_dir=tmp / "cache"),
        report_image=False,
    )
    return card, recorder


def test_exporting_step_writes_the_bundle_with_its_checksums(digits: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    plan = classification_plan(digits, f"file://{out}/", DIGITS, epochs=1)
    plan.spec.export.formats.append(ExportFormat.TORCHSCRIPT)
    card, recorder = _run(plan, tmp_path)

    (status,) = recorder.exports
    assert status.uri == f"file://{out}/export/"
    formats = [a.format for a in status.artifacts]
    assert formats == [
        "onnx",
        "torchscript",
        "preprocessing",
        "postprocessing",
        "triton-config",
        "triton-onnx",
        "modelcard",
    ]
    triton = out / "export/triton/digits-test"
    assert (triton / "1/model.onnx").read_bytes() == (out / "export/model.onnx").read_bytes()
    assert 'name: "digits-test"' in (triton / "config.pbtxt").read_text()
    for artifact in status.artifacts:
        data = Path(artifact.uri.removeprefix("file://")).read_bytes()
        assert len(data) == artifact.bytes > 0
        assert hashlib.sha256(data).hexdigest() == artifact.sha256
    # The card lists the bundle's files (all but itself), relative to the output.
    listed = [(f["path"], f["sha256"]) for f in card["export"]["files"]]
    assert listed == [
        (a.uri.removeprefix(f"file://{out}/"), a.sha256) for a in status.artifacts[:-1]
    ]
    assert listed[0][0] == "export/model.onnx"
    assert json.loads((out / "model.json").read_text())["export"] == card["export"]

    pre = Preprocessing.model_validate_json((out / "export/preprocessing.json").read_text())
    assert (pre.width, pre.height, pre.resizer.value) == (32, 32, "squash")
    assert pre.mean == [0.485, 0.456, 0.406] and pre.std == [0.229, 0.224, 0.225]
    post = Postprocessing.model_validate_json((out / "export/postprocessing.json").read_text())
    assert post.concepts == plan.concepts == ["one", "zero"]
    assert (post.activation, post.outputs, post.thresholds) == ("softmax", ["logits"], None)

    # The graphs are the best checkpoint's model: same logits as best.pt loaded eagerly.
    best = torch.load(out / "checkpoints/best.pt", weights_only=True)
    model = models.build("resnet18", plan.task, 2, plan.spec.image_resizer)
    model.load_state_dict(best["model"])
    model.eval()
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        eager = model(x).numpy()
        script = torch.jit.load(out / "export/model.torchscript.pt")(x).numpy()  # type: ignore[no-untyped-call]
    assert np.abs(script - eager).max() <= 1e-4
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(str(out / "export/model.onnx"))
    assert np.abs(session.run(None, {"images": x.numpy()})[0] - eager).max() <= 1e-4
    assert recorder.steps[-1][:2] == (StepName.EXPORTING, StepState.SUCCEEDED)


def test_postprocessing_thresholds_default_without_an_evaluation(digits: Path) -> None:
    plan = classification_plan(digits, "file:///nowhere/", DIGITS)
    tagging = plan.model_copy(update={"task": Task.TAGGING})
    model = torch.nn.Linear(1, 1)
    post = bundle.postprocessing(tagging, model, None)
    assert post.activation == "sigmoid"
    assert post.thresholds == [0.5, 0.5] and post.threshold_source == ["default", "default"]


def test_a_failed_export_fails_the_run_and_keeps_the_checkpoint(
    digits: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    plan = classification_plan(digits, f"file://{out}/", DIGITS, epochs=1)

    def refuse(*args: object, **kwargs: object) -> None:
        raise RuntimeError("Exporting the operator 'aten::frobnicate' is not supported")

    # The exporter itself fails (as it does on an operator it does not know).
    monkeypatch.setattr(torch.onnx, "export", refuse)
    with pytest.raises(errors.ExportError) as caught:
        _run(plan, tmp_path)
    ending, message = outcome.classify(caught.value)
    assert ending is Outcome.EXPORT_FAILED
    assert message.startswith("cannot export resnet18 to onnx: RuntimeError: Exporting the")
    assert (out / "checkpoints/best.pt").is_file()
    assert (out / "evaluation.json").is_file()
    assert not (out / "export/model.onnx").exists()
    assert not (out / "model.json").exists()


def test_the_export_leaves_the_trainers_model_alone() -> None:
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 3), torch.nn.Flatten()).train()
    model = model.to(torch.float64)
    copy = graphs.serving_copy(model)
    assert not copy.training and next(copy.parameters()).dtype == torch.float32
    assert graphs.onnx_bytes(copy, Task.CLASSIFICATION, ImageResizer(width=16, height=16))
    assert model.training and next(model.parameters()).dtype == torch.float64


def test_the_trainer_imports_without_onnx() -> None:
    """onnx is imported by the Exporting step alone: a process that imports the trainer for
    its loaders or engine (benchmarks/gpu.py on a GPU machine's image) needs none."""
    code = (
        "import sys; sys.modules['onnx'] = None\n"
        "import kubevision_trainer.main, kubevision_trainer.outcome, kubevision_trainer.local\n"
        "assert 'kubevision_trainer.export.graphs' not in sys.modules\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
