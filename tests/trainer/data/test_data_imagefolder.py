"""Image-folder reader: one sub-folder per concept, unknown folders ignored and counted."""

from __future__ import annotations

from pathlib import Path

import pytest

from kubevision_api.errors import InputError
from kubevision_api.view import Task
from kubevision_trainer.data import imagefolder
from tests.trainer.data import data_helpers as helpers


def test_reads_concept_folders(tmp_path: Path) -> None:
    names = ["cat/1.JPG", "cat/deep/2.png", "dog/3.jpeg", "dog/4.WebP", "bird/5.jpg", "bird/6.tif"]
    for name in [*names, "loose.png"]:
        helpers.write_image(tmp_path / name)
    (tmp_path / "dog" / "notes.txt").write_text("not an image")
    (tmp_path / "dog" / ".hidden.jpg").write_bytes(b"")
    (tmp_path / "empty").mkdir()
    root = tmp_path.as_uri()

    result = imagefolder.read(root, Task.CLASSIFICATION, ["cat", "dog", "zebra"])
    assert [(s.path, s.labels) for s in result.samples] == [
        ("cat/1.JPG", (0,)),
        ("cat/deep/2.png", (0,)),
        ("dog/3.jpeg", (1,)),
        ("dog/4.WebP", (1,)),
    ]
    assert result.samples[1].uri == root + "/cat/deep/2.png"
    assert result.ignored_annotations == {"bird": 2}
    assert result.skipped == {"OutsideConceptFolder": 1}
    assert result.source == root


def test_classification_only(tmp_path: Path) -> None:
    with pytest.raises(InputError) as caught:
        imagefolder.read(tmp_path.as_uri(), Task.TAGGING, ["a", "b"])
    assert caught.value.field == "format"


def test_missing_root_names_it(tmp_path: Path) -> None:
    root = (tmp_path / "nowhere").as_uri()
    with pytest.raises(InputError, match="folder not found") as caught:
        imagefolder.read(root, Task.CLASSIFICATION, ["a", "b"])
    assert caught.value.source == root


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("a.JPEG", True),
        ("a.tiff", True),
        ("a.gif", True),
        ("a.bmp", True),
        (".a.png", False),
        ("a.txt", False),
        ("jpg", False),
    ],
)
def test_image_names(name: str, expected: bool) -> None:
    assert imagefolder.is_image_name(name) is expected
