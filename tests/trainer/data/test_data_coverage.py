"""A View concept that no image trains or measures stops the run before training, naming the
concept, the dataset and the nearest names of the data (issue 10, finding 1)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kubevision_api.errors import InputError
from kubevision_api.view import Task
from kubevision_trainer.data import coverage
from kubevision_trainer.data.sample import ReadResult, Sample
from tests.trainer.data import bad_data_helpers as bad
from tests.trainer.data import data_helpers as helpers


def _folders(root: Path, counts: dict[str, int]) -> str:
    for folder, count in counts.items():
        for i in range(count):
            helpers.write_image(root / folder / f"{i:02d}.png")
    return root.as_uri()


def _error(training: object, tmp_path: Path) -> str:
    with pytest.raises(InputError) as caught:
        bad.prepare(training, tmp_path)  # type: ignore[arg-type]
    return str(caught.value)


def test_concept_differing_from_its_folder_by_case_stops_before_training(tmp_path: Path) -> None:
    uri = _folders(tmp_path / "data", {"dark": 6, "light": 6})
    training = bad.plan(
        tmp_path, "classification", ["Dark", "light"], {"uri": uri, "format": "imagefolder"}
    )
    assert _error(training, tmp_path) == (
        f"{uri}: a View concept has no image in the dataset: 'Dark' (the data has 'dark': "
        "concept names are case-sensitive, so rename the concept or the data); or set "
        "spec.dataset.allowEmptyConcepts to train without them"
    )
    # Before any image was read: nothing in the cache.
    assert not (tmp_path / "cache").exists()


def test_misspelt_and_unknown_concepts_are_named_with_the_nearest_names(tmp_path: Path) -> None:
    uri = _folders(tmp_path / "data", {"light": 6, "lights": 1, "cat": 6, "empty": 0})
    (tmp_path / "data" / "empty").mkdir()
    training = bad.plan(
        tmp_path,
        "classification",
        ["cat", "lihgt", "zebra"],
        {"uri": uri, "format": "imagefolder"},
    )
    assert _error(training, tmp_path) == (
        f"{uri}: 2 View concepts have no image in the dataset: 'lihgt' (nearest names in the "
        "data: 'light', 'lights'); 'zebra' (no similar name in the data); or set "
        "spec.dataset.allowEmptyConcepts to train without them"
    )


def test_tagging_concept_needs_a_positive_in_each_split(tmp_path: Path) -> None:
    # 'rare' is on one image only, which the split sends to training (its draw is 0.81).
    lines = ["image,concepts"] + [f"{i:02d}.png,common" for i in range(12)] + ["rare.png,rare"]
    for i in range(12):
        helpers.write_image(tmp_path / "data" / f"{i:02d}.png")
    helpers.write_image(tmp_path / "data" / "rare.png")
    (tmp_path / "data" / "tags.csv").write_text("\n".join(lines) + "\n")
    dataset = {"uri": (tmp_path / "data" / "tags.csv").as_uri(), "format": "tags-csv"}
    training = bad.plan(tmp_path, "tagging", ["common", "rare"], dataset)
    assert _error(training, tmp_path) == (
        f"{dataset['uri']}: a View concept has no validation image: 'rare' (1 training, 0 "
        "validation); add images or raise spec.datasetSplit.validationFraction; or set "
        "spec.dataset.allowEmptyConcepts to train without them"
    )

    allowed = {**dataset, "allowEmptyConcepts": True}
    status = bad.prepare(bad.plan(tmp_path, "tagging", ["common", "rare"], allowed), tmp_path)
    wire = status.status.model_dump(mode="json", by_alias=True)
    assert (wire["conceptsWithoutValPositives"], wire["conceptsWithoutTrainPositives"]) == (
        ["rare"],
        [],
    )


def test_allowed_empty_concept_is_listed_in_the_status(tmp_path: Path) -> None:
    uri = _folders(tmp_path / "data", {"dark": 6, "light": 6})
    dataset = {"uri": uri, "format": "imagefolder", "allowEmptyConcepts": True}
    training = bad.plan(tmp_path, "classification", ["Dark", "dark", "light"], dataset)
    status = bad.prepare(training, tmp_path).status
    wire = status.model_dump(mode="json", by_alias=True)
    assert wire["conceptsWithoutTrainPositives"] == ["Dark"]
    assert wire["conceptsWithoutValPositives"] == ["Dark"]
    assert (status.train, status.val) == (9, 3)


def test_one_training_image_is_an_input_error_said_before_training(tmp_path: Path) -> None:
    # One image per concept; at seed 1 the split sends dark/00.png to validation (draw 0.04)
    # and light/00.png to training (0.96): one training image, a batch BatchNorm cannot take.
    uri = _folders(tmp_path / "data", {"dark": 1, "light": 1})
    training = bad.plan(
        tmp_path,
        "classification",
        ["dark", "light"],
        {"uri": uri, "format": "imagefolder"},
        datasetSplit={"validationFraction": 0.5, "seed": 1},
    )
    assert _error(training, tmp_path) == (
        f"{uri}: the training split has 1 image; training needs at least 2 (BatchNorm "
        "cannot normalise a batch of one image): add images or lower "
        "spec.datasetSplit.validationFraction or testFraction"
    )


def test_nearest_names_case_first_then_edit_distance() -> None:
    assert coverage.nearest("Dark", ["dark", "DARK", "bark", "cat"]) == (
        ["DARK", "dark"],
        ["bark"],
    )
    assert coverage.nearest("zebra", ["cat", "dog"]) == ([], [])


def test_coverage_check_without_images_of_a_split() -> None:
    result = ReadResult(samples=[], source="s3://b/tags.csv")
    train = [Sample(path=f"{i}", uri="", labels=(0,)) for i in range(3)]
    val = [Sample(path="v", uri="", labels=(0, 1)), Sample(path="w", uri="", labels=())]
    train.append(Sample(path="t", uri="", labels=(2,)))
    with pytest.raises(InputError) as caught:
        coverage.check(result, ["a", "b", "c"], train, val, task=Task.TAGGING, allow_empty=False)
    assert str(caught.value) == (
        "s3://b/tags.csv: a View concept has no training image: 'b' (0 training, 1 "
        "validation); a View concept has no validation image: 'c' (1 training, 0 validation); "
        "add images or raise spec.datasetSplit.validationFraction; or set "
        "spec.dataset.allowEmptyConcepts to train without them"
    )
    allowed = coverage.check(
        result, ["a", "b", "c"], train, val, task=Task.TAGGING, allow_empty=True
    )
    assert (allowed.without_train, allowed.without_val) == (["b"], ["c"])
