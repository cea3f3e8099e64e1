"""decode_image: every Pillow mode to correct RGB, bad bytes to InputError; orient_boxes against
really rotated images."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageFile

from kubevision_api import imaging
from kubevision_api.errors import InputError
from tests.trainer.data import data_helpers as helpers

URI = "file:///data/cats/001.jpg"


def pixels(data: bytes) -> np.ndarray:
    image, _, _ = imaging.decode_image(data, URI)
    assert image.mode == "RGB"
    return np.asarray(image)


def test_gray_and_bilevel_become_equal_channels() -> None:
    gray = Image.fromarray(np.array([[0, 77, 255]], np.uint8), "L")
    assert pixels(helpers.encode(gray, "PNG")).tolist() == [[[0] * 3, [77] * 3, [255] * 3]]
    bilevel = Image.fromarray(np.array([[0, 255, 0]], np.uint8), "L").convert("1")
    assert pixels(helpers.encode(bilevel, "PNG")).tolist() == [[[0] * 3, [255] * 3, [0] * 3]]


def test_alpha_is_composited_on_black() -> None:
    rgba = np.array([[[200, 100, 50, 51], [255, 100, 0, 0], [9, 8, 7, 255]]], np.uint8)
    out = pixels(helpers.encode(Image.fromarray(rgba, "RGBA"), "PNG"))
    assert out.tolist() == [[[40, 20, 10], [0, 0, 0], [9, 8, 7]]]
    la = Image.fromarray(np.array([[[200, 128], [200, 255]]], np.uint8), "LA")
    assert pixels(helpers.encode(la, "PNG")).tolist() == [[[100] * 3, [200] * 3]]


def test_palette_with_transparency_is_composited_on_black() -> None:
    palette = Image.new("P", (3, 1))
    palette.putpalette([255, 0, 0, 200, 100, 50, 0, 255, 0])
    palette.putdata([0, 1, 2])
    # Entry 0 fully transparent, entry 1 half transparent, entry 2 opaque.
    data = helpers.encode(palette, "PNG", transparency=b"\x00\x80")
    assert Image.open(io.BytesIO(data)).mode == "P"
    assert pixels(data).tolist() == [[[0, 0, 0], [100, 50, 25], [0, 255, 0]]]


def test_opaque_palette_keeps_its_colours() -> None:
    palette = Image.new("P", (2, 1))
    palette.putpalette([12, 34, 56, 200, 100, 50])
    palette.putdata([1, 0])
    assert pixels(helpers.encode(palette, "PNG")).tolist() == [[[200, 100, 50], [12, 34, 56]]]


def test_cmyk_jpeg_has_correct_colours() -> None:
    inks = [(0, 255, 255, 0), (255, 0, 0, 0), (0, 0, 0, 0), (0, 0, 0, 255), (0, 0, 0, 128)]
    expected = [(255, 0, 0), (0, 255, 255), (255, 255, 255), (0, 0, 0), (127, 127, 127)]
    cmyk = Image.new("CMYK", (16 * len(inks), 16))
    for i, ink in enumerate(inks):
        cmyk.paste(ink, (16 * i, 0, 16 * i + 16, 16))
    data = helpers.encode(cmyk, "JPEG", quality=100)
    opened = Image.open(io.BytesIO(data))
    assert opened.mode == "CMYK" and "adobe" in opened.info  # Adobe (inverted) CMYK, as Photoshop
    out = pixels(data)
    for i, colour in enumerate(expected):
        assert np.abs(out[8, 16 * i + 8].astype(int) - colour).max() <= 3, (i, out[8, 16 * i + 8])


def test_16_bit_png_is_scaled_not_clipped() -> None:
    values = np.array([[0, 257, 32768, 65280, 65535]], np.uint16)
    data = helpers.encode(Image.fromarray(values), "PNG")
    assert Image.open(io.BytesIO(data)).mode == "I;16"
    assert pixels(data)[0, :, 0].tolist() == [0, 1, 128, 254, 255]


def test_32_bit_integer_is_taken_as_16_bit_and_clipped() -> None:
    values = np.array([[-5, 0, 32768, 65535, 70000]], np.int32)
    data = helpers.encode(Image.fromarray(values, "I"), "TIFF")
    assert Image.open(io.BytesIO(data)).mode == "I"
    assert pixels(data)[0, :, 0].tolist() == [0, 0, 128, 255, 255]


@pytest.mark.parametrize(
    ("values", "expected"),
    [([0.0, 0.5, 1.0], [0, 128, 255]), ([0.0, 100.0, 300.0], [0, 100, 255])],
    ids=["normalised", "0-255"],
)
def test_float_images(values: list[float], expected: list[int]) -> None:
    data = helpers.encode(Image.fromarray(np.array([values], np.float32), "F"), "TIFF")
    assert pixels(data)[0, :, 0].tolist() == expected


@pytest.mark.timeout(20)
@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated_file_is_an_input_error(fmt: str) -> None:
    noise = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    data = helpers.encode(Image.fromarray(noise, "RGB"), fmt)
    with pytest.raises(InputError) as caught:
        imaging.decode_image(data[: len(data) // 2], URI)
    assert caught.value.source == URI
    assert "truncated" in str(caught.value)
    assert str(caught.value).startswith(URI + ": cannot decode the image")
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


@pytest.mark.parametrize("data", [b"", b"not an image at all", b"\x89PNG\r\n\x1a\n" + b"\0" * 40])
def test_garbage_is_an_input_error(data: bytes) -> None:
    with pytest.raises(InputError, match=f"^{URI}: cannot decode the image"):
        imaging.decode_image(data, URI)


def test_other_formats_are_refused() -> None:
    data = helpers.encode(Image.new("RGB", (4, 4)), "PPM")
    with pytest.raises(InputError, match="not a JPEG, PNG, BMP, GIF, WebP or TIFF image"):
        imaging.decode_image(data, URI)
    for fmt in ["BMP", "GIF", "WEBP", "TIFF"]:
        image = imaging.decode_image(helpers.encode(Image.new("RGB", (4, 3), "white"), fmt), URI)[0]
        assert image.size == (4, 3) and image.getpixel((1, 1)) == (255, 255, 255), fmt
    # Cameras write multi-picture JPEGs (Pillow's MPO): the first picture is the image.
    mpo = helpers.encode(
        Image.new("RGB", (8, 6), "white"),
        "MPO",
        save_all=True,
        append_images=[Image.new("RGB", (2, 2))],
    )
    assert imaging.decode_image(mpo, URI)[0].size == (8, 6)


def test_load_truncated_images_must_stay_false(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(RuntimeError, match="LOAD_TRUNCATED_IMAGES"):
        imaging.decode_image(helpers.boxed_image(), URI)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_boxes_follow_every_exif_orientation(orientation: int) -> None:
    image, tag, raw = imaging.decode_image(helpers.boxed_image(orientation), URI)
    assert tag == orientation
    assert raw == helpers.RAW_SIZE
    swapped = orientation >= 5
    assert image.size == (helpers.RAW_SIZE[::-1] if swapped else helpers.RAW_SIZE)
    boxes = imaging.orient_boxes(np.array([helpers.BOX]), orientation, raw)
    assert boxes.shape == (1, 4) and boxes.dtype == np.float64
    assert tuple(boxes[0]) == helpers.white_bbox(image)


def test_jpeg_rotated_by_exif_keeps_its_box() -> None:
    image, tag, raw = imaging.decode_image(helpers.boxed_image(6, "JPEG"), URI)
    assert (tag, raw, image.size) == (6, (64, 40), (40, 64))
    box = imaging.orient_boxes(np.array([helpers.BOX]), tag, raw)[0]
    # Rotated 90 degrees clockwise: x' = H - y, y' = x.
    assert box.tolist() == [25.0, 10.0, 35.0, 30.0]
    assert np.abs(np.array(helpers.white_bbox(image)) - box).max() <= 1


def test_missing_or_invalid_orientation_is_one() -> None:
    plain = helpers.encode(Image.new("RGB", (5, 3)), "PNG")
    assert imaging.decode_image(plain, URI)[1:] == (1, (5, 3))
    image, tag, _ = imaging.decode_image(helpers.boxed_image(9), URI)
    assert tag == 1 and image.size == helpers.RAW_SIZE


def test_orient_boxes_refuses_bad_input() -> None:
    assert imaging.orient_boxes(np.zeros((0, 4)), 6, (10, 20)).shape == (0, 4)
    with pytest.raises(ValueError, match=r"\(N, 4\)"):
        imaging.orient_boxes(np.zeros((2, 3)), 1, (10, 20))
    with pytest.raises(ValueError, match=r"1\.\.8"):
        imaging.orient_boxes(np.zeros((1, 4)), 0, (10, 20))


@pytest.mark.timeout(20)
def test_decompression_bomb_is_refused_without_decoding() -> None:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    # A valid header claiming 30000 x 30000 grey pixels (900 MB), with no pixel data behind it.
    header = struct.pack(">IIBBBBB", 30_000, 30_000, 8, 0, 0, 0, 0)
    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b""))
    with pytest.raises(InputError, match="decompression bomb") as caught:
        imaging.decode_image(data + chunk(b"IEND", b""), URI)
    assert caught.value.source == URI
