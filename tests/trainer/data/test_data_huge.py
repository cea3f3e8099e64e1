"""Huge and empty image files (issue 10, findings 4 and 9): a 100 MP JPEG decodes within a
stated memory budget, an image over ``spec.dataset.maxImagePixels`` is refused naming file,
pixels and limit, and a zero-byte file is an "empty file"."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from kubevision_api import imaging
from kubevision_api.errors import InputError
from kubevision_api.view import DEFAULT_MAX_IMAGE_PIXELS
from kubevision_trainer.data import loading
from kubevision_trainer.data.sample import Sample
from tests.trainer.data import bad_data_helpers as bad
from tests.trainer.data import data_helpers as helpers

ROOT = Path(__file__).resolve().parents[3]
MIB = 1024 * 1024
#: Decoding a 100 MP JPEG for a 224-px network may add this much to the process's peak RSS.
#: Measured: 9 MiB, 17 MiB through the dataset item (before reduced decoding: 384 and 953 MiB).
BUDGET = 64 * MIB

_MAKE = """
from PIL import Image, ImageDraw
image = Image.new("RGB", (10_000, 10_000), (30, 90, 150))
ImageDraw.Draw(image).rectangle((2000, 3000, 6000, 7000), fill=(220, 20, 20))
image.save({path!r}, quality=85)
"""

# Peak RSS above the RSS just before, for each path in turn: Linux's high-water mark
# (VmHWM), reset before each (clear_refs 5). The reduced decode; the training item built from
# it; a full-size decode for contrast. Pillow's warnings are errors here: none may fire.
_MEASURE = """
import json, re, sys, warnings
from pathlib import Path
warnings.simplefilter("error")
import torch
from kubevision_api.modelversion import ImageResizer
from kubevision_api.view import Task
from kubevision_trainer import presets
from kubevision_api import imaging
from kubevision_trainer.data import loading
from kubevision_trainer.data.sample import Sample
from kubevision_trainer.data.loading import CachedImage
from kubevision_trainer.data.sample import Sample
from kubevision_trainer.data.torchdata import VisionDataset

def kib(name):
    return int(re.search(name + r":\\s+(\\d+) kB", Path("/proc/self/status").read_text())[1])

def measure(work):
    Path("/proc/self/clear_refs").write_text("5")
    before = kib("VmRSS")
    value = work()
    return value, (kib("VmHWM") - before) * 1024

path = Path({path!r})
image, reduced = measure(lambda: imaging.decode_image(path.read_bytes(), str(path), target=224)[0])
sample = Sample(path="big.jpg", uri="", labels=(0,), boxes=((2000.0, 3000.0, 6000.0, 7000.0),),
                box_labels=(0,))
