"""Small real datasets and plans for trainer tests, made from scikit-learn's digits scans
(installed with the package; nothing is downloaded)."""

from __future__ import annotations

import io
import socket
import urllib.request
from pathlib import Path

import numpy as np
import yaml
from PIL import Image
from sklearn.datasets import load_digits

from kubevision_api.modelversion import ModelVersion
from kubevision_api.plan import PlanDefaults, TrainingPlan, resolve
from kubevision_api.view import View

NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def write_digits_imagefolder(
    root: Path, digits: tuple[int, ...], per_class: int, size: int
) -> Path:
    """An ImageFolder of ``per_class`` scans of each digit in ``digits``, upscaled to
    ``size`` x ``size`` 8-bit greyscale PNGs. Returns ``root``."""
    data = load_digits()
    for digit in digits:
        folder = root / NAMES[digit]
        folder.mkdir(parents=True, exist_ok=True)
        indices = np.flatnonzero(data.target == digit)[:per_class]
        for index in indices:
            pixels = (data.images[index] * 255.0 / 16.0).astype(np.uint8)
            Image.fromarray(pixels).resize((size, size), Image.Resampling.BILINEAR).save(
                folder / f"{index:04d}.png"
            )
    return root


def classification_plan(
    data: Path,
    output: str,
    digits: tuple[int, ...],
    *,
    metrics_port: int | None = None,
    **training: object,
) -> TrainingPlan:
    """A plan that trains resnet18 at 32 px on an ImageFolder of digits."""
    view = View.model_validate(
        {
            "metadata": {"name": "digits"},
            "spec": {
                "task": "classification",
                "concepts": [{"name": NAMES[d]} for d in digits],
                "dataset": {"uri": f"file://{data}", "format": "imagefolder"},
            },
        }
    )
    mv = ModelVersion.model_validate(
        {
            "metadata": {"name": "digits-test", "namespace": "tests"},
            "spec": {
                "viewRef": {"name": "digits"},
                "architecture": "resnet18",
                "imageResizer": {"width": 32, "height": 32},
                "augmentation": [{"name": "Brightness", "probability": 1.0, "magnitude": 0.3}],
                "training": {"batchSize": 8, "learningRate": 0.02, **training},
                "output": {"uri": output},
            },
        }
    )
    return resolve(view, mv, PlanDefaults(metrics_port=metrics_port))


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def batches_total(port: int) -> float | None:
    """``kubevision_train_batches_total`` as a trainer's ``/metrics`` on ``port`` shows it
    now, or None while nothing answers (the tests poll it to stop a run mid-epoch)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1) as response:
            text = response.read().decode()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("kubevision_train_batches_total{"):
            return float(line.rsplit(" ", 1)[1])
    return None


def assert_drawn(png: bytes, min_width: int, min_height: int) -> tuple[int, int]:
    """``png`` is a PNG of at least that size in pixels, not blank: more than 50 distinct
    colours and a standard deviation of its channel values above 10. Returns its size."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(io.BytesIO(png)) as image:
        rgb = np.asarray(image.convert("RGB"))
    height, width = rgb.shape[:2]
    assert width >= min_width and height >= min_height, (width, height)
    colours = len(np.unique(rgb.reshape(-1, 3), axis=0))
    assert colours > 50, colours
    assert float(rgb.std()) > 10.0
    return width, height


def classification_manifests(
    folder: Path, architecture: str = "resnet18", name: str = "digits-cli"
) -> tuple[Path, Path]:
    """``view.yaml`` and ``mv.yaml`` in ``folder``: a 2-concept (zero, one) ImageFolder View
    over ``data`` and a 1-epoch ModelVersion ``name`` at 32x32; returns their paths."""
    view = {
        "apiVersion": "kubevision.dev/v1alpha1",
        "kind": "View",
        "metadata": {"name": "digits"},
        "spec": {
            "task": "classification",
            "concepts": [{"name": "zero"}, {"name": "one"}],
            "dataset": {"uri": "data", "format": "imagefolder"},
        },
    }
    mv = {
        "apiVersion": "kubevision.dev/v1alpha1",
        "kind": "ModelVersion",
        "metadata": {"name": name},
        "spec": {
            "viewRef": {"name": "digits"},
            "architecture": architecture,
            "imageResizer": {"width": 32, "height": 32},
            "training": {"epochs": 1, "batchSize": 8, "dataLoaderWorkers": 0},
        },
    }
    (folder / "view.yaml").write_text(yaml.safe_dump(view))
    (folder / "mv.yaml").write_text(yaml.safe_dump(mv))
    return folder / "view.yaml", folder / "mv.yaml"
