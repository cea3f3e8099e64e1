"""The ``kubevision`` command's wiring: the console script points at the entry point, every
sub-command in ``COMMANDS`` is reachable and documented, and bad input is one line, exit 2."""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from kubevision_cli import main

ROOT = Path(__file__).resolve().parents[2]


def kubevision(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kubevision_cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_console_script_is_the_entry_point() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    module, _, name = scripts["kubevision"].partition(":")
    assert getattr(importlib.import_module(module), name) is main.main


def test_every_command_is_reachable_once() -> None:
    names = [command.name for command in main.COMMANDS]
    assert names == ["train", "evaluate", "predict", "trainer", "operator", "crds"]
    done = kubevision("--help")
    assert done.returncode == 0, done.stderr
    (listed,) = re.findall(r"\{([a-z,]+)\}", done.stdout)[:1]
    assert listed.split(",") == names


@pytest.mark.parametrize("name", [command.name for command in main.COMMANDS])
def test_readme_lists_every_command(name: str) -> None:
    readme = (ROOT / "README.md").read_text()
    table = readme.split("## Commands", 1)[1].split("\n## ", 1)[0]
    assert f"| `kubevision {name}" in table


def test_a_command_is_required() -> None:
    done = kubevision()
    assert done.returncode == 2
    assert "required: command" in done.stderr


def test_input_error_is_one_line_and_exit_code_2(tmp_path: Path) -> None:
    missing = tmp_path / "missing.yaml"
    done = kubevision("train", "-f", str(missing))
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    (line,) = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert line == f"error: {missing}: cannot read: No such file or directory"


def test_the_jobs_command_line_parses_as_the_trainer_command() -> None:
    """What the operator renders into the Job (``contract.trainer_command``) is what the
    ``trainer`` sub-command accepts."""
    from kubevision_api import contract
    from kubevision_operator import render
    from kubevision_operator.settings import OperatorSettings

    rendered = render.command(OperatorSettings())
    assert rendered == contract.trainer_command() and rendered[0] == "kubevision"
    args = main.parse(rendered[1:])
    assert args.command == contract.TRAINER_SUBCOMMAND
    assert (args.plan, args.termination_log) == (contract.PLAN_PATH, contract.TERMINATION_LOG)
