"""An image file to one row of the graph's ``images`` input, as ``preprocessing.json``
(:class:`kubevision_api.bundle.Preprocessing`) says, with Pillow and numpy.

The trainer's evaluation pipeline, which this follows:

1. ``kubevision_api.imaging.decode_image``, the trainer's own decoding (not a copy): a JPEG is
   decoded at a reduced scale by libjpeg's DCT scaling (``Image.draft``) and other opaque RGB
   or grey images are ``Image.reduce``'d, as long as both sides keep twice the network's
   largest side; then upright by the EXIF orientation and RGB (transparency composited on
   black, 16-bit scaled to 8 bits). An image over the View's default ``maxImagePixels`` is
   refused from its header, as training refuses it.
2. ``data.cache.store``: Pillow's antialiased bilinear resize to the training-resolution copy.
3. ``transforms.Resize``: ``torchvision`` antialiased bilinear resize to the size
   ``kubevision_api.geometry.resize_geometry`` gives for the full-size upright image, then the
   centre crop (``crop``) or the black margins (``letterbox``).
4. ``presets.model_input``: float32, ``x * (1/255)``, ``(x - mean) / std``.

Here steps 2 and 3 are one Pillow resize (``Image.BILINEAR``, antialiased, no
``reducing_gap``) straight to the geometry's size: the copy's size depends on the training's
augmentations, which the bundle does not carry, and one resize is the better approximation of
the resize of the original that both steps stand for. tests/cli/test_predict_preprocess.py
states the difference from the trainer's pipeline (docs/serving.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from PIL import Image

from kubevision_api import imaging
from kubevision_api.bundle import Preprocessing
from kubevision_api.geometry import resize_geometry
from kubevision_api.modelversion import ResizeMode


@dataclass(frozen=True)
class Placement:
    """Where the resizer put an image inside the network input: what maps boxes back.

    Attributes:
        image: ``(height, width)`` of the upright image, pixels (full size, before any reduced
            decode).
        scaled: ``(height, width)`` it was scaled to (crop: before the centre crop).
        offset: ``(left, top)`` pixels of the scaled image's origin in the network input:
            the letterbox margins (positive), minus the centre crop's anchor (negative), or 0.
    """

    image: tuple[int, int]
    scaled: tuple[int, int]
    offset: tuple[int, int]


def placement(spec: Preprocessing, image: tuple[int, int]) -> Placement:
    """The :class:`Placement` of an upright image of ``(height, width)`` pixels: the sizes of
    ``kubevision_api.geometry.resize_geometry``, and the crop anchor of
    ``torchvision.transforms.v2.functional.center_crop`` (``round((scaled - out) / 2)``,
    Python's rounding, half to even, as torchvision computes it)."""
    output = (spec.height, spec.width)
    scaled, pad = resize_geometry(spec.resizer, output, image)
    if spec.resizer is ResizeMode.CROP:
        top = round((scaled[0] - spec.height) / 2.0)
        left = round((scaled[1] - spec.width) / 2.0)
        return Placement(image, scaled, (-left, -top))
    if pad is not None:
        return Placement(image, scaled, (pad[0], pad[1]))
    return Placement(image, scaled, (0, 0))


def decode(data: bytes, source: str, target: int) -> tuple[Image.Image, tuple[int, int]]:
    """Decode an image file as the trainer does (module docstring, step 1), with its
    :func:`kubevision_api.imaging.decode_image` and its default pixel limit.

    Args:
        data: the whole file.
        source: its path or URI, named in errors.
        target: the network input's largest side, pixels (the reduced decode's bound).

    Returns:
        ``(picture, (height, width))``: the upright RGB picture, possibly reduced by a power of
        2, and the full upright size in pixels.

    Raises:
        InputError: empty file, not one of :data:`kubevision_api.imaging.FORMATS`, truncated
            or corrupt, or over :data:`kubevision_api.view.DEFAULT_MAX_IMAGE_PIXELS` pixels
            (the View's default ``maxImagePixels``, checked from the header); names ``source``.
        RuntimeError: ``PIL.ImageFile.LOAD_TRUNCATED_IMAGES`` was set to True by someone.
    """
    picture, orientation, raw = imaging.decode_image(data, source, target=target)
    width, height = imaging.upright_size(raw, orientation)
    return picture, (height, width)


def resize(picture: Image.Image, spec: Preprocessing, where: Placement) -> Image.Image:
    """The network input's ``width x height`` RGB picture: ``picture`` (the upright image,
    possibly reduced) resized to ``where.scaled`` by Pillow's antialiased bilinear filter,
    then centre-cropped (crop) or pasted on a ``pad_value`` canvas (letterbox, squash)."""
    height, width = where.scaled
    if picture.size != (width, height):
        picture = picture.resize((width, height), Image.Resampling.BILINEAR, reducing_gap=None)
    if where.offset == (0, 0) and (height, width) == (spec.height, spec.width):
        return picture
    fill = (spec.pad_value,) * 3
    canvas = Image.new("RGB", (spec.width, spec.height), fill)
    canvas.paste(picture, where.offset)
    return canvas


def to_input(picture: Image.Image, spec: Preprocessing) -> npt.NDArray[np.float32]:
    """``(3, height, width)`` float32: channels first, ``x * scale`` then ``(x - mean) / std``
    per channel, in float32 as ``presets.model_input`` computes it (the scale and the
    statistics rounded to float32 first, as torch does for a float32 tensor)."""
    planes = np.asarray(picture, dtype=np.uint8).transpose(2, 0, 1).astype(np.float32)
    planes *= np.float32(spec.scale)
    if spec.mean is not None:
        mean = np.asarray(spec.mean, dtype=np.float32).reshape(3, 1, 1)
        std = np.asarray(spec.std or [1.0, 1.0, 1.0], dtype=np.float32).reshape(3, 1, 1)
        planes -= mean
        planes /= std
    return planes


def preprocess(
    data: bytes, source: str, spec: Preprocessing
) -> tuple[npt.NDArray[np.float32], Placement]:
    """One image file as one row of ``images`` and its :class:`Placement`.

    Raises:
        InputError: the bytes are not a readable image (names ``source``).
    """
    picture, upright = decode(data, source, max(spec.height, spec.width))
    where = placement(spec, upright)
    return to_input(resize(picture, spec, where), spec), where
