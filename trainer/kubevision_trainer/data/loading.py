"""The LoadingDataset step: read every image once, hash it, decode it (the whole compressed
stream, so bad files fail before the first training step, naming file and record), put its
training-resolution copy in a local content-addressed cache (``data.cache``: training then
reads small local files, whatever the storage and the photos' size), and bring boxes into the
upright image, from the frame that ``spec.dataset.boxFrame`` declares (never guessed from
sizes: a square photo has the same size in both frames)."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kubevision_api import imaging
from kubevision_api.contract import StorageRole
from kubevision_api.errors import InputError
from kubevision_api.modelversion import Augmentation, ImageResizer
from kubevision_api.plan import TrainingPlan
from kubevision_api.view import DEFAULT_MAX_IMAGE_PIXELS, BoxFrame
from kubevision_trainer import storage, transforms
from kubevision_trainer.data import cache
from kubevision_trainer.data.sample import Sample

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadOptions:
    """How images are decoded and boxes brought to them.

    Attributes:
        box_frame: ``spec.dataset.boxFrame``: the image the boxes and declared sizes refer to.
        max_pixels: ``spec.dataset.maxImagePixels``.
        resizer: the ModelVersion's ``imageResizer``, or None: large images are decoded at a
            reduced scale that still serves it and cached at training resolution
            (``cache.cache_size``), and boxes under 1 px at its size are dropped and counted.
            Without a resizer, the cache holds the source files.
        augmentations: the ModelVersion's augmentations (the cached size serves them too).
    """

    box_frame: BoxFrame = BoxFrame.UPRIGHT
    max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
    resizer: ImageResizer | None = None
    augmentations: tuple[Augmentation, ...] = ()

    @classmethod
    def of(cls, plan: TrainingPlan) -> LoadOptions:
        """The options of a plan: its View's ``spec.dataset``, its ``imageResizer`` and
        augmentations."""
        return cls(
            plan.dataset.box_frame,
            plan.dataset.max_image_pixels,
            plan.spec.image_resizer,
            tuple(plan.spec.augmentation),
        )

    @property
    def target(self) -> int | None:
        """The largest side of the network input (``imaging.decode_image``'s ``target``)."""
        return None if self.resizer is None else max(self.resizer.width, self.resizer.height)


@dataclass(frozen=True)
class CachedImage:
    """A validated image in the local cache.

    Attributes:
        sample: the sample, boxes in pixels of the upright image (``boxes_oriented``), without
            those under 1 px at the resizer's size.
        sha256: hex digest of the file's bytes (dataset.json's content hash).
        local_path: the cached copy: the training-resolution copy (``cache.RAW`` or
            ``cache.PNG``, upright, ``cached_size``) or the source file's bytes.
        width, height: size of the upright image at full scale, pixels.
        target: ``imaging.decode_image``'s ``target`` for the source file (the decoded picture
            may be smaller than ``width`` x ``height``; boxes then scale with it).
        small_boxes: boxes dropped for being under 1 px at the resizer's size.
        cached_size: ``(width, height)`` of the training-resolution copy, or None when
            ``local_path`` is the source file.
    """

    sample: Sample
    sha256: str
    local_path: Path
    width: int
    height: int
    target: int | None = None
    small_boxes: int = 0
    cached_size: tuple[int, int] | None = None


def _upright(
    sample: Sample,
    orientation: int,
    raw: tuple[int, int],
    upright: tuple[int, int],
    frame: BoxFrame,
) -> Sample:
    """The sample with its boxes in the upright image, from the frame the View declares.

    Raises:
        InputError: the declared size is not the size of the image in that frame, naming the
            file, the record, both sizes of the image and the orientation.
    """
    if not sample.boxes or sample.boxes_oriented:
        return sample
    declared = sample.size
    expected = upright if frame is BoxFrame.UPRIGHT else raw
    if declared is not None and declared != expected:
        raise InputError(
            sample.uri,
            _frame_mismatch(declared, orientation, raw, upright, frame),
            record=sample.record,
            field="width/height",
        )
    if frame is BoxFrame.UPRIGHT or orientation == 1:
        return dataclasses.replace(sample, boxes_oriented=True)
    boxes = imaging.orient_boxes(np.asarray(sample.boxes, dtype=np.float64), orientation, raw)
    oriented = tuple((float(b[0]), float(b[1]), float(b[2]), float(b[3])) for b in boxes)
    return dataclasses.replace(sample, boxes=oriented, boxes_oriented=True)


def _frame_mismatch(
    declared: tuple[int, int],
    orientation: int,
    raw: tuple[int, int],
    upright: tuple[int, int],
    frame: BoxFrame,
) -> str:
    def px(size: tuple[int, int]) -> str:
        return f"{size[0]}x{size[1]} px"

    if orientation == 1:
        image = f"the image is {px(raw)} (no EXIF orientation)"
    else:
        image = (
            f"the image is {px(upright)} upright and {px(raw)} as stored "
            f"(EXIF orientation {orientation})"
        )
    message = (
        f"the annotation declares {px(declared)}, but {image}; spec.dataset.boxFrame is "
        f"{frame.value}"
    )
    other, other_size = (
        (BoxFrame.STORED, raw) if frame is BoxFrame.UPRIGHT else (BoxFrame.UPRIGHT, upright)
    )
    if declared == other_size:
        message += (
            f": if the boxes were drawn on the {other.value} image, set spec.dataset.boxFrame: "
            f"{other.value}"
        )
    return message


def _without_small_boxes(
    sample: Sample, upright: tuple[int, int], resizer: ImageResizer | None
) -> tuple[Sample, int]:
    """The sample without the boxes that the resizer leaves under 1 px, and their number."""
    if resizer is None or not sample.boxes:
        return sample, 0
    kept = transforms.kept_boxes(sample.boxes, (upright[1], upright[0]), resizer)
    if all(kept):
        return sample, 0
    boxes = tuple(b for b, keep in zip(sample.boxes, kept, strict=True) if keep)
    labels = tuple(label for label, keep in zip(sample.box_labels, kept, strict=True) if keep)
    smaller = dataclasses.replace(
        sample, boxes=boxes, box_labels=labels, labels=tuple(sorted(set(labels)))
    )
    return smaller, len(kept) - len(boxes)


class _PixelBudget:
    """Stored pixels being decoded at once by the loading threads: at most ``limit`` (the
    View's ``maxImagePixels``), so that several huge images never decode together; files are
    still read in parallel. An image counts for at most ``limit``, so each one can start."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self.changed = threading.Condition()

    @contextlib.contextmanager
    def hold(self, pixels: int) -> Iterator[None]:
        """Wait until ``pixels`` fit in the budget, and hold them for the block."""
        pixels = min(pixels, self.limit)
        with self.changed:
            self.changed.wait_for(lambda: self.used + pixels <= self.limit)
            self.used += pixels
        try:
            yield
        finally:
            with self.changed:
                self.used -= pixels
                self.changed.notify_all()


def _load_one(
    sample: Sample, cache_dir: Path, options: LoadOptions, budget: _PixelBudget
) -> CachedImage:
    data = storage.read_bytes(sample.uri, role=StorageRole.DATASET)
    digest = storage.sha256(data)
    size = imaging.stored_size(data) or (0, 0)
    copy: Path | None = None
    small_size: tuple[int, int] | None = None
    try:
        with budget.hold(size[0] * size[1]):
            picture, orientation, raw = imaging.decode_image(
                data, sample.uri, max_pixels=options.max_pixels, target=options.target
            )
            upright_full = imaging.upright_size(raw, orientation)
            if options.resizer is not None:
                small_size = cache.cache_size(*upright_full, options.resizer, options.augmentations)
                if small_size != upright_full:
                    copy = cache.store(picture, small_size, len(data), cache_dir, digest)
    except InputError as exc:
        raise InputError(exc.source, exc.message, record=sample.record or None) from exc
    if copy is None:
        small_size = None
        suffix = Path(sample.path).suffix.lower()[:8]
        copy = cache_dir / digest[:2] / f"{digest}{suffix}"
        if not copy.exists():
            cache.write(copy, data)
    oriented = _upright(sample, orientation, raw, upright_full, options.box_frame)
    kept, small = _without_small_boxes(oriented, upright_full, options.resizer)
    return CachedImage(
        kept, digest, copy, upright_full[0], upright_full[1], options.target, small, small_size
    )


def load_images(
    samples: Sequence[Sample],
    cache_dir: Path,
    *,
    threads: int = 8,
    progress: Callable[[int, int], None] | None = None,
    options: LoadOptions | None = None,
) -> list[CachedImage]:
    """Read, hash, decode and cache every sample's image, in input order.

    Args:
        samples: the samples to load.
        cache_dir: local folder of the content-addressed cache (created if needed).
        threads: concurrent reads (I/O bound on object storage).
        progress: called with (done, total) as images complete.
        options: frame of the boxes, pixel limit and resizer (defaults: :class:`LoadOptions`).

    Raises:
        InputError: an image is missing, unreadable, empty, not decodable or over the pixel
            limit, or its annotation's size is not the size of the image in the declared
            frame; the first such error in input order, naming file and record.
    """
    options = options or LoadOptions()
    cache_dir.mkdir(parents=True, exist_ok=True)
    total = len(samples)
    out: list[CachedImage] = []
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        budget = _PixelBudget(options.max_pixels)
        futures = [pool.submit(_load_one, sample, cache_dir, options, budget) for sample in samples]
        for done, future in enumerate(futures, start=1):
            out.append(future.result())
            if progress is not None and (done == total or done % 100 == 0):
                progress(done, total)
    return out