item = CachedImage(sample, "", path, 10_000, 10_000, target=224)
preset = presets.eval_preset(Task.DETECTION, ImageResizer(width=224, height=224))
(tensor, target), item_peak = measure(
    lambda: VisionDataset([item], Task.DETECTION, 1, preset, 0)[0]
)
full, full_peak = measure(lambda: imaging.decode_image(path.read_bytes(), str(path))[0])
print(json.dumps({{
    "reduced_size": list(image.size), "reduced": reduced, "item": item_peak,
    "full": full_peak, "full_size": list(full.size), "shape": list(tensor.shape),
    "box": target["boxes"][0].tolist(),
}}))
"""


def _python(code: str) -> str:
    env = {"PYTHONPATH": f"{ROOT / 'api'}:{ROOT / 'trainer'}:{ROOT}", "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.timeout(300)
def test_100_megapixel_jpeg_decodes_within_its_budget(tmp_path: Path) -> None:
    path = tmp_path / "big.jpg"
    _python(_MAKE.format(path=str(path)))
    assert DEFAULT_MAX_IMAGE_PIXELS >= 10_000 * 10_000
    measured = json.loads(_python(_MEASURE.format(path=str(path))))
    print(
        "peak RSS above the imports, MiB:",
        {k: measured[k] / MIB for k in ("reduced", "item", "full")},
    )
    # libjpeg's DCT scaling by 1/16 keeps both sides >= 2 x 224 (imaging.REDUCING_GAP).
    assert measured["reduced_size"] == [625, 625]
    assert measured["reduced"] < BUDGET and measured["item"] < BUDGET
    # The contrast that makes the measure meaningful: the full picture alone is 286 MiB.
    assert measured["full_size"] == [10_000, 10_000] and measured["full"] > 286 * MIB
    # The box scaled with the reduced decode, then with the resizer: 224 / 10000 per pixel.
    assert measured["shape"] == [3, 224, 224]
    assert measured["box"] == pytest.approx([44.8, 67.2, 134.4, 156.8], abs=0.01)


def _folder(tmp_path: Path, files: dict[str, bytes]) -> str:
    for name, data in files.items():
        (tmp_path / "data" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "data" / name).write_bytes(data)
    return (tmp_path / "data").as_uri()


def _small(size: tuple[int, int] = (32, 24)) -> bytes:
    return helpers.encode(Image.new("RGB", size, (40, 80, 120)), "JPEG")


def test_image_over_the_view_pixel_limit_is_refused_naming_file_pixels_and_limit(
    tmp_path: Path,
) -> None:
    files = {f"{c}/{i}.jpg": _small() for c in ("a", "b") for i in range(5)}
    files["b/big.jpg"] = _small((3000, 2000))
    uri = _folder(tmp_path, files)
    dataset = {"uri": uri, "format": "imagefolder", "maxImagePixels": 5_000_000}
    with pytest.raises(InputError) as caught:
        bad.prepare(bad.plan(tmp_path, "classification", ["a", "b"], dataset), tmp_path)
    assert str(caught.value) == (
        f"{uri}/b/big.jpg: b/big.jpg: the image is 3000x2000 = 6,000,000 pixels, over the limit "
        "of 5,000,000 (spec.dataset.maxImagePixels, a decompression bomb guard): downscale the "
        "image or raise the limit"
    )
    # Under a higher limit, the same dataset loads.
    dataset["maxImagePixels"] = 6_000_000
    prepared = bad.prepare(bad.plan(tmp_path, "classification", ["a", "b"], dataset), tmp_path)
    assert prepared.status.train + prepared.status.val == 11


def test_zero_byte_file_is_an_empty_file(tmp_path: Path) -> None:
    with pytest.raises(InputError) as caught:
        imaging.decode_image(b"", "s3://b/a.png")
    assert str(caught.value) == "s3://b/a.png: cannot decode the image: empty file (0 bytes)"

    files = {f"{c}/{i}.jpg": _small() for c in ("a", "b") for i in range(5)}
    files["a/empty.jpg"] = b""
    uri = _folder(tmp_path, files)
    with pytest.raises(InputError) as caught:
        dataset = {"uri": uri, "format": "imagefolder"}
        bad.prepare(bad.plan(tmp_path, "classification", ["a", "b"], dataset), tmp_path)
    assert str(caught.value) == (
        f"{uri}/a/empty.jpg: a/empty.jpg: cannot decode the image: empty file (0 bytes)"
    )


def test_loading_threads_never_decode_two_huge_images_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Four 600x500 images, 300,000 pixels each: under a limit of 500,000 no two of them decode
    # together; eight small ones still decode many at a time.
    files = {f"big{i}.png": _small((600, 500)) for i in range(4)}
    files.update({f"small{i}.png": _small() for i in range(8)})
    _folder(tmp_path, files)
    running: list[int] = []
    seen: list[tuple[int, int]] = []
    lock = threading.Lock()
    real = imaging.decode_image

    def counted(data: bytes, source: str, **kwargs: Any) -> Any:
        pixels = imaging.stored_size(data) or (0, 0)
        with lock:
            running.append(pixels[0] * pixels[1])
            seen.append((len(running), sum(running)))
        try:
            time.sleep(0.05)  # long enough for the other threads to try
            return real(data, source, **kwargs)
        finally:
            with lock:
                running.remove(pixels[0] * pixels[1])

    monkeypatch.setattr(imaging, "decode_image", counted)
    samples = [
        Sample(path=name, uri=(tmp_path / "data" / name).as_uri(), labels=(0,)) for name in files
    ]
    loading.load_images(
        samples, tmp_path / "cache", threads=8, options=loading.LoadOptions(max_pixels=500_000)
    )
    assert max(total for _, total in seen) <= 500_000
    assert max(count for count, _ in seen) > 1  # small images still decode together
