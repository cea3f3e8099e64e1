"""The View's options for bad data (issue 10): ``spec.dataset.allowEmptyConcepts``,
``boxPolicy``, ``boxFrame`` and ``maxImagePixels``; the status fields that count what became
of the data; and the plan hash, which the box options enter only when they are not default."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from kubevision_api.plan import PlanDefaults, resolve
from kubevision_api.status import DatasetStatus
from kubevision_api.view import DEFAULT_MAX_IMAGE_PIXELS, BoxFrame, BoxPolicy, View
from tests.api.test_plan import make_mv


def _view(**dataset: Any) -> View:
    return View.model_validate(
        {
            "metadata": {"name": "pets", "namespace": "team-a"},
            "spec": {
                "task": "detection",
                "concepts": [{"name": "cat"}],
                "dataset": {"uri": "s3://data/coco.json", "format": "coco", **dataset},
            },
        }
    )


def test_defaults_are_lenient_where_users_are_careless_and_strict_where_it_matters() -> None:
    dataset = _view().spec.dataset
    assert dataset.allow_empty_concepts is False
    assert dataset.box_policy is BoxPolicy.CLIP
    assert dataset.box_frame is BoxFrame.UPRIGHT
    assert dataset.max_image_pixels == DEFAULT_MAX_IMAGE_PIXELS == 120_000_000


def test_options_are_camel_case_on_the_wire() -> None:
    view = _view(allowEmptyConcepts=True, boxPolicy="strict", boxFrame="stored", maxImagePixels=5)
    wire = view.model_dump(mode="json", by_alias=True)["spec"]["dataset"]
    assert {
        k: wire[k] for k in ("allowEmptyConcepts", "boxPolicy", "boxFrame", "maxImagePixels")
    } == {
        "allowEmptyConcepts": True,
        "boxPolicy": "strict",
        "boxFrame": "stored",
        "maxImagePixels": 5,
    }


@pytest.mark.parametrize(
    "dataset", [{"boxPolicy": "drop"}, {"boxFrame": "exif"}, {"maxImagePixels": 0}]
)
def test_bad_option_values_are_refused(dataset: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        _view(**dataset)


def test_dataset_status_counts_boxes_in_camel_case() -> None:
    status = DatasetStatus.model_validate(
        {
            "train": 8,
            "val": 3,
            "backgroundVal": 1,
            "conceptsWithoutTrainPositives": ["Dark"],
            "boxes": {"clipped": 2, "dropped": [{"reason": "OutsideImage", "count": 1}]},
        }
    )
    assert status.background_val == 1 and status.concepts_without_train_positives == ["Dark"]
    assert status.boxes is not None and status.boxes.dropped[0].count == 1


def test_box_options_enter_the_plan_hash_only_when_not_default() -> None:
    def digest(**dataset: Any) -> str:
        mv = make_mv(architecture="fasterrcnn_mobilenet_v3_large_320_fpn")
        return resolve(_view(**dataset), mv, PlanDefaults()).training_hash()

    base = digest()
    # The hash of this plan before the options existed: a run written then still resumes.
    assert base == "00cb1f18d64345097ee6a55b14f2417a78c1a071fb1d8bf673991eff09452418"
    assert digest(boxPolicy="clip", boxFrame="upright") == base
    assert digest(allowEmptyConcepts=True, maxImagePixels=10) == base
    assert digest(boxPolicy="strict") != base
    assert digest(boxFrame="stored") != base
