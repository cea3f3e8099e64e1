"""Box-aware transforms: the three resizer modes with hand-computed box coordinates, every
named augmentation on image+boxes and image alone, Rotate90 geometry and probabilities."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from kubevision_api.modelversion import Augmentation, AugmentationName, ImageResizer, ResizeMode
from kubevision_api.view import Task
from kubevision_trainer import presets, transforms

#: Output size of the resizer tests: height 32, width 48 (non-square, multiples of 16).
HEIGHT, WIDTH = 32, 48


def white(height: int, width: int) -> tv_tensors.Image:
    return tv_tensors.Image(torch.full((3, height, width), 255, dtype=torch.uint8))


def target(boxes: list[list[float]], canvas: tuple[int, int]) -> dict[str, Any]:
    return {
        "boxes": tv_tensors.BoundingBoxes(
            torch.tensor(boxes, dtype=torch.float32), format="XYXY", canvas_size=canvas
        ),
        "labels": torch.arange(1, len(boxes) + 1, dtype=torch.int64),
    }


def boxed(height: int = 40, width: int = 64) -> tuple[tv_tensors.Image, dict[str, Any]]:
    """Black image with a white rectangle (10, 5)-(30, 15), and that box as the target: off
    centre on both axes, so every flip and rotation moves it."""
    pixels = torch.zeros((3, height, width), dtype=torch.uint8)
    pixels[:, 5:15, 10:30] = 255
    return tv_tensors.Image(pixels), target([[10, 5, 30, 15]], (height, width))


def colourful(height: int = 40, width: int = 64) -> tv_tensors.Image:
    """Saturated, varied pixels, so that every colour and blur operation changes something."""
    generator = torch.Generator().manual_seed(3)
    return tv_tensors.Image(torch.randint(0, 256, (3, height, width), generator=generator).byte())


def resize(mode: ResizeMode) -> transforms.Resize:
    return transforms.resizer(ImageResizer(mode=mode, width=WIDTH, height=HEIGHT))


def test_squash() -> None:
    # 120x40 (WxH) -> 48x32: x scaled by 48/120 = 0.4, y by 32/40 = 0.8, so
    # (40, 10, 80, 30) -> (16, 8, 32, 24).
    image, tgt = resize(ResizeMode.SQUASH)(white(40, 120), target([[40, 10, 80, 30]], (40, 120)))
    assert tuple(image.shape) == (3, HEIGHT, WIDTH)
    assert image.dtype == torch.uint8
    assert tgt["boxes"].canvas_size == (HEIGHT, WIDTH)
    assert tgt["boxes"].tolist() == [[16.0, 8.0, 32.0, 24.0]]


def test_crop() -> None:
    # Cover: scale max(32/40, 48/120) = 0.8 -> 96x32, then centre-crop 48 columns from
    # x = (96 - 48) / 2 = 24. (40, 10, 80, 30) * 0.8 = (32, 8, 64, 24) -> (8, 8, 40, 24).
    image, tgt = resize(ResizeMode.CROP)(white(40, 120), target([[40, 10, 80, 30]], (40, 120)))
    assert tuple(image.shape) == (3, HEIGHT, WIDTH)
    assert tgt["boxes"].tolist() == [[8.0, 8.0, 40.0, 24.0]]
    assert bool((image == 255).all())  # crop never pads


def test_letterbox_wide_image_pads_top_and_bottom() -> None:
    # Fit: scale min(0.8, 0.4) = 0.4 -> 48x16, padded by (32 - 16) / 2 = 8 rows above and
    # below. (40, 10, 80, 30) * 0.4 = (16, 4, 32, 12), + 8 in y -> (16, 12, 32, 20).
    image, tgt = resize(ResizeMode.LETTERBOX)(white(40, 120), target([[40, 10, 80, 30]], (40, 120)))
    assert tuple(image.shape) == (3, HEIGHT, WIDTH)
    assert tgt["boxes"].tolist() == [[16.0, 12.0, 32.0, 20.0]]
    assert bool((image[:, :8] == 0).all()) and bool((image[:, 24:] == 0).all())
    assert bool((image[:, 8:24] == 255).all())


def test_letterbox_tall_image_pads_left_and_right() -> None:
    # 48x96 (WxH): scale min(32/96, 48/48) = 1/3 -> 16x32, padded by (48 - 16) / 2 = 16
    # columns each side. (12, 24, 36, 48) / 3 = (4, 8, 12, 16), + 16 in x -> (20, 8, 28, 16).
    image, tgt = resize(ResizeMode.LETTERBOX)(white(96, 48), target([[12, 24, 36, 48]], (96, 48)))
    assert tuple(image.shape) == (3, HEIGHT, WIDTH)
    assert tgt["boxes"].tolist() == [[20.0, 8.0, 28.0, 16.0]]
    assert bool((image[:, :, :16] == 0).all()) and bool((image[:, :, 32:] == 0).all())
    assert bool((image[:, :, 16:32] == 255).all())


def test_letterbox_odd_padding_is_centred() -> None:
    # 100x40 (WxH): scale min(0.8, 0.48) = 0.48 -> 48x19 (19.2 rounded); 13 rows of padding
    # split 6 above (13 // 2) and 7 below.
    image = resize(ResizeMode.LETTERBOX)(white(40, 100))
    assert tuple(image.shape) == (3, HEIGHT, WIDTH)
    assert bool((image[:, :6] == 0).all()) and bool((image[:, 25:] == 0).all())
    assert bool((image[:, 6:25] == 255).all())


@pytest.mark.parametrize("mode", list(ResizeMode))
def test_image_alone_gets_the_exact_size(mode: ResizeMode) -> None:
    for height, width in [(40, 120), (97, 31), (32, 48), (7, 5)]:
        out = resize(mode)(white(height, width))
        assert tuple(out.shape) == (3, HEIGHT, WIDTH), (mode, height, width)


def test_crop_preset_removes_boxes_cropped_away() -> None:
    # (0, 0, 20, 20) * 0.8 = (0, 0, 16, 16) lies left of the crop window (x >= 24): clamped to
    # zero width, then dropped with its label by SanitizeBoundingBoxes. So is the box at the
    # right edge.
    preset = presets.eval_preset(
        Task.DETECTION, ImageResizer(mode=ResizeMode.CROP, width=WIDTH, height=HEIGHT)
    )
    boxes = [[0.0, 0.0, 20.0, 20.0], [40.0, 10.0, 80.0, 30.0], [110.0, 20.0, 120.0, 40.0]]
    image, tgt = preset(white(40, 120), target(boxes, (40, 120)))
    assert tuple(image.shape) == (3, HEIGHT, WIDTH) and image.dtype == torch.uint8
    assert tgt["boxes"].tolist() == [[8.0, 8.0, 40.0, 24.0]]
    assert tgt["labels"].tolist() == [2]


def test_classification_model_input_normalises_the_uint8_batch() -> None:
    preset = presets.eval_preset(Task.CLASSIFICATION, ImageResizer(width=WIDTH, height=HEIGHT))
    out = preset(white(40, 120))
    assert tuple(out.shape) == (3, HEIGHT, WIDTH) and out.dtype == torch.uint8
    pixels = torch.stack([out, torch.zeros_like(out)])
    batch = presets.model_input(Task.CLASSIFICATION, pixels, torch.float32)
    assert batch.dtype == torch.float32 and tuple(batch.shape) == (2, 3, HEIGHT, WIDTH)
    # (v - mean) / std per channel, v = 1 for a white pixel and 0 for a black one.
    for value, image in ((1.0, batch[0]), (0.0, batch[1])):
        expected = [(value - m) / s for m, s in zip(presets.MEAN, presets.STD, strict=True)]
        assert image[:, 0, 0].tolist() == pytest.approx(expected, rel=1e-6)
    # Exactly torchvision's per-image conversion, which the recipes used to end with.
    reference = v2.Normalize(list(presets.MEAN), list(presets.STD))(
        v2.ToDtype(torch.float32, scale=True)(pixels)
    )
    assert torch.equal(batch, reference)


def test_detection_model_input_scales_to_unit_range() -> None:
    image = torch.tensor([[[0, 51, 255]]], dtype=torch.uint8).expand(3, 1, 3)
    (out,) = presets.model_input(Task.DETECTION, [image], torch.float32)
    assert out.dtype == torch.float32 and out[0, 0].tolist() == pytest.approx([0.0, 0.2, 1.0])


@pytest.mark.parametrize("name", list(AugmentationName))
def test_each_augmentation_runs_with_boxes(name: AugmentationName) -> None:
    op = transforms.augmentation(Augmentation(name=name, probability=1.0, magnitude=0.5))
    image, tgt = boxed()
    torch.manual_seed(0)
    out, out_tgt = op(image, tgt)
    assert isinstance(out, tv_tensors.Image) and out.dtype == torch.uint8
    boxes = out_tgt["boxes"]
    assert isinstance(boxes, tv_tensors.BoundingBoxes)
    assert boxes.canvas_size == tuple(out.shape[-2:])
    assert boxes.shape == (1, 4)
    # The box keeps its size (no augmentation scales content) and stays on the canvas.
    widths = sorted([float(boxes[0, 2] - boxes[0, 0]), float(boxes[0, 3] - boxes[0, 1])])
    assert widths == [10.0, 20.0]
    assert float(boxes.min()) >= 0
    assert float(boxes[0, 2]) <= out.shape[-1] and float(boxes[0, 3]) <= out.shape[-2]


@pytest.mark.parametrize("name", list(AugmentationName))
def test_each_augmentation_runs_on_image_alone(name: AugmentationName) -> None:
    op = transforms.augmentation(Augmentation(name=name, probability=1.0, magnitude=0.5))
    torch.manual_seed(0)
    out = op(colourful())
    assert isinstance(out, tv_tensors.Image) and out.dtype == torch.uint8
    assert out.shape[0] == 3


@pytest.mark.parametrize("name", list(AugmentationName))
def test_probability_one_changes_the_image(name: AugmentationName) -> None:
    op = transforms.augmentation(Augmentation(name=name, probability=1.0, magnitude=0.5))
    image = colourful()
    torch.manual_seed(0)
    out = op(image)
    assert out.shape != image.shape or not torch.equal(out, image), name


@pytest.mark.parametrize("name", list(AugmentationName))
def test_probability_zero_leaves_the_image_unchanged(name: AugmentationName) -> None:
    op = transforms.augmentation(Augmentation(name=name, probability=0.0, magnitude=1.0))
    image, tgt = boxed()
    for seed in range(5):
        torch.manual_seed(seed)
        out, out_tgt = op(image, tgt)
        assert torch.equal(out, image)
        assert out_tgt["boxes"].tolist() == [[10.0, 5.0, 30.0, 15.0]]


def test_flip_probability_one_always_flips() -> None:
    op = transforms.augmentation(Augmentation(name=AugmentationName.HORIZONTAL_FLIP, probability=1))
    image, tgt = boxed()
    for seed in range(10):
        torch.manual_seed(seed)
        out, out_tgt = op(image, tgt)
        # x -> 64 - x: (10, 5, 30, 15) -> (34, 5, 54, 15).
        assert out_tgt["boxes"].tolist() == [[34.0, 5.0, 54.0, 15.0]]
        assert torch.equal(out, image.flip(-1))


def test_vertical_flip_moves_the_box() -> None:
    op = transforms.augmentation(Augmentation(name=AugmentationName.VERTICAL_FLIP, probability=1))
    _, out_tgt = op(*boxed())
    # y -> 40 - y: (10, 5, 30, 15) -> (10, 25, 30, 35).
    assert out_tgt["boxes"].tolist() == [[10.0, 25.0, 30.0, 35.0]]


def white_bbox(image: torch.Tensor) -> list[float]:
    ys, xs = torch.nonzero(image[0] > 128, as_tuple=True)
    return [float(xs.min()), float(ys.min()), float(xs.max()) + 1, float(ys.max()) + 1]


def test_rotate90_moves_box_with_pixels() -> None:
    # The canvas is expanded: 64x40 (WxH) becomes 40x64. Counter-clockwise (+90):
    # (x, y) -> (y, 64 - x), so (10, 5, 30, 15) -> (5, 34, 15, 54); clockwise (-90):
    # (x, y) -> (40 - y, x), so -> (25, 10, 35, 30). Both must show up over a few seeds.
    op = transforms.augmentation(Augmentation(name=AugmentationName.ROTATE90, probability=1))
    image, tgt = boxed()
    seen = set()
    for seed in range(12):
        torch.manual_seed(seed)
        out, out_tgt = op(image, tgt)
        assert tuple(out.shape) == (3, 64, 40)
        box = out_tgt["boxes"].tolist()[0]
        assert box in ([5.0, 34.0, 15.0, 54.0], [25.0, 10.0, 35.0, 30.0])
        # The white pixels lie inside the transformed box, and fill it.
        assert white_bbox(out) == box
        seen.add(tuple(box))
    assert len(seen) == 2


def test_train_preset_order_augment_then_resize() -> None:
    # Rotate90 before the resizer: whatever the rotation did, the output has the resizer's
    # size and the box is inside it.
    preset = presets.train_preset(
        Task.DETECTION,
        ImageResizer(mode=ResizeMode.LETTERBOX, width=WIDTH, height=HEIGHT),
        [Augmentation(name=AugmentationName.ROTATE90, probability=1.0)],
    )
    image, tgt = boxed()
    torch.manual_seed(1)
    out, out_tgt = preset(image, tgt)
    assert tuple(out.shape) == (3, HEIGHT, WIDTH) and out.dtype == torch.uint8
    (x1, y1, x2, y2) = out_tgt["boxes"].tolist()[0]
    assert 0 <= x1 < x2 <= WIDTH and 0 <= y1 < y2 <= HEIGHT
