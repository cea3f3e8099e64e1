"""An image file to one row of the graph's ``images`` input, as ``preprocessing.json``
(:class:`kubevision_api.bundle.Preprocessing`) says, with Pillow and numpy.

The trainer's evaluation pipeline, which this follows:

1. ``data.decode.decode_image``: a JPEG is decoded at a reduced scale by libjpeg's DCT scaling
   (``Image.draft``) and other opaque RGB or grey images are ``Image.reduce``'d, as long as both
   sides keep twice the network's largest side; then upright by the EXIF orientation and RGB
   (transparency composited on black, 16-bit scaled to 8 bits).
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

import io
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from PIL import ExifTags, Image, ImageFile, ImageOps, UnidentifiedImageError

from kubevision_api.bundle import Preprocessing
from kubevision_api.errors import InputError
from kubevision_api.geometry import resize_geometry
from kubevision_api.modelversion import ResizeMode

#: The formats the trainer opens (``data.decode.FORMATS``): datasets and the images to predict
#: are untrusted input; EPS, for one, runs Ghostscript.
FORMATS = ("JPEG", "PNG", "BMP", "GIF", "WEBP", "TIFF")
#: ``data.decode.REDUCING_GAP``: a reduced decode keeps at least this many times the network's
#: largest side, so the antialiased resize still averages several pixels into one.
REDUCING_GAP = 2
#: Pillow's errors on bad data; DecompressionBombError is not an OSError.
_DECODE_ERRORS = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    IndexError,
    Image.DecompressionBombError,
)


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
    """Decode an image file as the trainer does (module docstring, step 1).

    Args:
        data: the whole file.
        source: its path or URI, named in errors.
        target: the network input's largest side, pixels (the reduced decode's bound).

    Returns:
        ``(picture, (height, width))``: the upright RGB picture, possibly reduced by a power of
        2, and the full upright size in pixels.

    Raises:
        InputError: empty file, not one of :data:`FORMATS`, truncated or corrupt (names
            ``source``).
        RuntimeError: ``PIL.ImageFile.LOAD_TRUNCATED_IMAGES`` was set to True by someone.
    """
    # Pillow would otherwise pad a truncated image with grey and predict on it silently.
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        raise RuntimeError("PIL.ImageFile.LOAD_TRUNCATED_IMAGES must stay False")
    if not data:
        raise InputError(source, "cannot decode the image: empty file (0 bytes)")
    try:
        image: Image.Image = Image.open(io.BytesIO(data), formats=FORMATS)
        width, height = image.size
        side = REDUCING_GAP * target
        if image.format == "JPEG":
            image.draft(None, (side, side))
        image.load()
        if image.mode in ("RGB", "L") and "transparency" not in image.info:
            factor = min(image.size[0] // side, image.size[1] // side)
            if factor >= 2:
                image = image.reduce(factor)
        orientation = _orientation(image)
        if orientation != 1:
            image = ImageOps.exif_transpose(image)
        rgb = to_rgb(image)
    except _DECODE_ERRORS as exc:
        what = str(exc) or type(exc).__name__
        if isinstance(exc, UnidentifiedImageError):
            what = "not a JPEG, PNG, BMP, GIF, WebP or TIFF image"
        raise InputError(source, f"cannot decode the image: {what}") from exc
    upright = (width, height) if orientation >= 5 else (height, width)
    return rgb, upright


def _orientation(image: Image.Image) -> int:
    try:
        value = image.getexif().get(ExifTags.Base.Orientation, 1)
    except _DECODE_ERRORS:
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB by the trainer's rules (``data.decode``): transparency composited on black
    (``rgb * alpha / 255`` rounded), 16-bit and ``I`` scaled by ``255 / 65535``, ``F`` taken as
    0..1 when all its values are, else as 0..255; Pillow's conversion for the rest."""
    mode = image.mode
    if mode == "RGB" and "transparency" not in image.info:
        return image
    if mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in image.info:
        rgba = np.asarray(image.convert("RGBA")).astype(np.uint16)
        rgb = (rgba[..., :3] * rgba[..., 3:4] + 127) // 255
        return Image.fromarray(rgb.astype(np.uint8), "RGB")
    if mode.startswith("I;16") or mode in ("I", "F"):
        values = np.nan_to_num(np.asarray(image, dtype=np.float64), nan=0.0)
        if mode == "F":
            unit = values.size > 0 and values.min() >= 0 and values.max() <= 1
            values = values * (255.0 if unit else 1.0)
        else:
            values = np.clip(values, 0, 65535) * (255.0 / 65535.0)
        plane = np.rint(np.clip(values, 0, 255)).astype(np.uint8)
        return Image.fromarray(np.stack([plane] * 3, axis=-1), "RGB")
    return image.convert("RGB")


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
