"""``kubevision predict`` on the bundle that ``kubevision train`` exports reproduces the trainer's
own predictions for the best checkpoint (issue 14): the same top concept for every image, the
trainer's predictions computed here from ``checkpoints/best.pt`` with its eval preset.

The odd-sized copies make predict's own resize do work the trainer's cache did."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import tv_tensors

from kubevision_api import imaging
from kubevision_api.modelversion import ImageResizer, ResizeMode
from kubevision_api.view import Task
from kubevision_trainer import checkpoint, models, presets
from tests.trainer.trainer_helpers import classification_manifests, write_digits_imagefolder

pytestmark = [
    pytest.mark.slow,
]


def _trainer_top(best: Path, images: list[Path], concepts: list[str]) -> list[str]:
    """The best checkpoint's top concept per image, by the trainer's decoding and eval preset."""
    resizer = ImageResizer(mode=ResizeMode.SQUASH, width=32, height=32)
    model = models.build("resnet18", Task.CLASSIFICATION, len(concepts), resizer)
    model.load_state_dict(checkpoint.from_bytes(best.read_bytes(), str(best))["model"])
    model.eval()
    preset = presets.eval_preset(Task.CLASSIFICATION, resizer)
    rows = []
    for path in images:
        picture = imaging.decode_image(path.read_bytes(), str(path), target=32)[0]
        planes = torch.from_numpy(np.asarray(picture).transpose(2, 0, 1).copy())
        rows.append(preset(tv_tensors.Image(planes)))
    with torch.no_grad():
        logits = model(presets.model_input(Task.CLASSIFICATION, torch.stack(rows), torch.float32))
    return [concepts[int(i)] for i in logits.argmax(dim=1)]


def test_predict_reproduces_the_best_checkpoints_top_concepts(tmp_path: Path) -> None:
    write_digits_imagefolder(tmp_path / "data", (0, 1), per_class=30, size=32)
    view, mv = classification_manifests(tmp_path)
    output = tmp_path / "run"
    env = {**os.environ, "KUBEVISION_CACHE_DIR": str(tmp_path / "cache")}
    trained = subprocess.run(
        [
            sys.executable,
            "-m",
            "kubevision_cli",
            "train",
            "-f",
            str(view),
            "-f",
            str(mv),
            "--output",
            str(output),
            # Enough to tell the two digits apart: a model that says one concept for every
            # image would agree with anything that does the same.
            "--epochs",
            "6",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert (output / "export" / "model.onnx").is_file()

    images = sorted((tmp_path / "data").rglob("*.png"))
    # Odd sizes too: the bundle's resizer, not the images' own size, must set the input.
    for i, path in enumerate(images[:4]):
        Image.open(path).resize((45 + i, 37)).save(tmp_path / f"odd{i}.png")
    images += [tmp_path / f"odd{i}.png" for i in range(4)]
    done = subprocess.run(
        [sys.executable, "-m", "kubevision_cli", "predict", "--model", str(output)]
        + [str(p) for p in images],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert [line["image"] for line in lines] == [str(p) for p in images]
    # Class i is the i-th concept by name (docs: the View's concepts, sorted).
    concepts = json.loads((output / "model.json").read_text())["concepts"]
    assert concepts == ["one", "zero"]
    expected = _trainer_top(output / "checkpoints" / "best.pt", images, concepts)
    assert set(expected) == {"one", "zero"}, expected
    assert [line["top"] for line in lines] == expected
