"""``kubevision predict``'s pre-processing (``kubevision_cli.serving.preprocess``): hand-computed
arrays for each resizer mode, the trainer's decoding rules, and the trainer's own evaluation
recipe (``presets.eval_preset`` + ``presets.model_input``) on the same images.

Measured differences from the trainer (docs/serving.md), in 0-255 pixel levels (the normalised
difference times ``255 * std``):

- against the eval preset on the same decoded picture: at most 1 level (Pillow's and
  torchvision's antialiased bilinear kernels round differently), 0 where no resize is needed;
- a JPEG reduced by libjpeg's DCT scaling (``draft``), against the eval preset on the full
  decode: at most 2 levels;
- against the trainer's training-resolution cache (``data.cache``): 0 where the cached copy
  already has the resizer's size; where it does not, the trainer resamples twice (Pillow to the
  copy, torchvision to the resizer's size) and predict once: up to tens of levels on single
  pixels of a detailed photo, about 2 on average (``test_the_cache_path_...``).
"""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data as skimage_data
from torchvision import tv_tensors

from kubevision_api import imaging
from kubevision_api.bundle import Preprocessing
from kubevision_api.errors import InputError
from kubevision_api.modelversion import ImageResizer, ResizeMode
from kubevision_api.view import Task
from kubevision_cli.serving.preprocess import Placement, placement, preprocess
from kubevision_trainer import presets
from kubevision_trainer.data import cache

MEAN = np.array(presets.MEAN, dtype=np.float32).reshape(3, 1, 1)
STD = np.array(presets.STD, dtype=np.float32).reshape(3, 1, 1)


def _spec(mode: ResizeMode, height: int, width: int, *, normalise: bool = True) -> Preprocessing:
    stats = {"mean": list(presets.MEAN), "std": list(presets.STD)} if normalise else {}
    return Preprocessing(width=width, height=height, resizer=mode, **stats)


def _png(pixels: np.ndarray, mode: str = "RGB") -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels, mode).save(out, "PNG")
    return out.getvalue()


def _photo(size: tuple[int, int], fmt: str) -> bytes:
    """scikit-image's astronaut (512 x 512, shipped with it), scaled to ``size`` = (w, h)."""
    pixels = skimage_data.astronaut()  # type: ignore[no-untyped-call]
    picture = Image.fromarray(pixels).resize(size, Image.Resampling.BICUBIC)
    out = io.BytesIO()
    picture.save(out, fmt, **({"quality": 92} if fmt == "JPEG" else {}))
    return out.getvalue()


def test_same_size_squash_is_the_normalised_pixels() -> None:
    pixels = np.zeros((2, 3, 3), dtype=np.uint8)
    pixels[0, 0] = (255, 0, 51)
    pixels[1, 2] = (10, 20, 30)
    row, where = preprocess(_png(pixels), "a.png", _spec(ResizeMode.SQUASH, 2, 3))
    assert row.shape == (3, 2, 3) and row.dtype == np.float32
    assert where == Placement(image=(2, 3), scaled=(2, 3), offset=(0, 0))
    # (v / 255 - mean) / std, by hand: red 255 -> (1 - 0.485) / 0.229 = 2.2489083.
    assert row[:, 0, 0] == pytest.approx(
        [(1 - 0.485) / 0.229, (0 - 0.456) / 0.224, (0.2 - 0.406) / 0.225], abs=1e-6
    )
    assert row[:, 1, 2] == pytest.approx(
        [(10 / 255 - 0.485) / 0.229, (20 / 255 - 0.456) / 0.224, (30 / 255 - 0.406) / 0.225],
        abs=1e-6,
    )
    assert row[:, 0, 1] == pytest.approx([-0.485 / 0.229, -0.456 / 0.224, -0.406 / 0.225])


def test_letterbox_pads_top_and_bottom_with_the_pad_value() -> None:
    # A 4 x 2 (w x h) image into 4 x 4: scale 1, one row of margin above and below.
    pixels = np.arange(24, dtype=np.uint8).reshape(2, 4, 3) * 10
    spec = _spec(ResizeMode.LETTERBOX, 4, 4, normalise=False).model_copy(update={"pad_value": 51})
    row, where = preprocess(_png(pixels), "a.png", spec)
    assert where == Placement(image=(2, 4), scaled=(2, 4), offset=(0, 1))
    expected = np.full((3, 4, 4), 0.2, dtype=np.float32)
    expected[:, 1:3, :] = pixels.transpose(2, 0, 1) / 255
    np.testing.assert_allclose(row, expected, atol=1e-7)


