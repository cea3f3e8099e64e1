"""tags-csv and tags-jsonl readers."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from kubevision_api.errors import InputError
from kubevision_api.view import Task
from kubevision_trainer.data import tags
from kubevision_trainer.data.sample import ReadResult

CONCEPTS = ["cat", "dog", "zebra"]


def csv_file(tmp_path: Path, text: str) -> str:
    path = tmp_path / "labels" / "tags.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path.as_uri()


def jsonl_file(tmp_path: Path, lines: list[str]) -> str:
    path = tmp_path / "tags.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path.as_uri()


def error(read: Callable[[str, Task, list[str]], ReadResult], uri: str, task: Task) -> InputError:
    with pytest.raises(InputError) as caught:
        read(uri, task, CONCEPTS)
    assert caught.value.source == uri
    return caught.value


def test_csv_tagging(tmp_path: Path) -> None:
    uri = csv_file(
        tmp_path,
        'image,concepts\r\nimg/b.jpg,zebra|cat\r\n"img/a,1.jpg",dog | bird\r\n\r\nimg/c.jpg,\r\n',
    )
    result = tags.read_csv(uri, Task.TAGGING, CONCEPTS)
    assert [(s.path, s.labels, s.record) for s in result.samples] == [
        ("img/a,1.jpg", (1,), "line 3"),
        ("img/b.jpg", (0, 2), "line 2"),
        ("img/c.jpg", (), "line 5"),
    ]
    assert result.samples[1].uri == (tmp_path / "labels" / "img" / "b.jpg").as_uri()
    assert result.ignored_annotations == {"bird": 1}


def test_csv_classification(tmp_path: Path) -> None:
    uri = csv_file(tmp_path, "image,concepts\na.jpg,dog\nb.jpg,bird\nc.jpg,cat|bird\n")
    result = tags.read_csv(uri, Task.CLASSIFICATION, CONCEPTS)
    assert [(s.path, s.labels) for s in result.samples] == [("a.jpg", (1,)), ("c.jpg", (0,))]
    assert result.skipped == {"ConceptNotInView": 1}
    assert result.ignored_annotations == {"bird": 2}

    for row, listed in [("d.jpg,cat|dog", "cat, dog"), ("d.jpg,", "none")]:
        exc = error(
            tags.read_csv,
            csv_file(tmp_path, f"image,concepts\na.jpg,dog\n{row}\n"),
            Task.CLASSIFICATION,
        )
        assert (exc.record, exc.field) == ("line 3", "concepts")
        assert exc.message == f"classification needs exactly one concept per image, got {listed}"


@pytest.mark.parametrize(
    ("text", "record", "field"),
    [
        ("image;concepts\na.jpg;cat\n", "line 1", "header"),
        ("", "line 1", "header"),
        ("image,concepts\na.jpg,cat,dog\n", "line 2", None),
        ("image,concepts\na.jpg,cat\n./a.jpg,dog\n", "line 3", "image"),
        ("image,concepts\n../a.jpg,cat\n", "line 2", "image"),
        ("image,concepts\n,cat\n", "line 2", "image"),
    ],
    ids=["header", "empty", "columns", "duplicate", "outside", "no-image"],
)
def test_csv_errors(tmp_path: Path, text: str, record: str, field: str | None) -> None:
    exc = error(tags.read_csv, csv_file(tmp_path, text), Task.TAGGING)
    assert (exc.record, exc.field) == (record, field)


def test_csv_duplicate_names_the_first_line(tmp_path: Path) -> None:
    uri = csv_file(tmp_path, "image,concepts\na.jpg,cat\nb.jpg,cat\na.jpg,dog\n")
    assert "already listed on line 2" in error(tags.read_csv, uri, Task.TAGGING).message


def test_jsonl_tagging(tmp_path: Path) -> None:
    uri = jsonl_file(
        tmp_path,
        [
            json.dumps({"image": "b.jpg", "concepts": ["dog", "cat", "dog"]}),
            "",
            json.dumps({"image": "a.jpg", "concepts": []}),
            json.dumps({"image": "c.jpg", "concepts": ["unicorn"]}),
        ],
    )
    result = tags.read_jsonl(uri, Task.TAGGING, CONCEPTS)
    assert [(s.path, s.labels, s.record) for s in result.samples] == [
        ("a.jpg", (), "line 3"),
        ("b.jpg", (0, 1), "line 1"),
        ("c.jpg", (), "line 4"),
    ]
    assert result.ignored_annotations == {"unicorn": 1}


@pytest.mark.parametrize(
    ("line", "field", "message"),
    [
        ('{"image": "b.jpg", "concepts": [', None, "not valid JSON"),
        ('["b.jpg", ["cat"]]', None, "must be an object"),
        ('{"image": "b.jpg", "concepts": "cat"}', "concepts", "must be a list of strings"),
        ('{"image": 3, "concepts": ["cat"]}', "image", "must be a non-empty string"),
        ('{"image": "a.jpg", "concepts": ["dog"]}', "image", "already listed on line 1"),
    ],
)
def test_jsonl_errors(tmp_path: Path, line: str, field: str | None, message: str) -> None:
    uri = jsonl_file(tmp_path, ['{"image": "a.jpg", "concepts": ["cat"]}', line])
    exc = error(tags.read_jsonl, uri, Task.TAGGING)
    assert (exc.record, exc.field) == ("line 2", field)
    assert message in exc.message


def test_jsonl_classification_needs_one_concept(tmp_path: Path) -> None:
    uri = jsonl_file(tmp_path, ['{"image": "a.jpg", "concepts": ["cat", "zebra"]}'])
    exc = error(tags.read_jsonl, uri, Task.CLASSIFICATION)
    assert (exc.record, exc.field) == ("line 1", "concepts")


def test_detection_is_refused(tmp_path: Path) -> None:
    uri = jsonl_file(tmp_path, ['{"image": "a.jpg", "concepts": ["cat"]}'])
    assert error(tags.read_jsonl, uri, Task.DETECTION).field == "format"
