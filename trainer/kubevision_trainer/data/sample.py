"""What every dataset reader returns: samples with labels in class-index order, and what was
left out and why."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from kubevision_api import status

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class Sample:
    """One image and its annotations, in the View's class-index order.

    Attributes:
        path: image path relative to the dataset root (the split and dataset.json key).
        uri: full fsspec URI of the image file.
        labels: class indices. Classification: exactly one; tagging: zero or more (zero is an
            all-negative "without concept" image); detection: the distinct box labels.
        boxes: detection boxes ``(x1, y1, x2, y2)`` in pixels, float: as read, in the frame
            that ``spec.dataset.boxFrame`` names (the upright or the stored image); after
            loading (``boxes_oriented``), in the upright image. Empty for a background image.
        box_labels: class index of each box (0-based; the detector adds 1 for background).
        size: ``(width, height)`` declared by the annotation file, if any.
        boxes_oriented: True once loading has brought the boxes into the upright image.
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
class BoxCounts:
    """Boxes clipped to their image, and dropped by CamelCase reason (``ZeroSize``,
    ``OutsideImage``, ``UnderOnePixelAfterResize``: ``boxes``' constants)."""

    clipped: int = 0
    dropped: Counter[str] = field(default_factory=Counter)

    def add(self, other: BoxCounts) -> None:
        """Add ``other``'s counts to these."""
        self.clipped += other.clipped
        self.dropped.update(other.dropped)

    def drop(self, reason: str, count: int) -> None:
        """Count ``count`` boxes dropped for ``reason`` (no entry for 0)."""
        if count:
            self.dropped[reason] += count

    def status(self) -> status.BoxCounts:
        """The counts as ``status.dataset.boxes``."""
        return status.BoxCounts(
            clipped=self.clipped,
            dropped=[
                status.DroppedBoxes(reason=reason, count=count)
                for reason, count in sorted(self.dropped.items())
            ],
        )

    def manifest(self) -> dict[str, object]:
        """The counts as dataset.json writes them: ``{"clipped": n, "dropped": {reason: n}}``."""
        return {"clipped": self.clipped, "dropped": dict(sorted(self.dropped.items()))}


@dataclass
class ReadResult:
    """Output of a reader.

    Attributes:
        samples: the usable samples, sorted by path.
        source: the annotation file (or root folder) URI, for messages.
        skipped: images left out, by CamelCase reason (``NoBoxes``, ...).
        ignored_annotations: annotations of concepts that the View lacks, by concept name.
        names_not_in_view: every concept-like name the data holds that the View lacks (folder
            names, category names, tag values), annotated or not: where a View concept that
            matches no image is looked for.
        boxes: detection boxes clipped and dropped by the reader.
    """

    samples: list[Sample]
    source: str
    skipped: Counter[str] = field(default_factory=Counter)
    ignored_annotations: Counter[str] = field(default_factory=Counter)
    names_not_in_view: set[str] = field(default_factory=set)
    boxes: BoxCounts = field(default_factory=BoxCounts)
