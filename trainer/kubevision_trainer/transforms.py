"""Box-aware image transforms on ``torchvision.transforms.v2``: the three resizer modes and the
spec's named augmentations. Every transform takes and returns ``(image, target)`` structures
that v2 understands: an ``tv_tensors.Image`` (3, H, W) uint8 and, for detection, a dict with
``tv_tensors.BoundingBoxes`` (N, 4) XYXY and ``labels`` (N,) int64."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as tvf

from kubevision_api.geometry import resize_geometry
from kubevision_api.modelversion import Augmentation, AugmentationName, ImageResizer, ResizeMode

#: Boxes narrower, lower or smaller in area (px, px²) than this after the transforms are
#: removed (``v2.SanitizeBoundingBoxes``): they would give NaN losses.
MIN_BOX_SIZE = 1.0


def _image_size(flat_inputs: list[Any]) -> tuple[int, int]:
    for item in flat_inputs:
        if isinstance(item, tv_tensors.Image):
            height, width = tvf.get_size(item)
            return height, width
    # Boxes alone (kept_boxes) carry their image's size.
    for item in flat_inputs:
        if isinstance(item, tv_tensors.BoundingBoxes):
            return int(item.canvas_size[0]), int(item.canvas_size[1])
    raise TypeError("no tv_tensors.Image among the transform's inputs")


class Resize(v2.Transform):  # type: ignore[misc]  # torchvision ships no stubs
    """Resize to ``(height, width)`` by one of the resizer modes.

    - squash: stretch to exactly ``height x width`` (aspect ratio not kept);
    - crop: scale so the image covers the target, then centre-crop (parts are lost);
    - letterbox: scale so the image fits inside, then pad with black, centred.

    Boxes follow the pixels (v2 dispatches on ``tv_tensors.BoundingBoxes``); boxes cropped
    away are removed later by ``v2.SanitizeBoundingBoxes``.
    """

    def __init__(self, mode: ResizeMode, height: int, width: int) -> None:
        super().__init__()
        self.mode = mode
        self.height = height
        self.width = width

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        height, width = _image_size(flat_inputs)
        size, pad = resize_geometry(self.mode, (self.height, self.width), (height, width))
        return {"size": list(size), "pad": None if pad is None else list(pad)}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        out = tvf.resize(inpt, size=params["size"], antialias=True)
        if self.mode is ResizeMode.CROP:
            out = tvf.center_crop(out, output_size=[self.height, self.width])
        elif params["pad"] is not None and any(params["pad"]):
            out = tvf.pad(out, padding=params["pad"], fill=0)
        return out


class Rotate90(v2.Transform):  # type: ignore[misc]
    """Rotate by +90° or -90° (chosen at random), boxes included; the canvas is expanded, so a
    non-square image swaps width and height (the resizer comes after)."""

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        angle = 90.0 if torch.rand(()) < 0.5 else -90.0
        return {"angle": angle}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        return tvf.rotate(inpt, angle=params["angle"], expand=True)


def augmentation(op: Augmentation) -> v2.Transform:
    """The v2 transform of one named augmentation, applied with ``op.probability``.

    Raises:
        ValueError: unknown name (the API model prevents it).
    """
    name, p, m = op.name, op.probability, op.magnitude
    inner: v2.Transform
    if name is AugmentationName.HORIZONTAL_FLIP:
        return v2.RandomHorizontalFlip(p=p)
    if name is AugmentationName.VERTICAL_FLIP:
        return v2.RandomVerticalFlip(p=p)
    if name is AugmentationName.GRAYSCALE:
        return v2.RandomGrayscale(p=p)
    if name is AugmentationName.ZOOM_OUT:
        return v2.RandomZoomOut(fill=0, side_range=(1.0, 1.0 + max(m, 1e-3)), p=p)
    if name is AugmentationName.ROTATE90:
        inner = Rotate90()
    elif name is AugmentationName.BRIGHTNESS:
        inner = v2.ColorJitter(brightness=m)
    elif name is AugmentationName.CONTRAST:
        inner = v2.ColorJitter(contrast=m)
    elif name is AugmentationName.SATURATION:
        inner = v2.ColorJitter(saturation=m)
    elif name is AugmentationName.HUE:
        inner = v2.ColorJitter(hue=min(m, 0.5))
    elif name is AugmentationName.GAUSSIAN_BLUR:
        inner = v2.GaussianBlur(kernel_size=5, sigma=(0.1, max(0.1, 4 * m)))
    else:
        raise ValueError(f"unknown augmentation {name!r}")
    return v2.RandomApply([inner], p=p)


def resizer(spec: ImageResizer) -> Resize:
    """The resize transform of an ``imageResizer`` spec."""
    return Resize(spec.mode, spec.height, spec.width)


def kept_boxes(
    boxes: Sequence[tuple[float, float, float, float]],
    canvas_size: tuple[int, int],
    spec: ImageResizer,
) -> list[bool]:
    """Which boxes the evaluation recipe keeps: mapped by the resizer alone (no augmentation)
    and kept by ``v2.SanitizeBoundingBoxes``' rule at :data:`MIN_BOX_SIZE`, the computation
    of the presets themselves.

    Args:
        boxes: ``(x1, y1, x2, y2)`` pixels of an image of ``canvas_size``.
        canvas_size: ``(height, width)`` of the image, pixels.
        spec: the ``imageResizer``.

    Returns:
        One flag per box, True when it keeps at least 1 px each way and 1 px² at the resizer's
        size.
    """
    if not boxes:
        return []
    tensor = torch.tensor(list(boxes), dtype=torch.float32).reshape(-1, 4)
    resized = resizer(spec)(
        tv_tensors.BoundingBoxes(tensor, format="XYXY", canvas_size=canvas_size)
    )
    _, valid = tvf.sanitize_bounding_boxes(resized, min_size=MIN_BOX_SIZE, min_area=MIN_BOX_SIZE)
    return [bool(v) for v in valid]
