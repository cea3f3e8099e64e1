"""COCO JSON reader (``images``, ``annotations``, ``categories``), for every task.

Categories map to the View's concepts by name, so ids may be anything (1, 3, 7 ...).
Annotations of categories the View lacks are ignored and counted by name. ``file_name`` is
relative to the annotation file's folder.

Task rules:

- detection: each known annotation needs a ``bbox`` ``[x, y, width, height]`` inside the declared
  ``width`` x ``height`` (1 px tolerance, then clipped); images without any box are left out and
  counted as ``NoBoxes``. Boxes stay in stored-pixel coordinates (``boxes_oriented`` False): only
  decoding tells the oriented size, so the dataset loader compares ``size`` with the decoded one.
- classification: each image needs exactly one distinct concept among its annotations (with or
  without ``bbox``, which is not checked). An image whose annotations all name concepts that the
  View lacks is left out (``ConceptNotInView``): a View may take a subset of the concepts.
- tagging: the distinct concepts of the image's annotations; none is an all-negative image.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from kubevision_api import errors, view
from kubevision_api.contract import StorageRole
from kubevision_trainer import storage
from kubevision_trainer.data import paths
from kubevision_trainer.data.sample import Box, ReadResult, Sample

#: Pixels a box may overhang the declared image size (rounding in annotation tools).
TOLERANCE = 1.0


@dataclass
class _Image:
    record: str
    path: str
    size: tuple[int, int] | None
    labels: set[int] = field(default_factory=set)
    boxes: list[Box] = field(default_factory=list)
    box_labels: list[int] = field(default_factory=list)
    ignored: int = 0


def read(source_uri: str, task: view.Task, concepts: list[str]) -> ReadResult:
    """Read a COCO annotation file.

    Args:
        source_uri: fsspec URI of the JSON file; image URIs are ``file_name`` joined to its
            folder.
        task: the View's task.
        concepts: concept names in class-index order (index ``i`` is ``concepts[i]``).

    Returns:
        Samples sorted by path: ``labels`` sorted class indices; for detection ``boxes`` as
        float ``(x1, y1, x2, y2)`` stored-image pixels with ``box_labels`` (0-based) and
        ``size`` the declared ``(width, height)``. ``skipped`` counts ``NoBoxes`` and
        ``ConceptNotInView``; ``ignored_annotations`` counts annotations by unknown concept name.

    Raises:
        InputError: unreadable JSON, a missing top-level key, or a bad record: a duplicated or
            missing id, an ``image_id`` or ``category_id`` that does not exist, a ``bbox`` that
            is not 4 finite numbers, has no area or lies outside the image, or a classification
            image without exactly one concept. Names the file, the record and the field.
    """
    document = _load(source_uri)
    categories = _categories(document, source_uri)
    images = _images(document, source_uri, need_size=task is view.Task.DETECTION)
    index = {name: i for i, name in enumerate(concepts)}
    result = ReadResult(samples=[], source=source_uri)

    for i, annotation in enumerate(_list(document, "annotations", source_uri)):
        record = f"annotations[{i}]"
        if not isinstance(annotation, dict):
            raise errors.InputError(source_uri, "must be a JSON object", record=record)
        if "id" in annotation:
            record += f" (id {annotation['id']})"
        image_key = _key(annotation.get("image_id"))
        image = None if image_key is None else images.get(image_key)
        if image is None:
            raise errors.InputError(
                source_uri,
                f"image {annotation.get('image_id')!r} is not in images",
                record=record,
                field="image_id",
            )
        category_key = _key(annotation.get("category_id"))
        name = None if category_key is None else categories.get(category_key)
        if name is None:
            raise errors.InputError(
                source_uri,
                f"category {annotation.get('category_id')!r} is not in categories",
                record=record,
                field="category_id",
            )
        if name not in index:
            result.ignored_annotations[name] += 1
            image.ignored += 1
            continue
        label = index[name]
        image.labels.add(label)
        if task is view.Task.DETECTION:
            assert image.size is not None  # _images requires sizes for detection
            image.boxes.append(_box(annotation.get("bbox"), image.size, source_uri, record))
            image.box_labels.append(label)

    folder = source_uri.rsplit("/", 1)[0] if "/" in source_uri else "."
    for image in images.values():
        sample = _sample(image, task, concepts, folder, result)
        if sample is not None:
            result.samples.append(sample)
    result.samples.sort(key=lambda s: s.path)
    return result


def _sample(
    image: _Image, task: view.Task, concepts: list[str], folder: str, result: ReadResult
) -> Sample | None:
    """The image's sample, or None (counted in ``result.skipped``) when the task leaves it out."""
    uri = storage.join(folder, image.path)
    labels = tuple(sorted(image.labels))
    if task is view.Task.DETECTION:
        if not image.boxes:
            result.skipped["NoBoxes"] += 1
            return None
        return Sample(
            path=image.path,
            uri=uri,
            labels=labels,
            boxes=tuple(image.boxes),
            box_labels=tuple(image.box_labels),
            size=image.size,
            record=image.record,
        )
    if task is view.Task.CLASSIFICATION and len(labels) != 1:
        if not labels and image.ignored:
            result.skipped["ConceptNotInView"] += 1
            return None
        if not labels:
            problem = "has no annotation"
        else:
            names = ", ".join(concepts[label] for label in labels)
            problem = f"has {len(labels)} concepts ({names})"
        raise errors.InputError(
            result.source,
            f"{problem}; classification needs exactly one concept per image",
            record=image.record,
        )
    return Sample(path=image.path, uri=uri, labels=labels, size=image.size, record=image.record)


