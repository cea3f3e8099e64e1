"""The copy of each image that training reads: made once by the LoadingDataset step, at the
smallest size that still serves the ModelVersion's resizer and augmentations.

A 12 MP photo costs about 90 ms to decode in full, and a photo decoded at every epoch caps a
core at a few images per second. The cache holds the upright picture already scaled down to
the training resolution, so an epoch's work is proportional to the network's input size, not
the photo's (docs/decisions.md, "Data pipeline at photo scale").

- **Size** (:func:`cache_size`): the resizer's scale for the image, and for the image turned by
  90 degrees when ``Rotate90`` may apply (the resizer then sees width and height swapped);
  never upscaled; the first size from there whose :func:`geometry.resize_geometry` is the
  full-size image's, so a letterboxed or cropped image is scaled and padded to exactly the same
  pixels and boxes land where a one-step resize of the original puts them. No other
  augmentation needs more pixels: flips, colour and blur keep the size, ``ZoomOut`` shrinks.
- **Stored form** (:func:`store`), by measurement at 299 x 224 px (docs/performance.md):
  raw uint8 ``.npy`` (3, H, W) reads in 0.11 ms and takes 201 KB; a JPEG at quality 95 decodes
  in 0.57 ms and loses detail; a PNG decodes in 2.1 to 2.6 ms. The raw array is used when it
  takes no more bytes than the source file (a camera photo is 1 to 5 MB), else a PNG when that
  is smaller than the source, else the source file itself, decoded at every epoch as small files
  are cheap to decode: the cache is never larger than the dataset.
- **Key**: the source's sha256 and the cached size (``<sha256>.<W>x<H>.npy``): two
  ModelVersions at different resolutions never share a copy; the source keeps its own name
  (``<sha256><suffix>``).
"""

from __future__ import annotations

import functools
import io
import math
import os
import threading
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from kubevision_api.geometry import resize_geometry
from kubevision_api.modelversion import Augmentation, AugmentationName, ImageResizer, ResizeMode

#: Sizes tried above the smallest covering one for a size whose resizer geometry is the
#: original's (a rounding match is found within a few pixels; past this, no reduction).
_SEARCH = 64

#: Suffix of the raw form: numpy's format (shape and dtype in its header).
RAW = ".npy"
#: Suffix of the lossless compressed form.
PNG = ".png"


def turns(augmentations: Sequence[Augmentation]) -> bool:
    """Whether the augmentations may turn an image by 90 degrees before the resizer."""
    return any(op.name is AugmentationName.ROTATE90 and op.probability > 0 for op in augmentations)


def _scale(mode: ResizeMode, output: tuple[int, int], image: tuple[int, int]) -> Fraction:
    """The smallest factor by which the image may be scaled (both sides alike) so that the
    resizer still only shrinks it: squash stretches each side on its own, so the larger of
    the two factors; crop scales by the larger one, letterbox by the smaller. Exact: in
    floats, 3464 * (224 / 3464) is 224.00000000000003, and the copy would be 225 px."""
    scale_h, scale_w = Fraction(output[0], image[0]), Fraction(output[1], image[1])
    return min(scale_h, scale_w) if mode is ResizeMode.LETTERBOX else max(scale_h, scale_w)


