"""Tag-list readers: ``tags-csv`` and ``tags-jsonl``, for classification and tagging.

- tags-csv: header exactly ``image,concepts``; ``concepts`` separated by ``|``, empty for an
  image without concept. Parsed with the ``csv`` module, so quoted fields may hold commas.
- tags-jsonl: one ``{"image": str, "concepts": [str]}`` object per line; blank lines are
  passed over.

Image paths are relative to the annotation file's folder and listed once. Concepts the View
lacks are ignored and counted by name. Tagging: an image keeps its known concepts, none making
it all-negative. Classification: exactly one known concept per image; a row whose concepts are
all unknown to the View is left out (``ConceptNotInView``), a row without any is an error.
"""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from kubevision_api import errors, view
from kubevision_api.contract import StorageRole
from kubevision_trainer import storage
from kubevision_trainer.data import paths
from kubevision_trainer.data.sample import ReadResult, Sample

_HEADER = ["image", "concepts"]


def read_csv(source_uri: str, task: view.Task, concepts: list[str]) -> ReadResult:
    """Read a tags-csv file.

    Args:
        source_uri: fsspec URI of the CSV file (UTF-8, BOM allowed); image URIs are the
            ``image`` column joined to its folder.
        task: the View's task: classification or tagging.
        concepts: concept names in class-index order (index ``i`` is ``concepts[i]``).

    Returns:
        Samples sorted by path, ``labels`` sorted class indices; ``record`` is ``line N``.

    Raises:
        InputError: a detection task, not UTF-8, a header other than ``image,concepts``, a
            row without exactly 2 columns, an empty or non-relative image path, a duplicated
            image, or (for classification) a row without exactly one concept. Names the file,
            ``line N`` (1-based, as an editor counts) and the field.
    """
    _check_task(source_uri, task)
    reader = csv.reader(io.StringIO(_text(source_uri), newline=""))
    try:
        header = next(reader, None)
        if header is None or [cell.strip() for cell in header] != _HEADER:
            raise errors.InputError(
                source_uri,
                f"the first line must be exactly 'image,concepts', got {header!r}",
                record="line 1",
                field="header",
            )
        rows: list[tuple[int, Any, list[str]]] = []
        for row in reader:
            line = reader.line_num
            if not row:
                continue
            if len(row) != 2:
                raise errors.InputError(
                    source_uri,
                    f"expected 2 columns (image,concepts), got {len(row)}",
                    record=f"line {line}",
                )
            rows.append((line, row[0].strip(), row[1].split("|")))
    except csv.Error as exc:
        raise errors.InputError(
            source_uri, f"not valid CSV: {exc}", record=f"line {reader.line_num}"
        ) from exc
    return _build(rows, source_uri, task, concepts)


def read_jsonl(source_uri: str, task: view.Task, concepts: list[str]) -> ReadResult:
    """Read a tags-jsonl file.

    Args:
        source_uri: fsspec URI of the JSON-lines file (UTF-8); image URIs are ``image`` joined
            to its folder.
        task: the View's task: classification or tagging.
        concepts: concept names in class-index order (index ``i`` is ``concepts[i]``).

    Returns:
        Samples sorted by path, ``labels`` sorted class indices; ``record`` is ``line N``.

    Raises:
        InputError: a detection task, not UTF-8, a line that is not a JSON object, ``image``
            not a non-empty relative path, ``concepts`` not a list of strings, a duplicated
            image, or (for classification) a line without exactly one concept. Names the file,
            ``line N`` and the field.
    """
    _check_task(source_uri, task)
    rows: list[tuple[int, Any, list[str]]] = []
    for line, text in enumerate(_text(source_uri).splitlines(), start=1):
        if not text.strip():
            continue
        try:
            entry = json.loads(text)
        except json.JSONDecodeError as exc:
            raise errors.InputError(
                source_uri,
                f"not valid JSON: {exc.msg} at column {exc.colno}",
                record=f"line {line}",
            ) from exc
        if not isinstance(entry, dict):
            raise errors.InputError(
                source_uri,
                'must be an object {"image": ..., "concepts": [...]}',
                record=f"line {line}",
            )
        names = entry.get("concepts")
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise errors.InputError(
                source_uri,
                f"must be a list of strings, got {names!r}",
                record=f"line {line}",
                field="concepts",
            )
        rows.append((line, entry.get("image"), names))
    return _build(rows, source_uri, task, concepts)


def _check_task(source_uri: str, task: view.Task) -> None:
    if task is view.Task.DETECTION:
        raise errors.InputError(
            source_uri,
            "a tags file carries classification or tagging, not detection",
            field="format",
        )


def _text(source_uri: str) -> str:
    try:
        return storage.read_bytes(source_uri, role=StorageRole.DATASET).decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise errors.InputError(source_uri, f"not UTF-8 text: {exc}") from exc


def _build(
    rows: list[tuple[int, Any, list[str]]],
    source_uri: str,
    task: view.Task,
    concepts: list[str],
) -> ReadResult:
    index = {name: i for i, name in enumerate(concepts)}
    folder = source_uri.rsplit("/", 1)[0] if "/" in source_uri else "."
    result = ReadResult(samples=[], source=source_uri)
    seen: dict[str, int] = {}
    for line, image, names in rows:
        record = f"line {line}"
        path = paths.relative_path(image, source_uri, record, "image")
        if path in seen:
            raise errors.InputError(
                source_uri,
                f"image {path!r} is already listed on line {seen[path]}",
                record=record,
                field="image",
            )
        seen[path] = line
        labels: set[int] = set()
        unknown = 0
        # Empty parts (an empty cell, "a||b") carry no concept.
        for name in filter(None, (n.strip() for n in names)):
            if name in index:
                labels.add(index[name])
            else:
                result.ignored_annotations[name] += 1
                result.names_not_in_view.add(name)
                unknown += 1
        if task is view.Task.CLASSIFICATION and len(labels) != 1:
            if not labels and unknown:
                result.skipped["ConceptNotInView"] += 1
                continue
            listed = ", ".join(concepts[label] for label in sorted(labels)) or "none"
            raise errors.InputError(
                source_uri,
                f"classification needs exactly one concept per image, got {listed}",
                record=record,
                field="concepts",
            )
        result.samples.append(
            Sample(
                path=path,
                uri=storage.join(folder, path),
                labels=tuple(sorted(labels)),
                record=record,
            )
        )
    result.samples.sort(key=lambda s: s.path)
    return result
