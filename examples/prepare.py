"""Write the example datasets from data that installed packages ship; nothing is downloaded.

Run ``python examples/prepare.py [--out DIR]`` (default ``examples/data`` beside this file). It
writes three datasets in the standard formats (docs/decisions.md, Resources and the plan), so
the examples go through the same readers as user data:

``digits-imagefolder/``
    Classification, ImageFolder layout ``<concept>/<file>.png``: all 1,797 scans of
    ``sklearn.datasets.load_digits`` (8x8, 16 grey levels), one folder per digit ``zero`` ..
    ``nine``, as 32x32 8-bit greyscale PNG.
``digits-tags/``
    Tagging, ``tags.csv`` (``image,concepts``, ``|``-separated, empty = without concept) and
    64x32 greyscale PNG: two scans side by side; the concepts are which of ``three``, ``five``,
    ``eight`` appear. About 30% of images show neither.
``digits-detection/``
    Detection, COCO ``annotations.json`` and 128x128 RGB PNG canvases with 1-3 scans pasted at
    24-40 px without overlap; boxes are tight to the ink of ``zero``, ``four`` and ``seven``
    (category ids 1, 3, 7: non-contiguous on purpose); other digits are unboxed distractors and
    about 10% of canvases hold no box at all.

Each dataset is written into a temporary folder that is renamed into place once complete, with
a ``.prepared.json`` marker; a later run skips a dataset whose marker matches its parameters, so
the script is idempotent and cheap to repeat. Output is deterministic for a given seed.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt
from PIL import Image
from sklearn.datasets import load_digits

LOG = logging.getLogger("prepare")

#: Bump when the content of a dataset changes, so stale folders are rebuilt.
FORMAT_VERSION: Final = 1
MARKER: Final = ".prepared.json"
DEFAULT_SEED: Final = 0

DIGIT_NAMES: Final[tuple[str, ...]] = (
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
)  # fmt: skip

#: Tagging concepts: three digits that share strokes (3, 5 and 8 are the digits scans' most
#: confused trio), so the tags are not given away by a single stroke.
TAG_CONCEPTS: Final[tuple[int, ...]] = (3, 5, 8)
TAG_IMAGES: Final = 1200
#: Number of concept digits per tagging image: 0 (without concept), 1 or 2. With three concepts
#: this gives ~30% without concept and ~29% positives per concept.
TAG_CONCEPT_SLOTS: Final[tuple[float, float, float]] = (0.30, 0.45, 0.25)

#: Detection concepts and their COCO category ids. The ids are non-contiguous on purpose: the
#: trainer maps COCO categories by name (docs/decisions.md), and this exercises that mapping.
DET_CONCEPTS: Final[dict[int, int]] = {0: 1, 4: 3, 7: 7}
#: Unboxed distractor digits, chosen unlike the concepts (no 6/8/9, which resemble 0 and 4, nor
#: 1, which resembles 7) so that a first detection example learns in a few CPU minutes.
DET_DISTRACTORS: Final[tuple[int, ...]] = (2, 3, 5)
DET_IMAGES: Final = 600
DET_CANVAS: Final = 128
DET_SCALE: Final[tuple[int, int]] = (24, 40)
#: Share of canvases with distractors only (no box): detection leaves them out and counts them.
DET_EMPTY_FRACTION: Final = 0.10
#: Share of canvases whose background is a crop of a photo bundled with scikit-image.
DET_PHOTO_FRACTION: Final = 0.25
#: Photos from ``skimage/data`` that the wheel ships (no fetch); those absent are skipped.
PHOTO_FILES: Final[tuple[str, ...]] = (
    "camera.png", "coffee.png", "chelsea.png", "brick.png", "grass.png", "gravel.png",
    "rocket.jpg", "moon.png",
)  # fmt: skip
#: A pixel belongs to the ink when the upscaled scan exceeds this share of full ink; it makes
#: boxes tight to the visible strokes rather than to the pasted square.
INK_THRESHOLD: Final = 0.25

U8Array = npt.NDArray[np.uint8]
FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Digits:
    """The digits scans: ``images`` (N, 8, 8) float in 0..1 (ink = 1), ``labels`` (N,)."""

    images: FloatArray
    labels: npt.NDArray[np.int64]


@dataclass(frozen=True)
class Options:
    """What to write: output root, seed, and an optional cap on images per dataset (tests)."""

    out: Path
    seed: int
    limit: int | None


def load_scans() -> Digits:
    """The 1,797 scans of scikit-learn's copy of the UCI digits (bundled, never fetched)."""
    bunch: Any = load_digits()
    images = np.asarray(bunch.images, dtype=np.float64) / 16.0
    return Digits(images=images, labels=np.asarray(bunch.target, dtype=np.int64))


