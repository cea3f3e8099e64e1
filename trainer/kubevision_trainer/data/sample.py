"""What every dataset reader returns: samples with labels in class-index order, and what was
left out and why."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class Sample:
    """One image and its annotations, in the View's class-index order.

    Attributes:
        path: image path relative to the dataset root (the split and dataset.json key).
        uri: full fsspec URI of the image file.
        labels: class indices. Classification: exactly one; tagging: zero or more (zero is an
            all-negative "without concept" image); detection: the distinct box labels.
        boxes: detection boxes ``(x1, y1, x2, y2)`` in pixels of the stored image (before EXIF
            orientation), or of the displayed image when ``boxes_oriented``; float.
        box_labels: class index of each box (0-based; the detector adds 1 for background).
        size: ``(width, height)`` declared by the annotation file, if any.
        boxes_oriented: True when the annotation's size matches the EXIF-oriented image, so the
            boxes are already in displayed coordinates.
        record: where the sample came from, for error messages (``images[3] (id 17)``).
    """

    path: str
    uri: str
    labels: tuple[int, ...] = ()
    boxes: tuple[Box, ...] = ()
    box_labels: tuple[int, ...] = ()
    size: tuple[int, int] | None = None
    boxes_oriented: bool = False
    record: str = ""


@dataclass
class ReadResult:
    """Output of a reader.

    Attributes:
        samples: the usable samples, sorted by path.
        source: the annotation file (or root folder) URI, for messages.
        skipped: images left out, by CamelCase reason (``NoBoxes``, ...).
        ignored_annotations: annotations of concepts that the View lacks, by concept name.
    """

    samples: list[Sample]
    source: str
    skipped: Counter[str] = field(default_factory=Counter)
    ignored_annotations: Counter[str] = field(default_factory=Counter)
