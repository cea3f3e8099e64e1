"""The exported graphs of a model (issue 14; docs/serving.md): ONNX and TorchScript with a
dynamic batch size and the tensor names and shapes of :mod:`kubevision_api.bundle`.

- classifiers (classification and tagging): ``images`` ``(N, 3, H, W)`` float32, already
  normalised (``presets.model_input``) -> ``logits`` ``(N, C)``.
- detectors: ``images`` ``(N, 3, H, W)`` float32 in [0, 1] at the resizer's size (torchvision's
  ``GeneralizedRCNNTransform`` normalises inside) -> ``boxes`` ``(N, D, 4)``, ``scores``
  ``(N, D)``, ``labels`` ``(N, D)`` int64 (concept index = torchvision's label - 1),
  ``num_detections`` ``(N,)`` int64; the detector's own score threshold, NMS and top-k run
  inside the graph, and each image's rows are padded with zeros to D = its
  ``detections_per_img``.

A torchvision detector takes a list of images and returns a list of dicts of data-dependent
length, which neither tracer turns into a batched graph. The detector is traced on one image
(:class:`_OneImage`: padded outputs, as torchvision's ONNX tests trace it), then a scripted
loop (:class:`_Batched`) calls the trace once per image and concatenates: ONNX gets a ``Loop``
over the batch, and each image gives the same outputs whatever the batch (the eager detector
too processes images independently after its resize). Both formats save the same module.
"""

from __future__ import annotations

import copy
import io
import warnings
from pathlib import Path
from typing import Any

import onnx
import torch
from torch import nn
from torch.nn import functional

from kubevision_api.export import (
    DETECTION_OUTPUTS,
    INPUT_NAME,
    LOGITS_NAME,
    ONNX_OPSET,
    ExportFormat,
)
from kubevision_api.modelversion import ImageResizer
from kubevision_api.view import Task
from kubevision_trainer.export.errors import ExportError


def detections_per_image(model: nn.Module) -> int:
    """D, the most detections a torchvision detector keeps per image:
    ``roi_heads.detections_per_img`` for the R-CNNs, ``detections_per_img`` for RetinaNet,
    FCOS and SSD.

    Raises:
        ValueError: ``model`` is not a torchvision detector.
    """
    for owner in (getattr(model, "roi_heads", None), model):
        value = getattr(owner, "detections_per_img", None)
        if isinstance(value, int):
            return value
    raise ValueError(f"{type(model).__name__} is not a torchvision detector")


def serving_copy(model: nn.Module) -> nn.Module:
    """A CPU float32 copy of ``model`` in eval mode (the trainer's model is left alone, on its
    device and in its mode). Its tensors are copied straight to the CPU: a copy on the
    training device first would need as much accelerator memory again."""
    memo: dict[int, Any] = {}
    for parameter in model.parameters():
        memo[id(parameter)] = nn.Parameter(
            parameter.detach().to("cpu", copy=True).contiguous(), requires_grad=False
        )
    for buffer in model.buffers():
        memo[id(buffer)] = buffer.detach().to("cpu", copy=True).contiguous()
    clone = copy.deepcopy(model, memo)
    return clone.float().eval()


