"""Local mode on bad data (issue 10, finding 1): ``kubevision train`` over a View whose concept
differs from its folder by case prints one error line naming both names, exits 2, and never
trains."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

from tests.trainer.trainer_helpers import write_digits_imagefolder


def test_concept_differing_from_its_folder_by_case_is_one_error_line(tmp_path: Path) -> None:
    data = write_digits_imagefolder(tmp_path / "data", (0, 1), per_class=8, size=32)
    (data / "zero").rename(data / "dark")
    (data / "one").rename(data / "light")
    view = {
        "apiVersion": "kubevision.dev/v1alpha1",
        "kind": "View",
        "metadata": {"name": "shades"},
        "spec": {
            "task": "classification",
            "concepts": [{"name": "Dark"}, {"name": "light"}],
            "dataset": {"uri": "data", "format": "imagefolder"},
        },
    }
    mv = {
        "apiVersion": "kubevision.dev/v1alpha1",
        "kind": "ModelVersion",
        "metadata": {"name": "shades-cli"},
        "spec": {
            "viewRef": {"name": "shades"},
            "architecture": "resnet18",
            "imageResizer": {"width": 32, "height": 32},
            "training": {"epochs": 1, "batchSize": 4, "dataLoaderWorkers": 0},
        },
    }
    (tmp_path / "view.yaml").write_text(yaml.safe_dump(view))
    (tmp_path / "mv.yaml").write_text(yaml.safe_dump(mv))
    result = subprocess.run(
        [sys.executable, "-m", "kubevision_cli", "train", "-f", "view.yaml", "-f", "mv.yaml"],
        check=False,
        cwd=tmp_path,
        env={**os.environ, "KUBEVISION_CACHE_DIR": str(tmp_path / "cache")},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert errors == [
        f"error: {data.as_uri()}: a View concept has no image in the dataset: 'Dark' (the data "
        "has 'dark': concept names are case-sensitive, so rename the concept or the data); or "
        "set spec.dataset.allowEmptyConcepts to train without them"
    ]
    assert not (tmp_path / "runs" / "default" / "shades-cli" / "checkpoints").exists()
