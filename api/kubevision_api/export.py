"""``spec.export`` and ``status.export`` of a ModelVersion, and the bundle's names (issue 14;
docs/serving.md). The files' schemas are in :mod:`kubevision_api.bundle`."""

from __future__ import annotations

from enum import StrEnum
from typing import Final

from pydantic import Field

from kubevision_api.meta import ApiModel

#: The bundle's folder under the output URI.
EXPORT_FOLDER: Final = "export"
ONNX_FILE: Final = "model.onnx"
TORCHSCRIPT_FILE: Final = "model.torchscript.pt"
PREPROCESSING_JSON: Final = "preprocessing.json"
POSTPROCESSING_JSON: Final = "postprocessing.json"
TRITON_FOLDER: Final = "triton"
TRITON_CONFIG: Final = "config.pbtxt"

#: Tensor names of the exported graphs (module docstring).
INPUT_NAME: Final = "images"
LOGITS_NAME: Final = "logits"
DETECTION_OUTPUTS: Final = ("boxes", "scores", "labels", "num_detections")

#: The ONNX opset the graphs are written in: 17 is the newest that torch's TorchScript-based
#: exporter (the one torchvision's detectors pass, its test_onnx.py) and onnxruntime >= 1.14
#: both support for every operator used.
ONNX_OPSET: Final = 17


class ExportFormat(StrEnum):
    """A format of the exported model."""

    ONNX = "onnx"
    TORCHSCRIPT = "torchscript"


class ExportSpec(ApiModel):
    """``spec.export``: what the Exporting step writes besides the model card."""

    formats: list[ExportFormat] = Field(
        default_factory=lambda: [ExportFormat.ONNX],
        max_length=2,
        description=(
            "Formats of export/ from the best checkpoint: onnx (default; dynamic batch, "
            "detectors with their post-processing in the graph) and torchscript. An empty "
            "list writes only the model card."
        ),
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )
    triton: bool = Field(
        default=True,
        description="With onnx: also write a Triton model repository under export/triton/.",
    )


class ExportArtifact(ApiModel):
    """One file of the bundle in storage."""

    format: str = Field(
        description="onnx, torchscript, preprocessing, postprocessing, triton-config, "
        "triton-onnx, modelcard."
    )
    uri: str = Field(description="fsspec URI of the file.")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="SHA-256 of the file, in hex.")
    bytes: int = Field(ge=0, description="File size.")


class ExportStatus(ApiModel):
    """``status.export``: the bundle the Exporting step wrote."""

    uri: str = Field(description="The bundle's folder (<output>/export/).")
    artifacts: list[ExportArtifact] = Field(
        default_factory=list, max_length=16, description="Each file, with size and sha256."
    )
