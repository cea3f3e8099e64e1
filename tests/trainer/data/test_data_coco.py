"""COCO reader: concepts by name, task rules, and errors naming file, record and field."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from kubevision_api import imaging
from kubevision_api.contract import StorageRole
from kubevision_api.errors import InputError
from kubevision_api.view import BoxPolicy, Task
from kubevision_trainer import storage
from kubevision_trainer.data import coco
from tests.trainer.data import data_helpers as helpers

CONCEPTS = ["cat", "dog", "zebra"]  # sorted: class indices 0, 1, 2
# Non-contiguous ids, listed out of order: only the names matter.
CATEGORIES = [{"id": 7, "name": "zebra"}, {"id": 1, "name": "cat"}, {"id": 3, "name": "dog"}]


def image(image_id: int, name: str, width: int = 100, height: int = 80) -> dict[str, Any]:
    return {"id": image_id, "file_name": name, "width": width, "height": height}


def box(ann_id: int, image_id: int, category_id: int, bbox: Any = (0, 0, 10, 10)) -> dict[str, Any]:
    annotation: dict[str, Any] = {"id": ann_id, "image_id": image_id, "category_id": category_id}
    if bbox is not None:
        annotation["bbox"] = list(bbox)
    return annotation


def write(
    tmp_path: Path,
    images: list[dict[str, Any]],
    annotations: list[dict[str, Any]],
    categories: list[dict[str, Any]] = CATEGORIES,
) -> str:
    document = {"images": images, "annotations": annotations, "categories": categories}
    return helpers.write_json(tmp_path / "ann" / "coco.json", document)


def error(uri: str, task: Task = Task.DETECTION, policy: BoxPolicy = BoxPolicy.CLIP) -> InputError:
    with pytest.raises(InputError) as caught:
        coco.read(uri, task, CONCEPTS, policy=policy)
    assert caught.value.source == uri
    return caught.value


def test_detection_maps_non_contiguous_ids_by_name(tmp_path: Path) -> None:
    uri = write(
        tmp_path,
        [image(1, "images/b.jpg"), image(2, "./images/a.jpg")],
        [
            box(10, 1, 7, (10, 20, 30, 40)),
            box(11, 1, 1, (0.5, 1.5, 2, 3)),
            box(12, 2, 3, (5, 5, 5, 5)),
            box(13, 2, 3, (50, 40, 50, 40)),
        ],
    )
    result = coco.read(uri, Task.DETECTION, CONCEPTS)
    assert [s.path for s in result.samples] == ["images/a.jpg", "images/b.jpg"]
    a, b = result.samples
    assert a.uri == (tmp_path / "ann" / "images" / "a.jpg").as_uri()
    assert b.boxes == ((10.0, 20.0, 40.0, 60.0), (0.5, 1.5, 2.5, 4.5))
    assert b.box_labels == (2, 0)  # zebra, cat
    assert b.labels == (0, 2)
    assert a.boxes == ((5.0, 5.0, 10.0, 10.0), (50.0, 40.0, 100.0, 80.0))
    assert a.box_labels == (1, 1) and a.labels == (1,)
    assert (b.size, b.boxes_oriented, b.record) == ((100, 80), False, "images[0] (id 1)")
    assert not result.skipped and not result.ignored_annotations


def test_unknown_concept_is_ignored_and_counted(tmp_path: Path) -> None:
    categories = [*CATEGORIES, {"id": 9, "name": "bird"}]
    uri = write(
        tmp_path,
        [image(1, "a.jpg"), image(2, "b.jpg")],
        [box(1, 1, 9), box(2, 1, 1), box(3, 2, 9, bbox=[-50, 0, 0, 0])],
        categories,
    )
    result = coco.read(uri, Task.DETECTION, CONCEPTS)
    assert result.ignored_annotations == {"bird": 2}
    # b.jpg's only box is a bird: a background image.
    assert [(s.path, s.box_labels) for s in result.samples] == [("a.jpg", (0,)), ("b.jpg", ())]
    assert not result.skipped
    assert result.names_not_in_view == {"bird"}


def test_images_without_boxes_are_background_samples(tmp_path: Path) -> None:
    # The split keeps them out of training but in validation (split.leave_out_background).
    uri = write(
        tmp_path,
        [image(1, "a.jpg"), image(2, "b.jpg"), image(3, "c.jpg")],
        [box(1, 2, 3)],
    )
    result = coco.read(uri, Task.DETECTION, CONCEPTS)
    assert [(s.path, s.boxes, s.labels) for s in result.samples] == [
        ("a.jpg", (), ()),
        ("b.jpg", ((0.0, 0.0, 10.0, 10.0),), (1,)),
        ("c.jpg", (), ()),
    ]
    assert not result.skipped


def test_boxes_overshooting_the_border_are_clipped_or_dropped_and_counted(tmp_path: Path) -> None:
    # What annotation tools produce: a few pixels past the border, a box dragged off the
    # image, a click without a drag.
    images = [image(1, "a.jpg", 50, 80), image(2, "b.jpg", 50, 80)]
    annotations = [
        box(1, 1, 1, (-3, 70, 20, 20)),  # clipped to (0, 70, 17, 80)
        box(2, 1, 1, (40, 10, 13, 5)),  # clipped to (40, 10, 50, 15)
        box(3, 1, 3, (5, 5, 10, 10)),  # inside: kept as is
        box(4, 1, 1, (60, 10, 5, 5)),  # right of the image
        box(5, 2, 1, (10, 80, 5, 5)),  # starts on the bottom border: no area inside
        box(6, 2, 1, (10, 10, 0, 5)),  # zero width
    ]
    result = coco.read(write(tmp_path, images, annotations), Task.DETECTION, CONCEPTS)
    a, b = result.samples
    assert a.boxes == ((0.0, 70.0, 17.0, 80.0), (40.0, 10.0, 50.0, 15.0), (5.0, 5.0, 15.0, 15.0))
    assert a.box_labels == (0, 0, 1)
    assert (b.path, b.boxes, b.labels) == ("b.jpg", (), ())  # its boxes dropped: background
    assert result.boxes.clipped == 2
    assert result.boxes.dropped == {"OutsideImage": 2, "ZeroSize": 1}
    assert result.boxes.manifest() == {
        "clipped": 2,
        "dropped": {"OutsideImage": 2, "ZeroSize": 1},
    }


def test_malformed_boxes_are_refused_whatever_the_policy(tmp_path: Path) -> None:
    uri = write(tmp_path, [image(5, "img/a.jpg")], [box(11, 5, 1), box(12, 5, 1, (10, 10, -4, 20))])
    for policy in BoxPolicy:
        exc = error(uri, policy=policy)
        assert str(exc) == (
            f"{uri}: annotations[1] (id 12, image_id 5, file 'img/a.jpg'): bbox: "
            "bbox [10, 10, -4, 20]: width -4 and height 20 must both be positive "
            "(COCO bbox is [x, y, width, height])"
        )


def test_strict_refuses_a_zero_width_box_naming_annotation_image_and_file(tmp_path: Path) -> None:
    uri = write(tmp_path, [image(1, "a.jpg")], [box(11, 1, 1), box(12, 1, 1, (10, 10, 0, 20))])
    exc = error(uri, policy=BoxPolicy.STRICT)
    assert (exc.record, exc.field) == ("annotations[1] (id 12, image_id 1, file 'a.jpg')", "bbox")
    assert str(exc) == (
        f"{uri}: annotations[1] (id 12, image_id 1, file 'a.jpg'): bbox: bbox [10, 10, 0, 20]: "
        "width 0 and height 20 must both be positive (COCO bbox is [x, y, width, height])"
    )


def test_strict_box_written_as_corners_gets_a_hint(tmp_path: Path) -> None:
    uri = write(tmp_path, [image(1, "a.jpg", 50, 80)], [box(17, 1, 1, (10, 10, 50, 60))])
    exc = error(uri, policy=BoxPolicy.STRICT)
    assert (exc.record, exc.field) == ("annotations[0] (id 17, image_id 1, file 'a.jpg')", "bbox")
    assert exc.message.startswith(
        "bbox [10, 10, 50, 60]: x+w=60 exceeds width 50; COCO bbox is [x, y, width, height]"
    )
    assert "would fit as [x1, y1, x2, y2]" in exc.message


def test_strict_box_outside_the_image_without_corner_hint(tmp_path: Path) -> None:
    uri = write(tmp_path, [image(1, "a.jpg", 50, 80)], [box(5, 1, 1, (-3, 70, 20, 20))])
    exc = error(uri, policy=BoxPolicy.STRICT)
    assert exc.message == (
        "bbox [-3, 70, 20, 20]: x=-3 is left of the image; y+h=90 exceeds height 80 "
        "(image 50x80; COCO bbox is [x, y, width, height])"
    )


def test_strict_clips_within_one_pixel(tmp_path: Path) -> None:
    uri = write(tmp_path, [image(1, "a.jpg", 50, 80)], [box(1, 1, 1, (-0.5, 0, 51, 80.9))])
    result = coco.read(uri, Task.DETECTION, CONCEPTS, policy=BoxPolicy.STRICT)
    assert result.samples[0].boxes == ((0.0, 0.0, 50.0, 80.0),)
    assert (result.boxes.clipped, result.boxes.dropped) == (1, {})


def test_bad_boxes_are_listed_up_to_a_bound(tmp_path: Path) -> None:
    images = [image(i, f"{i}.jpg", 50, 80) for i in (1, 2)]
    annotations = [box(100 + i, 1 + i % 2, 1, (i, 0, -1, 5)) for i in range(23)]
    annotations.insert(1, box(99, 1, 1, (0, 0, 5, 5)))  # a good one among them
    exc = error(write(tmp_path, images, annotations), policy=BoxPolicy.STRICT)
    assert exc.record is None and exc.field is None
    listed = exc.message.split("; ")
    assert listed[0] == (
        "23 bad boxes (field bbox): annotations[0] (id 100, image_id 1, file '1.jpg'): "
        "bbox [0, 0, -1, 5]: width -1 and height 5 must both be positive "
        "(COCO bbox is [x, y, width, height])"
    )
    assert listed[1] == (
        "annotations[2] (id 101, image_id 2, file '2.jpg'): bbox [1, 0, -1, 5]: width -1 and "
        "height 5 must both be positive (COCO bbox is [x, y, width, height])"
    )
    assert len(listed) == 21 and listed[-1] == "and 3 more"


@pytest.mark.parametrize("bbox", [[1, 2, 3], [1, 2, "3", 4], [1, 2, float("nan"), 4], None])
def test_bbox_must_be_four_finite_numbers(tmp_path: Path, bbox: Any) -> None:
    annotation = box(4, 1, 1, bbox=None)
    if bbox is not None:
        annotation["bbox"] = bbox
    exc = error(write(tmp_path, [image(1, "a.jpg")], [annotation]))
    assert (exc.record, exc.field) == ("annotations[0] (id 4, image_id 1, file 'a.jpg')", "bbox")
    assert exc.message == f"{json.dumps(bbox)} is not 4 finite numbers [x, y, width, height]"


def test_annotation_naming_a_missing_image(tmp_path: Path) -> None:
    exc = error(write(tmp_path, [image(1, "a.jpg")], [box(1, 1, 1), box(2, 42, 1)]))
    assert (exc.record, exc.field) == ("annotations[1] (id 2)", "image_id")
    assert exc.message == "image 42 is not in images"


def test_annotation_naming_a_missing_category_lists_the_ids(tmp_path: Path) -> None:
    exc = error(write(tmp_path, [image(1, "a.jpg")], [box(8, 1, 2)]), Task.TAGGING)
    assert (exc.record, exc.field) == ("annotations[0] (id 8)", "category_id")
    assert exc.message == "category 2 is not in categories (ids: 1, 3, 7)"


def test_string_image_id_says_the_type_is_wrong_and_where(tmp_path: Path) -> None:
    images = [image(1, "a.jpg"), image(2, "b.jpg")]
    exc = error(write(tmp_path, images, [box(1, 1, 1), box(2, "2", 3)]))  # type: ignore[arg-type]
    assert str(exc) == (
        f'{exc.source}: annotations[1] (id 2): image_id: "2" is a string, but the id of '
        "images[1] is the integer 2 (ids must have the same JSON type)"
    )
    categories = [{"id": "7", "name": "zebra"}]
    exc = error(write(tmp_path, images, [box(1, 1, 7)], categories), Task.TAGGING)
    assert (exc.record, exc.field) == ("annotations[0] (id 1)", "category_id")
    assert exc.message == (
        '7 is an integer, but the id of categories[0] is the string "7" '
        "(ids must have the same JSON type)"
    )
    exc = error(write(tmp_path, images, [box(1, 2.0, 1)]))  # type: ignore[arg-type]
    assert (exc.field, exc.message) == ("image_id", "must be an integer or a string, got 2.0")


def test_duplicated_annotation_id_names_both_records(tmp_path: Path) -> None:
    images = [image(1, "a.jpg"), image(2, "b.jpg")]
    exc = error(write(tmp_path, images, [box(7, 1, 1), box(8, 2, 1), box(7, 2, 3)]))
    assert str(exc) == (
        f"{exc.source}: annotations[2] (id 7): id: duplicated annotation id: "
        "annotations[0] (id 7) has it too"
    )


@pytest.mark.parametrize("key", ["images", "annotations", "categories"])
def test_missing_top_level_key(tmp_path: Path, key: str) -> None:
    document: dict[str, Any] = {"images": [], "annotations": [], "categories": []}
    del document[key]
    exc = error(helpers.write_json(tmp_path / "coco.json", document))
    assert (exc.field, exc.message) == (key, "missing top-level key")


def test_invalid_json_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "coco.json"
    path.write_text('{"images": [}')
    assert "not valid JSON" in error(path.as_uri()).message


def test_detection_needs_the_image_size(tmp_path: Path) -> None:
    exc = error(write(tmp_path, [{"id": 1, "file_name": "a.jpg"}], []))
    assert (exc.record, exc.field) == ("images[0] (id 1)", "width")


@pytest.mark.parametrize("name", ["../a.jpg", "/etc/a.jpg", "s3://b/a.jpg", ""])
def test_file_name_must_stay_inside_the_folder(tmp_path: Path, name: str) -> None:
    exc = error(write(tmp_path, [image(1, name)], []))
    assert (exc.record, exc.field) == ("images[0] (id 1)", "file_name")


def test_duplicated_image_id_and_file(tmp_path: Path) -> None:
    exc = error(write(tmp_path, [image(1, "a.jpg"), image(1, "b.jpg")], []))
    assert (exc.record, exc.field) == ("images[1] (id 1)", "id")
    assert exc.message == "duplicated image id: images[0] (id 1) has it too"
    exc = error(write(tmp_path, [image(1, "a.jpg"), image(2, "./a.jpg")], []))
    assert (exc.record, exc.field) == ("images[1] (id 2)", "file_name")


def test_classification_needs_exactly_one_concept(tmp_path: Path) -> None:
    categories = [*CATEGORIES, {"id": 9, "name": "bird"}]
    images = [image(1, "a.jpg"), image(2, "b.jpg"), image(3, "c.jpg")]
    # Image-level labels (no bbox), a repeated concept, and a bird-only image.
    annotations = [box(1, 1, 3, None), box(2, 2, 7), box(3, 2, 7), box(4, 3, 9)]
    result = coco.read(
        write(tmp_path, images, annotations, categories), Task.CLASSIFICATION, CONCEPTS
    )
    assert [(s.path, s.labels, s.boxes) for s in result.samples] == [
        ("a.jpg", (1,), ()),
        ("b.jpg", (2,), ()),
    ]
    assert result.skipped == {"ConceptNotInView": 1}

    exc = error(
        write(tmp_path, images, [*annotations, box(5, 1, 1)], categories), Task.CLASSIFICATION
    )
    assert exc.record == "images[0] (id 1)"
    assert (
        exc.message == "has 2 concepts (cat, dog); classification needs exactly one concept "
        "per image"
    )
    exc = error(
        write(tmp_path, [*images, image(4, "d.jpg")], annotations, categories), Task.CLASSIFICATION
    )
    assert exc.record == "images[3] (id 4)" and exc.message.startswith("has no annotation")


def test_tagging_keeps_images_without_concept(tmp_path: Path) -> None:
    images = [image(1, "a.jpg"), image(2, "b.jpg")]
    uri = write(tmp_path, images, [box(1, 1, 7), box(2, 1, 1, None), box(3, 1, 7)])
    result = coco.read(uri, Task.TAGGING, CONCEPTS)
    assert [(s.path, s.labels, s.boxes) for s in result.samples] == [
        ("a.jpg", (0, 2), ()),
        ("b.jpg", (), ()),
    ]


def test_boxes_of_an_exif_rotated_jpeg_follow_the_image(tmp_path: Path) -> None:
    # The annotation tool saw the stored pixels (64x40); the camera said "rotate 90 degrees".
    # The reader keeps the boxes as declared (spec.dataset.boxFrame: stored); loading turns
    # them upright (tests/trainer/data/test_data_exif.py covers every orientation).
    (tmp_path / "ann").mkdir()
    (tmp_path / "ann" / "rotated.jpg").write_bytes(helpers.boxed_image(6, "JPEG"))
    x1, y1, x2, y2 = helpers.BOX
    uri = write(
        tmp_path,
        [image(1, "rotated.jpg", *helpers.RAW_SIZE)],
        [box(1, 1, 1, (x1, y1, x2 - x1, y2 - y1))],
    )
    sample = coco.read(uri, Task.DETECTION, CONCEPTS).samples[0]
    assert sample.size == helpers.RAW_SIZE and not sample.boxes_oriented

    decoded, orientation, raw = imaging.decode_image(
        storage.read_bytes(sample.uri, role=StorageRole.DATASET), sample.uri
    )
    assert raw == sample.size and decoded.size == (40, 64)
    oriented = imaging.orient_boxes(np.array(sample.boxes), orientation, raw)[0]
    assert np.abs(np.array(helpers.white_bbox(decoded)) - oriented).max() <= 1
