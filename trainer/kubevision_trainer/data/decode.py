"""Image bytes to an RGB picture as the user sees it, and boxes to match.

Every Pillow mode becomes 8-bit RGB with the same rules for every image, so that a dataset that
mixes PNG, JPEG and TIFF trains on comparable pixels:

- ``1``, ``L``, ``P`` (opaque), ``RGB``, ``YCbCr``, ``HSV``: Pillow's own conversion.
- Modes with alpha (``LA``, ``PA``, ``RGBA``, ``La``, ``RGBa``, and ``P``, ``L`` or ``RGB``
  with a transparent palette entry or colour: PNG ``tRNS``, GIF transparency): composited
  **on black**, ``rgb * alpha / 255`` rounded.
  Black because letterboxing pads with black too: a transparent margin and a letterbox margin
  then look the same to the model.
- ``CMYK`` (JPEG): Pillow undoes Adobe's inverted CMYK while decoding, then converts with
  ``r = 255 * (1 - c) * (1 - k)``. Embedded ICC profiles are ignored, as torchvision does.
- ``I;16*`` (16-bit PNG/TIFF) and ``I``: taken as 16-bit, scaled ``v * 255 / 65535`` and
  rounded; ``I`` values outside 0..65535 are clipped. Pillow's own conversion would clip at 255
  instead, turning almost every 16-bit image white.
- ``F``: taken as 0..1 when every value lies in [0, 1] (a normalised image), else as 0..255;
  clipped, NaN becomes 0.
"""

from __future__ import annotations

import io

import numpy as np
import numpy.typing as npt
from PIL import ExifTags, Image, ImageFile, ImageOps, UnidentifiedImageError

from kubevision_api import errors

_ORIENTATIONS = frozenset(range(1, 9))
#: Formats Pillow may open: the dataset formats' image types (JPEG includes the multi-picture
#: JPEGs of cameras, MPO). Others are refused, datasets being untrusted input: EPS, for one,
#: runs Ghostscript.
FORMATS = ("JPEG", "PNG", "BMP", "GIF", "WEBP", "TIFF")
# Errors that Pillow's plugins raise on bad data; DecompressionBombError is not an OSError.
_DECODE_ERRORS = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    IndexError,
    Image.DecompressionBombError,
)


def decode_image(data: bytes, source: str) -> tuple[Image.Image, int, tuple[int, int]]:
    """Decode an image file's bytes.

    Args:
        data: the whole file.
        source: its URI, named in errors.

    Returns:
        ``(image, orientation, raw_size)``: the image in mode ``RGB`` (uint8, 3 channels) with
        the EXIF orientation applied (``PIL.ImageOps.exif_transpose``); the EXIF orientation
        tag, 1..8 (1 when absent or invalid, in which case the image is not transposed); and
        the stored size ``(width, height)`` in pixels, before orientation.

    Raises:
        InputError: the bytes are not an image of one of :data:`FORMATS`, are truncated or
            corrupt, or exceed Pillow's decompression-bomb limit (names ``source`` and the
            cause).
        RuntimeError: ``PIL.ImageFile.LOAD_TRUNCATED_IMAGES`` was set to True by someone.
    """
    # Pillow would otherwise pad a truncated image with grey and train on it silently.
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        raise RuntimeError("PIL.ImageFile.LOAD_TRUNCATED_IMAGES must stay False")
    try:
        image: Image.Image = Image.open(io.BytesIO(data), formats=FORMATS)
        image.load()
        raw_size = image.size
        orientation = _orientation(image)
        if orientation != 1:
            image = ImageOps.exif_transpose(image)
        rgb = _to_rgb(image)
    except _DECODE_ERRORS as exc:
        raise errors.InputError(source, f"cannot decode the image: {_describe(exc)}") from exc
    return rgb, orientation, (int(raw_size[0]), int(raw_size[1]))


def _describe(exc: BaseException) -> str:
    if isinstance(exc, UnidentifiedImageError):
        return "not a JPEG, PNG, BMP, GIF, WebP or TIFF image"
    text = str(exc) or type(exc).__name__
    if "truncated" in text:
        return f"the file is truncated ({text})"
    return text


