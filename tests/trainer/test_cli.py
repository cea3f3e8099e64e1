"""Bad input reaches the user as one clear line naming file, record and field, and the
Job's entry point writes it as the termination message."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.trainer.trainer_helpers import (
    classification_manifests,
    classification_plan,
    write_digits_imagefolder,
)

DIGITS = (0, 1)


def _kubevision(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KUBEVISION_CACHE_DIR": str(cwd / "cache")}
    return subprocess.run(
        [sys.executable, "-m", "kubevision_cli", *args],
        check=False,
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_truncated_image_fails_before_training_with_one_line(tmp_path: Path) -> None:
    data = write_digits_imagefolder(tmp_path / "data", DIGITS, per_class=10, size=32)
    victim = sorted((data / "one").glob("*.png"))[3]
    victim.write_bytes(victim.read_bytes()[:60])
    view, mv = classification_manifests(tmp_path)
    result = _kubevision("train", "-f", str(view), "-f", str(mv), cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1
    assert f"file://{victim}" in errors[0]
    assert not (tmp_path / "runs" / "default" / "digits-cli" / "checkpoints").exists()


def test_architecture_that_does_not_fit_the_task(tmp_path: Path) -> None:
    view, mv = classification_manifests(
        tmp_path, architecture="fasterrcnn_mobilenet_v3_large_320_fpn"
    )
    result = _kubevision("train", "-f", str(view), "-f", str(mv), cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("error: ModelVersion default/digits-cli: spec.architecture: ")
    assert "does not fit the classification task" in result.stderr


def test_bad_field_names_file_object_and_field(tmp_path: Path) -> None:
    view, mv = classification_manifests(tmp_path)
    text = mv.read_text().replace("epochs: 1", "epochs: 0")
    mv.write_text(text)
    result = _kubevision("train", "-f", str(view), "-f", str(mv), cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"error: {mv}: ModelVersion digits-cli: spec.training.epochs: "
        "Input should be greater than or equal to 1"
    )


def test_trainer_entrypoint_writes_termination_message(tmp_path: Path) -> None:
    data = write_digits_imagefolder(tmp_path / "data", DIGITS, per_class=10, size=32)
    (data / "zero" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    plan = classification_plan(data, f"file://{tmp_path}/out/", DIGITS, epochs=1)
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(plan.model_dump_json(by_alias=True))
    termination = tmp_path / "termination-log"
    result = _kubevision(
        "trainer", "--plan", str(plan_file), "--termination-log", str(termination), cwd=tmp_path
    )
    assert result.returncode == 2
    message = termination.read_text()
    assert "\n" not in message
    assert message.startswith(f"InvalidInput: file://{data}/zero/broken.png: ")


def test_epochs_flag_is_validated_like_the_manifest(tmp_path: Path) -> None:
    """``--epochs 0`` is refused at once, as ``epochs: 0`` in the manifest is (it used to run
    no epoch and fail later on a missing best.pt)."""
    view, mv = classification_manifests(tmp_path)
    done = _kubevision("train", "-f", str(view), "-f", str(mv), "--epochs", "0", cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert lines == ["error: --epochs: 0: must be at least 1 (spec.training.epochs)"], done.stderr
    assert "Traceback" not in done.stderr
