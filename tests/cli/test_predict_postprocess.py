"""``kubevision predict``'s post-processing (``kubevision_cli.serving.postprocess``) on
hand-made graph outputs, against values computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from kubevision_api.bundle import Postprocessing, Preprocessing
from kubevision_api.modelversion import ResizeMode
from kubevision_api.view import Task
from kubevision_cli.serving import postprocess
from kubevision_cli.serving.preprocess import Placement, placement

CONCEPTS = ["cat", "dog", "bird"]


def _post(task: Task, **fields: object) -> Postprocessing:
    activation = {"classification": "softmax", "tagging": "sigmoid", "detection": "none"}
    return Postprocessing(
        task=task, concepts=CONCEPTS, activation=activation[task.value], outputs=["x"], **fields
    )


def test_classification_ranks_every_concept_by_softmax() -> None:
    result = postprocess.classification(
        _post(Task.CLASSIFICATION), np.array([1.0, 3.0, 2.0], dtype=np.float32)
    )
    total = math.e + math.e**3 + math.e**2
    assert result["top"] == "dog"
    assert [c["concept"] for c in result["concepts"]] == ["dog", "bird", "cat"]
    assert [c["score"] for c in result["concepts"]] == pytest.approx(
        [math.e**3 / total, math.e**2 / total, math.e / total], rel=1e-12
    )


def test_softmax_of_large_logits_does_not_overflow() -> None:
    scores = postprocess.softmax(np.array([1000.0, 1000.0, -1000.0]))
    assert scores.tolist() == pytest.approx([0.5, 0.5, 0.0])


def test_tagging_keeps_concepts_at_or_above_their_threshold() -> None:
    # sigmoid(0) = 0.5 exactly: at the threshold 0.5 counts as present.
    logits = np.array([0.0, 2.0, -1.0], dtype=np.float32)
    post = _post(Task.TAGGING, thresholds=[0.5, 0.9, 0.2])
    result = postprocess.tagging(post, logits)
    s = [0.5, 1 / (1 + math.exp(-2)), 1 / (1 + math.exp(1))]  # 0.5, 0.8808, 0.2689
    assert result["scores"] == pytest.approx(dict(zip(CONCEPTS, s, strict=True)), rel=1e-7)
    assert [(c["concept"], c["score"]) for c in result["concepts"]] == [
        ("cat", 0.5),
        ("bird", pytest.approx(s[2], rel=1e-7)),
    ]
    # Without thresholds in the bundle: defaultThreshold for every concept.
    default = postprocess.tagging(_post(Task.TAGGING, default_threshold=0.8), logits)
    assert [c["concept"] for c in default["concepts"]] == ["dog"]


def _outputs(count: int) -> dict[str, np.ndarray]:
    return {
        "boxes": np.array(
            [[10, 20, 30, 30], [0, 0, 64, 32], [5, 5, 6, 6], [1, 2, 3, 4]], dtype=np.float32
        ),
        "scores": np.array([0.6, 0.9, 0.3, 0.99], dtype=np.float32),
        "labels": np.array([0, 1, 2, 1], dtype=np.int64),
        "num_detections": np.array(count, dtype=np.int64),
    }


def test_detection_keeps_real_rows_at_their_concepts_threshold() -> None:
    post = _post(Task.DETECTION, thresholds=[0.6, 0.95, 0.25], max_detections=4)
    same = Placement(image=(32, 64), scaled=(32, 64), offset=(0, 0))
    # Row 3 (score 0.99) is padding beyond num_detections = 3: never read. Row 1 (dog 0.9) is
    # under dog's 0.95; row 0 (cat 0.6) is at cat's threshold; row 2 (bird 0.3) over 0.25.
    result = postprocess.detection(post, _outputs(3), same)
    assert [(b["concept"], round(b["score"], 6), b["box"]) for b in result["boxes"]] == [
        ("cat", 0.6, [10.0, 20.0, 30.0, 30.0]),
        ("bird", 0.3, [5.0, 5.0, 6.0, 6.0]),
    ]
    assert postprocess.detection(post, _outputs(0), same) == {"boxes": []}


def test_a_label_outside_the_concepts_is_refused() -> None:
    outputs = _outputs(2)
    outputs["labels"] = np.array([0, 3, 0, 0], dtype=np.int64)
    with pytest.raises(ValueError, match=r"labels \[0, 3\], outside the 3 concepts"):
        postprocess.detection(
            _post(Task.DETECTION, max_detections=4),
            outputs,
            placement(Preprocessing(width=4, height=4, resizer=ResizeMode.SQUASH), (4, 4)),
        )


def _mapped(mode: ResizeMode, image: tuple[int, int], box: list[float]) -> list[float]:
    spec = Preprocessing(width=64, height=32, resizer=mode)
    out = postprocess.image_boxes(np.array([box]), placement(spec, image))
    return [float(v) for v in out[0]]


def test_boxes_map_back_to_the_image_for_each_resizer() -> None:
    # squash: a 200 x 100 (w x h) image to 64 x 32, x * 200 / 64, y * 100 / 32.
    assert _mapped(ResizeMode.SQUASH, (100, 200), [16, 8, 32, 16]) == pytest.approx(
        [50.0, 25.0, 100.0, 50.0]
    )
    # letterbox: a 100 x 100 image into 64 x 32: scale 32 / 100 -> 32 x 32, margins 16 left and
    # right: x = (x' - 16) * 100 / 32, y = y' * 100 / 32.
    assert _mapped(ResizeMode.LETTERBOX, (100, 100), [16, 0, 32, 8]) == pytest.approx(
        [0.0, 0.0, 50.0, 25.0]
    )
    # A box reaching into the margin is clipped to the image: x' = 8 -> -25 -> 0.
    assert _mapped(ResizeMode.LETTERBOX, (100, 100), [8, 0, 60, 40])[0::2] == pytest.approx(
        [0.0, 100.0]
    )
    # crop: a 100 x 100 image to 64 x 32: scale 64 / 100 -> 64 x 64, crop anchor top 16:
    # x = x' * 100 / 64, y = (y' + 16) * 100 / 64.
    assert _mapped(ResizeMode.CROP, (100, 100), [32, 0, 64, 16]) == pytest.approx(
        [50.0, 25.0, 100.0, 50.0]
    )


def test_boxes_round_trip_through_the_resizer_geometry() -> None:
    """A box in the image, mapped forward as ``transforms.Resize`` maps boxes (scale by the size
    ratio, then crop anchor or margin), comes back to itself."""
    box = np.array([[37.0, 11.0, 141.0, 90.0]])
    for mode in ResizeMode:
        spec = Preprocessing(width=64, height=48, resizer=mode)
        where = placement(spec, (120, 170))
        (sh, sw), (left, top) = where.scaled, where.offset
        forward = box * np.array([sw / 170, sh / 120, sw / 170, sh / 120]) + [left, top] * 2
        back = postprocess.image_boxes(forward, where)
        if mode is ResizeMode.CROP:
            # Parts outside the crop are lost: only the visible part comes back.
            assert back[0, 1] == pytest.approx(11.0) and back[0, 3] == pytest.approx(90.0)
        else:
            np.testing.assert_allclose(back, box, atol=1e-9)
