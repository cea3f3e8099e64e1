"""The exported graphs (issue 14): for every architecture of the table, a freshly initialised
model exported to ONNX and TorchScript gives eager PyTorch's outputs on the example's real
images (onnxruntime for ONNX): logits within 1e-4; detections with the same labels, boxes
within 1e-3 px and scores within 1e-4; and each image the same outputs in a batch of 1 or 3.

The weights are re-initialised with a fixed seed (normal(0, 1/sqrt(fan_in)), small random
biases): torchvision's own initialisation gives SSDLite equal scores everywhere and RetinaNet
and FCOS no box above their score threshold, which would leave nothing to compare."""

from __future__ import annotations

import io
import math
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnx
import pytest
import torch
from PIL import Image
from scipy.optimize import linear_sum_assignment
from torch import nn
from torchvision import tv_tensors

from kubevision_api.architectures import CLASSIFIERS, DETECTORS
from kubevision_api.export import DETECTION_OUTPUTS, INPUT_NAME, LOGITS_NAME
from kubevision_api.modelversion import ImageResizer
from kubevision_api.view import Task
from kubevision_trainer import models, presets, transforms
from kubevision_trainer.export import errors, graphs

ort = pytest.importorskip("onnxruntime")

ROOT = Path(__file__).resolve().parents[2]
CLASSIFIER_SIZE = ImageResizer(width=64, height=64)
DETECTOR_SIZE = ImageResizer(width=128, height=128)
CONCEPTS = 3
DETECTOR_GAIN, CLASSIFIER_GAIN = 0.7, 1.0
#: calibrate's BatchNorm variance floor: 0.5, but the networks with squeeze-and-excitation
#: then give every image nearly the same logits (within 2e-5 to 8e-4): 0.1 for them.
VARIANCE_FLOOR = {"efficientnet_b0": 0.1, "mobilenet_v3_small": 0.1, "mobilenet_v3_large": 0.1}

Array = npt.NDArray[np.float32]


def reinitialise(model: nn.Module, gain: float, seed: int = 0) -> nn.Module:
    """Every convolution and linear layer: weights normal(0, gain/sqrt(fan_in)), biases
    normal(0, 0.1); every BatchNorm: scale U(0.5, 1.5), shift and running mean normal(0, 0.1),
    running variance U(0.5, 1.5); all from one seeded generator (distinct, reproducible
    outputs). For detectors a gain of 0.7 keeps ResNet-50's activations small enough that
    float32 rounding moves no box by 1e-3 px (at gain 1, up to 1.9e-3 px); for classifiers it
    would fade EfficientNet's features until every image gets the same logits."""
    generator = torch.Generator().manual_seed(seed)

    def normal(like: torch.Tensor, std: float) -> torch.Tensor:
        return std * torch.randn(like.shape, generator=generator)

    def uniform(like: torch.Tensor) -> torch.Tensor:
        return 0.5 + torch.rand(like.shape, generator=generator)

    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Conv2d | nn.Linear):
                module.weight.copy_(
                    normal(module.weight, gain / math.sqrt(module.weight[0].numel()))
                )
                if module.bias is not None:
                    module.bias.copy_(normal(module.bias, 0.1))
            elif isinstance(module, nn.BatchNorm2d):
                module.weight.copy_(uniform(module.weight))
                module.bias.copy_(normal(module.bias, 0.1))
                assert module.running_mean is not None and module.running_var is not None
                module.running_mean.copy_(normal(module.running_mean, 0.1))
                module.running_var.copy_(uniform(module.running_var))
    return model


def calibrate(model: nn.Module, resizer: ImageResizer, floor: float, seed: int = 0) -> nn.Module:
    """A classifier's BatchNorm statistics set to those of one seeded batch of noise (a
    forward pass in training mode, cumulative averages), each variance at least ``floor``,
    then the last linear layer scaled to logits of unit standard deviation on that noise.

    Random weights alone fade EfficientNet's and MobileNet's features until every image gets
    the same logits; normalising every layer keeps them apart. The floor stops a BatchNorm
    from magnifying a near-constant channel (and with it float32 rounding: without it,
    ResNet-50 and EfficientNet differ from onnxruntime by 1.7e-4 and 7.5e-4)."""
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None
    shape = (8, 3, resizer.height, resizer.width)
    noise = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
    head = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    with torch.no_grad():
        model.train()(noise)
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                assert module.running_var is not None
                module.running_var.clamp_(min=floor)
        spread = model.eval()(noise).std()
        head.weight.div_(spread)
        if head.bias is not None:
            head.bias.div_(spread)
    return model


