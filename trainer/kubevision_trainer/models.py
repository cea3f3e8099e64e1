"""torchvision architectures per task, heads sized to the View's concepts, and partial loads
of initial weights. Nothing is downloaded: every builder gets ``weights=None``."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import torch
import torchvision
from torch import nn

from kubevision_api.errors import InputError
from kubevision_api.modelversion import ImageResizer
from kubevision_api.view import Task
from kubevision_trainer import checkpoint

log = logging.getLogger(__name__)

#: Prefixes under which a detector keeps a classifier's layers, tried in order when a tensor
#: name does not match as is (``backbone.body.layer1...`` <- ``layer1...``).
_BACKBONE_PREFIXES = ("backbone.body.", "backbone.", "")


def build(architecture: str, task: Task, num_concepts: int, resizer: ImageResizer) -> nn.Module:
    """A freshly initialised model.

    Classification and tagging: ``num_concepts`` logits, shape (N, C). Detection: a torchvision
    detector with ``num_concepts + 1`` classes (0 is background) whose internal resize matches
    the resizer, so images reach the network at the resizer's size.

    Raises:
        InputError: the architecture is not a torchvision model of the task's kind.
    """
    if task is Task.DETECTION:
        known = torchvision.models.list_models(module=torchvision.models.detection)
        if architecture not in known:
            raise InputError(
                "TrainingPlan",
                f"{architecture!r} is not a torchvision detector",
                field="spec.architecture",
            )
        kwargs = detector_kwargs(architecture, resizer)
        model: nn.Module = torchvision.models.get_model(
            architecture,
            weights=None,
            weights_backbone=None,
            num_classes=num_concepts + 1,
            **kwargs,
        )
        return model
    known = torchvision.models.list_models(module=torchvision.models)
    if architecture not in known:
        raise InputError(
            "TrainingPlan",
            f"{architecture!r} is not a torchvision classifier",
            field="spec.architecture",
        )
    model = torchvision.models.get_model(architecture, weights=None, num_classes=num_concepts)
    return model


def detector_kwargs(architecture: str, resizer: ImageResizer) -> dict[str, object]:
    """Builder options of a detector for the resizer's input size.

    The images already have the resizer's size, so the model's own resize keeps them as they
    are (``min_size``/``max_size``). For Faster R-CNN on inputs of 320 px or less the RPN keeps
    fewer proposals and the box head samples fewer RoIs (see the comment inside).
    """
    side_min, side_max = min(resizer.width, resizer.height), max(resizer.width, resizer.height)
    if architecture.startswith("ssdlite") or architecture.startswith("ssd"):
        return {}
    kwargs: dict[str, object] = {"min_size": side_min, "max_size": side_max}
    if architecture.startswith("fasterrcnn") and side_max <= 320:
        # The two-layer box head (12544 -> 1024 -> 1024) costs ~14 MFLOPs per RoI and
        # dominates on small images; they hold few objects, so fewer proposals and sampled RoIs
        # lose little (torchvision's 320-px recipe already keeps 150 proposals at test time).
        kwargs.update(
            rpn_pre_nms_top_n_train=200,
            rpn_post_nms_top_n_train=100,
            rpn_pre_nms_top_n_test=100,
            rpn_post_nms_top_n_test=50,
            box_batch_size_per_image=32,
        )
    return kwargs


@dataclass
class LoadReport:
    """What a partial load did: tensor names loaded, and left at their initialisation."""

    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unused: list[str] = field(default_factory=list)


def state_dict_from_bytes(data: bytes, source: str) -> dict[str, torch.Tensor]:
    """The model state dict inside a kubevision checkpoint (key ``model``) or a plain state
    dict file. Loaded with ``weights_only=True``: no code runs.

    Raises:
        InputError: not a torch file, or no tensors in it.
    """
    obj: Any = checkpoint.from_bytes(data, source)
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        obj = obj["model"]
    if not isinstance(obj, dict) or not any(isinstance(v, torch.Tensor) for v in obj.values()):
        raise InputError(source, "holds no tensors (expected a state dict)")
    return {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}


def _match(source: dict[str, torch.Tensor], key: str, shape: torch.Size) -> str | None:
    # torchvision classifiers keep their trunk under ``features.`` (MobileNet, EfficientNet);
    # a detector's ``backbone.body`` is that trunk without the prefix.
    for candidate in (key, "features." + key):
        tensor = source.get(candidate)
        if tensor is not None and tensor.shape == shape:
            return candidate
    return None


def load_partial(model: nn.Module, source: dict[str, torch.Tensor]) -> LoadReport:
    """Copy every tensor of ``source`` whose name and shape fit ``model``; the rest keep their
    initialisation. A name is tried as is, then with the prefixes a detector puts before a
    classifier's layers (``backbone.body.``, ``backbone.``), so a detector can start from a
    classifier's backbone. Heads of another size are left out by the shape check."""
    target = model.state_dict()
    report = LoadReport()
    update: dict[str, torch.Tensor] = {}
    used: set[str] = set()
    for name, tensor in target.items():
        for prefix in _BACKBONE_PREFIXES:
            if not name.startswith(prefix):
                continue
            key = _match(source, name[len(prefix) :], tensor.shape)
            if key is not None:
                update[name] = source[key]
                used.add(key)
                break
        else:
            report.missing.append(name)
    model.load_state_dict(update, strict=False)
    report.loaded = sorted(update)
    report.unused = sorted(set(source) - used)
    log.info(
        "initial weights: %d tensors loaded, %d left initialised, %d unused",
        len(report.loaded),
        len(report.missing),
        len(report.unused),
    )
    return report


def nms_iou(model: nn.Module) -> float | None:
    """The IoU above which a torchvision detector's non-maximum suppression drops the lower
    scored of two boxes of one class: ``roi_heads.nms_thresh`` for the R-CNNs, ``nms_thresh``
    for RetinaNet, FCOS and SSD; None for a classifier."""
    for owner in (getattr(model, "roi_heads", None), model):
        value = getattr(owner, "nms_thresh", None)
        if isinstance(value, int | float):
            return float(value)
    return None
