"""Train and eval recipes per task, as torchvision's references keep them in ``presets.py``.

Classifiers get ImageNet normalisation here; torchvision's detectors normalise inside the
model (``GeneralizedRCNNTransform``), so detection presets stop at float [0, 1]."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchvision.transforms import v2

from kubevision_api.modelversion import Augmentation, ImageResizer
from kubevision_api.view import Task
from kubevision_trainer import transforms

#: ImageNet statistics, the torchvision classification references' defaults.
MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


def _tail(task: Task) -> list[v2.Transform]:
    tail: list[v2.Transform] = [v2.ToDtype(torch.float32, scale=True)]
    if task is Task.DETECTION:
        # Boxes squeezed under 1 px by the resizer would give NaN losses. Loading drops and
        # counts those of the resizer alone (transforms.kept_boxes); this catches the ones
        # that augmentations squeeze.
        size = transforms.MIN_BOX_SIZE
        tail.append(v2.SanitizeBoundingBoxes(min_size=size, min_area=size))
    else:
        tail.append(v2.Normalize(mean=list(MEAN), std=list(STD)))
    return tail


def train_preset(task: Task, resizer: ImageResizer, ops: Sequence[Augmentation]) -> v2.Compose:
    """Training transform: augmentations in spec order on the decoded image, then the
    resizer, then float conversion. Input: ``tv_tensors.Image`` (3, H, W) uint8 (and a
    detection target dict); output: (3, height, width) float32."""
    return v2.Compose(
        [*(transforms.augmentation(op) for op in ops), transforms.resizer(resizer), *_tail(task)]
    )


def eval_preset(task: Task, resizer: ImageResizer) -> v2.Compose:
    """Evaluation transform: the resizer and float conversion, no augmentation."""
    return v2.Compose([transforms.resizer(resizer), *_tail(task)])


def normalisation(task: Task) -> dict[str, list[float]] | None:
    """The normalisation that a user of the exported model applies before the network
    (``model.json``); ``None`` for detectors, which normalise inside."""
    if task is Task.DETECTION:
        return None
    return {"mean": list(MEAN), "std": list(STD)}