def _load(source_uri: str) -> dict[str, Any]:
    data = storage.read_bytes(source_uri, role=StorageRole.DATASET)
    try:
        document = json.loads(data)
    except json.JSONDecodeError as exc:
        raise errors.InputError(
            source_uri, f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from exc
    except UnicodeDecodeError as exc:
        raise errors.InputError(source_uri, f"not UTF-8 text: {exc}") from exc
    if not isinstance(document, dict):
        raise errors.InputError(source_uri, "a COCO file must be a JSON object")
    return document


def _list(document: dict[str, Any], key: str, source_uri: str) -> list[Any]:
    if key not in document:
        raise errors.InputError(source_uri, "missing top-level key", field=key)
    value = document[key]
    if not isinstance(value, list):
        raise errors.InputError(source_uri, "must be a list", field=key)
    return value


def _key(value: Any) -> int | str | None:
    # JSON ids are ints in COCO, strings in some exporters; bools and floats are mistakes.
    if isinstance(value, bool) or not isinstance(value, int | str):
        return None
    return value


def _id(entry: Any, source_uri: str, record: str) -> int | str:
    if not isinstance(entry, dict):
        raise errors.InputError(source_uri, "must be a JSON object", record=record)
    key = _key(entry.get("id"))
    if key is None:
        raise errors.InputError(
            source_uri,
            f"id {entry.get('id')!r} must be an integer or a string",
            record=record,
            field="id",
        )
    return key


def _categories(document: dict[str, Any], source_uri: str) -> dict[int | str, str]:
    names: dict[int | str, str] = {}
    for i, category in enumerate(_list(document, "categories", source_uri)):
        key = _id(category, source_uri, f"categories[{i}]")
        record = f"categories[{i}] (id {key})"
        if key in names:
            raise errors.InputError(source_uri, "duplicated category id", record=record, field="id")
        name = category.get("name")
        if not isinstance(name, str) or not name:
            raise errors.InputError(
                source_uri, "must be a non-empty string", record=record, field="name"
            )
        names[key] = name
    return names


def _images(
    document: dict[str, Any], source_uri: str, *, need_size: bool
) -> dict[int | str, _Image]:
    images: dict[int | str, _Image] = {}
    records_by_path: dict[str, str] = {}
    for i, entry in enumerate(_list(document, "images", source_uri)):
        key = _id(entry, source_uri, f"images[{i}]")
        record = f"images[{i}] (id {key})"
        if key in images:
            raise errors.InputError(source_uri, "duplicated image id", record=record, field="id")
        path = paths.relative_path(entry.get("file_name"), source_uri, record, "file_name")
        if path in records_by_path:
            raise errors.InputError(
                source_uri,
                f"{path!r} is already the file of {records_by_path[path]}",
                record=record,
                field="file_name",
            )
        records_by_path[path] = record
        size = _size(entry, source_uri, record, need_size=need_size)
        images[key] = _Image(record=record, path=path, size=size)
    return images


def _size(
    entry: dict[str, Any], source_uri: str, record: str, *, need_size: bool
) -> tuple[int, int] | None:
    values = []
    for key in ("width", "height"):
        value = entry.get(key)
        if value is None and not need_size:
            return None
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not (math.isfinite(value) and value == int(value) and value > 0)
        ):
            why = "detection needs it" if value is None else f"got {value!r}"
            raise errors.InputError(
                source_uri, f"must be a positive integer ({why})", record=record, field=key
            )
        values.append(int(value))
    return values[0], values[1]


def _box(value: Any, size: tuple[int, int], source_uri: str, record: str) -> Box:
    """``[x, y, w, h]`` checked against ``size`` and clipped to it, as ``(x1, y1, x2, y2)``."""

    def fail(message: str) -> errors.InputError:
        return errors.InputError(source_uri, message, record=record, field="bbox")

    numbers = (
        isinstance(value, list)
        and len(value) == 4
        and all(
            isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
            for v in value
        )
    )
    if not numbers:
        raise fail(f"{json.dumps(value)} is not 4 finite numbers [x, y, width, height]")
    x, y, w, h = (float(v) for v in value)
    shown = f"bbox {json.dumps(value)}"
    if w <= 0 or h <= 0:
        raise fail(
            f"{shown}: width {w:g} and height {h:g} must both be positive "
            "(COCO bbox is [x, y, width, height])"
        )
    width, height = size
    problems = []
    if x < -TOLERANCE:
        problems.append(f"x={x:g} is left of the image")
    if y < -TOLERANCE:
        problems.append(f"y={y:g} is above the image")
    if x + w > width + TOLERANCE:
        problems.append(f"x+w={x + w:g} exceeds width {width}")
    if y + h > height + TOLERANCE:
        problems.append(f"y+h={y + h:g} exceeds height {height}")
    if problems:
        # Boxes written as [x1, y1, x2, y2] are the usual mistake; say so when they fit that way.
        as_corners = (
            x >= -TOLERANCE
            and y >= -TOLERANCE
            and x < w <= width + TOLERANCE
            and y < h <= height + TOLERANCE
        )
        hint = (
            "; COCO bbox is [x, y, width, height], and these values would fit as [x1, y1, x2, y2]"
            if as_corners
            else f" (image {width}x{height}; COCO bbox is [x, y, width, height])"
        )
        raise fail(f"{shown}: {'; '.join(problems)}{hint}")
    x1, y1 = min(max(x, 0.0), width), min(max(y, 0.0), height)
    x2, y2 = min(max(x + w, 0.0), width), min(max(y + h, 0.0), height)
    if x2 <= x1 or y2 <= y1:
        raise fail(f"{shown}: no area left inside the {width}x{height} image")
    return (x1, y1, x2, y2)
