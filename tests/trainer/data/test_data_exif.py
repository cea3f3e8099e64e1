"""Boxes of EXIF-oriented photos land on the pixels they were drawn on, in the frame that the
View declares (``spec.dataset.boxFrame``), never guessed from sizes (issue 10, finding 7).

Each photo is a grey picture with a red target, made upright, then stored turned by the
inverse of its EXIF orientation so that a viewer shows the upright picture. The check is the
share of red pixels inside the box after loading: near 1 where the box lands on the target.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from kubevision_api import imaging
from kubevision_api.errors import InputError
from kubevision_api.modelversion import ImageResizer
from kubevision_api.view import BoxFrame, Task
from kubevision_trainer import presets
from kubevision_trainer.data import coco, loading
from kubevision_trainer.data.loading import CachedImage, LoadOptions
from kubevision_trainer.data.torchdata import VisionDataset
from testenv import photos
from tests.trainer.data import data_helpers as helpers

#: Upright size and red target (x1, y1, x2, y2) of each photo: off-centre on both axes.
PHOTOS = {
    "wide": ((96, 64), (10, 6, 34, 22)),
    "square": ((64, 64), (8, 12, 28, 24)),
}
#: Share of red pixels inside the box that counts as "on the target" (JPEG blurs the edges).
ON_TARGET = 0.9


def _upright(size: tuple[int, int], target: tuple[int, int, int, int]) -> Image.Image:
    rng = np.random.default_rng(7)
    pixels = rng.integers(60, 140, (size[1], size[0], 1), dtype=np.uint8).repeat(3, axis=2)
    x1, y1, x2, y2 = target
    pixels[y1:y2, x1:x2] = (230, 20, 20)
    return Image.fromarray(pixels, "RGB")


def _red(pixels: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """Mask of the red target's pixels, in an (H, W, 3) uint8 array."""
    r, g, b = (pixels[..., i].astype(int) for i in range(3))
    return (r > 150) & (g < 90) & (b < 90)


def _red_share(pixels: np.ndarray[Any, Any], box: tuple[float, ...]) -> float:
    x1, y1, x2, y2 = (round(v) for v in box)
    inside = _red(pixels[y1:y2, x1:x2])
    return float(inside.mean()) if inside.size else 0.0


def _red_bbox(image: Image.Image) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(_red(np.asarray(image)))
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def _dataset(
    tmp_path: Path, photo: str, orientation: int, frame: BoxFrame
) -> tuple[list[CachedImage], Image.Image]:
    """The photo stored with ``orientation``, annotated in ``frame``, read and loaded."""
    size, target = PHOTOS[photo]
    upright = _upright(size, target)
    store = photos.STORE[orientation]
    stored = upright if store is None else upright.transpose(store)
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / "data" / "photo.jpg"
    path.parent.mkdir(parents=True, exist_ok=True)
    stored.save(path, quality=95, exif=exif)
    if frame is BoxFrame.UPRIGHT:
        declared, (x1, y1, x2, y2) = size, target
    else:
        # Drawn on the stored pixels: where the red is in the file, found without orient_boxes.
        declared, (x1, y1, x2, y2) = stored.size, _red_bbox(stored)
    document = {
        "images": [
            {"id": 1, "file_name": "photo.jpg", "width": declared[0], "height": declared[1]}
        ],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [x1, y1, x2 - x1, y2 - y1]}
        ],
        "categories": [{"id": 1, "name": "target"}],
    }
    uri = helpers.write_json(tmp_path / "data" / "coco.json", document)
    samples = coco.read(uri, Task.DETECTION, ["target"]).samples
    items = loading.load_images(samples, tmp_path / "cache", options=LoadOptions(box_frame=frame))
    return items, upright


@pytest.mark.parametrize("frame", list(BoxFrame))
@pytest.mark.parametrize("photo", list(PHOTOS))
@pytest.mark.parametrize("orientation", range(1, 9))
def test_boxes_land_on_the_target_for_every_orientation(
    tmp_path: Path, orientation: int, photo: str, frame: BoxFrame
) -> None:
    (item,), upright = _dataset(tmp_path, photo, orientation, frame)
    box = item.sample.boxes[0]
    # The upright reference: the box drawn there covers the target.
    assert _red_share(np.asarray(upright), PHOTOS[photo][1]) == 1.0
    assert (item.width, item.height) == upright.size
    decoded, tag, _ = imaging.decode_image(item.local_path.read_bytes(), "photo.jpg")
    assert tag == orientation and decoded.size == upright.size
    assert np.abs(np.array(box) - np.array(PHOTOS[photo][1])).max() <= 1
    assert _red_share(np.asarray(decoded), box) >= ON_TARGET

    # And after the evaluation transform, at a size that is neither frame's.
    resizer = ImageResizer(width=48, height=32)
    dataset = VisionDataset(
        [item], Task.DETECTION, 1, presets.eval_preset(Task.DETECTION, resizer), 0
    )
    image, target = dataset[0]
    pixels = image.permute(1, 2, 0).numpy()
    assert _red_share(pixels, tuple(target["boxes"][0].tolist())) >= ON_TARGET


def test_declared_size_of_the_other_frame_is_refused_with_a_hint(tmp_path: Path) -> None:
    size, target = PHOTOS["wide"]
    stored = _upright(size, target).transpose(Image.Transpose.ROTATE_90)  # photos.STORE[6]
    exif = Image.Exif()
    exif[0x0112] = 6
    (tmp_path / "photo.jpg").write_bytes(helpers.encode(stored, "JPEG", exif=exif))
    document = {
        "images": [{"id": 3, "file_name": "photo.jpg", "width": 64, "height": 96}],
        "annotations": [{"id": 1, "image_id": 3, "category_id": 1, "bbox": [1, 1, 5, 5]}],
        "categories": [{"id": 1, "name": "target"}],
    }
    uri = helpers.write_json(tmp_path / "coco.json", document)
    samples = coco.read(uri, Task.DETECTION, ["target"]).samples
    with pytest.raises(InputError) as caught:
        loading.load_images(samples, tmp_path / "cache")
    image = (tmp_path / "photo.jpg").as_uri()
    assert str(caught.value) == (
        f"{image}: images[0] (id 3): width/height: the annotation declares 64x96 px, but the "
        "image is 96x64 px upright and 64x96 px as stored (EXIF orientation 6); "
        "spec.dataset.boxFrame is upright: if the boxes were drawn on the stored image, set "
        "spec.dataset.boxFrame: stored"
    )

    document["images"][0].update(width=50, height=50)
    uri = helpers.write_json(tmp_path / "coco.json", document)
    samples = coco.read(uri, Task.DETECTION, ["target"]).samples
    with pytest.raises(InputError) as caught:
        loading.load_images(samples, tmp_path / "cache", options=LoadOptions(BoxFrame.STORED))
    assert str(caught.value) == (
        f"{image}: images[0] (id 3): width/height: the annotation declares 50x50 px, but the "
        "image is 96x64 px upright and 64x96 px as stored (EXIF orientation 6); "
        "spec.dataset.boxFrame is stored"
    )
