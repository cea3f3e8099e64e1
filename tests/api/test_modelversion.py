"""ModelVersionSpec: bounds, the architecture table, extra=forbid at every level and camelCase
wire names."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from pydantic import ValidationError

from kubevision_api.modelversion import (
    AugmentationName,
    LrPolicy,
    ModelVersion,
    ModelVersionSpec,
    ResizeMode,
)
from kubevision_api.status import EpochMetrics


def spec(**overrides: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {"viewRef": {"name": "pets"}, "architecture": "resnet18"}
    doc.update(overrides)
    return doc


def errors_at(doc: dict[str, Any]) -> list[tuple[int | str, ...]]:
    with pytest.raises(ValidationError) as info:
        ModelVersionSpec.model_validate(doc)
    return [tuple(e["loc"]) for e in info.value.errors()]


def test_defaults() -> None:
    mv = ModelVersionSpec.model_validate(spec())
    assert mv.training.epochs == 10
    assert mv.training.batch_size == 32
    assert mv.training.lr_schedule.policy is LrPolicy.COSINE
    assert (mv.image_resizer.mode, mv.image_resizer.width) == (ResizeMode.SQUASH, 224)
    # The platform's documented defaults (docs/decisions.md), in order.
    assert [(a.name, a.probability) for a in mv.augmentation] == [
        (AugmentationName.HORIZONTAL_FLIP, 0.5),
        (AugmentationName.VERTICAL_FLIP, 0.5),
        (AugmentationName.ROTATE90, 0.5),
        (AugmentationName.BRIGHTNESS, 1.0),
    ]
    assert mv.augmentation[3].magnitude == 0.2


def test_rejects_unknown_architecture() -> None:
    with pytest.raises(ValidationError, match="unknown architecture 'resnet19'"):
        ModelVersionSpec.model_validate(spec(architecture="resnet19"))


def test_accepts_a_detector_name() -> None:
    # The spec alone does not know the task; resolve() checks the fit.
    doc = spec(architecture="fasterrcnn_mobilenet_v3_large_320_fpn")
    assert ModelVersionSpec.model_validate(doc).architecture.startswith("fasterrcnn")


@pytest.mark.parametrize(
    ("overrides", "loc"),
    [
        ({"colour": "red"}, ("colour",)),
        ({"viewRef": {"name": "pets", "kind": "View"}}, ("viewRef", "kind")),
        ({"training": {"epoch": 3}}, ("training", "epoch")),
        ({"training": {"lrSchedule": {"warmup": 1}}}, ("training", "lrSchedule", "warmup")),
        ({"training": {"earlyStopping": {"delta": 0.1}}}, ("training", "earlyStopping", "delta")),
        ({"imageResizer": {"size": 224}}, ("imageResizer", "size")),
        (
            {"datasetSplit": {"balancing": {"ratio": 2}}},
            ("datasetSplit", "balancing", "ratio"),
        ),
        ({"augmentation": [{"name": "VerticalFlip", "p": 1}]}, ("augmentation", 0, "p")),
        ({"resources": {"gpu": 1}}, ("resources", "gpu")),
        ({"output": {"url": "s3://x"}}, ("output", "url")),
        ({"runPolicy": {"retries": 1}}, ("runPolicy", "retries")),
        ({"pretrainedWeights": {"uri": "s3://w.pt", "sha": "x"}}, ("pretrainedWeights", "sha")),
    ],
)
def test_rejects_unknown_fields_at_each_level(
    overrides: dict[str, Any], loc: tuple[int | str, ...]
) -> None:
    assert errors_at(spec(**overrides)) == [loc]


def test_misspelt_wire_name_is_refused_python_name_accepted() -> None:
    # populate_by_name lets Python code use snake_case; any other spelling is an unknown field,
    # not silently the default.
    assert errors_at(spec(training={"batchsize": 4})) == [("training", "batchsize")]
    assert (
        ModelVersionSpec.model_validate(spec(training={"batch_size": 4})).training.batch_size == 4
    )


@pytest.mark.parametrize(
    ("overrides", "loc"),
    [
        ({"imageResizer": {"width": 200}}, ("imageResizer", "width")),
        ({"imageResizer": {"height": 8}}, ("imageResizer", "height")),
        ({"datasetSplit": {"validationFraction": 0}}, ("datasetSplit", "validationFraction")),
        ({"datasetSplit": {"validationFraction": 1}}, ("datasetSplit", "validationFraction")),
        ({"training": {"epochs": 0}}, ("training", "epochs")),
        ({"training": {"batchSize": 0}}, ("training", "batchSize")),
        ({"training": {"learningRate": 0}}, ("training", "learningRate")),
        ({"training": {"momentum": 1}}, ("training", "momentum")),
        ({"training": {"optimizer": "lbfgs"}}, ("training", "optimizer")),
        ({"training": {"mixedPrecision": "fp8"}}, ("training", "mixedPrecision")),
        ({"augmentation": [{"name": "Flip"}]}, ("augmentation", 0, "name")),
        (
            {"augmentation": [{"name": "Hue", "probability": 1.5}]},
            ("augmentation", 0, "probability"),
        ),
        ({"resources": {"gpus": 9}}, ("resources", "gpus")),
        ({"resources": {"memory": "lots"}}, ("resources", "memory")),
    ],
)
def test_rejects_out_of_bounds(overrides: dict[str, Any], loc: tuple[int | str, ...]) -> None:
    assert errors_at(spec(**overrides)) == [loc]


def test_width_multiple_of_sixteen_message() -> None:
    with pytest.raises(ValidationError, match="multiple of 16"):
        ModelVersionSpec.model_validate(spec(imageResizer={"width": 200}))
    ok = ModelVersionSpec.model_validate(spec(imageResizer={"width": 208, "height": 160}))
    assert (ok.image_resizer.width, ok.image_resizer.height) == (208, 160)


def test_wire_names_are_camel_case() -> None:
    doc = spec(
        training={"batchSize": 8, "lrSchedule": {"warmupEpochs": 1}, "dataLoaderWorkers": 0},
        imageResizer={"mode": "letterbox", "width": 320, "height": 240},
        datasetSplit={"validationFraction": 0.25, "balancing": {"maxExpansionRatio": 3}},
        runPolicy={"activeDeadlineSeconds": 600, "queueName": "gpu"},
    )
    wire = ModelVersionSpec.model_validate(doc).wire()
    assert set(wire) == {
        "viewRef",
        "architecture",
        "training",
        "imageResizer",
        "datasetSplit",
        "augmentation",
        "resources",
        "nodeSelector",
        "tolerations",
        "output",
        "export",
        "runPolicy",
    }
    assert wire["export"] == {"formats": ["onnx"], "triton": True}
    assert set(wire["training"]) == {
        "epochs",
        "batchSize",
        "optimizer",
        "learningRate",
        "momentum",
        "weightDecay",
        "lrSchedule",
        "mixedPrecision",
        "seed",
        "earlyStopping",
        "dataLoaderWorkers",
        "syncBatchNorm",
        "compile",
    }
    assert set(wire["training"]["lrSchedule"]) == {"policy", "warmupEpochs", "stepEpochs", "gamma"}
    assert set(wire["training"]["earlyStopping"]) == {"patience", "minDelta"}
    assert wire["datasetSplit"]["validationFraction"] == 0.25
    assert wire["datasetSplit"]["balancing"] == {"enabled": False, "maxExpansionRatio": 3.0}
    assert wire["runPolicy"] == {
        "backoffLimit": 2,
        "activeDeadlineSeconds": 600,
        "suspend": False,
        "queueName": "gpu",
    }
    # None is left out on the wire: no pretrainedWeights, no output.uri.
    assert "pretrainedWeights" not in wire and wire["output"] == {}
    # The wire form reads back into the same spec.
    assert ModelVersionSpec.model_validate(copy.deepcopy(wire)).wire() == wire


def test_metrics_alias_is_map() -> None:

    wire = EpochMetrics(epoch=1, map=0.5, ap50=0.7).wire()
    assert wire == {"epoch": 1, "mAP": 0.5, "ap50": 0.7}


def test_model_version_rejects_bad_name() -> None:
    with pytest.raises(ValidationError, match=r"String should match pattern"):
        ModelVersion.model_validate({"metadata": {"name": "Bad_Name"}, "spec": spec()})


# ---- the world size: batch size and processes per Pod ------------------------------------


def _message(doc: dict[str, Any]) -> tuple[list[str], str]:
    from kubevision_api import crdgen

    with pytest.raises(ValidationError) as info:
        ModelVersionSpec.model_validate(doc)
    (error,) = info.value.errors()
    return crdgen.error_paths(info.value), error["msg"]


def test_batch_size_must_divide_by_the_world_size() -> None:
    paths, message = _message(
        spec(training={"batchSize": 64}, resources={"gpus": 0, "nodes": 2, "processesPerNode": 3})
    )
    assert paths == ["training.batchSize"]
    assert message == (
        "spec.training.batchSize must divide by the world size of spec.resources (nodes x "
        "processes per Pod: gpus, or processesPerNode when gpus is 0): the global batch is "
        "split evenly over the training processes; 64 does not divide by 2 x 3 = 6"
    )
    paths, message = _message(spec(training={"batchSize": 12}, resources={"gpus": 8}))
    assert paths == ["training.batchSize"]
    assert message.endswith("; 12 does not divide by 1 x 8 = 8")


@pytest.mark.parametrize(
    ("batch", "resources", "world"),
    [
        (32, {}, 1),
        (64, {"gpus": 8, "nodes": 2}, 16),
        (6, {"gpus": 0, "nodes": 3}, 3),
        (6, {"gpus": 0, "processesPerNode": 2, "nodes": 3}, 6),
    ],
)
def test_batch_sizes_that_divide_are_accepted(
    batch: int, resources: dict[str, Any], world: int
) -> None:
    parsed = ModelVersionSpec.model_validate(
        spec(training={"batchSize": batch}, resources=resources)
    )
    assert parsed.resources.world_size() == world


def test_processes_per_node_is_for_cpu_training_only() -> None:
    paths, message = _message(spec(resources={"gpus": 2, "processesPerNode": 2}))
    assert paths == ["resources.processesPerNode"]
    assert message.startswith("spec.resources.processesPerNode is for CPU training (gpus: 0)")
    # Unset gpus means 1 GPU: refused too.
    paths, _ = _message(spec(resources={"processesPerNode": 2}))
    assert paths == ["resources.processesPerNode"]


def test_validation_and_test_fractions_leave_training_images() -> None:
    paths, message = _message(spec(datasetSplit={"validationFraction": 0.5, "testFraction": 0.5}))
    assert paths == ["datasetSplit.testFraction"]
    assert message == (
        "spec.datasetSplit.validationFraction + spec.datasetSplit.testFraction must be under 1: "
        "the rest of the images is the training split; got 0.5 + 0.5"
    )
    # The default validation fraction (0.2) counts too.
    paths, _ = _message(spec(datasetSplit={"testFraction": 0.8}))
    assert paths == ["datasetSplit.testFraction"]
    parsed = ModelVersionSpec.model_validate(spec(datasetSplit={"testFraction": 0.79}))
    assert parsed.dataset_split.test_fraction == 0.79
    assert ModelVersionSpec.model_validate(spec()).dataset_split.test_fraction == 0.0
    assert errors_at(spec(datasetSplit={"testFraction": -0.1})) == [
        ("datasetSplit", "testFraction")
    ]


def test_a_gang_name_leaves_room_for_the_pod_index() -> None:
    def mv(name: str, nodes: int) -> dict[str, Any]:
        return {"metadata": {"name": name}, "spec": spec(resources={"gpus": 0, "nodes": nodes})}

    # kv-<57 characters>-63 is 63 characters: a DNS label.
    assert ModelVersion.model_validate(mv("m" * 57, 2)).spec.resources.nodes == 2
    assert ModelVersion.model_validate(mv("m" * 63, 1)).metadata.name == "m" * 63
    with pytest.raises(ValidationError, match=r"at most 57 characters when spec\.resources\.nodes"):
        ModelVersion.model_validate(mv("m" * 58, 2))