def upscale(scan: FloatArray, size: int) -> FloatArray:
    """A scan (0..1) resized to ``size`` x ``size`` with bilinear interpolation: smoother
    strokes than nearest, closer to what a camera sees. Returns 0..1 floats."""
    img = Image.fromarray(np.round(scan * 255.0).astype(np.uint8), mode="L")
    big = img.resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(big, dtype=np.float64) / 255.0


def to_u8(values: FloatArray) -> U8Array:
    """0..1 floats (or 0..255 when already scaled by the caller) as 8-bit pixels."""
    return np.clip(np.round(values), 0, 255).astype(np.uint8)


class Deck:
    """Draws scans of a given digit without replacement, reshuffling when exhausted, so every
    scan is used about equally often when a dataset needs more scans than there are."""

    def __init__(self, labels: npt.NDArray[np.int64], rng: np.random.Generator) -> None:
        self._rng = rng
        self._pool = {d: np.flatnonzero(labels == d) for d in range(10)}
        self._left: dict[int, list[int]] = {d: [] for d in range(10)}

    def draw(self, digit: int) -> int:
        """Index of the next scan of ``digit``."""
        if not self._left[digit]:
            self._left[digit] = [int(i) for i in self._rng.permutation(self._pool[digit])]
        return self._left[digit].pop()


# --- digits-imagefolder ---------------------------------------------------------------------


def write_imagefolder(root: Path, digits: Digits, opts: Options) -> int:
    """ImageFolder layout, one sub-folder per digit name; returns the number of images.

    Ink stays white on black, as scanned (and as MNIST): the values 0..16 become 0..255. The
    file name keeps the scan's index in scikit-learn's order, so an image can be traced back.
    """
    indices = np.arange(len(digits.labels))
    if opts.limit is not None:
        # A seeded subset rather than the first N, so that every digit is represented.
        rng = np.random.default_rng(opts.seed)
        indices = np.sort(rng.permutation(indices)[: opts.limit])
    for name in DIGIT_NAMES:
        (root / name).mkdir(parents=True)
    for i in indices:
        name = DIGIT_NAMES[int(digits.labels[i])]
        pixels = to_u8(upscale(digits.images[i], 32) * 255.0)
        Image.fromarray(pixels, mode="L").save(root / name / f"digit-{int(i):04d}.png")
    return len(indices)


# --- digits-tags ----------------------------------------------------------------------------


