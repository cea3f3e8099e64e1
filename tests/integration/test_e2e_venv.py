"""End to end with the project installed in a virtual environment under ``/tmp``, as a new user
would: the container's ``kubevision`` command resolves from that environment's ``bin``, which
lies under the path where the trainer's Pod mounts its ``/tmp`` emptyDir. The node agent must
map only what the Pod spec mounts into the container's own variables, never the environment it
inherits (``PATH``, ``VIRTUAL_ENV``), or the command is looked for inside the emptyDir and the
Pod fails with ``setpriv: failed to execute kubevision``."""

from __future__ import annotations

import shutil
import site as site_module
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from testenv.operator_helpers import ROOT
from tests.integration import e2e_helpers as h
from tests.integration.e2e_helpers import e2e  # noqa: F401  (fixture)

#: Where a system keeps its own programs (setpriv among them), and no ``kubevision``.
SYSTEM_PATH = "/usr/bin:/bin"


def console_script(name: str) -> str:
    """``module:function`` of a ``[project.scripts]`` entry in this checkout's pyproject.toml."""
    scripts: dict[str, str] = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "scripts"
    ]
    return scripts[name]


@pytest.fixture
def tmp_venv() -> Iterator[Path]:
    """A virtual environment in ``/tmp`` over this interpreter's packages, with the
    ``kubevision`` launcher pip would write (``--system-site-packages``: nothing to download)."""
    venv = Path(tempfile.mkdtemp(prefix="kv-venv-", dir="/tmp"))
    try:
        subprocess.run(
            [sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)],
            check=True,
            capture_output=True,
        )
        # --system-site-packages gives the base interpreter's packages; when this test runs
        # from a virtual environment, the trainer must import that one's: its site folders
        # go on the new venv's path too.
        (site,) = (venv / "lib").glob("python3*/site-packages")
        # addsitedir, not a bare path: the folders' own .pth files (an editable install's
        # finder) must run too.
        (site / "running-interpreter.pth").write_text(
            "".join(
                f"import site; site.addsitedir({folder!r})\n"
                for folder in site_module.getsitepackages()
            )
        )
        module, function = console_script("kubevision").split(":")
        launcher = venv / "bin" / "kubevision"
        launcher.write_text(
            f"#!{venv}/bin/python\nimport sys\nfrom {module} import {function}\n"
            f"sys.exit({function}())\n"
        )
        launcher.chmod(0o755)
        yield venv
    finally:
        shutil.rmtree(venv, ignore_errors=True)


@pytest.mark.slow
def test_trains_with_the_interpreter_under_tmp(
    e2e: h.E2E,  # noqa: F811
    node_agent: Any,
    tmp_venv: Path,
) -> None:
    # Only the venv provides the command: a PATH mapped into the emptyDir finds none at all.
    assert shutil.which("kubevision", path=SYSTEM_PATH) is None
    path = f"{tmp_venv}/bin:{SYSTEM_PATH}"
    assert shutil.which("kubevision", path=path) == f"{tmp_venv}/bin/kubevision"
    dataset = h.classification_dataset(e2e)
    name = "venv-e2e"
    epochs = 1
    mv = h.modelversion(e2e, name, "classification", epochs=epochs, run_policy={"backoffLimit": 0})
    node_agent(
        cpu="4",
        memory="16Gi",
        base_env={"PATH": path, "VIRTUAL_ENV": str(tmp_venv), "LANG": "C.UTF-8"},
    )
    watcher = h.Watcher(e2e, name)
    watcher.watch_pods = True
    with e2e.operator():
        e2e.apply(e2e.secret(), h.view("classification", dataset), mv)
        obj = watcher.finished(timeout=600)
    terminated = [
        status["state"].get("terminated")
        for pod in watcher.pods.values()
        for status in (pod.get("status") or {}).get("containerStatuses") or []
    ]
    assert h.outcome(obj) == "Succeeded", terminated
    h.assert_trained(e2e, obj, f"runs/{name}", epochs)