@pytest.fixture(scope="module")
def canvases(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Three 128x128 RGB canvases of the detection example (``prepare.py --limit``)."""
    out = tmp_path_factory.mktemp("examples")
    done = subprocess.run(
        [
            *(sys.executable, str(ROOT / "examples" / "prepare.py"), "--out", str(out)),
            *("--limit", "4", "--only", "digits-detection"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    images = sorted((out / "digits-detection").rglob("*.png"))
    assert len(images) >= 3
    return images[:3]


def model_input(task: Task, resizer: ImageResizer, files: list[Path]) -> torch.Tensor:
    """The files as the trainer's evaluation feeds them: the eval preset's resizer (its
    detection tail sanitises target boxes, which these images have none of), then
    ``model_input``."""
    preset = transforms.resizer(resizer)
    images = [
        preset(
            tv_tensors.Image(
                torch.from_numpy(np.array(Image.open(f).convert("RGB"))).permute(2, 0, 1)
            )
        )
        for f in files
    ]
    if task is Task.DETECTION:
        return torch.stack(presets.model_input(task, images, torch.float32))
    batch: torch.Tensor = presets.model_input(task, torch.stack(images), torch.float32)
    return batch


@dataclass
class Exported:
    architecture: str
    task: Task
    model: nn.Module
    images: torch.Tensor
    onnx: bytes
    torchscript: bytes
    seconds: dict[str, float]

    def session(self) -> object:
        return ort.InferenceSession(self.onnx, providers=["CPUExecutionProvider"])


def export(architecture: str, task: Task, resizer: ImageResizer, files: list[Path]) -> Exported:
    torch.manual_seed(0)
    built = models.build(architecture, task, CONCEPTS, resizer)
    if task is Task.DETECTION:
        built = reinitialise(built, DETECTOR_GAIN)
    else:
        floor = VARIANCE_FLOOR.get(architecture, 0.5)
        built = calibrate(reinitialise(built, CLASSIFIER_GAIN), resizer, floor)
    model = graphs.serving_copy(built)
    seconds = {}
    started = time.monotonic()
    onnx_graph = graphs.onnx_bytes(model, task, resizer, architecture)
    seconds["onnx"] = time.monotonic() - started
    started = time.monotonic()
    script = graphs.torchscript_bytes(model, task, resizer, architecture)
    seconds["torchscript"] = time.monotonic() - started
    images = model_input(task, resizer, files)
    return Exported(architecture, task, model, images, onnx_graph, script, seconds)


@pytest.fixture(scope="module", params=CLASSIFIERS)
def classifier(request: pytest.FixtureRequest, canvases: list[Path]) -> Exported:
    return export(request.param, Task.CLASSIFICATION, CLASSIFIER_SIZE, canvases)


@pytest.fixture(scope="module", params=DETECTORS)
def detector(request: pytest.FixtureRequest, canvases: list[Path]) -> Iterator[Exported]:
    yield export(request.param, Task.DETECTION, DETECTOR_SIZE, canvases)


def test_classifier_graph_has_the_contract_names_and_a_dynamic_batch(classifier: Exported) -> None:
    graph = onnx.load_from_string(classifier.onnx).graph
    assert [i.name for i in graph.input] == [INPUT_NAME]
    assert [o.name for o in graph.output] == [LOGITS_NAME]
    dims = graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [3, 64, 64]
    assert graph.output[0].type.tensor_type.shape.dim[1].dim_value == CONCEPTS
    assert len(graph.value_info) == 0


def test_classifier_onnx_and_torchscript_match_eager(classifier: Exported) -> None:
    with torch.no_grad():
        eager = classifier.model(classifier.images).numpy()
        script = torch.jit.load(io.BytesIO(classifier.torchscript))(classifier.images).numpy()  # type: ignore[no-untyped-call]
    session = classifier.session()
    batch = session.run(None, {INPUT_NAME: classifier.images.numpy()})[0]  # type: ignore[attr-defined]
    single = np.concatenate(
        [
            session.run(None, {INPUT_NAME: classifier.images[i : i + 1].numpy()})[0]  # type: ignore[attr-defined]
            for i in range(3)
        ]
    )
    assert batch.shape == (3, CONCEPTS)
    # Distinct logits for each image: the comparison is not one of constants.
    assert np.ptp(eager, axis=0).min() > 1e-3
    diff = float(np.abs(batch - eager).max())
    print(f"{classifier.architecture}: onnx {diff:.2e}, export {classifier.seconds}")
    assert diff <= 1e-4
    assert np.abs(single - eager).max() <= 1e-4
    assert np.abs(script - eager).max() <= 1e-4


def _eager_detections(model: nn.Module, images: torch.Tensor) -> list[dict[str, Array]]:
    with torch.no_grad():
        found = model(list(images))
    return [{k: v.numpy() for k, v in f.items()} for f in found]


def _threshold(scores: Array, least: int = 10) -> float:
    """A score threshold between two eager scores at least 2e-4 apart, keeping at least
    ``least`` detections (all when there are fewer): the same detections pass it in both
    runs, whatever the order of near-equal scores."""
    ordered = np.sort(scores)[::-1]
    for k in range(min(least, len(ordered)), len(ordered)):
        if ordered[k - 1] - ordered[k] > 2e-4:
            return float(ordered[k - 1] + ordered[k]) / 2
    return 0.0


def _compare(
    outputs: list[Array], eager: list[dict[str, Array]], d: int, what: str
) -> tuple[float, float]:
    """Each image's eager detections above one score threshold (:func:`_threshold`) paired
    with the exported ones above it (same count; optimal assignment on the box difference,
    pairs of the same label and score within 1e-4 only): near-equal scores may come out in
    another order."""
    boxes, scores, labels, counts = outputs
    assert boxes.shape == (len(eager), d, 4) and scores.shape == (len(eager), d)
    assert labels.shape == (len(eager), d) and labels.dtype == np.int64
    worst_box = worst_score = 0.0
    for i, expected in enumerate(eager):
        n = int(counts[i])
        assert n == len(expected["scores"]), what
        # The padding is zeros.
        assert not boxes[i, n:].any() and not scores[i, n:].any() and not labels[i, n:].any()
        cut = _threshold(expected["scores"])
        mine = np.flatnonzero(scores[i, :n] >= cut)
        theirs = np.flatnonzero(expected["scores"] >= cut)
        assert len(mine) == len(theirs) > 0, what
        gap = np.abs(boxes[i, mine][:, None, :] - expected["boxes"][theirs][None]).max(axis=2)
        same = (labels[i, mine][:, None] == expected["labels"][theirs][None] - 1) & (
            np.abs(scores[i, mine][:, None] - expected["scores"][theirs][None]) <= 1e-4
        )
        rows, cols = linear_sum_assignment(np.where(same, gap, 1e6))
        assert same[rows, cols].all(), f"{what}: labels or scores differ"
        worst_box = max(worst_box, float(gap[rows, cols].max()))
        worst_score = max(
            worst_score,
            float(np.abs(scores[i, mine][rows] - expected["scores"][theirs][cols]).max()),
        )
    assert worst_box <= 1e-3, f"{what}: boxes {worst_box}"
    assert worst_score <= 1e-4, f"{what}: scores {worst_score}"
    return worst_box, worst_score


def test_detector_onnx_matches_eager_in_batches_of_1_and_3(
    detector: Exported, capfd: pytest.CaptureFixture[str]
) -> None:
    graph = onnx.load_from_string(detector.onnx).graph
    assert [i.name for i in graph.input] == [INPUT_NAME]
    assert [o.name for o in graph.output] == list(DETECTION_OUTPUTS)
    eager = _eager_detections(detector.model, detector.images)
    # Distinct detections above the score threshold in every image, not ties.
    assert all(len(e["scores"]) > 1 and np.ptp(e["scores"]) > 1e-3 for e in eager)
    d = graphs.detections_per_image(detector.model)
    session = detector.session()
    batch = session.run(None, {INPUT_NAME: detector.images.numpy()})  # type: ignore[attr-defined]
    box, score = _compare(batch, eager, d, "batch of 3")
    singles = [
        session.run(None, {INPUT_NAME: detector.images[i : i + 1].numpy()})  # type: ignore[attr-defined]
        for i in range(3)
    ]
    _compare([np.concatenate(parts) for parts in zip(*singles, strict=True)], eager, d, "batch 1")
    # No shape recorded at the export's batch is left for onnxruntime to warn about.
    assert "VerifyOutputSizes" not in capfd.readouterr().err
    print(f"{detector.architecture}: boxes {box:.2e} px, scores {score:.2e}, {detector.seconds}")


def test_detector_torchscript_matches_eager(detector: Exported) -> None:
    eager = _eager_detections(detector.model, detector.images)
    script = torch.jit.load(io.BytesIO(detector.torchscript))  # type: ignore[no-untyped-call]
    with torch.no_grad():
        outputs = [t.numpy() for t in script(detector.images)]
    _compare(outputs, eager, graphs.detections_per_image(detector.model), "torchscript")


def test_a_failed_export_names_the_format_and_the_architecture() -> None:
    class Unexportable(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            # An SVD has no ONNX operator at opset 17.
            left: torch.Tensor = torch.linalg.svd(x[:, 0, :2, :2])[0]
            return left.flatten(1)

    with pytest.raises(errors.ExportError, match=r"cannot export tinynet to onnx: .*svd"):
        graphs.onnx_bytes(Unexportable(), Task.CLASSIFICATION, CLASSIFIER_SIZE, "tinynet")


def test_a_model_built_in_float64_exports_a_float32_graph() -> None:
    """A run may build its model under ``torch.set_default_dtype(torch.float64)`` (the
    distributed tests do): the serving copy and the export's example input are float32 all the
    same, and the graph takes float32 images."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        model = models.build("resnet18", Task.CLASSIFICATION, 3, CLASSIFIER_SIZE)
        graph = graphs.onnx_bytes(graphs.serving_copy(model), Task.CLASSIFICATION, CLASSIFIER_SIZE)
    finally:
        torch.set_default_dtype(previous)
    (image,) = onnx.load_from_string(graph).graph.input
    assert image.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
