"""Layout guards (docs/decisions.md, "Packages and imports"): the source folders never shadow the
standard library, the api package loads no heavy client, and import-linter's contracts hold."""

from __future__ import annotations

import json
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN_IN_API = ("torch", "torchvision", "kopf", "kubernetes")


def run_python(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


@pytest.mark.parametrize("folder", ["operator", "trainer", "api", "cli"])
def test_source_folders_are_not_packages(folder: str) -> None:
    """A folder with ``__init__.py`` would shadow a stdlib module of the same name (operator)."""
    assert (ROOT / folder).is_dir()
    assert not (ROOT / folder / "__init__.py").exists()


def test_operator_from_the_root_is_the_stdlib_one() -> None:
    # -S: without it, site has already imported the stdlib module and the test proves nothing.
    result = run_python("-S", "-c", "import operator; print(operator.__file__)")
    assert result.returncode == 0, result.stderr
    imported = Path(result.stdout.strip()).resolve()
    assert imported == (Path(sysconfig.get_path("stdlib")) / "operator.py").resolve()
    assert not imported.is_relative_to(ROOT)


def test_operator_guard_would_catch_a_shadowing_package(tmp_path: Path) -> None:
    """The check above can fail: a folder with ``operator/__init__.py`` wins under -S."""
    (tmp_path / "operator").mkdir()
    (tmp_path / "operator" / "__init__.py").write_text("")
    result = run_python("-S", "-c", "import operator; print(operator.__file__)", cwd=tmp_path)
    assert Path(result.stdout.strip()).resolve() == (tmp_path / "operator" / "__init__.py")


API_IMPORT_CHECK = """
import importlib, json, pkgutil, sys
import kubevision_api
names = ["kubevision_api"]
for info in pkgutil.walk_packages(kubevision_api.__path__, "kubevision_api."):
    importlib.import_module(info.name)
    names.append(info.name)
loaded = sorted(
    m for m in sys.modules
    if any(m == f or m.startswith(f + ".") for f in {forbidden!r})
)
print(json.dumps({{"modules": names, "loaded": loaded}}))
"""


def test_api_package_imports_no_heavy_client() -> None:
    code = API_IMPORT_CHECK.format(forbidden=FORBIDDEN_IN_API)
    result = run_python("-c", code)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert "kubevision_api.modelversion" in report["modules"]  # the walk found the modules
    assert report["loaded"] == []


def test_import_contracts_hold() -> None:
    """``lint-imports`` with the contracts in pyproject.toml, under the interpreter that runs
    the tests: a ``lint-imports`` found first on ``PATH`` may belong to another installation,
    which finds other packages (or none)."""
    lint_imports = (
        "import sys; from importlinter.cli import lint_imports_command as c; sys.exit(c())"
    )
    result = subprocess.run(
        [sys.executable, "-c", lint_imports, "--no-cache", "--no-logo"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: " in result.stdout and " broken." in result.stdout
    assert "0 broken" in result.stdout


def test_local_training_loads_no_kubernetes_client() -> None:
    """``kubevision train`` (local mode) imports the command, with every sub-command's
    module, and everything it trains with, and no kopf or Kubernetes client."""
    code = (
        "import sys, kubevision_cli.main, kubevision_trainer.local, kubevision_trainer.main\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('kopf', 'kubernetes')))\n"
        "print('torch' in sys.modules)"
    )
    result = run_python("-c", code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:2] == ["[]", "True"]


def test_operator_loads_no_torch() -> None:
    """``kubevision operator`` imports the command, with every sub-command's module, and the
    whole operator, and no torch."""
    code = (
        "import sys, kubevision_cli.main, kubevision_operator.main\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'torchvision')))\n"
        "print('kopf' in sys.modules)"
    )
    result = run_python("-c", code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:2] == ["[]", "True"]
