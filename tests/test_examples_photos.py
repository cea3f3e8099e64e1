"""The digits example trains from 12 MP photos of its scans as it does from the scans (issue 13,
"Done when"): the same ModelVersion, once on the 32x32 PNGs and once on a 3456x3456 JPEG of
each (``testenv.photos.enlarge_folder``: 12 MP, square like the scans, so the squash resizer
sees the same shape; under the scans' own file names, so the split is the same), reaches the
same val accuracy within 0.01, both the example's target (>= 0.95). The photos'
training-resolution cache holds one (3, 32, 32) uint8 array per image, and takes less disk
than the photos (issue 13: "keep the cache no larger than the source dataset").

Measured on the 2-core development machine (``-s`` prints the figures): writing the 1,797
photos (763 MB) took 156 s on 2 processes, each training about 75 s; val accuracy 0.9900 from
the scans and 0.9801 from the photos (a difference of 0.0099: inside the issue's 0.01, not by
much; training on the CPU is deterministic, so it does not flake), and the photos' cache takes
5.8 MB. With 3464 px photos under ``.jpg`` names (another split, a quarter-pixel offset), the
gap was 0.032; the same split alone brought it to 0.015, the whole multiple to 0.0099."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from testenv import photos

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "01-classification-digits"
#: 12 MP: 3456 x 3456 = 11,943,936 pixels, 108 times the scans' 32 px. A whole multiple: at
#: 3464 px (108.25 times), every photo pixel sits a quarter pixel off its scan pixel's grid,
#: and the photos scaled back to 32 px differ from the scans by 3.6 gray levels on average
#: instead of 1.05 (measured on 30 scans): a blur of the test's making, not the trainer's.
PHOTO_SIZE = (3456, 3456)
#: The example's target (its modelversion.yaml) and the agreement the issue asks for.
TARGET = 0.95
AGREEMENT = 0.01

pytestmark = pytest.mark.slow


def _folder_size(root: Path) -> int:
    return sum(path.stat().st_size for path in root.rglob("*") if path.is_file())


def _enlarge(source: Path, target: Path) -> float:
    """Every scan under ``source`` as a 12 MP JPEG under ``target``, one concept folder per
    task on 2 processes (the machine's cores); returns the seconds it took."""
    started = time.monotonic()
    folders = sorted(path for path in source.iterdir() if path.is_dir())
    with ProcessPoolExecutor(max_workers=2) as pool:
        jobs = [
            pool.submit(
                photos.enlarge_folder, folder, target / folder.name, PHOTO_SIZE, keep_names=True
            )
            for folder in folders
        ]
        for job in jobs:
            job.result()
    return time.monotonic() - started


def _manifests(work: Path, name: str, dataset: Path) -> Path:
    """The example's manifests in ``work/name``, the View's dataset URI set to ``dataset``;
    the ModelVersion is the example's, unchanged."""
    folder = work / name
    folder.mkdir()
    shutil.copy(EXAMPLE / "modelversion.yaml", folder / "modelversion.yaml")
    view = (EXAMPLE / "view.yaml").read_text()
    line = "uri: ../data/digits-imagefolder"
    assert view.count(line) == 1, "the example's View names its dataset otherwise"
    (folder / "view.yaml").write_text(view.replace(line, f"uri: {dataset.as_uri()}"))
    return folder


def _train(work: Path, manifests: Path, cache: Path) -> tuple[dict[str, Any], float]:
    """``kubevision train`` of ``manifests`` with its own image cache: the model card and the
    run's wall time in seconds."""
    output = work / "runs" / manifests.name
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "KUBEVISION_CACHE_DIR": str(cache),
    }
    started = time.monotonic()
    done = subprocess.run(
        [
            *("kubevision", "train", "-f", str(manifests), "--output", str(output)),
            *("--device", "cpu", "--no-report"),
        ],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )
    seconds = time.monotonic() - started
    assert done.returncode == 0, done.stderr[-3000:]
    card: dict[str, Any] = json.loads((output / "model.json").read_text())
    return card, seconds


@pytest.mark.timeout(1800)
def test_digits_train_from_12_megapixel_photos_as_from_the_scans(tmp_path: Path) -> None:
    data = tmp_path / "data"
    prepared = subprocess.run(
        [
            *(sys.executable, str(ROOT / "examples" / "prepare.py")),
            *("--only", "digits-imagefolder", "--out", str(data)),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert prepared.returncode == 0, prepared.stderr
    scans = data / "digits-imagefolder"
    enlarged = tmp_path / "photos"
    writing = _enlarge(scans, enlarged)
    scan_files = sorted(path.relative_to(scans) for path in scans.rglob("*.png"))
    photo_files = sorted(path.relative_to(enlarged) for path in enlarged.rglob("*.png"))
    assert len(scan_files) == 1797
    # The same relative paths: the split (a hash of the path) puts each photo on its scan's
    # side, so both trainings validate on the same images.
    assert photo_files == scan_files
    with Image.open(enlarged / photo_files[0]) as first:
        assert first.format == "JPEG" and first.size == PHOTO_SIZE

    work = tmp_path / "work"
    work.mkdir()
    scan_card, scan_seconds = _train(work, _manifests(work, "scans", scans), work / "cache-scans")
    photo_cache = work / "cache-photos"
    photo_card, photo_seconds = _train(work, _manifests(work, "photos", enlarged), photo_cache)

    from_scans = scan_card["metrics"]["accuracy"]
    from_photos = photo_card["metrics"]["accuracy"]
    photo_bytes, cache_bytes = _folder_size(enlarged), _folder_size(photo_cache)
    print(
        f"\n1,797 photos of {PHOTO_SIZE[0]}x{PHOTO_SIZE[1]} written in {writing:.0f} s "
        f"({photo_bytes / 1e6:.0f} MB); val accuracy {from_scans:.4f} from the scans "
        f"({scan_seconds:.0f} s), {from_photos:.4f} from the photos ({photo_seconds:.0f} s); "
        f"photo cache {cache_bytes / 1e6:.1f} MB"
    )
    assert from_scans >= TARGET and from_photos >= TARGET
    assert abs(from_photos - from_scans) <= AGREEMENT

    # The cache holds each photo at the resizer's 32x32 (squash), as a raw (3, H, W) array.
    copies = sorted(photo_cache.rglob("*.npy"))
    digests = {hashlib.sha256(path.read_bytes()).hexdigest() for path in enlarged.rglob("*.png")}
    assert {path.name.split(".")[0] for path in copies} == digests
    assert {path.name.split(".")[1] for path in copies} == {"32x32"}
    for path in copies[:: len(copies) // 20]:
        planes = np.load(path, allow_pickle=False)
        assert planes.shape == (3, 32, 32) and planes.dtype == np.uint8
    # No source file in the cache: every image has its 32x32 copy.
    assert len(copies) == len(digests) and not list(photo_cache.rglob("*.png"))
    assert cache_bytes < photo_bytes
