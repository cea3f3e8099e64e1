"""``kubevision train --nproc N``: local mode on N processes (torchrun, gloo on the CPU).

- ``--nproc`` is validated like ``--epochs``: one ``error:`` line, exit 2, before any process
  starts (at least 1; the global batch must divide by it).
- ``--nproc 2`` on digits runs 2 workers that write one ``best.pt``, one ``metrics.jsonl``
  (one record per epoch) and one report, as one process does. It needs the trainer's
  distributed path (branch dist-core: process group, rank-0-only outputs).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.trainer.trainer_helpers import write_digits_imagefolder

DIGITS = (0, 1, 2)


def _manifests(tmp_path: Path, batch_size: int = 8, epochs: int = 2) -> tuple[Path, Path]:
    view = {
        "apiVersion": "kubevision.dev/v1alpha1",
        "kind": "View",
        "metadata": {"name": "digits"},
        "spec": {
            "task": "classification",
            "concepts": [{"name": n} for n in ("zero", "one", "two")],
            "dataset": {"uri": "data", "format": "imagefolder"},
        },
    }
    mv = {
        "apiVersion": "kubevision.dev/v1alpha1",
        "kind": "ModelVersion",
        "metadata": {"name": "digits-nproc"},
        "spec": {
            "viewRef": {"name": "digits"},
            "architecture": "resnet18",
            "imageResizer": {"width": 32, "height": 32},
            "training": {"epochs": epochs, "batchSize": batch_size, "dataLoaderWorkers": 0},
        },
    }
    (tmp_path / "view.yaml").write_text(yaml.safe_dump(view))
    (tmp_path / "mv.yaml").write_text(yaml.safe_dump(mv))
    return tmp_path / "view.yaml", tmp_path / "mv.yaml"


def _train(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    view, mv = _manifests(tmp_path)
    return subprocess.run(
        [sys.executable, "-m", "kubevision_cli", "train", "-f", str(view), "-f", str(mv), *args],
        check=False,
        cwd=tmp_path,
        env={**os.environ, "KUBEVISION_CACHE_DIR": str(tmp_path / "cache")},
        capture_output=True,
        text=True,
        timeout=900,
    )


@pytest.mark.parametrize(
    ("nproc", "message"),
    [
        ("0", "error: --nproc: 0: must be at least 1 (processes on this machine)"),
        (
            "3",
            "error: --nproc: 3: spec.training.batchSize 8 does not divide by the world size 3 "
            "(the global batch is split evenly over the processes): use an N that divides 8, "
            "or another batch size (a new recipe: a new --output)",
        ),
    ],
)
def test_nproc_is_validated_like_the_manifest(tmp_path: Path, nproc: str, message: str) -> None:
    done = _train(tmp_path, "--nproc", nproc)
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert lines == [message], done.stderr
    assert "Traceback" not in done.stderr
    assert "torchrun" not in done.stderr  # refused before any process started


@pytest.mark.slow
def test_nproc_2_trains_with_two_workers_and_writes_once(tmp_path: Path) -> None:
    # 24 a class: 64 training images, 8 global batches of 8 (4 a rank).
    write_digits_imagefolder(tmp_path / "data", DIGITS, per_class=24, size=32)
    done = _train(tmp_path, "--nproc", "2", "--device", "cpu")
    assert done.returncode == 0, done.stderr[-4000:]
    assert "launching 2 of 2 processes" in done.stderr
    assert "--nproc-per-node=2" in done.stderr
    out = tmp_path / "runs" / "default" / "digits-nproc"
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["best.pt", "last.pt"]
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]  # one writer: no epoch twice
    batches = (out / "batches.jsonl").read_text().splitlines()
    assert len(batches) == 2 * 8  # 8 global batches an epoch, each recorded once
    assert (out / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    card = json.loads((out / "model.json").read_text())
    assert card["metrics"]["bestEpoch"] in (1, 2)
    # The best epoch's validation, as recorded, is the saved best.pt's: every rank validated
    # with rank 0's BatchNorm statistics (before, rank 1's own gave another valLoss).
    best = records[card["metrics"]["bestEpoch"] - 1]
    assert (best["valLoss"], best["accuracy"]) == (
        card["metrics"]["valLoss"],
        card["metrics"]["accuracy"],
    )
