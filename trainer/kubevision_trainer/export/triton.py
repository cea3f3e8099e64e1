"""Triton's model configuration (``config.pbtxt``) of an exported ONNX graph (issue 14;
docs/serving.md).

The configuration is read off the graph itself, so it cannot drift from it: each input and
output with its name, element type and shape. Triton's conventions (its
docs/user_guide/model_configuration.md): with ``max_batch_size > 0`` the batch axis is implicit
and left out of ``dims``; a dimension of unknown size is ``-1``; a tensor that is batch-only,
such as a detector's ``num_detections`` ``(N,)``, is written ``dims: [ 1 ]`` with
``reshape: { shape: [ ] }``, because ``dims`` may not be empty. Element types follow the
"Datatypes" table there (ONNX Runtime column).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

import onnx

#: The ONNX Runtime backend's platform name.
PLATFORM: Final = "onnxruntime_onnx"
#: The largest batch Triton's dynamic batcher forms; the exported graphs take any batch. 32 is
#: the batch benchmarks/export.py measures.
DEFAULT_MAX_BATCH_SIZE: Final = 32

#: ONNX element type -> Triton data type (model_configuration.md, "Datatypes").
_DATA_TYPES: Final[dict[int, str]] = {
    onnx.TensorProto.BOOL: "TYPE_BOOL",
    onnx.TensorProto.UINT8: "TYPE_UINT8",
    onnx.TensorProto.UINT16: "TYPE_UINT16",
    onnx.TensorProto.UINT32: "TYPE_UINT32",
    onnx.TensorProto.UINT64: "TYPE_UINT64",
    onnx.TensorProto.INT8: "TYPE_INT8",
    onnx.TensorProto.INT16: "TYPE_INT16",
    onnx.TensorProto.INT32: "TYPE_INT32",
    onnx.TensorProto.INT64: "TYPE_INT64",
    onnx.TensorProto.FLOAT16: "TYPE_FP16",
    onnx.TensorProto.FLOAT: "TYPE_FP32",
    onnx.TensorProto.DOUBLE: "TYPE_FP64",
    onnx.TensorProto.STRING: "TYPE_STRING",
}


@dataclass(frozen=True)
class TensorSpec:
    """One input or output as Triton sees it: ``dims`` without the batch axis when batching,
    ``reshape_to_scalar`` for a batch-only tensor (``dims [1]``, model shape ``[]``)."""

    name: str
    data_type: str
    dims: tuple[int, ...]
    reshape_to_scalar: bool = False


def graph_tensors(
    onnx_model: bytes, max_batch_size: int = DEFAULT_MAX_BATCH_SIZE
) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """The graph's inputs and outputs, in graph order, as Triton's ``input`` and ``output``:
    the shapes the graph declares, sharpened by ONNX's shape inference
    (``onnx.shape_inference.infer_shapes``), an axis of unknown size ``-1``.

    Raises ``ValueError`` for a graph that cannot be configured: a tensor that is not a
    tensor, has no shape or an element type Triton lacks, or (``max_batch_size > 0``) one whose
    first axis is missing or fixed, since Triton would then batch a graph that does not batch.
    """
    if max_batch_size < 0:
        raise ValueError(f"max_batch_size must be >= 0, got {max_batch_size}")
    model = onnx.load_model_from_string(onnx_model)
    # The exporter declares an output's axes symbolic when a Reshape or Slice makes it (a
    # detector's D and 4); ONNX's shape inference works out the constant ones.
    graph = onnx.shape_inference.infer_shapes(model).graph
    # Old IRs list the weights among the inputs too; they are not the caller's to feed.
    weights = {initializer.name for initializer in graph.initializer}
    inputs = [v for v in graph.input if v.name not in weights]
    return (
        _specs(inputs, max_batch_size),
        _specs(graph.output, max_batch_size),
    )


def _specs(values: Iterable[onnx.ValueInfoProto], max_batch_size: int) -> list[TensorSpec]:
    return [_spec(value, max_batch_size) for value in values]


def _spec(value: onnx.ValueInfoProto, max_batch_size: int) -> TensorSpec:
    name = value.name
    if not _plain(name):
        raise ValueError(f"tensor name {name!r}: Triton's configuration cannot quote it")
    if not value.type.HasField("tensor_type"):
        raise ValueError(f"{name}: not a tensor ({value.type.WhichOneof('value')})")
    tensor = value.type.tensor_type
    data_type = _DATA_TYPES.get(tensor.elem_type)
    if data_type is None:
        element = onnx.TensorProto.DataType.Name(tensor.elem_type)
        raise ValueError(f"{name}: element type {element} has no Triton data type")
    if not tensor.HasField("shape"):
        raise ValueError(f"{name}: the graph declares no shape")
    # dim_value 0 is ONNX's "not set" (a symbolic dim_param, or nothing): unknown, -1.
    dims = tuple(d.dim_value if d.dim_value > 0 else -1 for d in tensor.shape.dim)
    if max_batch_size > 0:
        if not dims:
            raise ValueError(f"{name}: a scalar has no batch axis; use max_batch_size=0")
        if dims[0] != -1:
            raise ValueError(
                f"{name}: the first axis is fixed at {dims[0]}, so the graph does not batch; "
                "export it with a dynamic batch axis or use max_batch_size=0"
            )
        dims = dims[1:]
    if not dims:
        return TensorSpec(name, data_type, (1,), reshape_to_scalar=True)
    return TensorSpec(name, data_type, dims)


def config_pbtxt(
    model_name: str,
    onnx_model: bytes,
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
    max_queue_delay_us: int = 0,
    instances: int = 1,
) -> str:
    """Triton's ``config.pbtxt`` (protobuf text of ``inference.ModelConfig``) for the ONNX
    graph ``onnx_model`` (the file's bytes) served as ``model_name`` (the model repository's
    folder name, which Triton requires the ``name`` to equal).

    ``max_batch_size`` > 0 turns on Triton's dynamic batcher, which waits at most
    ``max_queue_delay_us`` microseconds for a fuller batch (0, Triton's default: it batches
    what is queued when an instance frees up); 0 serves the graph unbatched, with its shapes
    as they are. ``instances`` copies run, on the GPU where there is one (``KIND_AUTO``).
    Raises ``ValueError`` as :func:`graph_tensors` does, or for a name Triton cannot take.
    """
    if not _plain(model_name) or "/" in model_name:
        raise ValueError(f"not a model repository folder name: {model_name!r}")
    if max_queue_delay_us < 0 or instances < 1:
        raise ValueError(f"max_queue_delay_us {max_queue_delay_us}, instances {instances}")
    inputs, outputs = graph_tensors(onnx_model, max_batch_size)
    lines = [
        f'name: "{model_name}"',
        f'platform: "{PLATFORM}"',
        f"max_batch_size: {max_batch_size}",
        *_block("input", inputs),
        *_block("output", outputs),
    ]
    if max_batch_size > 0:
        lines += [
            "dynamic_batching {",
            f"  max_queue_delay_microseconds: {max_queue_delay_us}",
            "}",
        ]
    lines += [
        "instance_group [",
        "  {",
        f"    count: {instances}",
        "    kind: KIND_AUTO",
        "  }",
        "]",
    ]
    return "\n".join(lines) + "\n"


def _plain(name: str) -> bool:
    """A name that needs no escaping in protobuf text: no quote, backslash or control."""
    return bool(name) and name.isprintable() and '"' not in name and "\\" not in name


def _block(field: str, tensors: list[TensorSpec]) -> list[str]:
    lines = [f"{field} ["]
    for index, tensor in enumerate(tensors):
        dims = ", ".join(str(d) for d in tensor.dims)
        lines += [
            "  {",
            f'    name: "{tensor.name}"',
            f"    data_type: {tensor.data_type}",
            f"    dims: [ {dims} ]",
        ]
        if tensor.reshape_to_scalar:
            lines.append("    reshape: { shape: [ ] }")
        lines.append("  }," if index < len(tensors) - 1 else "  }")
    lines.append("]")
    return lines
