"""``kubevision predict`` on a bundle made here: a tiny classifier exported to ONNX as the
Exporting step does (``torch.onnx.export(dynamo=False, opset_version=17)``, dynamic batch) and
the JSON files written from the api's pydantic models.

The proof that the bundle is self-contained: the command runs in a process where importing
torch, torchvision or the training code fails, and its scores are eager PyTorch's."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from kubevision_api.bundle import Postprocessing, Preprocessing
from kubevision_api.export import (
    EXPORT_FOLDER,
    INPUT_NAME,
    LOGITS_NAME,
    ONNX_FILE,
    ONNX_OPSET,
    POSTPROCESSING_JSON,
    PREPROCESSING_JSON,
)
from kubevision_api.modelversion import ResizeMode
from kubevision_api.view import Task
from kubevision_cli import main
from kubevision_cli.serving.preprocess import preprocess

CONCEPTS = ["zero", "one", "two"]
MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def _classifier() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(8, len(CONCEPTS)),
    ).eval()


def write_bundle(folder: Path, model: torch.nn.Module, task: Task = Task.CLASSIFICATION) -> Path:
    """``folder/export/`` with model.onnx (16 x 16 squash input) and the two JSON files."""
    export = folder / EXPORT_FOLDER
    export.mkdir(parents=True)
    torch.onnx.export(
        model,
        (torch.zeros(2, 3, 16, 16),),
        str(export / ONNX_FILE),
        input_names=[INPUT_NAME],
        output_names=[LOGITS_NAME],
        dynamic_axes={INPUT_NAME: {0: "batch"}, LOGITS_NAME: {0: "batch"}},
        opset_version=ONNX_OPSET,
        dynamo=False,
    )
    pre = Preprocessing(width=16, height=16, resizer=ResizeMode.SQUASH, mean=MEAN, std=STD)
    post = Postprocessing(
        task=task,
        concepts=CONCEPTS,
        activation="softmax" if task is Task.CLASSIFICATION else "sigmoid",
        outputs=[LOGITS_NAME],
        thresholds=None if task is Task.CLASSIFICATION else [0.5, 0.4, 0.6],
    )
    (export / PREPROCESSING_JSON).write_text(pre.model_dump_json(by_alias=True))
    (export / POSTPROCESSING_JSON).write_text(post.model_dump_json(by_alias=True))
    return export


def write_images(folder: Path, count: int) -> list[Path]:
    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        path = folder / f"image{i}.png"
        pixels = rng.integers(0, 256, size=(20 + i, 24, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(path)
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path], torch.nn.Module]:
    root = tmp_path_factory.mktemp("predict")
    model = _classifier()
    write_bundle(root / "run", model)
    return root / "run", write_images(root, 5), model


#: Runs the CLI with torch, torchvision and the training code made unimportable.
BLOCKED = textwrap.dedent(
    """
    import sys

    class Blocked:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("torch", "torchvision", "kubevision_trainer",
                                      "kubevision_operator"):
                raise ImportError(f"blocked: {name}")
            return None

    sys.meta_path.insert(0, Blocked())
    from kubevision_cli.main import main
    code = main(sys.argv[1:])
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "torchvision",
                    "kubevision_trainer"))
    print("loaded:", loaded, file=sys.stderr)
    sys.exit(code)
    """
)


def test_predict_runs_without_torch_and_reproduces_eager_pytorch(
    bundle: tuple[Path, list[Path], torch.nn.Module],
) -> None:
    run, images, model = bundle
    done = subprocess.run(
        [sys.executable, "-c", BLOCKED, "predict", "--model", str(run), "--batch-size", "2"]
        + [str(p) for p in images],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "loaded: []" in done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert [line["image"] for line in lines] == [str(p) for p in images]

    pre = Preprocessing.model_validate_json((run / "export" / PREPROCESSING_JSON).read_text())
    rows = np.stack([preprocess(p.read_bytes(), str(p), pre)[0] for p in images])
    with torch.no_grad():
        probabilities = torch.softmax(model(torch.from_numpy(rows)), dim=1).numpy()
    for line, expected in zip(lines, probabilities, strict=True):
        scores = {c["concept"]: c["score"] for c in line["concepts"]}
        assert list(scores) == sorted(scores, key=lambda name: -scores[name])
        assert line["top"] == CONCEPTS[int(expected.argmax())]
        assert [scores[name] for name in CONCEPTS] == pytest.approx(expected, abs=1e-5)


def test_the_run_output_or_the_export_folder_both_name_the_bundle(
    bundle: tuple[Path, list[Path], torch.nn.Module], capsys: pytest.CaptureFixture[str]
) -> None:
    run, images, _ = bundle
    assert main.main(["predict", "--model", str(run), str(images[0])]) == 0
    first = capsys.readouterr().out
    assert main.main(["predict", "--model", f"file://{run}/export/", str(images[0])]) == 0
    assert capsys.readouterr().out == first and json.loads(first)["image"] == str(images[0])


def test_tagging_prints_the_concepts_at_their_thresholds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = _classifier()
    write_bundle(tmp_path, model, Task.TAGGING)
    (image,) = write_images(tmp_path, 1)
    assert main.main(["predict", "--model", str(tmp_path), str(image)]) == 0
    line = json.loads(capsys.readouterr().out)
    pre = Preprocessing.model_validate_json((tmp_path / "export" / PREPROCESSING_JSON).read_text())
    with torch.no_grad():
        row = torch.from_numpy(preprocess(image.read_bytes(), "x", pre)[0][None])
        expected = torch.sigmoid(model(row))[0].numpy()
    assert list(line["scores"].values()) == pytest.approx(expected, abs=1e-5)
    present = {
        name for name, p, t in zip(CONCEPTS, expected, [0.5, 0.4, 0.6], strict=True) if p >= t
    }
    assert {c["concept"] for c in line["concepts"]} == present


def _error(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    assert main.main(["predict", *argv]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    return line


def test_bad_input_is_one_line_naming_the_file(
    bundle: tuple[Path, list[Path], torch.nn.Module],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    run, images, _ = bundle
    assert _error(capsys, "--model", str(tmp_path), str(images[0])) == (
        f"error: {tmp_path}: no serving bundle: neither preprocessing.json nor "
        "export/preprocessing.json exists (the Exporting step of `kubevision train` writes "
        "<output>/export/ when spec.export.formats includes onnx)"
    )
    missing = tmp_path / "missing.png"
    assert _error(capsys, "--model", str(run), str(missing)) == (
        f"error: {missing}: cannot read the image: no such file"
    )
    text = tmp_path / "notes.png"
    text.write_text("hello")
    assert _error(capsys, "--model", str(run), str(text)) == (
        f"error: {text}: cannot decode the image: not a JPEG, PNG, BMP, GIF, WebP or TIFF image"
    )

    broken = tmp_path / "broken" / "export"
    broken.mkdir(parents=True)
    for name in (PREPROCESSING_JSON, POSTPROCESSING_JSON, ONNX_FILE):
        (broken / name).write_bytes((run / "export" / name).read_bytes())
    (broken / PREPROCESSING_JSON).write_text("{not json")
    assert _error(capsys, "--model", str(broken), str(images[0])).startswith(
        f"error: {broken}/preprocessing.json: not JSON: Expecting property name"
    )
    pre = json.loads((run / "export" / PREPROCESSING_JSON).read_text())
    (broken / PREPROCESSING_JSON).write_text(json.dumps({**pre, "resizer": "stretch"}))
    assert _error(capsys, "--model", str(broken), str(images[0])).startswith(
        f"error: {broken}/preprocessing.json: resizer: Input should be 'squash', 'crop' or "
    )
    (broken / PREPROCESSING_JSON).write_text(json.dumps({**pre, "inputName": "pixels"}))
    assert _error(capsys, "--model", str(broken), str(images[0])) == (
        f"error: {broken}/model.onnx: inputName: the graph's inputs are ['images'], not "
        "'pixels' as preprocessing.json says"
    )
    (broken / PREPROCESSING_JSON).write_text(json.dumps(pre))
    post = json.loads((run / "export" / POSTPROCESSING_JSON).read_text())
    (broken / POSTPROCESSING_JSON).write_text(json.dumps({**post, "thresholds": [0.5]}))
    assert _error(capsys, "--model", str(broken), str(images[0])) == (
        f"error: {broken}/postprocessing.json: thresholds: 1 values for 3 concepts"
    )
    (broken / POSTPROCESSING_JSON).write_text(json.dumps(post))
    (broken / ONNX_FILE).unlink()
    assert _error(capsys, "--model", str(broken), str(images[0])) == (
        f"error: {broken}/model.onnx: cannot read the ONNX model (spec.export.formats: onnx): "
        "no such file"
    )
