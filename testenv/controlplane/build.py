"""The control plane's binaries: versions pinned in ``hack/controlplane/go.mod`` and one cached
``go build`` of etcd, kube-apiserver, kube-controller-manager and kube-scheduler.

The cache lies outside the checkout (``$KUBEVISION_CACHE`` or ``~/.cache/kubevision``) and is
keyed by a hash of the module files and build flags; see docs/control-plane.md.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from testenv.controlplane.processes import ControlPlaneError, log

REPO_ROOT = Path(__file__).resolve().parents[2]


MODULE_DIR = REPO_ROOT / "hack" / "controlplane"


#: Go packages built into the cache; the binary name is the last path element.
_BUILD_PACKAGES: tuple[str, ...] = (
    "k8s.io/kubernetes/cmd/kube-apiserver",
    "k8s.io/kubernetes/cmd/kube-controller-manager",
    "k8s.io/kubernetes/cmd/kube-scheduler",
    "./cmd/etcd",
)
BINARIES: tuple[str, ...] = tuple(p.rsplit("/", 1)[-1] for p in _BUILD_PACKAGES)
#: Files whose content decides whether cached binaries are current.
_STAMP_INPUTS: tuple[str, ...] = ("go.mod", "go.sum", "cmd/etcd/main.go")


@dataclass(frozen=True)
class Versions:
    """Versions pinned in hack/controlplane/go.mod, the single place they are written."""

    kubernetes: str
    etcd: str


def pinned_versions(go_mod: Path = MODULE_DIR / "go.mod") -> Versions:
    """Read the pinned Kubernetes and etcd versions and check the staging replaces agree.

    k8s.io/kubernetes requires its staging modules (k8s.io/api, ...) at v0.0.0, so every one must
    be replaced by the published v0.<minor>.<patch> of the same release; a replace left at another
    release would still compile but mix two Kubernetes versions in one binary.
    """
    text = go_mod.read_text()
    k8s = re.search(r"^\s*(?:require\s+)?k8s\.io/kubernetes\s+(v1\.\d+\.\d+\S*)", text, re.M)
    etcd = re.search(r"^\s*(?:require\s+)?go\.etcd\.io/etcd/server/v3\s+(v\S+)", text, re.M)
    if k8s is None or etcd is None:
        raise ControlPlaneError(f"{go_mod}: k8s.io/kubernetes or etcd server require not found")
    staging = "v0." + k8s.group(1).removeprefix("v1.")
    for module, version in re.findall(
        r"^\s*(?:replace\s+)?(k8s\.io/\S+)\s+=>\s+\S+\s+(\S+)", text, re.M
    ):
        if version != staging:
            raise ControlPlaneError(
                f"{go_mod}: {module} is replaced with {version}, expected {staging}; "
                "re-pin with hack/controlplane/pin.sh"
            )
    return Versions(kubernetes=k8s.group(1), etcd=etcd.group(1))


def cache_root() -> Path:
    """Root of the per-machine cache: ``$KUBEVISION_CACHE`` or ``~/.cache/kubevision``."""
    env = os.environ.get("KUBEVISION_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "kubevision"


def bin_dir(versions: Versions | None = None) -> Path:
    """Directory holding the cached binaries for the pinned Kubernetes version."""
    versions = versions or pinned_versions()
    return cache_root() / "controlplane" / versions.kubernetes / "bin"


def _ldflags(versions: Versions) -> str:
    # What Kubernetes' own build stamps in, so `kubectl version` and /version report the release
    # rather than v0.0.0-master; -s -w drop symbol tables, which shortens the (serial) link step.
    major, minor = versions.kubernetes.removeprefix("v").split(".")[:2]
    pkg = "k8s.io/component-base/version"
    return " ".join(
        [
            "-s",
            "-w",
            f"-X {pkg}.gitVersion={versions.kubernetes}",
            f"-X {pkg}.gitMajor={major}",
            f"-X {pkg}.gitMinor={minor}",
            f"-X {pkg}.gitTreeState=clean",
        ]
    )


def build_stamp(versions: Versions | None = None) -> str:
    """Hash of everything that decides the binaries' content: module files and build flags."""
    versions = versions or pinned_versions()
    digest = hashlib.sha256()
    for name in _STAMP_INPUTS:
        digest.update(name.encode() + b"\0" + (MODULE_DIR / name).read_bytes() + b"\0")
    digest.update(_ldflags(versions).encode())
    digest.update(" ".join(_BUILD_PACKAGES).encode())
    return digest.hexdigest()


def _go() -> str:
    found = shutil.which("go") or "/usr/local/go/bin/go"
    if not Path(found).exists():
        raise ControlPlaneError("the go command is needed to build the control plane")
    return found


def ensure_binaries(*, force: bool = False) -> Path:
    """Return the cached binary directory, building it first when missing or stale.

    One ``go build`` produces all four binaries. A file lock serialises concurrent callers (two
    pytest sessions, or pytest and ``dev-cluster up``) so the cache is built once per machine;
    the build writes to a temporary directory that is renamed into place, so a half-finished
    build is never mistaken for a cached one.
    """
    versions = pinned_versions()
    target = bin_dir(versions)
    stamp_file = target.parent / "stamp"
    stamp = build_stamp(versions)

    def current() -> bool:
        return (
            not force
            and stamp_file.is_file()
            and stamp_file.read_text().strip() == stamp
            and all((target / name).is_file() for name in BINARIES)
        )

    if current():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with (target.parent / "build.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # waits for another process's build to finish
        if current():
            return target
        # Holding the lock, any bin.* left here is from a build that was killed: remove it.
        for stale in target.parent.glob("bin.*"):
            shutil.rmtree(stale, ignore_errors=True)
        staging = Path(tempfile.mkdtemp(prefix="bin.", dir=target.parent))
        cmd = [
            _go(),
            "build",
            # VCS stamping needs a git checkout git trusts; the binaries do not need it.
            "-buildvcs=false",
            "-o",
            f"{staging}/",
            "-ldflags",
            _ldflags(versions),
            *_BUILD_PACKAGES,
        ]
        if shutil.which("nice"):
            # Builds share small machines with other work; never let them starve it.
            cmd = ["nice", "-n", "19", *cmd]
        # CGO off: what Kubernetes ships, and no C toolchain needed.
        env = {**os.environ, "CGO_ENABLED": "0"}
        log(f"building Kubernetes {versions.kubernetes} + etcd {versions.etcd} into {target}")
        started = time.monotonic()
        try:
            subprocess.run(cmd, cwd=MODULE_DIR, env=env, check=True)
        except subprocess.CalledProcessError as exc:
            shutil.rmtree(staging, ignore_errors=True)
            raise ControlPlaneError(f"go build failed with exit code {exc.returncode}") from exc
        shutil.rmtree(target, ignore_errors=True)
        staging.chmod(0o755)
        staging.rename(target)
        stamp_file.write_text(stamp + "\n")
        log(f"built in {time.monotonic() - started:.0f} s")
    return target
