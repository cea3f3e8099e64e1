"""The LoadingDataset step: read every image once, hash it, decode it fully (so bad files fail
before the first training step, naming file and record), put it in a local content-addressed
cache (training then reads local files, whatever the storage), and bring boxes into the
coordinates of the EXIF-oriented image."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kubevision_api.contract import StorageRole
from kubevision_api.errors import InputError
from kubevision_trainer import storage
from kubevision_trainer.data import decode
from kubevision_trainer.data.sample import Sample

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CachedImage:
    """A validated image in the local cache.

    Attributes:
        sample: the sample, boxes in pixels of the EXIF-oriented image (``boxes_oriented``).
        sha256: hex digest of the file's bytes (dataset.json's content hash).
        local_path: the cached copy.
        width, height: size of the oriented image, pixels.
    """

    sample: Sample
    sha256: str
    local_path: Path
    width: int
    height: int


def _orient(
    sample: Sample, orientation: int, raw: tuple[int, int], shown: tuple[int, int]
) -> Sample:
    if not sample.boxes or sample.boxes_oriented:
        return sample
    declared = sample.size
    if declared is not None and declared != raw:
        if declared == shown:
            return dataclasses.replace(sample, boxes_oriented=True)
        raise InputError(
            sample.uri,
            f"the annotation declares {declared[0]}x{declared[1]} px but the image is "
            f"{raw[0]}x{raw[1]} px",
            record=sample.record,
            field="width/height",
        )
    boxes = decode.orient_boxes(np.asarray(sample.boxes, dtype=np.float64), orientation, raw)
    oriented = tuple((float(b[0]), float(b[1]), float(b[2]), float(b[3])) for b in boxes)
    return dataclasses.replace(sample, boxes=oriented, boxes_oriented=True)


def _load_one(sample: Sample, cache_dir: Path) -> CachedImage:
    data = storage.read_bytes(sample.uri, role=StorageRole.DATASET)
    digest = storage.sha256(data)
    try:
        image, orientation, raw = decode.decode_image(data, sample.uri)
    except InputError as exc:
        raise InputError(exc.source, exc.message, record=sample.record or None) from exc
    suffix = Path(sample.path).suffix.lower()[:8]
    local = cache_dir / digest[:2] / f"{digest}{suffix}"
    if not local.exists():
        local.parent.mkdir(parents=True, exist_ok=True)
        tmp = local.with_name(local.name + ".tmp")
        tmp.write_bytes(data)
        tmp.replace(local)
    oriented = _orient(sample, orientation, raw, image.size)
    return CachedImage(oriented, digest, local, image.size[0], image.size[1])


def load_images(
    samples: Sequence[Sample],
    cache_dir: Path,
    *,
    threads: int = 8,
    progress: Callable[[int, int], None] | None = None,
) -> list[CachedImage]:
    """Read, hash, decode and cache every sample's image, in input order.

    Args:
        samples: the samples to load.
        cache_dir: local folder of the content-addressed cache (created if needed).
        threads: concurrent reads (I/O bound on object storage).
        progress: called with (done, total) as images complete.

    Raises:
        InputError: an image is missing, unreadable or not decodable, or its annotation's
            size matches neither the stored nor the oriented image; the first such error in
            input order, naming file and record.
    """
    cache_dir.mkdir(parents=True, exist_ok=True)
    total = len(samples)
    out: list[CachedImage] = []
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        futures = [pool.submit(_load_one, sample, cache_dir) for sample in samples]
        for done, future in enumerate(futures, start=1):
            out.append(future.result())
            if progress is not None and (done == total or done % 100 == 0):
                progress(done, total)
    return out
