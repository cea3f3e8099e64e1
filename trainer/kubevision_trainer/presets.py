"""Train and eval recipes per task, as torchvision's references keep them in ``presets.py``.

The recipes work on uint8 pixels and stop there: the DataLoader's workers, its collation and
the pinned host-to-device copy then move a quarter of the bytes that float32 would take, and
the float conversion runs once per batch on the training device (:func:`model_input`), not
per image on a CPU core (docs/decisions.md, "Data pipeline at photo scale"). Classifiers get
ImageNet normalisation there; torchvision's detectors normalise inside the model
(``GeneralizedRCNNTransform``), so their input stops at float [0, 1]."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torchvision.transforms import v2

from kubevision_api.modelversion import Augmentation, ImageResizer
from kubevision_api.view import Task
from kubevision_trainer import transforms

#: ImageNet statistics, the torchvision classification references' defaults.
MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


def _tail(task: Task) -> list[v2.Transform]:
    if task is not Task.DETECTION:
        return []
    # Boxes squeezed under 1 px by the resizer would give NaN losses. Loading drops and
    # counts those of the resizer alone (transforms.kept_boxes); this catches the ones
    # that augmentations squeeze.
    size = transforms.MIN_BOX_SIZE
    return [v2.SanitizeBoundingBoxes(min_size=size, min_area=size)]


def model_input(task: Task, images: Any, dtype: torch.dtype) -> Any:
    """A batch of the recipes' uint8 images as the network takes it, on the images' device.

    Args:
        task: the View's task.
        images: classification and tagging: ``(N, 3, H, W)`` uint8; detection: a list of
            ``(3, H, W)`` uint8 tensors.
        dtype: the model's floating dtype.

    Returns:
        ``x * (1 / 255)`` (``v2.ToDtype(scale=True)``), then for classifiers
        ``(x - MEAN) / STD`` per channel (``v2.Normalize``), computed in float32 and cast to
        ``dtype``; the same structure as ``images``.
    """
    # float32 first, multiplied by 1/255 as v2.ToDtype does: bit-identical to the recipes'
    # former per-image conversion, whatever the model's dtype.
    scale = 1.0 / 255
    if task is Task.DETECTION:
        return [image.to(torch.float32).mul_(scale).to(dtype) for image in images]
    mean = torch.tensor(MEAN, dtype=torch.float32, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(STD, dtype=torch.float32, device=images.device).view(1, 3, 1, 1)
    return images.to(torch.float32).mul_(scale).sub_(mean).div_(std).to(dtype)


def train_preset(task: Task, resizer: ImageResizer, ops: Sequence[Augmentation]) -> v2.Compose:
    """Training transform: augmentations in spec order on the cached image, then the
    resizer. Input: ``tv_tensors.Image`` (3, H, W) uint8 (and a detection target dict);
    output: (3, height, width) uint8 (:func:`model_input` makes the network's input)."""
    return v2.Compose(
        [*(transforms.augmentation(op) for op in ops), transforms.resizer(resizer), *_tail(task)]
    )


def eval_preset(task: Task, resizer: ImageResizer) -> v2.Compose:
    """Evaluation transform: the resizer, no augmentation; uint8 out, as :func:`train_preset`."""
    return v2.Compose([transforms.resizer(resizer), *_tail(task)])


def normalisation(task: Task) -> dict[str, list[float]] | None:
    """The normalisation that a user of the exported model applies before the network
    (``model.json``); ``None`` for detectors, which normalise inside."""
    if task is Task.DETECTION:
        return None
    return {"mean": list(MEAN), "std": list(STD)}
