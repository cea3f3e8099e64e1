"""Helpers shared by the data tests: image files made with PIL and annotation files on disk."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

#: Stored size of the test images, and a box in them: off-centre on both axes, so that every
#: flip and rotation lands it somewhere else.
RAW_SIZE = (64, 40)
BOX = (10.0, 5.0, 30.0, 15.0)


def encode(image: Image.Image, fmt: str, **params: Any) -> bytes:
    """The bytes of ``image`` saved as ``fmt``."""
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def boxed_image(orientation: int = 1, fmt: str = "PNG") -> bytes:
    """A black ``RAW_SIZE`` image with ``BOX`` filled white, the EXIF orientation tag set."""
    pixels = np.zeros((RAW_SIZE[1], RAW_SIZE[0], 3), np.uint8)
    x1, y1, x2, y2 = (int(v) for v in BOX)
    pixels[y1:y2, x1:x2] = 255
    exif = Image.Exif()
    exif[0x0112] = orientation
    params: dict[str, Any] = {"exif": exif}
    if fmt == "JPEG":
        params["quality"] = 95
    return encode(Image.fromarray(pixels, "RGB"), fmt, **params)


def white_bbox(image: Image.Image) -> tuple[int, int, int, int]:
    """``(x1, y1, x2, y2)`` of the pixels brighter than mid-grey, x2 and y2 exclusive."""
    gray = np.asarray(image.convert("L"))
    ys, xs = np.nonzero(gray > 128)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def write_image(path: Path, size: tuple[int, int] = (32, 24)) -> None:
    """A small RGB PNG or JPEG (by suffix) at ``path``, folders created."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (40, 80, 120)).save(path)


def write_json(path: Path, document: Any) -> str:
    """``document`` as JSON at ``path``; returns its file:// URI."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document))
    return path.as_uri()
