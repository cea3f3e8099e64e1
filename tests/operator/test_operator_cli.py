"""``kubevision operator``'s settings: flag > environment > default, and --help names the
variables."""

from __future__ import annotations

import subprocess
import sys

import pytest

from kubevision_cli import main
from kubevision_cli.commands import operator as operator_command


def test_flag_beats_environment_beats_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBEVISION_CONCURRENCY_LIMIT", "7")
    monkeypatch.setenv("KUBEVISION_TRAINER_IMAGE", "env/trainer:1")
    settings = operator_command.settings(main.parse(["operator", "--concurrency-limit", "3"]))
    assert settings.concurrency_limit == 3  # the flag
    assert settings.trainer_image == "env/trainer:1"  # the environment
    assert settings.gpu_resource_name == "nvidia.com/gpu"  # the default
    monkeypatch.delenv("KUBEVISION_CONCURRENCY_LIMIT")
    assert operator_command.settings(main.parse(["operator"])).concurrency_limit == 0


def test_help_names_the_environment() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "kubevision_cli", "operator", "--help"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0
    assert "KUBEVISION_" in done.stdout
    assert "torch" not in done.stderr
