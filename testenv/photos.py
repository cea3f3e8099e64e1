"""Camera-sized photos for the data pipeline's tests and benchmarks, made from images that
installed packages ship (scikit-image's photos, scikit-learn's digits); nothing is downloaded.

A phone or camera photo is a 12 MP JPEG of 1 to 5 MB, often stored sideways with an EXIF
orientation tag. :func:`photo` scales a shipped photo up to that size (bicubic, so the JPEG
holds smooth gradients as a camera's does, not flat blocks) and stores it so that a viewer
that honours the tag shows the upright picture.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Final

import numpy as np
import skimage
from PIL import Image

from kubevision_api.view import View

#: 4000 x 3000: a 12 MP 4:3 photo, the common phone-camera sensor format.
SIZE_12MP: Final[tuple[int, int]] = (4000, 3000)

#: Photos that the scikit-image wheel ships in ``skimage/data`` (no fetch).
SHIPPED: Final[tuple[str, ...]] = (
    "astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "camera.png", "moon.png",
)  # fmt: skip

#: The transposition that stores an upright picture so that EXIF ``orientation`` shows it
#: upright again: the inverse of what ``PIL.ImageOps.exif_transpose`` applies for the tag.
STORE: Final[dict[int, Image.Transpose | None]] = {
    1: None,
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,
}


def shipped(name: str) -> Image.Image:
    """One of scikit-image's shipped photos (:data:`SHIPPED`) as an RGB image.

    Raises:
        FileNotFoundError: the installed scikit-image does not ship it.
    """
    path = Path(skimage.__file__).parent / "data" / name
    with Image.open(path) as image:
        return image.convert("RGB")


def upright(source: Image.Image, size: tuple[int, int] = SIZE_12MP) -> Image.Image:
    """``source`` scaled (bicubic) to ``size`` = ``(width, height)`` pixels: the upright
    picture that a photo of that size shows."""
    return source.convert("RGB").resize(size, Image.Resampling.BICUBIC)


def encode(picture: Image.Image, orientation: int = 1, quality: int = 92) -> bytes:
    """The JPEG file of the upright ``picture`` stored with EXIF ``orientation`` (1..8):
    the pixels are transposed by the tag's inverse, so an EXIF-aware viewer shows
    ``picture``. ``quality``: libjpeg quality (92 is a phone camera's typical setting)."""
    transpose = STORE[orientation]
    stored = picture if transpose is None else picture.transpose(transpose)
    exif = Image.Exif()
    if orientation != 1:
        exif[0x0112] = orientation
    out = io.BytesIO()
    stored.save(out, "JPEG", quality=quality, exif=exif)
    return out.getvalue()


def photo(name: str, orientation: int = 1, size: tuple[int, int] = SIZE_12MP) -> bytes:
    """A camera-sized JPEG made from scikit-image's ``name``: upright ``size`` pixels (12 MP
    by default), stored with EXIF ``orientation``."""
    return encode(upright(shipped(name), size), orientation)


def orientations(n: int) -> Iterator[int]:
    """``n`` EXIF orientations for a set of photos: every third one sideways or turned
    (6, 3, 8, 5, 2, 7, 4 in turn), the others 1, as a phone's photos are."""
    turned = (6, 3, 8, 5, 2, 7, 4)
    for i in range(n):
        yield turned[(i // 3) % len(turned)] if i % 3 == 2 else 1


#: The concepts of :func:`write_photo_folder`: the shipped photos' stems, sorted (the class
#: index order of a View over the folder).
CONCEPTS: Final[tuple[str, ...]] = tuple(sorted(Path(name).stem for name in SHIPPED))


def cropped_photo(name: str, index: int, size: tuple[int, int], orientation: int) -> bytes:
    """Photo ``index`` of concept ``name``: a random crop of 80-100 % of each side of the
    shipped photo, at a random place, scaled to ``size`` and stored with EXIF ``orientation``.
    Seeded by (concept, index): the same bytes whichever process writes it, and no two photos
    alike."""
    rng = np.random.default_rng([SHIPPED.index(name), index])
    source = shipped(name)
    width, height = source.size
    w, h = int(width * rng.uniform(0.8, 1.0)), int(height * rng.uniform(0.8, 1.0))
    left, top = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
    crop = source.crop((left, top, left + w, top + h))
    return encode(upright(crop, size), orientation)


def _write_one(job: tuple[Path, str, int, tuple[int, int], int]) -> None:
    root, name, index, size, orientation = job
    data = cropped_photo(name, index, size, orientation)
    (root / Path(name).stem / f"{index:04d}.jpg").write_bytes(data)


def write_photo_folder(
    root: Path, per_concept: int, size: tuple[int, int] = SIZE_12MP, *, workers: int = 1
) -> Path:
    """An ImageFolder of camera-sized JPEGs: one concept per shipped photo (:data:`CONCEPTS`),
    ``per_concept`` photos each (:func:`cropped_photo`), stored with :func:`orientations`,
    written by ``workers`` processes (a 12 MP photo takes 0.3 to 0.6 s to make). Returns
    ``root``."""
    tags = orientations(len(SHIPPED) * per_concept)
    jobs = [(root, name, i, size, next(tags)) for name in SHIPPED for i in range(per_concept)]
    for name in SHIPPED:
        (root / Path(name).stem).mkdir(parents=True, exist_ok=True)
    if workers <= 1:
        for job in jobs:
            _write_one(job)
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            list(pool.map(_write_one, jobs, chunksize=4))
    return root


def folder_view(data: Path) -> View:
    """The classification View of a :func:`write_photo_folder` folder (ImageFolder layout)."""
    return View.model_validate(
        {
            "metadata": {"name": "photos"},
            "spec": {
                "task": "classification",
                "concepts": [{"name": c} for c in CONCEPTS],
                "dataset": {"uri": f"file://{data}", "format": "imagefolder"},
            },
        }
    )


def enlarge_folder(
    source: Path, target: Path, size: tuple[int, int], *, keep_names: bool = False
) -> Path:
    """Every image under ``source`` (an ImageFolder of PNGs) as a ``size`` JPEG under
    ``target``, scaled up bicubically: the camera photo of a small scan. Each keeps its
    relative path, with suffix ``.jpg``, or unchanged with ``keep_names`` (JPEG bytes under
    the scan's ``.png`` name: the split draws from the path, so every photo then falls on
    its scan's side; the trainer identifies formats by content). Returns ``target``."""
    for path in sorted(source.rglob("*.png")):
        relative = path.relative_to(source)
        out = target / (relative if keep_names else relative.with_suffix(".jpg"))
        out.parent.mkdir(parents=True, exist_ok=True)
        with Image.open(path) as image:
            out.write_bytes(encode(upright(image, size)))
    return target
