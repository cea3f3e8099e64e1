"""One entry point for every dataset format: pick the reader, refuse an empty result."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable

from kubevision_api import errors, view
from kubevision_trainer.data import coco, imagefolder, tags
from kubevision_trainer.data.sample import ReadResult

_log = logging.getLogger(__name__)

Reader = Callable[[str, view.Task, list[str]], ReadResult]

#: The reader of each format, all with the signature ``read(source_uri, task, concepts)``.
READERS: dict[view.DatasetFormat, Reader] = {
    view.DatasetFormat.COCO: coco.read,
    view.DatasetFormat.IMAGEFOLDER: imagefolder.read,
    view.DatasetFormat.TAGS_CSV: tags.read_csv,
    view.DatasetFormat.TAGS_JSONL: tags.read_jsonl,
}


def read_dataset(source: view.DatasetSource, task: view.Task, concepts: list[str]) -> ReadResult:
    """Read a View's dataset with the reader of its format.

    Args:
        source: the View's ``spec.dataset``; ``uri`` is an fsspec URI.
        task: the View's task.
        concepts: concept names in class-index order (index ``i`` is ``concepts[i]``, sorted by
            name: docs/trainer.md, "Classes and the split").

    Returns:
        The reader's result: samples sorted by path (detection: background images, without
        boxes, included), images skipped by reason, annotations ignored by concept name, the
        names the View lacks, boxes clipped and dropped.

    Raises:
        InputError: the format cannot carry the task, the reader refused the input (naming the
            file, record and field), or no usable image is left (detection: no image with a
            box), naming what was left out.
    """
    if task not in view.FORMAT_TASKS[source.format]:
        raise errors.InputError(
            source.uri,
            f"format {source.format.value} cannot carry a {task.value} task",
            field="format",
        )
    reader = READERS[source.format]
    if source.format is view.DatasetFormat.COCO:
        reader = functools.partial(coco.read, policy=source.box_policy)
    result = reader(source.uri, task, concepts)
    # Detection: background images alone train nothing.
    usable = [s for s in result.samples if s.boxes or task is not view.Task.DETECTION]
    if not usable:
        raise errors.InputError(
            result.source,
            f"the dataset has no usable image ({_summary(result, len(result.samples))})",
        )
    _log.info("read %d images from %s (%s)", len(result.samples), result.source, _summary(result))
    return result


def _summary(result: ReadResult, background: int = 0) -> str:
    skipped = ", ".join(f"{reason} {count}" for reason, count in sorted(result.skipped.items()))
    ignored = ", ".join(
        f"{name} {count}" for name, count in sorted(result.ignored_annotations.items())
    )
    dropped = ", ".join(
        f"{reason} {count}" for reason, count in sorted(result.boxes.dropped.items())
    )
    return (
        f"images skipped: {skipped or 'none'}; "
        + (f"images without boxes: {background}; " if background else "")
        + (f"boxes dropped: {dropped}; " if dropped else "")
        + f"annotations of concepts the View lacks: {ignored or 'none'}"
    )
