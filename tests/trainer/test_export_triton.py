"""Triton's config.pbtxt for the exported graphs (issue 14): it parses with Triton's own
protobuf definition (tritonclient's ``model_config_pb2``), and its inputs and outputs are the
ONNX graph's, read back by onnxruntime: names, element types, and shapes once the batch axis
is added back. Each graph is run at a batch it was not exported at, and every output's shape
is the one the configuration promises."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from google.protobuf import text_format
from torch import nn
from tritonclient.grpc import model_config_pb2 as mc

from kubevision_api.export import DETECTION_OUTPUTS, INPUT_NAME, LOGITS_NAME, ONNX_OPSET
from kubevision_trainer.export.triton import DEFAULT_MAX_BATCH_SIZE, config_pbtxt

HEIGHT, WIDTH = 16, 24
CONCEPTS = 5
#: D, the padded detections per image.
DETECTIONS = 7
#: onnxruntime's element types -> Triton's (model_configuration.md, "Datatypes").
ORT_TYPES = {"tensor(float)": mc.TYPE_FP32, "tensor(int64)": mc.TYPE_INT64}


class TinyClassifier(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.head = nn.Linear(4, CONCEPTS)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.head(self.conv(images).mean(dim=(2, 3)))
        return logits


class TinyDetector(nn.Module):
    """The detector graph's outputs (kubevision_api.bundle): per image D padded rows of boxes
    (N, D, 4), scores (N, D), int64 labels (N, D), and num_detections (N,)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, DETECTIONS * 6, 3, padding=1)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        rows = self.conv(images).mean(dim=(2, 3)).reshape(-1, DETECTIONS, 6)
        boxes = rows[:, :, :4].abs() * WIDTH
        scores = rows[:, :, 4].sigmoid()
        labels = (rows[:, :, 5].abs() * CONCEPTS).long().clamp(max=CONCEPTS - 1)
        num_detections = (scores > 0.5).sum(dim=1)
        return boxes, scores, labels, num_detections


def _onnx(
    module: nn.Module, outputs: tuple[str, ...], batch: int = 2, dynamic: bool = True
) -> bytes:
    """The module's ONNX graph as the trainer exports one (TorchScript-based exporter, opset
    17), its batch axis dynamic or fixed at ``batch``."""
    axes = {name: {0: "batch"} for name in (INPUT_NAME, *outputs)} if dynamic else None
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.onnx"
        torch.onnx.export(
            module.eval(),
            (torch.rand(batch, 3, HEIGHT, WIDTH),),
            path,
            dynamo=False,
            opset_version=ONNX_OPSET,
            input_names=[INPUT_NAME],
            output_names=list(outputs),
            dynamic_axes=axes,
        )
        return path.read_bytes()


@pytest.fixture(scope="module")
def classifier() -> bytes:
    torch.manual_seed(0)
    return _onnx(TinyClassifier(), (LOGITS_NAME,))


@pytest.fixture(scope="module")
def detector() -> bytes:
    torch.manual_seed(0)
    return _onnx(TinyDetector(), DETECTION_OUTPUTS)


def _parse(text: str) -> Any:
    config = mc.ModelConfig()
    text_format.Parse(text, config)
    return config


def _served_shape(tensor: Any, batch: int, max_batch_size: int) -> list[int]:
    """The shape of a tensor as the graph takes or makes it, for a request of ``batch``
    (unbatched, the graph's own dynamic first axis)."""
    dims = list(tensor.reshape.shape) if tensor.HasField("reshape") else list(tensor.dims)
    if max_batch_size > 0:
        return [batch, *dims]
    return [batch if index == 0 and size == -1 else size for index, size in enumerate(dims)]


def _assert_matches_graph(config: Any, graph: bytes, max_batch_size: int) -> None:
    """Inputs and outputs in the graph's order, with its names and types, and shapes that
    agree with onnxruntime's view of the graph; run at batch 3, each output has exactly the
    configured shape."""
    session = ort.InferenceSession(graph, providers=["CPUExecutionProvider"])
    for configured, declared in (
        (config.input, session.get_inputs()),
        (config.output, session.get_outputs()),
    ):
        assert [t.name for t in configured] == [d.name for d in declared]
        for tensor, value in zip(configured, declared, strict=True):
            assert tensor.data_type == ORT_TYPES[value.type], (tensor.name, value.type)
            # onnxruntime names a symbolic axis by a string; the configuration may know its
            # size from shape inference, and must agree with every size the graph declares.
            served = _served_shape(tensor, -1, max_batch_size)
            assert len(served) == len(value.shape), tensor.name
            for size, declared_size in zip(served, value.shape, strict=True):
                assert not isinstance(declared_size, int) or size == declared_size, tensor.name
    batch = 3
    (image,) = config.input
    feed = np.random.default_rng(0).random(_served_shape(image, batch, max_batch_size))
    produced = session.run(None, {image.name: feed.astype(np.float32)})
    for tensor, array in zip(config.output, produced, strict=True):
        served = _served_shape(tensor, batch, max_batch_size)
        # -1: a size the graph leaves open.
        assert len(array.shape) == len(served), tensor.name
        assert all(s in (-1, a) for s, a in zip(served, array.shape, strict=True)), tensor.name


