"""read_dataset: dispatch by format, refusal of a task the format cannot carry, and of an empty
dataset with the reasons."""

from __future__ import annotations

from pathlib import Path

import pytest

from kubevision_api.errors import InputError
from kubevision_api.view import DatasetFormat, DatasetSource, Task
from kubevision_trainer.data import readers
from tests.trainer.data import data_helpers as helpers


def test_every_format_has_a_reader() -> None:
    assert set(readers.READERS) == set(DatasetFormat)


def test_dispatches_on_format(tmp_path: Path) -> None:
    path = tmp_path / "tags.jsonl"
    path.write_text('{"image": "a.jpg", "concepts": ["b"]}\n')
    source = DatasetSource(uri=path.as_uri(), format=DatasetFormat.TAGS_JSONL)
    result = readers.read_dataset(source, Task.TAGGING, ["a", "b"])
    assert [(s.path, s.labels) for s in result.samples] == [("a.jpg", (1,))]

    helpers.write_image(tmp_path / "root" / "b" / "x.png")
    source = DatasetSource(uri=(tmp_path / "root").as_uri(), format=DatasetFormat.IMAGEFOLDER)
    result = readers.read_dataset(source, Task.CLASSIFICATION, ["a", "b"])
    assert [(s.path, s.labels) for s in result.samples] == [("b/x.png", (1,))]


def test_refuses_a_task_the_format_cannot_carry(tmp_path: Path) -> None:
    source = DatasetSource(uri=tmp_path.as_uri(), format=DatasetFormat.IMAGEFOLDER)
    with pytest.raises(InputError) as caught:
        readers.read_dataset(source, Task.DETECTION, ["a", "b"])
    assert (caught.value.source, caught.value.field) == (tmp_path.as_uri(), "format")


def test_empty_detection_dataset_says_what_was_left_out(tmp_path: Path) -> None:
    document = {
        "images": [{"id": i, "file_name": f"{i}.jpg", "width": 9, "height": 9} for i in (1, 2)],
        "annotations": [{"id": 1, "image_id": 2, "category_id": 5, "bbox": [0, 0, 1, 1]}],
        "categories": [{"id": 5, "name": "bird"}, {"id": 6, "name": "cat"}],
    }
    uri = helpers.write_json(tmp_path / "coco.json", document)
    source = DatasetSource(uri=uri, format=DatasetFormat.COCO)
    with pytest.raises(InputError) as caught:
        readers.read_dataset(source, Task.DETECTION, ["cat"])
    assert str(caught.value) == (
        f"{uri}: the dataset has no usable image (images skipped: none; "
        "images without boxes: 2; annotations of concepts the View lacks: bird 1)"
    )


def test_empty_folder_is_an_empty_dataset(tmp_path: Path) -> None:
    source = DatasetSource(uri=tmp_path.as_uri(), format=DatasetFormat.IMAGEFOLDER)
    with pytest.raises(InputError, match=r"no usable image \(images skipped: none; "):
        readers.read_dataset(source, Task.CLASSIFICATION, ["a", "b"])
