"""The serving bundle (issue 14; docs/serving.md): what the Exporting step writes under
``<output>/export/`` and what ``kubevision predict`` (or any server) reads back. Plain data, no
torch: the trainer writes these files, the operator shows ``status.export``, the CLI's
predictor applies them without the training code.

Layout under the output URI::

    export/
      model.onnx               # ONNX, dynamic batch (spec.export.formats: onnx)
      model.torchscript.pt     # TorchScript (formats: torchscript)
      preprocessing.json       # Preprocessing: how an image becomes the network's input
      postprocessing.json      # Postprocessing: how outputs become concepts (and boxes)
      triton/<model>/config.pbtxt, triton/<model>/1/model.onnx   # a Triton model repository

The graphs' tensors (both formats, and Triton's config) carry these names:

- input ``images``: ``(N, 3, height, width)`` float32, what :class:`Preprocessing` makes.
- classification and tagging: output ``logits`` ``(N, C)`` float32, C = len(concepts).
- detection (post-processing inside the graph: score threshold, NMS, top-k, as the eager
  torchvision detector): outputs, padded per image to ``Postprocessing.max_detections`` = D,
  ``boxes`` ``(N, D, 4)`` float32 x1, y1, x2, y2 in pixels of the network input; ``scores``
  ``(N, D)`` float32; ``labels`` ``(N, D)`` int64, the concept index (0-based, into
  ``concepts``); ``num_detections`` ``(N,)`` int64, how many of the D rows are real (the rest
  are zeros). The padded, batch-first form is TensorRT's EfficientNMS layout, the one Triton's
  dynamic batcher can split per request.
"""

from __future__ import annotations

from typing import Final, Literal

from pydantic import Field

from kubevision_api.export import INPUT_NAME
from kubevision_api.meta import ApiModel
from kubevision_api.modelversion import ResizeMode
from kubevision_api.view import Task

PREPROCESSING_SCHEMA: Final = "kubevision.dev/preprocessing/v1"
POSTPROCESSING_SCHEMA: Final = "kubevision.dev/postprocessing/v1"


class Preprocessing(ApiModel):
    """``export/preprocessing.json``: how an image file becomes one row of ``images``.

    In order: decode, turn upright by the EXIF orientation (``PIL.ImageOps.exif_transpose``, as
    training does) and convert to RGB; resize by
    ``resizer`` to ``height x width`` (``kubevision_api.geometry.resize_geometry`` gives the
    scaled size and the margins; bilinear with antialiasing, Pillow's ``Image.BILINEAR`` on
    a reduced image is what the trainer's cache does); pad value ``pad_value`` (letterbox);
    channels first; ``x * scale`` then, when ``mean`` is set, ``(x - mean) / std`` per channel.
    """

    schema_version: Literal["kubevision.dev/preprocessing/v1"] = PREPROCESSING_SCHEMA
    input_name: str = Field(default=INPUT_NAME, description="The graph's input tensor.")
    width: int = Field(ge=1, description="Network input width, pixels.")
    height: int = Field(ge=1, description="Network input height, pixels.")
    resizer: ResizeMode = Field(description="squash, crop or letterbox (spec.imageResizer).")
    interpolation: Literal["bilinear"] = "bilinear"
    antialias: bool = True
    pad_value: int = Field(default=0, description="Letterbox margins, every channel (0-255).")
    channel_order: Literal["RGB"] = "RGB"
    layout: Literal["NCHW"] = "NCHW"
    dtype: Literal["float32"] = "float32"
    scale: float = Field(default=1 / 255, description="Multiplies the 0-255 pixels first.")
    mean: list[float] | None = Field(
        default=None,
        min_length=3,
        max_length=3,
        description="Per-channel mean subtracted after scaling; null: detectors normalise "
        "inside the graph.",
    )
    std: list[float] | None = Field(
        default=None, min_length=3, max_length=3, description="Per-channel divisor, with mean."
    )


class Postprocessing(ApiModel):
    """``export/postprocessing.json``: how the graph's outputs become concepts.

    - classification: ``softmax(logits)``; the top concept is the arg-max (no threshold).
    - tagging: ``sigmoid(logits)``; a concept is present when its probability reaches its
      threshold (the F1-optimal one of the validation evaluation, else ``default_threshold``).
    - detection: rows ``< num_detections`` whose score reaches the concept's threshold (the
      LRP-optimal one, else ``default_threshold``); NMS is already done inside the graph.
    """

    schema_version: Literal["kubevision.dev/postprocessing/v1"] = POSTPROCESSING_SCHEMA
    task: Task
    concepts: list[str] = Field(description="Concept names in class-index order.")
    activation: Literal["softmax", "sigmoid", "none"] = Field(
        description="Applied to logits: softmax (classification), sigmoid (tagging), none "
        "(detection: scores are probabilities already)."
    )
    outputs: list[str] = Field(description="The graph's output tensors, in order.")
    thresholds: list[float] | None = Field(
        default=None,
        description="Per concept, in class-index order; null for classification.",
    )
    threshold_source: list[Literal["evaluation", "default"]] | None = Field(
        default=None,
        description="Per concept: chosen by the validation evaluation, or the default.",
    )
    default_threshold: float = Field(default=0.5, description="Where no threshold was chosen.")
    nms_iou: float | None = Field(
        default=None, description="Detection: the NMS IoU the graph applies; null otherwise."
    )
    max_detections: int | None = Field(
        default=None, ge=1, description="Detection: D, the padded rows per image."
    )
    box_format: Literal["xyxy"] | None = Field(
        default=None,
        description="Detection: x1, y1, x2, y2 in pixels of the network input (predict maps "
        "them back to the image's pixels with the resizer's geometry).",
    )