class _OneImage(nn.Module):
    """One image ``(1, 3, H, W)`` through a torchvision detector, its outputs padded to
    ``d`` rows and batch-first (the shapes of :mod:`kubevision_api.bundle`)."""

    def __init__(self, detector: nn.Module, d: int) -> None:
        super().__init__()
        self.detector = detector
        self.d = d

    def forward(
        self, image: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        found = self.detector([image[0]])[0]
        boxes, scores = found["boxes"][: self.d], found["scores"][: self.d]
        labels = found["labels"][: self.d] - 1  # torchvision's 0 is the background
        missing = self.d - scores.shape[0]
        count = torch.ones_like(labels).sum().reshape(1)
        return (
            functional.pad(boxes, (0, 0, 0, missing)).unsqueeze(0),
            functional.pad(scores, (0, missing)).unsqueeze(0),
            functional.pad(labels, (0, missing)).unsqueeze(0),
            count,
        )


class _Batched(nn.Module):
    """Runs the traced :class:`_OneImage` on each image of a batch and concatenates."""

    def __init__(self, one: torch.jit.ScriptModule, d: int) -> None:
        super().__init__()
        self.one = one
        self.d = d

    def forward(
        self, images: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        boxes = torch.zeros((0, self.d, 4), dtype=images.dtype)
        scores = torch.zeros((0, self.d), dtype=images.dtype)
        labels = torch.zeros((0, self.d), dtype=torch.int64)
        counts = torch.zeros((0,), dtype=torch.int64)
        for i in range(images.shape[0]):
            b, s, c, n = self.one(images[i : i + 1])
            boxes = torch.cat([boxes, b])
            scores = torch.cat([scores, s])
            labels = torch.cat([labels, c])
            counts = torch.cat([counts, n])
        return boxes, scores, labels, counts


def _example(task: Task, resizer: ImageResizer, batch: int) -> torch.Tensor:
    # Values in [0, 1]: a detector's trace must find some boxes in it no more than any
    # other input, and a classifier's graph does not depend on them.
    # float32 whatever torch's default dtype (a run may build its model in float64): the
    # graph's input is float32 (kubevision_api.bundle) and the serving copy is.
    generator = torch.Generator().manual_seed(0)
    return torch.rand(
        (batch, 3, resizer.height, resizer.width), generator=generator, dtype=torch.float32
    )


def _detector_module(model: nn.Module, resizer: ImageResizer) -> torch.jit.ScriptModule:
    d = detections_per_image(model)
    with warnings.catch_warnings():
        # The tracer warns about every data-dependent size it records as a constant; the
        # padded outputs make the ones that matter dynamic (tested against eager).
        warnings.simplefilter("ignore")
        one = torch.jit.trace(  # type: ignore[no-untyped-call]
            _OneImage(model, d), _example(Task.DETECTION, resizer, 1), check_trace=False
        )
        scripted: torch.jit.ScriptModule = torch.jit.script(_Batched(one, d))
    return scripted


def _outputs(task: Task) -> list[str]:
    return list(DETECTION_OUTPUTS) if task is Task.DETECTION else [LOGITS_NAME]


def _drop_value_info(graph: onnx.GraphProto, *, subgraph: bool = False) -> None:
    """Remove the intermediate shapes the exporter recorded at the example's batch size (in
    a Loop's body, those of its first iteration, also on the body's inputs and outputs):
    onnxruntime checks them and warns when a batch of another size disagrees. It infers what
    it needs itself; the main graph's inputs and outputs keep theirs (dynamic batch)."""
    del graph.value_info[:]
    if subgraph:
        for value in [*graph.input, *graph.output]:
            tensor = value.type.tensor_type
            # Scalars (a Loop's iteration number and condition) keep theirs: the Loop needs it.
            if value.type.HasField("tensor_type") and len(tensor.shape.dim) > 0:
                tensor.ClearField("shape")
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                _drop_value_info(attribute.g, subgraph=True)
            for sub in attribute.graphs:
                _drop_value_info(sub, subgraph=True)


def _declare_detection_shapes(graph: onnx.GraphProto, d: int) -> None:
    """Write D and the box width into the detector graph's output shapes: the exporter
    leaves every size of a Loop's outputs unknown, and a reader of the graph (Triton's
    config.pbtxt, ``export.triton``) should see ``boxes`` as ``(batch, D, 4)``."""
    sizes = {"boxes": [d, 4], "scores": [d], "labels": [d], "num_detections": []}
    for output in graph.output:
        shape = output.type.tensor_type.shape
        shape.ClearField("dim")
        shape.dim.add().dim_param = "batch"
        for size in sizes[output.name]:
            shape.dim.add().dim_value = size


def onnx_bytes(
    model: nn.Module, task: Task, resizer: ImageResizer, architecture: str | None = None
) -> bytes:
    """``model`` (a CPU float32 module in eval mode, :func:`serving_copy`) as an ONNX graph
    (opset ``ONNX_OPSET``, TorchScript-based exporter: the one torchvision's detectors pass)
    with a dynamic batch axis on the input and every output.

    Raises:
        ExportError: the exporter or the checker failed.
    """
    outputs = _outputs(task)
    module: nn.Module = _detector_module(model, resizer) if task is Task.DETECTION else model
    buffer = io.BytesIO()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module,
                (_example(task, resizer, 2),),
                buffer,  # type: ignore[arg-type]  # a file object works as well as a path
                dynamo=False,
                opset_version=ONNX_OPSET,
                input_names=[INPUT_NAME],
                output_names=outputs,
                dynamic_axes={name: {0: "batch"} for name in [INPUT_NAME, *outputs]},
            )
        proto = onnx.load_from_string(buffer.getvalue())
        _drop_value_info(proto.graph)
        if task is Task.DETECTION:
            _declare_detection_shapes(proto.graph, detections_per_image(model))
        onnx.checker.check_model(proto)
    except Exception as exc:  # the exporters raise anything from RuntimeError to TypeError
        raise ExportError(
            ExportFormat.ONNX, architecture or type(model).__name__, f"{type(exc).__name__}: {exc}"
        ) from exc
    graph: bytes = proto.SerializeToString()
    return graph


def torchscript_bytes(
    model: nn.Module, task: Task, resizer: ImageResizer, architecture: str | None = None
) -> bytes:
    """``model`` (as :func:`onnx_bytes` takes it) as a TorchScript archive
    (``torch.jit.load``-able): classifiers traced (no control flow; any batch size),
    detectors as in ONNX (the traced one-image detector in a scripted loop).

    Raises:
        ExportError: tracing or scripting failed.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if task is Task.DETECTION:
                module = _detector_module(model, resizer)
            else:
                module = torch.jit.trace(  # type: ignore[no-untyped-call]
                    model, _example(task, resizer, 2), check_trace=False
                )
            buffer = io.BytesIO()
            # Deprecated for torch.export, which torchvision's detectors do not pass yet.
            torch.jit.save(module, buffer)
    except Exception as exc:  # as in onnx_bytes
        raise ExportError(
            ExportFormat.TORCHSCRIPT,
            architecture or type(model).__name__,
            f"{type(exc).__name__}: {exc}",
        ) from exc
    return buffer.getvalue()


def write_onnx(model: nn.Module, task: Task, resizer: ImageResizer, path: Path | str) -> Path:
    """Write :func:`onnx_bytes` of ``model`` to the local ``path``; returns it."""
    target = Path(path)
    target.write_bytes(onnx_bytes(model, task, resizer))
    return target


def write_torchscript(
    model: nn.Module, task: Task, resizer: ImageResizer, path: Path | str
) -> Path:
    """Write :func:`torchscript_bytes` of ``model`` to the local ``path``; returns it."""
    target = Path(path)
    target.write_bytes(torchscript_bytes(model, task, resizer))
    return target


def export_bytes(
    fmt: ExportFormat,
    model: nn.Module,
    task: Task,
    resizer: ImageResizer,
    architecture: str | None = None,
) -> bytes:
    """The graph of ``model`` in ``fmt`` (:func:`onnx_bytes`, :func:`torchscript_bytes`).

    Raises:
        ExportError: the format failed (names it and ``architecture``)."""
    writer: dict[ExportFormat, Any] = {
        ExportFormat.ONNX: onnx_bytes,
        ExportFormat.TORCHSCRIPT: torchscript_bytes,
    }
    data: bytes = writer[fmt](model, task, resizer, architecture)
    return data