def write_tags(root: Path, digits: Digits, opts: Options) -> int:
    """Two scans side by side (each 32x32, so 64 wide by 32 high) and ``tags.csv``; returns
    the number of images. The concept slots are drawn first (0, 1 or 2 of them), then their
    digits, so the share of images without concept is controlled rather than left to chance."""
    rng = np.random.default_rng([opts.seed, 2])
    deck = Deck(digits.labels, rng)
    others = [d for d in range(10) if d not in TAG_CONCEPTS]
    count = TAG_IMAGES if opts.limit is None else min(opts.limit, TAG_IMAGES)
    (root / "images").mkdir(parents=True)
    rows: list[tuple[str, str]] = []
    for n in range(count):
        slots = int(rng.choice(3, p=TAG_CONCEPT_SLOTS))
        pair = [int(rng.choice(TAG_CONCEPTS)) for _ in range(slots)]
        pair += [int(rng.choice(others)) for _ in range(2 - slots)]
        pair = [pair[int(j)] for j in rng.permutation(2)]
        halves = [upscale(digits.images[deck.draw(d)], 32) for d in pair]
        pixels = to_u8(np.concatenate(halves, axis=1) * 255.0)
        rel = f"images/tag-{n:04d}.png"
        Image.fromarray(pixels, mode="L").save(root / rel)
        names = sorted({DIGIT_NAMES[d] for d in pair if d in TAG_CONCEPTS})
        rows.append((rel, "|".join(names)))
    with (root / "tags.csv").open("w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(("image", "concepts"))
        writer.writerows(rows)
    return count


# --- digits-detection -----------------------------------------------------------------------


def load_photos() -> list[U8Array]:
    """RGB arrays of the photos in ``PHOTO_FILES`` that the scikit-image wheel ships; empty
    when scikit-image is absent. Read straight from disk: ``skimage.data`` loaders may fetch."""
    try:
        import skimage  # noqa: PLC0415 - optional dependency, only for backgrounds
    except ImportError:
        return []
    folder = Path(skimage.__file__).parent / "data"
    photos = []
    for name in PHOTO_FILES:
        path = folder / name
        if path.is_file():
            with Image.open(path) as img:
                rgb = np.asarray(img.convert("RGB"), dtype=np.uint8)
            if min(rgb.shape[:2]) >= DET_CANVAS:
                photos.append(rgb)
    return photos


def background(rng: np.random.Generator, photos: Sequence[U8Array]) -> FloatArray:
    """A light canvas (H, W, 3) in 0..255: a photo crop squeezed into 110..225, or grey noise
    with a gentle gradient. Kept light so that dark ink always stands out."""
    size = DET_CANVAS
    if photos and rng.random() < DET_PHOTO_FRACTION:
        photo = photos[int(rng.integers(len(photos)))]
        y = int(rng.integers(photo.shape[0] - size + 1))
        x = int(rng.integers(photo.shape[1] - size + 1))
        crop = photo[y : y + size, x : x + size].astype(np.float64)
        return 110.0 + crop * (115.0 / 255.0)
    base = rng.uniform(150.0, 215.0)
    ramp = np.linspace(-1.0, 1.0, size)[None, :] * rng.uniform(-15.0, 15.0)
    grey = base + ramp + rng.normal(0.0, 10.0, (size, size))
    return np.repeat(grey[:, :, None], 3, axis=2)


def place(
    rng: np.random.Generator, sizes: Sequence[int], margin: int = 2
) -> list[tuple[int, int]] | None:
    """Top-left corners for squares of ``sizes`` that do not overlap (``margin`` px apart),
    by rejection sampling; None when it fails, and the caller draws new sizes."""
    corners: list[tuple[int, int]] = []
    for s in sizes:
        for _ in range(100):
            x, y = (int(v) for v in rng.integers(0, DET_CANVAS - s + 1, size=2))
            clear = all(
                x + s + margin <= cx or cx + cs + margin <= x
                or y + s + margin <= cy or cy + cs + margin <= y
                for (cx, cy), cs in zip(corners, sizes, strict=False)
            )  # fmt: skip
            if clear:
                corners.append((x, y))
                break
        else:
            return None
    return corners


def canvas_digits(rng: np.random.Generator) -> list[int]:
    """Digits for one canvas: 1-3, at least one concept unless the canvas is an empty one
    (distractors only, no box)."""
    concepts = list(DET_CONCEPTS)
    if rng.random() < DET_EMPTY_FRACTION:
        return [int(rng.choice(DET_DISTRACTORS)) for _ in range(int(rng.integers(1, 3)))]
    digits = [int(rng.choice(concepts))]
    for _ in range(int(rng.integers(0, 3))):
        pool = concepts if rng.random() < 0.6 else list(DET_DISTRACTORS)
        digits.append(int(rng.choice(pool)))
    return digits


def write_detection(root: Path, digits: Digits, opts: Options) -> int:
    """Canvases and a COCO ``annotations.json``; returns the number of canvases.

    Ink is printed dark on a light background, the way digits look on paper, by alpha-blending
    with the scan as the alpha. Boxes are the ink's bounding box inside each pasted square.
    """
    rng = np.random.default_rng([opts.seed, 3])
    deck = Deck(digits.labels, rng)
    photos = load_photos()
    count = DET_IMAGES if opts.limit is None else min(opts.limit, DET_IMAGES)
    (root / "images").mkdir(parents=True)
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for n in range(count):
        chosen = canvas_digits(rng)
        corners = None
        while corners is None:
            sizes = [int(rng.integers(DET_SCALE[0], DET_SCALE[1] + 1)) for _ in chosen]
            corners = place(rng, sizes)
        canvas = background(rng, photos)
        image_id = n + 1
        for digit, size, (x, y) in zip(chosen, sizes, corners, strict=True):
            alpha = upscale(digits.images[deck.draw(digit)], size)
            ink = rng.uniform(0.0, 50.0)
            patch = canvas[y : y + size, x : x + size]
            patch[...] = patch * (1.0 - alpha[:, :, None]) + ink * alpha[:, :, None]
            if digit not in DET_CONCEPTS:
                continue
            rows = np.flatnonzero((alpha >= INK_THRESHOLD).any(axis=1))
            cols = np.flatnonzero((alpha >= INK_THRESHOLD).any(axis=0))
            bx, by = x + int(cols[0]), y + int(rows[0])
            bw, bh = int(cols[-1] - cols[0]) + 1, int(rows[-1] - rows[0]) + 1
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": DET_CONCEPTS[digit],
                    "bbox": [bx, by, bw, bh],
                    "area": bw * bh,
                    "iscrowd": 0,
                }
            )
        rel = f"images/canvas-{n:04d}.png"
        Image.fromarray(to_u8(canvas), mode="RGB").save(root / rel)
        images.append({"id": image_id, "file_name": rel, "width": DET_CANVAS, "height": DET_CANVAS})
    coco = {
        # pycocotools copies "info" and "licenses" when loading results: keep them present.
        "info": {"description": "kubevision example: digits scans pasted on canvases"},
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": [
            {"id": cid, "name": DIGIT_NAMES[d], "supercategory": "digit"}
            for d, cid in DET_CONCEPTS.items()
        ],
    }
    (root / "annotations.json").write_text(json.dumps(coco, indent=1) + "\n")
    return count


