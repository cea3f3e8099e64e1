"""12 MP camera photos through the training-resolution cache (issue 13, "Done when"): what the
model sees is a one-step resize of the original, and a truncated photo still fails before
training.

- **Pixels**: the evaluation preset's tensor, from the cached copy (``loading`` +
  ``VisionDataset``), against ``transforms.resizer`` applied to the fully decoded original,
  on a 0-255 scale: mean absolute difference under :data:`MAD_BOUND` gray levels for every
  resizer mode at 224x224 and 320x192 (192 high), with the default augmentations (so the
  copy covers ``Rotate90``), for photos stored with EXIF orientations 1, 6 and 3.
- **Boxes**: several boxes on the upright photo, through loading + ``VisionDataset``
  (detection, evaluation preset) and through the one-step resize with
  ``tv_tensors.BoundingBoxes``: within :data:`BOX_BOUND` px.
- **Truncation**: the loading step decodes a large JPEG at a reduced scale (libjpeg's DCT
  scaling, ``Image.draft``), which still reads the whole entropy-coded stream: a photo cut to
  70% of its bytes, or missing its last few hundred bytes, is an ``InputError`` naming the
  file.

Measured on the development machine (``-s`` prints them): mean absolute difference 0.09
(letterbox 224) to 1.02 (crop 320x192) gray levels; box error under 1e-4 px (float32
rounding: the copy's size gives the resizer the original's geometry, ``cache.cache_size``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from torchvision import tv_tensors
from torchvision.transforms.v2 import functional as tvf

from kubevision_api import imaging
from kubevision_api.errors import InputError
from kubevision_api.modelversion import ImageResizer, ResizeMode, default_augmentations
from kubevision_api.view import Task
from kubevision_trainer import presets, transforms
from kubevision_trainer.data import cache, loading
from kubevision_trainer.data.loading import LoadOptions
from kubevision_trainer.data.sample import Box, Sample
from kubevision_trainer.data.torchdata import VisionDataset
from testenv import photos

#: Mean absolute difference, 0-255 scale, between the tensor the model sees and a one-step
#: resize of the original. Measured: 0.09 to 1.02, the largest for a 320x192 crop of a
#: landscape (its copy, 427x320, is scaled by 0.75, the others by 0.75 to 1); bound: about
#: 1.5 x the largest.
MAD_BOUND = 1.5
#: Largest coordinate difference between the boxes the model sees and the one-step resize's.
BOX_BOUND = 0.5

#: scikit-image photo, EXIF orientation it is stored with, upright (width, height): a
#: landscape, a portrait stored sideways, a landscape stored upside down.
PHOTOS = (
    ("astronaut.png", 1, (4000, 3000)),
    ("chelsea.png", 6, (3000, 4000)),
    ("coffee.png", 3, (4000, 3000)),
)
#: Boxes as fractions of the upright photo (x1, y1, x2, y2): inside what every resizer keeps
#: (a 320x192 crop of a portrait keeps the middle 45% of its height).
BOX_FRACTIONS = (
    (0.2013, 0.3107, 0.4521, 0.5333),
    (0.5522, 0.4019, 0.7906, 0.6871),
    (0.3301, 0.5550, 0.6612, 0.6987),
)
RESIZERS = [
    ImageResizer(mode=mode, width=width, height=height)
    for mode in ResizeMode
    for width, height in ((224, 224), (320, 192))
]


@dataclass(frozen=True)
class Photo:
    """A 12 MP photo on disk and what a one-step pipeline starts from."""

    path: Path
    upright: torch.Tensor  # (3, H, W) uint8, the full decode, EXIF applied
    boxes: tuple[Box, ...]  # pixels of the upright photo


@pytest.fixture(scope="module")
def photo_files(tmp_path_factory: pytest.TempPathFactory) -> list[Photo]:
    folder = tmp_path_factory.mktemp("photos")
    out = []
    for name, orientation, size in PHOTOS:
        path = folder / f"{Path(name).stem}-{orientation}.jpg"
        path.write_bytes(photos.photo(name, orientation, size))
        picture, tag, raw = imaging.decode_image(path.read_bytes(), str(path))
        assert tag == orientation and picture.size == size
        assert raw == (size if orientation < 5 else (size[1], size[0]))
        width, height = size
        boxes = tuple(
            (x1 * width, y1 * height, x2 * width, y2 * height) for x1, y1, x2, y2 in BOX_FRACTIONS
        )
        out.append(Photo(path, tvf.pil_to_tensor(picture), boxes))
    return out


def _load(photo_files: list[Photo], resizer: ImageResizer, cache_dir: Path) -> VisionDataset:
    samples = [
        Sample(
            path=photo.path.name,
            uri=photo.path.as_uri(),
            labels=(0,),
            boxes=photo.boxes,
            box_labels=(0,) * len(photo.boxes),
        )
        for photo in photo_files
    ]
    # The ModelVersion's default augmentations: Rotate90 makes the copy cover both
    # orientations of the resizer.
    options = LoadOptions(resizer=resizer, augmentations=tuple(default_augmentations()))
    items = loading.load_images(samples, cache_dir, options=options)
    for item, photo in zip(items, photo_files, strict=True):
        size = (int(photo.upright.shape[2]), int(photo.upright.shape[1]))
        assert (item.width, item.height) == size
        assert item.cached_size == cache.cache_size(*size, resizer, options.augmentations)
        assert item.local_path.suffix == cache.RAW
        assert item.sample.boxes == photo.boxes
    preset = presets.eval_preset(Task.DETECTION, resizer)
    return VisionDataset(items, Task.DETECTION, 1, preset, seed=0)


@pytest.mark.parametrize("resizer", RESIZERS, ids=lambda r: f"{r.mode.value}-{r.width}x{r.height}")
def test_what_the_model_sees_is_a_one_step_resize_of_the_original(
    tmp_path: Path, photo_files: list[Photo], resizer: ImageResizer
) -> None:
    detection = _load(photo_files, resizer, tmp_path / "cache")
    classification = VisionDataset(
        detection.items,
        Task.CLASSIFICATION,
        1,
        presets.eval_preset(Task.CLASSIFICATION, resizer),
        seed=0,
    )
    one_step = transforms.resizer(resizer)
    for i, photo in enumerate(photo_files):
        canvas = (int(photo.upright.shape[1]), int(photo.upright.shape[2]))
        boxes = tv_tensors.BoundingBoxes(
            torch.tensor(photo.boxes), format="XYXY", canvas_size=canvas
        )
        expected_image, expected_boxes = one_step(tv_tensors.Image(photo.upright), boxes)
        expected = expected_image.as_subclass(torch.Tensor).double()
        assert expected.shape == (3, resizer.height, resizer.width)

        # The recipes deliver uint8 pixels (presets.model_input converts them on the device).
        pixels, _ = classification[i]
        assert pixels.dtype == torch.uint8
        mad = float((pixels.double() - expected).abs().mean())
        # Detection: the pixels and the boxes.
        image, target = detection[i]
        seen_detection = image.double()
        mad_detection = float((seen_detection - expected).abs().mean())
        box_error = float((target["boxes"].double() - expected_boxes.double()).abs().max())
        print(
            f"\n{photo.path.name} {resizer.mode.value} {resizer.width}x{resizer.height}: "
            f"cached {detection.items[i].cached_size}, MAD {mad:.3f} "
            f"(detection {mad_detection:.3f}), max |box error| {box_error:.1e} px"
        )
        assert target["boxes"].shape == (len(photo.boxes), 4)
        assert mad < MAD_BOUND and mad_detection < MAD_BOUND
        assert box_error <= BOX_BOUND


@pytest.mark.parametrize("cut", [0.3, 300], ids=["first-70-percent", "last-300-bytes-missing"])
def test_truncated_12_megapixel_photo_fails_loading_naming_the_file(
    tmp_path: Path, photo_files: list[Photo], cut: float
) -> None:
    whole = photo_files[0].path.read_bytes()
    resizer = ImageResizer(mode=ResizeMode.SQUASH, width=224, height=224)
    # The loading step's decode is a reduced one: libjpeg's DCT scaling by 1/4 (1/8 would
    # leave 375 px, under imaging.REDUCING_GAP x 224 = 448), no full-size picture.
    reduced, _, _ = imaging.decode_image(whole, "whole.jpg", target=224)
    assert reduced.size == (1000, 750)

    keep = len(whole) - int(cut) if cut >= 1 else int(len(whole) * (1 - cut))
    path = tmp_path / "data" / "cut.jpg"
    path.parent.mkdir()
    path.write_bytes(whole[:keep])
    # The header is intact: the file is taken for a 12 MP JPEG until its pixels are decoded.
    assert imaging.stored_size(whole[:keep]) == (4000, 3000)
    sample = Sample(path="cut.jpg", uri=path.as_uri(), labels=(0,), record="cut.jpg")
    options = LoadOptions(resizer=resizer, augmentations=tuple(default_augmentations()))
    assert options.target == 224
    with pytest.raises(InputError) as caught:
        imaging.decode_image(whole[:keep], "cut.jpg", target=224)
    assert "truncated" in str(caught.value)
    with pytest.raises(InputError) as caught:
        loading.load_images([sample], tmp_path / "cache", options=options)
    message = str(caught.value)
    print(f"\n{len(whole) - keep} of {len(whole)} bytes missing: {message}")
    assert message.startswith(f"{path.as_uri()}: cut.jpg: cannot decode the image: ")
    assert "truncated" in message
    # Nothing of it reached the cache.
    assert not [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]
