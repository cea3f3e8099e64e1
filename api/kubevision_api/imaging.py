"""The one image decoding that training and serving share, so that a served image is decoded
as the trained ones were: image bytes to an RGB picture as the user sees it, and boxes to match.

The trainer's data pipeline (``kubevision_trainer.data``) and ``kubevision predict``
(``kubevision_cli.serving.preprocess``) both decode with :func:`decode_image`. Unlike the rest of
the api package this module needs Pillow and numpy, which the ``trainer`` and ``serve`` extras
both carry; only they import it (the operator, which has neither, never does).

Decoding is bounded in memory: an image over ``spec.dataset.maxImagePixels`` is refused from
its header, and a large image is decoded at a reduced scale when the network needs fewer
pixels (``target``): a 100 MP baseline JPEG then adds 9 MiB to the peak RSS instead of 384 MiB
(tests/trainer/data/test_data_huge.py measures it; docs/decisions.md states the budget).

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
from collections.abc import Callable

import numpy as np
import numpy.typing as npt
from PIL import ExifTags, Image, ImageFile, ImageOps, UnidentifiedImageError

from kubevision_api import errors
from kubevision_api.view import DEFAULT_MAX_IMAGE_PIXELS

# decode_image applies spec.dataset.maxImagePixels itself, from the header and before any
# pixel is decoded; Pillow's own guard (a warning from 89 MP, an error from 179 MP, process
# wide) would contradict the View's limit.
Image.MAX_IMAGE_PIXELS = None

#: Pillow's ``thumbnail`` default: a reduced decode keeps at least this many times the pixels
#: that the final resize needs per side, so the resize (antialiased) still averages several
#: pixels into one and the reduced decode costs no visible quality.
REDUCING_GAP = 2

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


def decode_image(
    data: bytes,
    source: str,
    *,
    max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
    target: int | None = None,
) -> tuple[Image.Image, int, tuple[int, int]]:
    """Decode an image file's bytes.

    Args:
        data: the whole file.
        source: its URI, named in errors.
        max_pixels: ``spec.dataset.maxImagePixels``: a stored image of more pixels is refused
            from its header, before any pixel is decoded.
        target: the largest side of the network input (the resizer's), or None. When given, a
            large image is decoded at a reduced scale (a power of 2) as long as both its sides
            keep :data:`REDUCING_GAP` times ``target`` pixels: JPEGs by libjpeg's DCT scaling
            (``Image.draft``, so the full-size picture never exists in memory), opaque RGB and
            grey images of other formats by ``Image.reduce`` right after decoding.

    Returns:
        ``(image, orientation, raw_size)``: the image in mode ``RGB`` (uint8, 3 channels) with
        the EXIF orientation applied (``PIL.ImageOps.exif_transpose``), possibly reduced (its
        full upright size is :func:`upright_size`); the EXIF orientation tag, 1..8 (1 when
        absent or invalid, in which case the image is not transposed); and the stored size
        ``(width, height)`` in pixels, before orientation and reduction.

    Raises:
        InputError: the file is empty, the bytes are not an image of one of :data:`FORMATS`,
            are truncated or corrupt, or the image has more than ``max_pixels`` pixels (a
            decompression bomb; the message names the pixels and the limit). Names ``source``.
        RuntimeError: ``PIL.ImageFile.LOAD_TRUNCATED_IMAGES`` was set to True by someone.
    """
    # Pillow would otherwise pad a truncated image with grey and train on it silently.
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        raise RuntimeError("PIL.ImageFile.LOAD_TRUNCATED_IMAGES must stay False")
    if not data:
        raise errors.InputError(source, "cannot decode the image: empty file (0 bytes)")
    try:
        image: Image.Image = Image.open(io.BytesIO(data), formats=FORMATS)
    except _DECODE_ERRORS as exc:
        raise errors.InputError(source, f"cannot decode the image: {_describe(exc)}") from exc
    raw_size = image.size
    _check_pixels(raw_size, max_pixels, source)
    try:
        side = None if target is None else REDUCING_GAP * target
        if side is not None and image.format == "JPEG":
            image.draft(None, (side, side))
        image.load()
        if side is not None and image.mode in ("RGB", "L") and "transparency" not in image.info:
            factor = min(image.size[0] // side, image.size[1] // side)
            if factor >= 2:
                image = image.reduce(factor)
        orientation = _orientation(image)
        if orientation != 1:
            image = ImageOps.exif_transpose(image)
        rgb = _to_rgb(image)
    except _DECODE_ERRORS as exc:
        raise errors.InputError(source, f"cannot decode the image: {_describe(exc)}") from exc
    return rgb, orientation, (int(raw_size[0]), int(raw_size[1]))


def stored_size(data: bytes) -> tuple[int, int] | None:
    """``(width, height)`` from the file's header, without decoding; None when the bytes are
    not an image of :data:`FORMATS` (:func:`decode_image` then says why)."""
    try:
        with Image.open(io.BytesIO(data), formats=FORMATS) as image:
            return int(image.size[0]), int(image.size[1])
    except _DECODE_ERRORS:
        return None


def upright_size(raw_size: tuple[int, int], orientation: int) -> tuple[int, int]:
    """``(width, height)`` of the upright image: ``raw_size`` swapped for EXIF orientations
    5 to 8 (the transpositions and quarter turns)."""
    return (raw_size[1], raw_size[0]) if orientation >= 5 else raw_size


def _check_pixels(size: tuple[int, int], limit: int, source: str) -> None:
    pixels = size[0] * size[1]
    if pixels > limit:
        raise errors.InputError(
            source,
            f"the image is {size[0]}x{size[1]} = {pixels:,} pixels, over the limit of "
            f"{limit:,} (spec.dataset.maxImagePixels, a decompression bomb guard): downscale "
            "the image or raise the limit",
        )


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
    if mode == "RGBA":
        return _composite_on_black(image)
    if mode in ("LA", "PA", "La", "RGBa"):
        return _composite_on_black(image.convert("RGBA"))
    if mode.startswith("I;16") or mode == "I":
        return _by_bands(
            image,
            lambda band: _gray_plane(
                np.clip(band.astype(np.float64), 0, 65535) * (255.0 / 65535.0)
            ),
        )
    if mode == "F":
        values = np.nan_to_num(np.asarray(image, dtype=np.float64), nan=0.0)
        scale = 255.0 if values.size and values.min() >= 0 and values.max() <= 1 else 1.0
        return _gray(np.clip(values * scale, 0, 255))
    return image.convert("RGB")


def _gray(values: npt.NDArray[np.float64]) -> Image.Image:
    return Image.fromarray(_gray_plane(values), "RGB")


def _gray_plane(values: npt.NDArray[np.float64]) -> npt.NDArray[np.uint8]:
    plane = np.rint(values).astype(np.uint8)
    return np.stack([plane] * 3, axis=-1)


def _composite_on_black(rgba: Image.Image) -> Image.Image:
    def band(pixels: npt.NDArray[np.generic]) -> npt.NDArray[np.uint8]:
        wide = pixels.astype(np.uint16)
        return ((wide[..., :3] * wide[..., 3:4] + 127) // 255).astype(np.uint8)

    return _by_bands(rgba, band)


#: Rows converted at a time: the float or 16-bit intermediates of a conversion then take a
#: few MB, not several bytes per pixel of the whole image (a 100 MP RGBA image would need
#: 800 MB of uint16 at once).
_BAND_ROWS = 256


def _by_bands(
    image: Image.Image, convert: Callable[[npt.NDArray[np.generic]], npt.NDArray[np.uint8]]
) -> Image.Image:
    """An RGB image made band by band of rows: ``convert`` maps the ``(rows, W[, C])`` array
    of a band of ``image`` to its ``(rows, W, 3)`` uint8 RGB pixels."""
    width, height = image.size
    # Pasted into a Pillow image band by band: a whole numpy result would be copied once more.
    out = Image.new("RGB", (width, height))
    for top in range(0, height, _BAND_ROWS):
        bottom = min(height, top + _BAND_ROWS)
        band = convert(np.asarray(image.crop((0, top, width, bottom))))
        out.paste(Image.fromarray(np.ascontiguousarray(band), "RGB"), (0, top))
    return out


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