def test_the_classifier_config(classifier: bytes) -> None:
    text = config_pbtxt("digits-v1", classifier)
    config = _parse(text)
    assert config.name == "digits-v1"
    assert config.platform == "onnxruntime_onnx"
    assert config.max_batch_size == DEFAULT_MAX_BATCH_SIZE == 32
    assert [(t.name, t.data_type, list(t.dims)) for t in config.input] == [
        ("images", mc.TYPE_FP32, [3, HEIGHT, WIDTH])
    ]
    assert [(t.name, t.data_type, list(t.dims)) for t in config.output] == [
        ("logits", mc.TYPE_FP32, [CONCEPTS])
    ]
    assert config.HasField("dynamic_batching")
    assert config.dynamic_batching.max_queue_delay_microseconds == 0
    assert [(g.count, g.kind) for g in config.instance_group] == [
        (1, mc.ModelInstanceGroup.KIND_AUTO)
    ]
    _assert_matches_graph(config, classifier, DEFAULT_MAX_BATCH_SIZE)


def test_the_detector_config(detector: bytes) -> None:
    config = _parse(config_pbtxt("coco-v1", detector, max_batch_size=8, max_queue_delay_us=500))
    assert config.max_batch_size == 8
    assert config.dynamic_batching.max_queue_delay_microseconds == 500
    outputs = [(t.name, t.data_type, list(t.dims)) for t in config.output]
    assert outputs == [
        ("boxes", mc.TYPE_FP32, [DETECTIONS, 4]),
        ("scores", mc.TYPE_FP32, [DETECTIONS]),
        ("labels", mc.TYPE_INT64, [DETECTIONS]),
        # Batch-only: Triton wants non-empty dims, the graph makes (N,).
        ("num_detections", mc.TYPE_INT64, [1]),
    ]
    reshaped = {t.name: list(t.reshape.shape) for t in config.output if t.HasField("reshape")}
    assert reshaped == {"num_detections": []}
    _assert_matches_graph(config, detector, 8)


def test_unbatched_keeps_the_graphs_shapes(detector: bytes) -> None:
    config = _parse(config_pbtxt("coco-v1", detector, max_batch_size=0, instances=2))
    assert config.max_batch_size == 0 and not config.HasField("dynamic_batching")
    assert [list(t.dims) for t in config.input] == [[-1, 3, HEIGHT, WIDTH]]
    assert [list(t.dims) for t in config.output] == [
        [-1, DETECTIONS, 4],
        [-1, DETECTIONS],
        [-1, DETECTIONS],
        [-1],
    ]
    assert [g.count for g in config.instance_group] == [2]
    _assert_matches_graph(config, detector, 0)


def test_a_graph_with_a_fixed_batch_is_refused(classifier: bytes) -> None:
    fixed = _onnx(TinyClassifier(), (LOGITS_NAME,), batch=1, dynamic=False)
    with pytest.raises(ValueError, match="images: the first axis is fixed at 1"):
        config_pbtxt("digits-v1", fixed)
    # Served unbatched, the same graph is fine: its shapes as they are.
    config = _parse(config_pbtxt("digits-v1", fixed, max_batch_size=0))
    assert [list(t.dims) for t in config.input] == [[1, 3, HEIGHT, WIDTH]]
    assert [list(t.dims) for t in config.output] == [[1, CONCEPTS]]


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda g: config_pbtxt("a/b", g), "not a model repository folder name"),
        (lambda g: config_pbtxt('a"b', g), "not a model repository folder name"),
        (lambda g: config_pbtxt("m", g, max_batch_size=-1), "max_batch_size must be >= 0"),
        (lambda g: config_pbtxt("m", g, instances=0), "instances 0"),
    ],
)
def test_bad_arguments_are_refused(
    classifier: bytes, call: Callable[[bytes], str], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        call(classifier)


def test_a_type_triton_lacks_is_refused() -> None:
    # bfloat16 has no ONNX Runtime entry in Triton's Datatypes table.
    value = onnx.helper.make_tensor_value_info(INPUT_NAME, onnx.TensorProto.BFLOAT16, ["n", 4])
    out = onnx.helper.make_tensor_value_info(LOGITS_NAME, onnx.TensorProto.BFLOAT16, ["n", 4])
    node = onnx.helper.make_node("Identity", [INPUT_NAME], [LOGITS_NAME])
    graph = onnx.helper.make_graph([node], "g", [value], [out])
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])
    with pytest.raises(ValueError, match="images: element type BFLOAT16 has no Triton data type"):
        config_pbtxt("m", model.SerializeToString())


def test_the_exported_detectors_config_names_d_and_the_box_width() -> None:
    """The Exporting step's own detector graph (a traced one-image detector in a scripted
    loop): its output shapes carry D (``detections_per_img``) and 4, so the configuration
    does too, and a batch of 3 comes back in exactly those shapes."""
    from kubevision_api.modelversion import ImageResizer
    from kubevision_api.view import Task
    from kubevision_trainer import models
    from kubevision_trainer.export import graphs

    torch.manual_seed(0)
    resizer = ImageResizer(width=WIDTH * 4, height=HEIGHT * 4)
    detector = models.build("fasterrcnn_mobilenet_v3_large_320_fpn", Task.DETECTION, 3, resizer)
    graph = graphs.onnx_bytes(graphs.serving_copy(detector), Task.DETECTION, resizer)
    d = graphs.detections_per_image(detector)
    config = _parse(config_pbtxt("digits-on-canvas", graph, max_batch_size=4))
    assert [list(t.dims) for t in config.input] == [[3, HEIGHT * 4, WIDTH * 4]]
    assert [(t.name, list(t.dims)) for t in config.output] == [
        ("boxes", [d, 4]),
        ("scores", [d]),
        ("labels", [d]),
        ("num_detections", [1]),
    ]
    _assert_matches_graph(config, graph, 4)
