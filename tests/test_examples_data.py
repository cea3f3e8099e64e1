"""The example datasets (``examples/prepare.py``) and the example manifests.

The datasets are built once per session into a temporary folder; the full build takes a few
seconds, so the tests check the real counts rather than a ``--limit`` subset. Training the
examples is left to the trainer's tests.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from kubevision_api import manifests, plan
from kubevision_api.modelversion import ModelVersion
from kubevision_api.view import DatasetFormat, View

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
PREPARE = EXAMPLES / "prepare.py"
EXAMPLE_DIRS = sorted(p for p in EXAMPLES.glob("[0-9][0-9]-*/") if p.is_dir())
DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def run_prepare(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the script as a user does, in a child process; fails the test on a non-zero exit."""
    done = subprocess.run(
        [sys.executable, str(PREPARE), *args], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    return done


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The three datasets, fully built once for this module."""
    out = tmp_path_factory.mktemp("data")
    run_prepare("--out", str(out))
    return out


def read_tags(folder: Path) -> list[dict[str, str]]:
    """Rows of ``tags.csv``."""
    with (folder / "tags.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def read_coco(folder: Path) -> dict[str, Any]:
    """The COCO file of the detection dataset."""
    coco: dict[str, Any] = json.loads((folder / "annotations.json").read_text())
    return coco


# --- datasets -------------------------------------------------------------------------------


def test_imagefolder_holds_every_scan_by_digit(data: Path) -> None:
    root = data / "digits-imagefolder"
    folders = sorted(p.name for p in root.iterdir() if p.is_dir())
    assert folders == sorted(DIGITS)
    files = sorted(root.glob("*/*.png"))
    assert len(files) == 1797
    # Every digit has about a tenth of the scans (load_digits has 174-183 per digit).
    per_digit = Counter(f.parent.name for f in files)
    assert min(per_digit.values()) >= 170
    with Image.open(files[0]) as img:
        assert (img.mode, img.size) == ("L", (32, 32))
        pixels = np.asarray(img)
    assert pixels.min() == 0
    assert pixels.max() > 128


def test_tags_have_images_without_concept_and_balanced_positives(data: Path) -> None:
    root = data / "digits-tags"
    rows = read_tags(root)
    assert len(rows) == 1200
    with (root / "tags.csv").open() as f:
        assert f.readline().strip() == "image,concepts"
    empty = sum(1 for r in rows if not r["concepts"])
    assert 0.25 <= empty / len(rows) <= 0.35
    counts = Counter(c for r in rows for c in r["concepts"].split("|") if c)
    assert set(counts) == {"three", "five", "eight"}
    for concept, n in counts.items():
        assert 0.2 <= n / len(rows) <= 0.4, concept
    assert {r["image"] for r in rows} == {
        p.relative_to(root).as_posix() for p in root.glob("images/*.png")
    }
    with Image.open(root / rows[0]["image"]) as img:
        assert (img.mode, img.size) == ("L", (64, 32))


def test_coco_is_consistent(data: Path) -> None:
    root = data / "digits-detection"
    coco = read_coco(root)
    images = {img["id"]: img for img in coco["images"]}
    assert len(images) == 600
    ids = sorted(c["id"] for c in coco["categories"])
    assert {c["name"] for c in coco["categories"]} == {"zero", "four", "seven"}
    assert ids != list(range(ids[0], ids[0] + len(ids))), "category ids must be non-contiguous"
    assert len({a["id"] for a in coco["annotations"]}) == len(coco["annotations"])
    for ann in coco["annotations"]:
        img = images[ann["image_id"]]
        x, y, w, h = ann["bbox"]
        assert ann["category_id"] in ids
        assert ann["iscrowd"] == 0
        assert w > 0
        assert h > 0
        assert ann["area"] == w * h
        assert x >= 0
        assert x + w <= img["width"]
        assert y >= 0
        assert y + h <= img["height"]
    boxed = {a["image_id"] for a in coco["annotations"]}
    assert 0.05 <= (len(images) - len(boxed)) / len(images) <= 0.15
    for img in coco["images"][:5]:
        with Image.open(root / img["file_name"]) as pil:
            assert pil.size == (img["width"], img["height"])


def test_boxes_hold_the_ink(data: Path) -> None:
    """Boxes are tight to the ink: the darkest pixels of a canvas with a single box lie in it."""
    root = data / "digits-detection"
    coco = read_coco(root)
    per_image = Counter(a["image_id"] for a in coco["annotations"])
    file_names = {img["id"]: img["file_name"] for img in coco["images"]}
    checked = 0
    for ann in coco["annotations"]:
        if per_image[ann["image_id"]] != 1:
            continue
        with Image.open(root / file_names[ann["image_id"]]) as img:
            grey = np.asarray(img.convert("L"))
        x, y, w, h = ann["bbox"]
        assert grey[y : y + h, x : x + w].min() < 90, ann
        checked += 1
    assert checked > 10


def test_second_run_skips_and_output_is_deterministic(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    for out in (a, b):
        run_prepare("--out", str(out), "--limit", "12")
    first = {p.relative_to(a): p.read_bytes() for p in sorted(a.rglob("*")) if p.is_file()}
    second = {p.relative_to(b): p.read_bytes() for p in sorted(b.rglob("*")) if p.is_file()}
    assert first == second
    assert sum(1 for p in first if p.suffix == ".png") == 36
    again = run_prepare("--out", str(a), "--limit", "12")
    assert again.stderr.count("complete, skipped") == 3
    # Other parameters are another dataset: the folder is rebuilt, not reused.
    rebuilt = run_prepare("--out", str(a), "--limit", "5", "--only", "digits-tags")
    assert "skipped" not in rebuilt.stderr
    assert len(read_tags(a / "digits-tags")) == 5


def test_a_foreign_folder_is_left_alone(tmp_path: Path) -> None:
    (tmp_path / "digits-tags").mkdir()
    (tmp_path / "digits-tags" / "mine.txt").write_text("user data")
    done = subprocess.run(
        [sys.executable, str(PREPARE), "--out", str(tmp_path), "--only", "digits-tags"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 1
    assert "not written by prepare.py" in done.stderr
    assert (tmp_path / "digits-tags" / "mine.txt").read_text() == "user data"


# --- example manifests ----------------------------------------------------------------------


def test_example_folders_exist() -> None:
    assert EXAMPLE_DIRS, "no examples/NN-*/ folder found"


@pytest.mark.parametrize("folder", EXAMPLE_DIRS, ids=lambda p: p.name)
def test_example_manifests_resolve(folder: Path, data: Path) -> None:
    """One View and one ModelVersion that names it, a plan resolves, and the dataset URI
    (relative to the manifest's folder) points into examples/data."""
    loaded = manifests.load([folder])
    views = [m.obj for m in loaded if isinstance(m.obj, View)]
    versions = [m.obj for m in loaded if isinstance(m.obj, ModelVersion)]
    assert len(views) == 1
    assert len(versions) == 1
    assert len(loaded) == 2
    view, version = views[0], versions[0]
    assert version.spec.view_ref.name == view.metadata.name
    resolved = plan.resolve(view, version, plan.PlanDefaults())
    assert resolved.concepts == sorted(c.name for c in view.spec.concepts)

    # No example keeps the platform's flips and rotations: they change what a digit means.
    assert {a.name.value for a in version.spec.augmentation}.isdisjoint(
        {"HorizontalFlip", "VerticalFlip", "Rotate90"}
    )
    uri = view.spec.dataset.uri
    assert "://" not in uri
    assert uri.startswith("../data/")
    target = data / uri.removeprefix("../data/")
    if view.spec.dataset.format is DatasetFormat.IMAGEFOLDER:
        assert target.is_dir()
        assert {p.name for p in target.iterdir() if p.is_dir()} == set(resolved.concepts)
    else:
        assert target.is_file()
    if view.spec.dataset.format is DatasetFormat.COCO:
        names = {c["name"] for c in read_coco(target.parent)["categories"]}
        assert names == set(resolved.concepts)
    if view.spec.dataset.format is DatasetFormat.TAGS_CSV:
        found = {c for r in read_tags(target.parent) for c in r["concepts"].split("|") if c}
        assert found == set(resolved.concepts)


@pytest.mark.parametrize("folder", EXAMPLE_DIRS, ids=lambda p: p.name)
def test_example_readme_gives_the_commands(folder: Path) -> None:
    readme = (folder / "README.md").read_text()
    assert "python examples/prepare.py" in readme
    assert f"kubevision train -f examples/{folder.name}" in readme