def test_crop_keeps_the_centre_columns() -> None:
    # A 6 x 4 image into 4 x 4: scale 1 (the height sets it), crop anchor (6 - 4) / 2 = 1.
    pixels = np.arange(72, dtype=np.uint8).reshape(4, 6, 3)
    row, where = preprocess(_png(pixels), "a.png", _spec(ResizeMode.CROP, 4, 4, normalise=False))
    assert where == Placement(image=(4, 6), scaled=(4, 6), offset=(-1, 0))
    np.testing.assert_allclose(row, pixels[:, 1:5].transpose(2, 0, 1) / 255, atol=1e-7)


def test_crop_anchor_rounds_half_to_even_as_torchvision() -> None:
    # 7 x 4 into 4 x 4: (7 - 4) / 2 = 1.5 -> 2; 9 x 4: 2.5 -> 2 (Python's round).
    spec = _spec(ResizeMode.CROP, 4, 4)
    assert placement(spec, (4, 7)).offset == (-2, 0)
    assert placement(spec, (4, 9)).offset == (-2, 0)


def test_a_uniform_image_stays_uniform_at_any_scale() -> None:
    pixels = np.full((300, 500, 3), (200, 100, 0), dtype=np.uint8)
    row, where = preprocess(_png(pixels), "a.png", _spec(ResizeMode.LETTERBOX, 32, 32))
    # 500 x 300 into 32 x 32: scale 32 / 500, 19.2 -> 19 rows, margins 6 above and 7 below.
    assert where == Placement(image=(300, 500), scaled=(19, 32), offset=(0, 6))
    colour = (np.array([200, 100, 0], dtype=np.float32).reshape(3, 1) / 255 - MEAN[:, 0]) / STD[
        :, 0
    ]
    np.testing.assert_allclose(
        row[:, 6:25, :].reshape(3, -1), np.repeat(colour, 19 * 32, 1), atol=1e-6
    )
    np.testing.assert_allclose(row[:, :6], np.broadcast_to(-MEAN / STD, (3, 6, 32)), atol=1e-6)


def test_exif_orientation_turns_the_image_upright() -> None:
    pixels = np.zeros((2, 4, 3), dtype=np.uint8)
    pixels[0, 0] = 255  # top-left white, stored 4 wide x 2 high
    out = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 clockwise to view
    Image.fromarray(pixels).save(out, "PNG", exif=exif)
    row, where = preprocess(
        out.getvalue(), "a.png", _spec(ResizeMode.SQUASH, 4, 2, normalise=False)
    )
    assert where.image == (4, 2)
    # Turned clockwise, the stored top-left lands at the top-right of the 2 x 4 upright image.
    assert row[:, 0, 1].tolist() == [1.0, 1.0, 1.0]
    assert float(row.sum()) == 3.0


def test_transparency_is_composited_on_black() -> None:
    pixels = np.array([[[200, 100, 50, 128]]], dtype=np.uint8)
    row, _ = preprocess(
        _png(pixels, "RGBA"), "a.png", _spec(ResizeMode.SQUASH, 1, 1, normalise=False)
    )
    # rgb * 128 / 255 rounded: 100.39 -> 100, 50.2 -> 50, 25.1 -> 25.
    assert (row[:, 0, 0] * 255).round().tolist() == [100.0, 50.0, 25.0]


def test_an_unreadable_image_names_the_file() -> None:
    spec = _spec(ResizeMode.SQUASH, 4, 4)
    with pytest.raises(InputError, match=r"^x\.png: cannot decode the image: not a JPEG"):
        preprocess(b"not an image", "x.png", spec)
    with pytest.raises(InputError, match=r"^y\.png: cannot decode the image: empty file"):
        preprocess(b"", "y.png", spec)
    truncated = _photo((64, 64), "JPEG")[:400]
    with pytest.raises(InputError, match=r"^z\.jpg: cannot decode the image"):
        preprocess(truncated, "z.jpg", spec)


def _png_claiming(width: int, height: int) -> bytes:
    """A 1x1 PNG whose IHDR (CRC recomputed) claims ``width x height`` pixels."""
    data = bytearray(_png(np.zeros((1, 1, 3), dtype=np.uint8)))
    # Signature (8 bytes), IHDR's length and type (8), then width and height, big-endian.
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def test_an_image_over_the_default_pixel_limit_is_refused_as_training_refuses_it() -> None:
    """Over 120,000,000 pixels, the View's default ``maxImagePixels``: refused from the header,
    before any pixel is decoded, with the trainer's message."""
    spec = _spec(ResizeMode.SQUASH, 4, 4)
    with pytest.raises(InputError) as caught:
        preprocess(_png_claiming(11_000, 11_000), "big.png", spec)
    assert str(caught.value) == (
        "big.png: the image is 11000x11000 = 121,000,000 pixels, over the limit of 120,000,000 "
        "(spec.dataset.maxImagePixels, a decompression bomb guard): downscale the image or "
        "raise the limit"
    )


