"""Models: the API package's architecture table checked against torchvision, heads sized to the
concepts, partial loads from a classifier into a detector, state-dict files, and a detection
step on images without boxes."""

from __future__ import annotations

import io
import math

import pytest
import torch
import torchvision

from kubevision_api import architectures
from kubevision_api.errors import InputError
from kubevision_api.modelversion import ImageResizer, TrainingOptions
from kubevision_api.view import Task
from kubevision_trainer import models, schedule

SMALL = ImageResizer(width=32, height=32)
PREDICTOR = "roi_heads.box_predictor.cls_score.weight"


def predictor_weight(model: torch.nn.Module) -> torch.Tensor:
    """The box classifier's weight (shares storage with the parameter: it sees updates)."""
    weight: torch.Tensor = model.state_dict()[PREDICTOR]
    return weight


def test_architecture_table_matches_torchvision() -> None:
    # The api package names architectures without importing torch; this is the check that
    # every name is a torchvision builder of the right kind (docs/trainer.md, "Architectures").
    classifiers = set(torchvision.models.list_models(module=torchvision.models))
    detectors = set(torchvision.models.list_models(module=torchvision.models.detection))
    assert not set(architectures.CLASSIFIERS) - classifiers
    assert not set(architectures.DETECTORS) - detectors
    # list_models(module=torchvision.models) is the classifiers only: no detector slips in.
    assert not set(architectures.DETECTORS) & classifiers


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v3_small"])
def test_classifier_logits_shape(name: str) -> None:
    torch.manual_seed(0)
    model = models.build(name, Task.CLASSIFICATION, 5, SMALL).eval()
    with torch.no_grad():
        logits = model(torch.rand(2, 3, 32, 32))
    assert tuple(logits.shape) == (2, 5)
    assert bool(torch.isfinite(logits).all())


def test_tagging_uses_the_same_head_size() -> None:
    model = models.build("resnet18", Task.TAGGING, 1, SMALL).eval()
    with torch.no_grad():
        assert tuple(model(torch.rand(1, 3, 32, 32)).shape) == (1, 1)


def test_detector_has_background_class_and_resizer_size() -> None:
    resizer = ImageResizer(width=64, height=48)
    model = models.build("fasterrcnn_mobilenet_v3_large_320_fpn", Task.DETECTION, 3, resizer)
    assert isinstance(model, torchvision.models.detection.FasterRCNN)
    assert model.roi_heads.box_predictor.cls_score.out_features == 4  # 3 concepts + background
    # The model's own resize keeps the resizer's images as they are.
    assert tuple(model.transform.min_size) == (48,)
    assert model.transform.max_size == 64
    # Small inputs: fewer proposals and sampled RoIs (detector_kwargs).
    assert model.rpn._pre_nms_top_n == {"training": 200, "testing": 100}
    assert model.rpn._post_nms_top_n == {"training": 100, "testing": 50}
    assert model.roi_heads.fg_bg_sampler.batch_size_per_image == 32


def test_detector_kwargs() -> None:
    big = ImageResizer(width=640, height=480)
    assert models.detector_kwargs("ssdlite320_mobilenet_v3_large", big) == {}
    assert models.detector_kwargs("retinanet_resnet50_fpn", big) == {
        "min_size": 480,
        "max_size": 640,
    }
    # Above 320 px, fasterrcnn keeps torchvision's proposal counts.
    assert set(models.detector_kwargs("fasterrcnn_resnet50_fpn", big)) == {
        "min_size",
        "max_size",
    }


def test_build_refuses_a_detector_for_classification() -> None:
    with pytest.raises(InputError, match="is not a torchvision classifier"):
        models.build("fasterrcnn_mobilenet_v3_large_320_fpn", Task.CLASSIFICATION, 3, SMALL)


def test_build_refuses_a_classifier_for_detection() -> None:
    with pytest.raises(InputError, match="is not a torchvision detector"):
        models.build("resnet18", Task.DETECTION, 3, SMALL)


