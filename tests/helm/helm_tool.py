"""Helm 3 and Helm 4 for the chart tests: the binaries that ``scripts/install-helm`` caches
(``$KUBEVISION_CACHE/helm/{3,4}/helm``), and ``helm template`` parsed into plain dicts.

A missing binary skips the tests that need it, with the reason, unless ``CI`` is set: there
it fails them (CI runs ``scripts/install-system-deps``, which installs both)."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "kubevision"

#: Major version -> the version prefix scripts/install-helm pins.
VERSIONS: dict[str, str] = {"3": "v3.17.", "4": "v4.1."}

Obj = dict[str, Any]


def cache_root() -> Path:
    """``$KUBEVISION_CACHE`` or ``~/.cache/kubevision`` (as the control plane's cache)."""
    env = os.environ.get("KUBEVISION_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "kubevision"


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def missing(message: str) -> NoReturn:
    if in_ci():
        pytest.fail(f"{message} (CI is set, so this is a failure, not a skip)")
    pytest.skip(message)


class RenderError(RuntimeError):
    """``helm`` exited non-zero; the message is its stderr."""


@dataclass(frozen=True)
class Helm:
    """One Helm binary."""

    major: str
    path: Path
    version: str

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        env = {
            **os.environ,
            # Nothing of the user's Helm setup (repositories, plugins) leaks into the tests.
            "HELM_CONFIG_HOME": str(cache_root() / "helm" / "config"),
            "HELM_CACHE_HOME": str(cache_root() / "helm" / "cache"),
            "HELM_DATA_HOME": str(cache_root() / "helm" / "data"),
        }
        result = subprocess.run(
            [str(self.path), *args],
            check=False,
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        if check and result.returncode != 0:
            raise RenderError(result.stderr.strip() or result.stdout.strip())
        return result

    def template(
        self,
        values: Obj | None = None,
        *,
        tmp_path: Path,
        release: str = "kv",
        namespace: str = "kubevision",
        extra: tuple[str, ...] = (),
    ) -> list[Obj]:
        """``helm template`` with ``values`` (a values file), parsed: every non-empty
        document; raises ``RenderError`` with Helm's message when it refuses."""
        args = ["template", release, str(CHART), "--namespace", namespace, *extra]
        if values is not None:
            path = tmp_path / f"values-{self.major}.yaml"
            path.write_text(yaml.safe_dump(values), encoding="utf-8")
            args += ["--values", str(path)]
        out = self.run(*args).stdout
        return [doc for doc in yaml.safe_load_all(out) if doc]


def find(major: str) -> Helm | None:
    """The cached Helm ``major``, if it is there and of the pinned version."""
    path = cache_root() / "helm" / major / "helm"
    if not path.is_file():
        return None
    result = subprocess.run(
        [str(path), "version", "--template", "{{.Version}}"],
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
    )
    version = result.stdout.strip()
    if result.returncode != 0 or not version.startswith(VERSIONS[major]):
        return None
    return Helm(major, path, version)


def get(major: str) -> Helm:
    """Helm ``major``, or skip/fail saying how to install it."""
    helm = find(major)
    if helm is None:
        missing(f"helm {VERSIONS[major]}x not in {cache_root() / 'helm'}: run scripts/install-helm")
    return helm


def by_kind(docs: list[Obj], kind: str) -> list[Obj]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[Obj], kind: str) -> Obj:
    found = by_kind(docs, kind)
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


def env_of(deployment: Obj) -> dict[str, Any]:
    """The operator container's env: name -> value (or valueFrom)."""
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}