def _eval_preset(picture: Image.Image, resizer: ImageResizer) -> np.ndarray:
    """The trainer's evaluation recipe on an RGB picture, as the network's input."""
    planes = torch.from_numpy(np.asarray(picture).transpose(2, 0, 1).copy())
    resized = presets.eval_preset(Task.CLASSIFICATION, resizer)(tv_tensors.Image(planes))
    batch = presets.model_input(Task.CLASSIFICATION, resized[None], torch.float32)
    out: np.ndarray = batch[0].numpy()
    return out


def _levels(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """|a - b| of normalised inputs in 0-255 pixel levels."""
    out: np.ndarray = np.abs(a - b) * STD * 255
    return out


@pytest.mark.parametrize("mode", list(ResizeMode))
@pytest.mark.parametrize(("size", "out"), [((300, 200), (48, 64)), ((37, 61), (32, 32))])
def test_matches_the_eval_preset_on_the_same_picture(
    mode: ResizeMode, size: tuple[int, int], out: tuple[int, int]
) -> None:
    """No reduced decode applies (the image is under twice the input's side): the trainer's
    eval preset on the fully decoded picture, within 1 level."""
    data = _photo(size, "PNG")
    resizer = ImageResizer(mode=mode, height=out[0], width=out[1])
    row, _ = preprocess(data, "a.png", _spec(mode, *out))
    reference = _eval_preset(imaging.decode_image(data, "a.png")[0], resizer)
    levels = _levels(row, reference)
    assert levels.max() <= 1.0 + 1e-3, levels.max()
    assert levels.mean() < 0.25


@pytest.mark.parametrize("mode", list(ResizeMode))
def test_a_jpeg_decoded_at_a_reduced_scale_stays_within_two_levels(mode: ResizeMode) -> None:
    data = _photo((640, 480), "JPEG")
    resizer = ImageResizer(mode=mode, height=48, width=64)
    row, where = preprocess(data, "a.jpg", _spec(mode, 48, 64))
    assert where.image == (480, 640)
    # The same reduced decode as the trainer's (decode_image with target): within 1 level.
    reduced = imaging.decode_image(data, "a.jpg", target=64)[0]
    assert reduced.size == (320, 240)
    assert _levels(row, _eval_preset(reduced, resizer)).max() <= 1.0 + 1e-3
    # Against the full decode: the DCT scaling's own difference, within 2 levels.
    full = _levels(row, _eval_preset(imaging.decode_image(data, "a.jpg")[0], resizer))
    assert full.max() <= 2.0 + 1e-3 and full.mean() < 0.5


def _cached(data: bytes, resizer: ImageResizer) -> np.ndarray:
    """The trainer's path for a validation image: reduced decode, the training-resolution copy
    (``cache.cache_size``, Pillow's resize, no Rotate90), then the eval preset."""
    picture, orientation, raw = imaging.decode_image(
        data, "a", target=max(resizer.height, resizer.width)
    )
    size = cache.cache_size(*imaging.upright_size(raw, orientation), resizer, [])
    small = picture if picture.size == size else picture.resize(size, Image.Resampling.BILINEAR)
    return _eval_preset(small, resizer)


def test_the_cache_path_is_identical_where_the_copy_has_the_resizers_size() -> None:
    data = _photo((1200, 900), "JPEG")
    for mode in ResizeMode:
        resizer = ImageResizer(mode=mode, height=48, width=64)
        row, _ = preprocess(data, "a.jpg", _spec(mode, 48, 64))
        np.testing.assert_array_equal(row, _cached(data, resizer))
    # A copy larger than the resizer's size is resampled twice by the trainer (Pillow, then
    # torchvision): squash 300 x 200 -> copy 72 x 48 -> 64 x 48. Single pixels of the detailed
    # photo differ by tens of levels; the mean stays near 2 (measured 2.2).
    data = _photo((300, 200), "PNG")
    resizer = ImageResizer(mode=ResizeMode.SQUASH, height=48, width=64)
    levels = _levels(
        preprocess(data, "a.png", _spec(ResizeMode.SQUASH, 48, 64))[0], _cached(data, resizer)
    )
    assert 0 < levels.mean() < 3.0 and levels.max() <= 40
