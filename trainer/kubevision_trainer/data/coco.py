"""COCO JSON reader (``images``, ``annotations``, ``categories``), for every task.

Categories map to the View's concepts by name, so ids may be anything (1, 3, 7 ...).
Annotations of categories the View lacks are ignored and counted by name. ``file_name`` is
relative to the annotation file's folder.

Task rules:

- detection: each known annotation needs a ``bbox`` ``[x, y, width, height]``, checked against
  the declared ``width`` x ``height`` by ``spec.dataset.boxPolicy`` (``boxes.coco_box``: clipped,
  dropped and counted, or refused). An image without any box is a background image: a sample
  without boxes (the split keeps it out of training, in validation). Boxes and the declared size
  are in the frame that ``spec.dataset.boxFrame`` names; loading checks the size against the
  decoded image and brings the boxes upright.
- classification: each image needs exactly one distinct concept among its annotations (with or
  without ``bbox``, which is not checked). An image whose annotations all name concepts that the
  View lacks is left out (``ConceptNotInView``): a View may take a subset of the concepts.
- tagging: the distinct concepts of the image's annotations; none is an all-negative image.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, TypeVar

from kubevision_api import errors, view
from kubevision_api.contract import StorageRole
from kubevision_trainer import storage
from kubevision_trainer.data import boxes, paths
from kubevision_trainer.data.sample import Box, ReadResult, Sample

_T = TypeVar("_T")

#: How many valid ids an "unknown category" error lists.
MAX_IDS_LISTED = 20


@dataclass
class _Image:
    key: int | str
    record: str
    path: str
    size: tuple[int, int] | None
    labels: set[int] = field(default_factory=set)
    boxes: list[Box] = field(default_factory=list)
    box_labels: list[int] = field(default_factory=list)
    ignored: int = 0


def read(
    source_uri: str,
    task: view.Task,
    concepts: list[str],
    *,
    policy: view.BoxPolicy = view.BoxPolicy.CLIP,
) -> ReadResult:
    """Read a COCO annotation file.

    Args:
        source_uri: fsspec URI of the JSON file; image URIs are ``file_name`` joined to its
            folder.
        task: the View's task.
        concepts: concept names in class-index order (index ``i`` is ``concepts[i]``).
        policy: ``spec.dataset.boxPolicy``, for detection boxes.

    Returns:
        Samples sorted by path: ``labels`` sorted class indices; for detection ``boxes`` as
        float ``(x1, y1, x2, y2)`` pixels (none for a background image) with ``box_labels``
        (0-based) and ``size`` the declared ``(width, height)``. ``skipped`` counts
        ``ConceptNotInView``; ``ignored_annotations`` counts annotations by unknown concept
        name; ``names_not_in_view`` holds every category name the View lacks; ``boxes``
        counts the boxes clipped and dropped.

    Raises:
        InputError: unreadable JSON, a missing top-level key, or a bad record: a duplicated id
            (naming both records) or a missing one, an ``image_id`` or ``category_id`` of the
            wrong type or that does not exist (listing the category ids), bad boxes (up to
            ``boxes.MAX_LISTED`` listed, each naming annotation, image id and file), or a
            classification image without exactly one concept. Names the file, the record and
            the field.
    """
    document = _load(source_uri)
    categories, category_records = _categories(document, source_uri)
    images = _images(document, source_uri, need_size=task is view.Task.DETECTION)
    image_records = {key: image.record for key, image in images.items()}
    index = {name: i for i, name in enumerate(concepts)}
    result = ReadResult(samples=[], source=source_uri)
    result.names_not_in_view.update(name for name in categories.values() if name not in index)
    annotation_records: dict[int | str, str] = {}
    bad_boxes: list[tuple[str, str]] = []

    for i, annotation in enumerate(_list(document, "annotations", source_uri)):
        record = f"annotations[{i}]"
        if not isinstance(annotation, dict):
            raise errors.InputError(source_uri, "must be a JSON object", record=record)
        if "id" in annotation:
            record += f" (id {json.dumps(annotation['id'])})"
            key = _key(annotation["id"])
            if key is not None and key in annotation_records:
                raise errors.InputError(
                    source_uri,
                    f"duplicated annotation id: {annotation_records[key]} has it too",
                    record=record,
                    field="id",
                )
            if key is not None:
                annotation_records[key] = record
        image = _lookup(annotation, "image_id", images, source_uri, record, image_records)
        name = _lookup(annotation, "category_id", categories, source_uri, record, category_records)
        if name not in index:
            result.ignored_annotations[name] += 1
            image.ignored += 1
            continue
        label = index[name]
        if task is not view.Task.DETECTION:
            image.labels.add(label)
        else:
            assert image.size is not None  # _images requires sizes for detection
            try:
                box, dropped, clipped = boxes.coco_box(annotation.get("bbox"), image.size, policy)
            except boxes.BoxError as exc:
                where = f"{record[:-1]}, " if record.endswith(")") else f"{record} ("
                bad_boxes.append(
                    (f"{where}image_id {json.dumps(image.key)}, file {image.path!r})", str(exc))
                )
                continue
            result.boxes.clipped += clipped
            if box is None:
                assert dropped is not None
                result.boxes.dropped[dropped] += 1
                continue
            image.boxes.append(box)
            image.box_labels.append(label)
            image.labels.add(label)
    if len(bad_boxes) == 1:
        raise errors.InputError(source_uri, bad_boxes[0][1], record=bad_boxes[0][0], field="bbox")
    if bad_boxes:
        raise errors.InputError(source_uri, boxes.listing(bad_boxes))

    folder = source_uri.rsplit("/", 1)[0] if "/" in source_uri else "."
    for image in images.values():
        sample = _sample(image, task, concepts, folder, result)
        if sample is not None:
            result.samples.append(sample)
    result.samples.sort(key=lambda s: s.path)
    return result


def _lookup(
    annotation: dict[str, Any],
    field: str,
    table: dict[int | str, _T],
    source_uri: str,
    record: str,
    records: dict[int | str, str],
) -> _T:
    """The entry that ``annotation[field]`` names in ``table`` (images or categories).

    Raises:
        InputError: the value is missing or not an integer or a string; it is not in the table
            but its twin of the other JSON type is (``"2"`` for ``2``); or it is not there at
            all (categories list their ids).
    """
    value = annotation.get(field)
    key = _key(value)
    if key is None:
        raise errors.InputError(
            source_uri,
            f"must be an integer or a string, got {json.dumps(value)}",
            record=record,
            field=field,
        )
    if key in table:
        return table[key]
    what, plural = ("image", "images") if field == "image_id" else ("category", "categories")
    twin = _twin(key)
    if twin is not None and twin in table:
        where = records[twin]
        kinds = (
            ("a string", "the integer") if isinstance(key, str) else ("an integer", "the string")
        )
        raise errors.InputError(
            source_uri,
            f"{json.dumps(value)} is {kinds[0]}, but the id of {where.split(' ')[0]} is "
            f"{kinds[1]} {json.dumps(twin)} (ids must have the same JSON type)",
            record=record,
            field=field,
        )
    message = f"{what} {value!r} is not in {plural}"
    if what == "category":
        ids = sorted(
            table, key=lambda k: (isinstance(k, str), k if isinstance(k, int) else 0, str(k))
        )
        listed = ", ".join(json.dumps(k) for k in ids[:MAX_IDS_LISTED])
        more = f", ... ({len(ids)} in all)" if len(ids) > MAX_IDS_LISTED else ""
        message += f" (ids: {listed}{more})" if ids else " (there are none)"
    raise errors.InputError(source_uri, message, record=record, field=field)


def _twin(key: int | str) -> int | str | None:
    """The same id in the other JSON type: ``"2"`` for ``2`` and back; None when none."""
    if isinstance(key, int):
        return str(key)
    text = key.strip()
    if text.lstrip("-").isdigit():
        return int(text)
    return None


def _sample(
    image: _Image, task: view.Task, concepts: list[str], folder: str, result: ReadResult
) -> Sample | None:
    """The image's sample, or None (counted in ``result.skipped``) when the task leaves it out."""
    uri = storage.join(folder, image.path)
    labels = tuple(sorted(image.labels))
    if task is view.Task.DETECTION:
        # An image without boxes is a background image: the split keeps it for validation.
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