# --- driver ---------------------------------------------------------------------------------

Writer = Callable[[Path, Digits, Options], int]

DATASETS: Final[dict[str, Writer]] = {
    "digits-imagefolder": write_imagefolder,
    "digits-tags": write_tags,
    "digits-detection": write_detection,
}


def marker_for(name: str, opts: Options) -> dict[str, Any]:
    """What the marker records: enough to tell whether a folder matches these options."""
    return {"dataset": name, "version": FORMAT_VERSION, "seed": opts.seed, "limit": opts.limit}


def is_complete(folder: Path, expected: dict[str, Any]) -> bool:
    """Whether ``folder`` holds a dataset written with the same parameters and still has all
    of its images (a user may have deleted some)."""
    try:
        found = json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(found, dict) or {k: found.get(k) for k in expected} != expected:
        return False
    return sum(1 for _ in folder.rglob("*.png")) == found.get("images")


def prepare(name: str, digits: Callable[[], Digits], opts: Options, force: bool) -> bool:
    """Write dataset ``name`` under ``opts.out`` unless already complete; True if written.

    The dataset is built in a temporary sibling folder and renamed into place, so an
    interrupted run never leaves a half-written folder that looks complete.

    Raises:
        FileExistsError: the folder exists but was not written by this script; it is left
            alone rather than deleted.
    """
    folder = opts.out / name
    expected = marker_for(name, opts)
    if not force and is_complete(folder, expected):
        LOG.info("%s: complete, skipped", folder)
        return False
    if folder.exists() and not (folder / MARKER).is_file():
        raise FileExistsError(f"{folder}: exists but was not written by prepare.py; remove it")
    opts.out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=opts.out))
    try:
        started = time.perf_counter()
        count = DATASETS[name](tmp, digits(), opts)
        marker = {**expected, "images": count}
        (tmp / MARKER).write_text(json.dumps(marker, indent=1) + "\n")
        if folder.exists():
            shutil.rmtree(folder)
        tmp.rename(folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    LOG.info("%s: %d images in %.1f s", folder, count, time.perf_counter() - started)
    return True


def cached(make: Callable[[], Digits]) -> Callable[[], Digits]:
    """``make`` called at most once: a run that skips every dataset never loads the scans."""
    box: list[Digits] = []

    def get() -> Digits:
        if not box:
            box.append(make())
        return box[0]

    return get


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).resolve().parent / "data",
        help="Output folder (default: examples/data beside this script).",
    )
    parser.add_argument(
        "--only",
        action="append",
        choices=list(DATASETS),
        metavar="NAME",
        help=f"Only this dataset (repeatable): {', '.join(DATASETS)}.",
    )
    parser.add_argument(
        "--limit", type=int, metavar="N", help="At most N images per dataset (for tests)."
    )
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="Random seed.")
    parser.add_argument("--force", action="store_true", help="Rebuild even if complete.")
    args = parser.parse_args(argv)
    if args.limit is not None and args.limit < 1:
        parser.error("--limit must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: prepare the chosen datasets; returns the exit code."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = parse_args(argv)
    opts = Options(out=args.out, seed=args.seed, limit=args.limit)
    digits = cached(load_scans)
    started = time.perf_counter()
    try:
        for name in args.only or list(DATASETS):
            prepare(name, digits, opts, args.force)
    except (OSError, ValueError) as exc:
        LOG.error("prepare.py: %s", exc)
        return 1
    LOG.info("done in %.1f s: %s", time.perf_counter() - started, opts.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