def _orientation(image: Image.Image) -> int:
    try:
        value = image.getexif().get(ExifTags.Base.Orientation, 1)
    except _DECODE_ERRORS:
        # Broken EXIF must not reject an image whose pixels are fine; it is shown unrotated.
        return 1
    return value if isinstance(value, int) and value in _ORIENTATIONS else 1


def _to_rgb(image: Image.Image) -> Image.Image:
    mode = image.mode
    # A tRNS chunk (or GIF transparency) makes one palette entry or colour transparent.
    if mode in ("P", "L", "RGB") and "transparency" in image.info:
        return _composite_on_black(image.convert("RGBA"))
    if mode == "RGB":
        return image
    if mode in ("LA", "PA", "RGBA", "La", "RGBa"):
        return _composite_on_black(image.convert("RGBA"))
    if mode.startswith("I;16") or mode == "I":
        values = np.asarray(image).astype(np.float64)
        return _gray(np.clip(values, 0, 65535) * (255.0 / 65535.0))
    if mode == "F":
        values = np.nan_to_num(np.asarray(image, dtype=np.float64), nan=0.0)
        scale = 255.0 if values.size and values.min() >= 0 and values.max() <= 1 else 1.0
        return _gray(np.clip(values * scale, 0, 255))
    return image.convert("RGB")


def _gray(values: npt.NDArray[np.float64]) -> Image.Image:
    plane = np.rint(values).astype(np.uint8)
    return Image.fromarray(np.stack([plane] * 3, axis=-1), "RGB")


def _composite_on_black(rgba: Image.Image) -> Image.Image:
    pixels = np.asarray(rgba, dtype=np.uint16)
    rgb = (pixels[..., :3] * pixels[..., 3:4] + 127) // 255
    return Image.fromarray(rgb.astype(np.uint8), "RGB")


def orient_boxes(
    boxes: npt.NDArray[np.floating], orientation: int, raw_size: tuple[int, int]
) -> npt.NDArray[np.float64]:
    """Map boxes from stored-pixel coordinates to the EXIF-oriented image.

    Coordinates are continuous: pixel ``i`` covers ``[i, i + 1)``, so a box ``(0, 0, w, h)``
    covers the whole stored image and maps onto the whole oriented image.

    Args:
        boxes: ``(N, 4)`` float ``(x1, y1, x2, y2)`` in pixels of the stored image.
        orientation: EXIF orientation tag 1..8, as returned by :func:`decode_image`.
        raw_size: stored ``(width, height)`` in pixels, before orientation.

    Returns:
        ``(N, 4)`` float64 ``(x1, y1, x2, y2)`` in pixels of the oriented image (whose size is
        ``raw_size`` swapped for orientations 5 to 8), with ``x1 <= x2`` and ``y1 <= y2``.

    Raises:
        ValueError: ``boxes`` is not ``(N, 4)`` or ``orientation`` is not 1..8.
    """
    array = np.asarray(boxes, dtype=np.float64)
    if array.ndim != 2 or array.shape[1] != 4:
        raise ValueError(f"boxes must have shape (N, 4), got {array.shape}")
    if orientation not in _ORIENTATIONS:
        raise ValueError(f"EXIF orientation must be 1..8, got {orientation}")
    width, height = float(raw_size[0]), float(raw_size[1])
    x1, y1, x2, y2 = array[:, 0], array[:, 1], array[:, 2], array[:, 3]
    # Each row: where the stored point (x, y) lands, for the transposition that
    # ImageOps.exif_transpose applies for this tag (FLIP_LEFT_RIGHT, ROTATE_180, ...).
    if orientation == 1:
        corners = (x1, y1, x2, y2)
    elif orientation == 2:
        corners = (width - x1, y1, width - x2, y2)
    elif orientation == 3:
        corners = (width - x1, height - y1, width - x2, height - y2)
    elif orientation == 4:
        corners = (x1, height - y1, x2, height - y2)
    elif orientation == 5:
        corners = (y1, x1, y2, x2)
    elif orientation == 6:
        corners = (height - y1, x1, height - y2, x2)
    elif orientation == 7:
        corners = (height - y1, width - x1, height - y2, width - x2)
    else:
        corners = (y1, width - x1, y2, width - x2)
    ax, ay, bx, by = corners
    return np.stack(
        [np.minimum(ax, bx), np.minimum(ay, by), np.maximum(ax, bx), np.maximum(ay, by)], axis=1
    )
