"""Which torchvision architectures fit which task. Plain data, no torch: the operator and the
CRD validation read it; a trainer test checks every name against
``torchvision.models.list_models``."""

from __future__ import annotations

from typing import Final

from kubevision_api.view import Task

#: Image classifiers from ``torchvision.models`` (same builders for classification and tagging;
#: tagging swaps softmax for one sigmoid per concept).
CLASSIFIERS: Final[tuple[str, ...]] = (
    "resnet18",
    "resnet34",
    "resnet50",
    "mobilenet_v3_small",
    "mobilenet_v3_large",
    "efficientnet_b0",
    "convnext_tiny",
    "regnet_y_400mf",
)

#: Detectors from ``torchvision.models.detection``.
DETECTORS: Final[tuple[str, ...]] = (
    "fasterrcnn_mobilenet_v3_large_320_fpn",
    "fasterrcnn_mobilenet_v3_large_fpn",
    "fasterrcnn_resnet50_fpn",
    "fasterrcnn_resnet50_fpn_v2",
    "retinanet_resnet50_fpn",
    "fcos_resnet50_fpn",
    "ssdlite320_mobilenet_v3_large",
)

ARCHITECTURES: Final[dict[Task, tuple[str, ...]]] = {
    Task.CLASSIFICATION: CLASSIFIERS,
    Task.TAGGING: CLASSIFIERS,
    Task.DETECTION: DETECTORS,
}

ALL_ARCHITECTURES: Final[tuple[str, ...]] = CLASSIFIERS + DETECTORS


def fits(architecture: str, task: Task) -> bool:
    """Whether ``architecture`` can be trained for ``task``."""
    return architecture in ARCHITECTURES[task]


def tasks_for(architecture: str) -> list[Task]:
    """The tasks that ``architecture`` fits, in declaration order (empty if unknown)."""
    return [task for task, names in ARCHITECTURES.items() if architecture in names]