def test_load_partial_classifier_backbone_into_detector() -> None:
    torch.manual_seed(0)
    classifier = models.build("mobilenet_v3_large", Task.CLASSIFICATION, 10, SMALL)
    torch.manual_seed(1)
    resizer = ImageResizer(width=64, height=64)
    detector = models.build("fasterrcnn_mobilenet_v3_large_320_fpn", Task.DETECTION, 2, resizer)
    source = classifier.state_dict()
    predictor_before = predictor_weight(detector).clone()
    first_conv = "backbone.body.0.0.weight"
    assert not torch.equal(detector.state_dict()[first_conv], source["features.0.0.weight"])

    report = models.load_partial(detector, source)

    # The classifier's trunk, ``features.*``, is the detector's ``backbone.body.*``.
    assert len(report.loaded) > 250
    assert all(name.startswith("backbone.body.") for name in report.loaded)
    after = detector.state_dict()
    assert torch.equal(after[first_conv], source["features.0.0.weight"])
    assert torch.equal(after["backbone.body.16.0.weight"], source["features.16.0.weight"])
    # Heads stay at their initialisation: the box predictor and the classifier's own head.
    assert torch.equal(predictor_weight(detector), predictor_before)
    assert PREDICTOR in report.missing
    assert set(report.unused) == {name for name in source if name.startswith("classifier.")}


def test_load_partial_skips_shape_mismatches() -> None:
    # Same architecture, other class count: everything but the last layer loads.
    source = models.build("resnet18", Task.CLASSIFICATION, 10, SMALL).state_dict()
    target = models.build("resnet18", Task.CLASSIFICATION, 3, SMALL)
    report = models.load_partial(target, source)
    assert set(report.missing) == {"fc.weight", "fc.bias"}
    assert set(report.unused) == {"fc.weight", "fc.bias"}
    assert torch.equal(target.state_dict()["conv1.weight"], source["conv1.weight"])


def saved(obj: object) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def test_state_dict_from_kubevision_checkpoint_and_plain_file() -> None:
    state = {"w": torch.arange(4.0), "b": torch.ones(2)}
    checkpoint = {"format": 1, "model": state, "epoch": 3, "meta": {"plan": "x"}}
    assert models.state_dict_from_bytes(saved(checkpoint), "best.pt").keys() == {"w", "b"}
    plain = models.state_dict_from_bytes(saved(state), "weights.pt")
    assert torch.equal(plain["w"], torch.arange(4.0))


def test_state_dict_without_tensors_is_refused() -> None:
    with pytest.raises(InputError, match=r"^cfg\.pt: holds no tensors"):
        models.state_dict_from_bytes(saved({"lr": 0.1}), "cfg.pt")


class NotAllowlisted:
    """A class that ``weights_only=True`` refuses to unpickle."""


#: Files that are not state dicts. A non-zip file goes down torch.load's legacy pickle path,
#: which fails with pickle.UnpicklingError or, for some bytes, IndexError; a zip holding a
#: foreign class fails with pickle.UnpicklingError. All must become an InputError naming the
#: file, not a traceback.
GARBAGE = {
    "empty": b"",
    "truncated zip": b"PK\x03\x04 not really a zip",
    "text (IndexError)": b"this is not a torch file at all",
    "text (UnpicklingError)": b"garbage bytes here",
    "json": b'{"model": {}}',
    "png header": b"\x89PNG\r\n\x1a\n" + bytes(40),
    "foreign class": saved({"model": {"w": torch.zeros(1)}, "x": NotAllowlisted()}),
}


@pytest.mark.parametrize("data", list(GARBAGE.values()), ids=list(GARBAGE))
def test_garbage_is_refused_with_input_error(data: bytes) -> None:
    with pytest.raises(InputError) as info:
        models.state_dict_from_bytes(data, "s3://bucket/weights.pt")
    assert info.value.source == "s3://bucket/weights.pt"


def test_detection_step_with_no_boxes_gives_finite_loss() -> None:
    # Every target empty, boxes (0, 4): the detector must still train (background only).
    # Slow on CPU (~10 s: first-call kernel set-up), hence one 64x64 image.
    torch.manual_seed(0)
    resizer = ImageResizer(width=64, height=64)
    model = models.build("fasterrcnn_mobilenet_v3_large_320_fpn", Task.DETECTION, 2, resizer)
    model.train()
    opt = schedule.optimizer(model.parameters(), TrainingOptions(learning_rate=0.01))
    images = [torch.rand(3, 64, 64)]
    targets = [{"boxes": torch.zeros((0, 4)), "labels": torch.zeros((0,), dtype=torch.int64)}]
    losses = model(images, targets)
    loss = torch.stack(list(losses.values())).sum()
    value = float(loss.detach())
    assert math.isfinite(value) and value > 0
    # Nothing to regress: both box losses are exactly 0, not NaN.
    assert float(losses["loss_box_reg"].detach()) == 0.0
    assert float(losses["loss_rpn_box_reg"].detach()) == 0.0
    before = predictor_weight(model).clone()
    opt.zero_grad()
    loss.backward()  # type: ignore[no-untyped-call]  # torch leaves it untyped
    opt.step()
    after = predictor_weight(model)
    assert bool(torch.isfinite(after).all()) and not torch.equal(before, after)
