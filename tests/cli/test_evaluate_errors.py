"""``kubevision evaluate`` checks its flags before reading an image: a ``--device`` this machine
lacks, a ``--model`` folder, an ``--output`` that cannot be written or holds a training run's
output are each one error line naming the flag, exit code 2. The checkpoint is a tiny one with
the View's meta and no weights: the checks come before its weights are loaded, and the View's
dataset does not exist (reading it would be another error)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from kubevision_cli import main as cli
from tests.trainer.trainer_helpers import classification_manifests


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, Path]:
    """(manifests folder, checkpoint) for a 2-concept resnet18 classifier."""
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    classification_manifests(manifests, name="digits-eval")
    model = tmp_path / "best.pt"
    meta = {"task": "classification", "concepts": ["one", "zero"], "architecture": "resnet18"}
    torch.save({"meta": meta, "model": {}, "epoch": 1}, model)
    return manifests, model


def _error(
    capsys: pytest.CaptureFixture[str], manifests: Path, model: Path, output: str, *extra: str
) -> str:
    device = [] if "--device" in extra else ["--device", "cpu"]
    argv = ["evaluate", "-f", str(manifests), "--model", str(model), "--output", output]
    assert cli.main([*argv, *device, *extra]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    return line


def test_an_output_that_is_a_file(
    setup: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifests, model = setup
    taken = tmp_path / "taken"
    taken.write_text("a file")
    line = _error(capsys, manifests, model, str(taken))
    assert line.startswith(f"error: --output: file://{taken}/ cannot be written: ")
    assert "Not a directory" in line or "File exists" in line
    assert taken.read_text() == "a file"


def test_an_output_where_nothing_can_be_written(
    setup: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    manifests, model = setup
    line = _error(capsys, manifests, model, "/proc/kubevision-x")
    assert line.startswith("error: --output: file:///proc/kubevision-x/ cannot be written: ")


def test_an_output_holding_a_training_run_needs_force(
    setup: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifests, model = setup
    run = tmp_path / "run"
    run.mkdir()
    (run / "model.json").write_text("{}")
    (run / "evaluation.json").write_text("{}")
    line = _error(capsys, manifests, model, str(run))
    assert line == (
        f"error: --output: file://{run}/ holds a training run's output (model.json); choose "
        "another --output (or give --force to overwrite its evaluation)"
    )
    # --force passes the check: the next error is the View's dataset, which does not exist.
    line = _error(capsys, manifests, model, str(run), "--force")
    assert line == f"error: file://{manifests}/data: folder not found"
    assert (run / "evaluation.json").read_text() == "{}"
    assert sorted(p.name for p in run.iterdir()) == ["evaluation.json", "model.json"]


def test_a_model_that_is_a_folder(
    setup: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifests, _ = setup
    folder = tmp_path / "run"
    (folder / "checkpoints").mkdir(parents=True)
    line = _error(capsys, manifests, folder, str(tmp_path / "out"))
    assert line == (
        f"error: --model: file://{folder} is a folder, not a checkpoint; give a checkpoint file "
        f"such as file://{folder}/checkpoints/best.pt"
    )
    line = _error(capsys, manifests, folder / "checkpoints", str(tmp_path / "out"))
    assert line.endswith(f"such as file://{folder}/checkpoints/best.pt")
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")
def test_cuda_without_a_gpu(
    setup: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifests, model = setup
    line = _error(capsys, manifests, model, str(tmp_path / "out"), "--device", "cuda")
    assert line == "error: --device: cuda: this machine has 0 CUDA device(s); use cpu or auto"
    assert not (tmp_path / "out").exists()