def cache_size(
    width: int, height: int, resizer: ImageResizer, augmentations: Sequence[Augmentation]
) -> tuple[int, int]:
    """The size of an image's training-resolution copy.

    Args:
        width, height: the upright image's size, pixels.
        resizer: the ModelVersion's ``imageResizer``.
        augmentations: the ModelVersion's augmentations (``Rotate90`` counts).

    Returns:
        ``(width, height)`` in pixels, at most the image's own: the smallest size with the
        image's aspect ratio (rounded) that the resizer only shrinks, in each orientation the
        augmentations may present, and that the resizer scales and pads exactly as the
        full-size image (:func:`geometry.resize_geometry`); the smallest covering size when
        none within a few pixels has that geometry (the scaled size is then at most 1 px off
        in one side); the image's own size when it is already small enough.
    """
    output = (resizer.height, resizer.width)
    shapes = [(height, width)] + ([(width, height)] if turns(augmentations) else [])
    scale = max(_scale(resizer.mode, output, shape) for shape in shapes)
    if scale >= 1:
        return width, height
    # Search along the long side, the one rounding loses least on.
    long, short = max(width, height), min(width, height)
    first = max(1, math.ceil(long * scale))
    covering: tuple[int, int] | None = None
    geometry = functools.partial(resize_geometry, resizer.mode, output)
    for side in range(first, min(long, first + _SEARCH)):
        other = max(1, round(short * side / long))
        size = (side, other) if width >= height else (other, side)
        # Rounding the short side must not take it under what the resizer needs.
        if min(Fraction(size[0], width), Fraction(size[1], height)) < scale:
            continue
        covering = covering or size
        reduced = [(size[1], size[0])] + ([(size[0], size[1])] if len(shapes) > 1 else [])
        if all(geometry(a) == geometry(b) for a, b in zip(reduced, shapes, strict=True)):
            return size
    # No size of this aspect ratio has the original's geometry (a near-square image cropped
    # in both orientations): the smallest covering one, whose scaled size is then at most a
    # pixel off the original's.
    return covering or (width, height)


def store(
    picture: Image.Image, size: tuple[int, int], source_bytes: int, cache_dir: Path, digest: str
) -> Path | None:
    """Write the training-resolution copy of ``picture`` (the upright RGB image, possibly
    decoded at a reduced scale) and return its path, or None when the source file itself
    should serve (no form is smaller than it).

    The picture is scaled to ``size`` with Pillow's antialiased bilinear filter (the filter
    of ``torchvision.transforms.v2.functional.resize(antialias=True)``, which the resizer
    applies after). Written atomically: a reader sees a whole file or none.

    Args:
        picture: RGB, at least ``size`` on each side.
        size: ``(width, height)`` from :func:`cache_size`.
        source_bytes: the source file's size in bytes; no copy is larger.
        cache_dir: the content-addressed cache's root.
        digest: the source file's sha256 (hex).
    """
    stem = f"{digest}.{size[0]}x{size[1]}"
    folder = cache_dir / digest[:2]
    for suffix in (RAW, PNG):
        path = folder / f"{stem}{suffix}"
        if path.exists():
            return path
    small = picture if picture.size == size else picture.resize(size, Image.Resampling.BILINEAR)
    planes = np.ascontiguousarray(np.asarray(small, dtype=np.uint8).transpose(2, 0, 1))
    out = io.BytesIO()
    np.save(out, planes, allow_pickle=False)
    if out.tell() <= source_bytes:
        return write(folder / f"{stem}{RAW}", out.getvalue())
    out = io.BytesIO()
    small.save(out, "PNG", compress_level=1)
    if out.tell() < source_bytes:
        return write(folder / f"{stem}{PNG}", out.getvalue())
    return None


def write(path: Path, data: bytes) -> Path:
    """Write ``data`` at ``path`` atomically (a temporary name, then a rename), creating the
    folder; returns ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # One temporary name per thread: two samples may be the same file, loaded at once.
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
    return path


def read_raw(path: Path) -> torch.Tensor:
    """A raw copy (:data:`RAW`) as a ``(3, H, W)`` uint8 tensor.

    Raises:
        ValueError: the file is not a (3, H, W) uint8 array (a damaged cache).
    """
    planes = np.load(path, allow_pickle=False)
    if planes.dtype != np.uint8 or planes.ndim != 3 or planes.shape[0] != 3:
        raise ValueError(f"{path}: not a (3, H, W) uint8 image ({planes.dtype}, {planes.shape})")
    return torch.from_numpy(planes)
