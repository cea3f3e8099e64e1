"""The size of the training-resolution copy (``data.cache.cache_size``) and the resizer's
geometry (``kubevision_api.geometry.resize_geometry``), against sizes computed by hand.

``cache_size`` scales the upright image by the smallest factor that the resizer still only
shrinks (squash and crop: the larger of output / image per side, letterbox: the smaller), for
the image and, when ``Rotate90`` may apply, for the image turned (the resizer then sees width
and height swapped); the long side is ceil'ed, the short side rounded to the aspect ratio."""

from __future__ import annotations

import pytest

from kubevision_api.geometry import resize_geometry
from kubevision_api.modelversion import (
    Augmentation,
    AugmentationName,
    ImageResizer,
    ResizeMode,
    default_augmentations,
)
from kubevision_trainer.data import cache

SQUASH, CROP, LETTERBOX = ResizeMode.SQUASH, ResizeMode.CROP, ResizeMode.LETTERBOX
#: The platform's defaults: flips, Rotate90 0.5, Brightness.
TURNS = tuple(default_augmentations())
#: Brightness alone: no 90 degree turn.
UPRIGHT = (Augmentation(name=AugmentationName.BRIGHTNESS, probability=1.0),)


@pytest.mark.parametrize(
    ("image", "mode", "output", "augmentations", "expected"),
    [
        # 4000x3000 to 224x224: the height sets the scale, 224 / 3000; the width becomes
        # ceil(4000 * 224 / 3000) = ceil(298.67) = 299. Turned, 3000x4000 needs the same.
        ((4000, 3000), SQUASH, (224, 224), TURNS, (299, 224)),
        ((4000, 3000), CROP, (224, 224), TURNS, (299, 224)),
        ((3000, 4000), CROP, (224, 224), TURNS, (224, 299)),
        # Letterbox fits the long side: 224 / 4000; 3000 * 0.056 = 168.
        ((4000, 3000), LETTERBOX, (224, 224), TURNS, (224, 168)),
        # 320 wide, 192 high: upright the width sets the scale, 320 / 4000 = 0.08, giving
        # 320x240; turned (3000 wide, 4000 high), the width needs 320 / 3000: 4000 * 0.10667
        # = 426.67 -> 427, 3000 * 427 / 4000 = 320.25 -> 320.
        ((4000, 3000), SQUASH, (192, 320), UPRIGHT, (320, 240)),
        ((4000, 3000), SQUASH, (192, 320), TURNS, (427, 320)),
        ((4000, 3000), CROP, (192, 320), TURNS, (427, 320)),
        # Letterbox 320x192 of a 3000x4000 portrait: upright the height sets 192 / 4000,
        # giving 144x192; turned (4000 wide, 3000 high), min(192 / 3000, 320 / 4000) = 0.064,
        # giving 192x256.
        ((3000, 4000), LETTERBOX, (192, 320), UPRIGHT, (144, 192)),
        ((3000, 4000), LETTERBOX, (192, 320), TURNS, (192, 256)),
        # 12 MP square to 224: exactly 224 (in floats 3464 * (224 / 3464) = 224.00000000000003
        # would make it 225).
        ((3464, 3464), SQUASH, (224, 224), TURNS, (224, 224)),
        ((3464, 3464), SQUASH, (32, 32), (), (32, 32)),
        # Letterbox 224 of 433x300: 224 wide makes 300 * 224 / 433 = 155.2 -> 155 high, under
        # the scale 224 / 433 = 0.5173 (155 / 300 = 0.5167); the next width, 225, gives
        # 155.9 -> 156, and the resizer scales 225x156 to 224x155 as it does 433x300.
        ((433, 300), LETTERBOX, (224, 224), TURNS, (225, 156)),
        # Already small enough: its own size, never upscaled.
        ((200, 150), SQUASH, (224, 224), TURNS, (200, 150)),
        ((200, 150), LETTERBOX, (192, 320), TURNS, (200, 150)),
        ((224, 168), LETTERBOX, (224, 224), TURNS, (224, 168)),
        ((32, 32), SQUASH, (32, 32), (), (32, 32)),
    ],
)
def test_cache_size_is_the_hand_computed_one(
    image: tuple[int, int],
    mode: ResizeMode,
    output: tuple[int, int],
    augmentations: tuple[Augmentation, ...],
    expected: tuple[int, int],
) -> None:
    resizer = ImageResizer(mode=mode, height=output[0], width=output[1])
    size = cache.cache_size(*image, resizer, augmentations)
    assert size == expected
    # The resizer puts the copy where it puts the original, in each orientation it may see.
    shapes = [((image[1], image[0]), (size[1], size[0]))]
    if cache.turns(augmentations):
        shapes.append((image, size))
    for full, small in shapes:
        assert resize_geometry(mode, output, small) == resize_geometry(mode, output, full)


def test_turns_counts_rotate90_with_a_chance_only() -> None:
    assert cache.turns(TURNS)
    assert not cache.turns(UPRIGHT)
    never = Augmentation(name=AugmentationName.ROTATE90, probability=0.0)
    assert not cache.turns((never,))


@pytest.mark.parametrize(
    ("mode", "output", "image", "expected"),
    [
        # Crop of 3000 high x 4000 wide to 224x224: 224 / 3000 scales the height to exactly
        # 224 (in floats 3000 * (224 / 3000) = 224.00000000000003 -> 225) and the width to
        # ceil(298.67) = 299.
        (CROP, (224, 224), (3000, 4000), ((224, 299), None)),
        (CROP, (224, 224), (4000, 3000), ((299, 224), None)),
        # Crop to 192 high x 320 wide: the width sets the scale, 320 / 4000 = 0.08 -> 240 high.
        (CROP, (192, 320), (3000, 4000), ((240, 320), None)),
        # Letterbox: 224 / 4000 scales 3000 to 168; (224 - 168) / 2 = 28 px above and below.
        (LETTERBOX, (224, 224), (3000, 4000), ((168, 224), (0, 28, 0, 28))),
        # 192 high x 320 wide of 4000 high x 3000 wide: 192 / 4000 scales 3000 to 144;
        # (320 - 144) / 2 = 88 px left and right.
        (LETTERBOX, (192, 320), (4000, 3000), ((192, 144), (88, 0, 88, 0))),
        # Letterbox of 300 x 433 to 224: 300 * 224 / 433 = 155.19 -> 155; 69 px of margin,
        # 34 above and 35 below.
        (LETTERBOX, (224, 224), (300, 433), ((155, 224), (0, 34, 0, 35))),
        (SQUASH, (224, 224), (3000, 4000), ((224, 224), None)),
    ],
)
def test_resize_geometry_is_the_hand_computed_one(
    mode: ResizeMode,
    output: tuple[int, int],
    image: tuple[int, int],
    expected: tuple[tuple[int, int], tuple[int, int, int, int] | None],
) -> None:
    assert resize_geometry(mode, output, image) == expected
