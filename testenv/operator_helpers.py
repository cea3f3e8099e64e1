"""Running the real operator (``kubevision operator``, a subprocess) against the test
control plane, and waiting for what it writes."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from testenv.controlplane import ControlPlane
from testenv.ports import free_port

ROOT = Path(__file__).resolve().parents[1]
T = TypeVar("T")


def install_crds(cp: ControlPlane, *namespaces: str) -> ControlPlane:
    """kubevision's CRDs applied (server-side) and Established, the operator's namespace
    ``kubevision`` and ``namespaces`` created (those that exist are kept); returns ``cp``."""
    cp.kubectl("apply", "--server-side", "-f", str(ROOT / "crds"))
    for name in ("views", "modelversions"):
        cp.kubectl(
            "wait", "--for=condition=Established", f"crd/{name}.kubevision.dev", "--timeout=60s"
        )
    for name in ("kubevision", *namespaces):
        cp.kubectl("create", "namespace", name, check=False)
    return cp


def apply(cp: ControlPlane, *manifests: dict[str, Any] | Path, namespace: str) -> None:
    """``kubectl apply --server-side`` of dicts or files."""
    for manifest in manifests:
        if isinstance(manifest, Path):
            cp.kubectl("-n", namespace, "apply", "--server-side", "-f", str(manifest))
        else:
            cp.kubectl(
                "-n", namespace, "apply", "--server-side", "-f", "-", input=json.dumps(manifest)
            )


def get(cp: ControlPlane, path: str) -> dict[str, Any] | None:
    """GET an API path as admin; None on 404."""
    try:
        obj: dict[str, Any] = cp.request("GET", path)
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        raise
    return obj


def wait_for(
    what: str, probe: Callable[[], Any], timeout: float = 60.0, every: float = 0.25
) -> Any:
    """Poll ``probe`` until it returns something truthy; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})")


def eventually(probe: Callable[[], T | None], what: str, timeout: float = 60.0) -> T:
    """:func:`wait_for` with the probe first; returns the probe's first truthy value."""
    value: T = wait_for(what, probe, timeout=timeout, every=0.2)
    return value


def mv_path(namespace: str, name: str) -> str:
    return f"/apis/kubevision.dev/v1alpha1/namespaces/{namespace}/modelversions/{name}"


def condition(obj: dict[str, Any] | None, kind: str) -> dict[str, Any] | None:
    """The condition of type ``kind`` in ``obj.status``."""
    for cond in ((obj or {}).get("status") or {}).get("conditions", []):
        if cond["type"] == kind:
            found: dict[str, Any] = cond
            return found
    return None


def job_exists(cp: ControlPlane, namespace: str, name: str) -> bool:
    """Whether ModelVersion ``name``'s Job exists (``naming.job_name``: ``kv-<name>``)."""
    return get(cp, f"/apis/batch/v1/namespaces/{namespace}/jobs/kv-{name}") is not None


def succeeded(cp: ControlPlane, namespace: str, name: str) -> bool:
    """Whether the ModelVersion's Succeeded condition is True."""
    found = condition(get(cp, mv_path(namespace, name)), "Succeeded")
    return found is not None and found["status"] == "True"


class Operator:
    """A running ``kubevision operator`` process."""

    def __init__(self, cp: ControlPlane, workdir: Path, env: dict[str, str]) -> None:
        self.cp = cp
        self.workdir = workdir
        self.status_port = free_port()
        self.health_port = free_port()
        self.status_url = f"https://127.0.0.1:{self.status_port}"
        self.env = {
            **os.environ,
            "KUBECONFIG": str(cp.kubeconfig),
            "KUBEVISION_STATUS_URL": self.status_url,
            "KUBEVISION_STATUS_PORT": str(self.status_port),
            "KUBEVISION_STATUS_BIND_HOST": "127.0.0.1",
            "KUBEVISION_HEALTH_PORT": str(self.health_port),
            "KUBEVISION_OPERATOR_NAMESPACE": "kubevision",
            "KUBEVISION_TRAINER_IMAGE": "kubevision/trainer:test",
            **env,
        }
        workdir.mkdir(parents=True, exist_ok=True)
        self.log = workdir / "operator.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the process and wait for its health endpoint."""
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "kubevision_cli", "operator"],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

        def healthy() -> bool:
            assert self.process is not None
            assert self.process.poll() is None, self.log.read_text()[-3000:]
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{self.health_port}/healthz", timeout=1
                ) as response:
                    return bool(response.status == 200)
            except OSError:
                return False

        wait_for("the operator's /healthz", healthy, timeout=60)

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> int:
        """Stop it (SIGKILL simulates a crash); returns the exit code."""
        assert self.process is not None
        os.killpg(self.process.pid, sig)
        try:
            code = self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            code = self.process.wait(timeout=10)
        self.process = None
        return code

    def ca_pem(self) -> str:
        """The status endpoint's CA, from the Secret the operator keeps it in."""
        secret = get(self.cp, "/api/v1/namespaces/kubevision/secrets/kubevision-status-ca")
        assert secret is not None
        return base64.b64decode(secret["data"]["ca.crt"]).decode()

    def metrics_text(self) -> str:
        """The operator's /metrics page."""
        url = f"http://127.0.0.1:{self.health_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            text: str = response.read().decode()
        return text

    def log_text(self) -> str:
        return self.log.read_text()


def stop_cleanly(operator: Operator | None) -> None:
    """Stop a started operator (if it still runs): it must exit 0 with no traceback logged."""
    if operator is None or operator.process is None:
        return
    code = operator.stop()
    assert code == 0, operator.log_text()[-3000:]
    assert "Traceback" not in operator.log_text(), operator.log_text()[-5000:]


@contextmanager
def running_operator(cp: ControlPlane, workdir: Path, **env: str) -> Iterator[Operator]:
    """An operator for the duration of the block; its log must hold no traceback."""
    operator = Operator(cp, workdir, env)
    operator.start()
    try:
        yield operator
    finally:
        if operator.process is not None:
            operator.stop()
    assert "Traceback" not in operator.log_text(), operator.log_text()[-5000:]