def _categories(
    document: dict[str, Any], source_uri: str
) -> tuple[dict[int | str, str], dict[int | str, str]]:
    """Category names by id, and the record of each id."""
    names: dict[int | str, str] = {}
    records: dict[int | str, str] = {}
    for i, category in enumerate(_list(document, "categories", source_uri)):
        key = _id(category, source_uri, f"categories[{i}]")
        record = f"categories[{i}] (id {json.dumps(key)})"
        if key in names:
            raise errors.InputError(
                source_uri,
                f"duplicated category id: {records[key]} has it too",
                record=record,
                field="id",
            )
        name = category.get("name")
        if not isinstance(name, str) or not name:
            raise errors.InputError(
                source_uri, "must be a non-empty string", record=record, field="name"
            )
        names[key] = name
        records[key] = record
    return names, records


def _images(
    document: dict[str, Any], source_uri: str, *, need_size: bool
) -> dict[int | str, _Image]:
    images: dict[int | str, _Image] = {}
    records_by_path: dict[str, str] = {}
    for i, entry in enumerate(_list(document, "images", source_uri)):
        key = _id(entry, source_uri, f"images[{i}]")
        record = f"images[{i}] (id {json.dumps(key)})"
        if key in images:
            raise errors.InputError(
                source_uri,
                f"duplicated image id: {images[key].record} has it too",
                record=record,
                field="id",
            )
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
        images[key] = _Image(key=key, record=record, path=path, size=size)
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
