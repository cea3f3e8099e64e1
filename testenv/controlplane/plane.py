"""A running control plane: its paths and endpoints, clients (kubectl, JSON requests),
service-account and certificate credentials, and stopping it."""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import ssl
import subprocess
import time
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from testenv.controlplane.build import Versions
from testenv.controlplane.pki import CertificateAuthority, write_kubeconfig
from testenv.controlplane.processes import (
    STOP_TIMEOUT_S,
    Component,
    ControlPlaneError,
    https_ok,
    spawn,
    stop_pids,
    tail,
    wait_until,
)

#: Audience our own components (operator, trainer) request tokens for; the API server accepts it.
KUBEVISION_AUDIENCE = "kubevision.dev"
#: Issuer written into service-account tokens; also the API server's default audience.
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
API_AUDIENCES: tuple[str, ...] = (SERVICE_ACCOUNT_ISSUER, KUBEVISION_AUDIENCE)
SERVICE_CLUSTER_IP_RANGE = "10.0.0.0/24"


@dataclass
class ControlPlane:
    """A running control plane: paths, endpoints and helpers for tests and the dev script.

    Attributes are plain paths and strings so tests can hand them to any client;
    ``components`` are the processes in start order (stopped in reverse).
    """

    state_dir: Path
    kubeconfig: Path
    server: str
    ca_cert: Path
    admin_cert: Path
    admin_key: Path
    versions: Versions
    service_account_issuer: str = SERVICE_ACCOUNT_ISSUER
    api_audiences: tuple[str, ...] = API_AUDIENCES
    startup_seconds: float = 0.0
    _ca: CertificateAuthority | None = field(default=None, repr=False)
    components: list[Component] = field(default_factory=list, repr=False)

    # ---- clients ------------------------------------------------------------------------

    def kubectl(
        self,
        *args: str,
        input: str | None = None,
        check: bool = True,
        timeout: float = 60.0,
        kubeconfig: Path | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run kubectl against this cluster (as admin unless ``kubeconfig`` is given)."""
        cmd = ["kubectl", f"--kubeconfig={kubeconfig or self.kubeconfig}", *args]
        result = subprocess.run(
            cmd, input=input, capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and result.returncode != 0:
            raise ControlPlaneError(
                f"{' '.join(cmd)} exited {result.returncode}:\n{result.stdout}{result.stderr}"
            )
        return result

    def ssl_context(self) -> ssl.SSLContext:
        """TLS context that trusts the cluster CA and presents the admin certificate."""
        context = ssl.create_default_context(cafile=str(self.ca_cert))
        context.load_cert_chain(str(self.admin_cert), str(self.admin_key))
        return context

    def request(
        self, method: str, path: str, body: Mapping[str, Any] | None = None, timeout: float = 30.0
    ) -> Any:
        """Call the API as admin and return the decoded JSON (raises HTTPError on 4xx/5xx)."""
        # An explicit empty ProxyHandler: an HTTPS_PROXY in the environment must not capture
        # loopback traffic (urllib, unlike Go, does not exempt 127.0.0.1 by itself).
        opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({}),
            urllib.request.HTTPSHandler(context=self.ssl_context()),
        )
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            self.server + path,
            data=data,
            method=method,
            headers={"Content-Type": "application/json", "Accept": "application/json"},
        )
        with opener.open(req, timeout=timeout) as response:
            raw = response.read()
        return json.loads(raw) if raw else None

    # ---- service-account credentials -----------------------------------------------------

    def create_token(
        self,
        namespace: str,
        service_account: str,
        audiences: Sequence[str] = (KUBEVISION_AUDIENCE,),
        expiration_seconds: int = 3600,
    ) -> str:
        """Issue a bound token for a ServiceAccount through the TokenRequest API."""
        response = self.request(
            "POST",
            f"/api/v1/namespaces/{namespace}/serviceaccounts/{service_account}/token",
            {
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "TokenRequest",
                "spec": {"audiences": list(audiences), "expirationSeconds": expiration_seconds},
            },
        )
        token: str = response["status"]["token"]
        return token

    def token_kubeconfig(
        self, token: str, path: Path, *, namespace: str = "default", user_name: str = "token"
    ) -> Path:
        """Write a kubeconfig that authenticates with a bearer token."""
        return write_kubeconfig(
            path,
            server=self.server,
            ca_cert=self.ca_cert,
            user={"token": token},
            user_name=user_name,
            namespace=namespace,
        )

    def service_account_kubeconfig(
        self,
        namespace: str,
        service_account: str,
        path: Path | None = None,
        *,
        audiences: Sequence[str] = (SERVICE_ACCOUNT_ISSUER,),
        expiration_seconds: int = 3600,
    ) -> Path:
        """Kubeconfig acting as ``system:serviceaccount:<namespace>:<service_account>``.

        The default audience is the API server's own, which is what a kubeconfig token needs;
        tokens for ``kubevision.dev`` alone are for our components, not for the API server.
        """
        token = self.create_token(namespace, service_account, audiences, expiration_seconds)
        path = path or self.state_dir / f"kubeconfig-{namespace}-{service_account}"
        return self.token_kubeconfig(
            token, path, namespace=namespace, user_name=f"{namespace}:{service_account}"
        )

    def client_certificate(
        self, common_name: str, organizations: Sequence[str] = ()
    ) -> tuple[Path, Path]:
        """Issue a client certificate from the cluster CA, e.g. ``system:node:<name>`` with
        organization ``system:nodes`` for a node agent (the Node authorizer keys on those)."""
        if self._ca is None:
            self._ca = CertificateAuthority(self.ca_cert, self.ca_cert.with_name("ca.key"))
        stem = re.sub(r"[^A-Za-z0-9_.-]", "_", common_name)
        return self._ca.issue(
            self.ca_cert.parent, f"client-{stem}", common_name, organizations=organizations
        )

    def certificate_kubeconfig(
        self, common_name: str, organizations: Sequence[str] = (), path: Path | None = None
    ) -> Path:
        """Kubeconfig authenticating with a fresh client certificate for ``common_name``."""
        cert, key = self.client_certificate(common_name, organizations)
        path = path or self.state_dir / f"kubeconfig-{cert.stem}"
        return write_kubeconfig(
            path,
            server=self.server,
            ca_cert=self.ca_cert,
            user={"client-certificate": str(cert), "client-key": str(key)},
            user_name=common_name,
        )

    # ---- lifecycle ----------------------------------------------------------------------

    def pids(self) -> dict[str, int]:
        """PIDs of the running components, by binary name."""
        return {c.name: c.process.pid for c in self.components if c.process is not None}

    def stop(self, *, remove_data: bool = True) -> None:
        """Stop every component and (by default) delete etcd data, keys and kubeconfigs.

        Logs are kept (under ``state_dir/logs``) unless the whole state dir is removed by the
        caller, since they are what one reads after a failed run.
        """
        binaries = {c.name: c.argv[0] for c in self.components}
        stop_pids(self.pids(), binaries)
        for component in self.components:
            if component.process is not None:
                # Reap, so no zombie is left and Popen does not warn at interpreter exit.
                with contextlib.suppress(subprocess.TimeoutExpired):
                    component.process.wait(timeout=STOP_TIMEOUT_S)
        self.components.clear()
        if remove_data:
            for sub in ("data", "pki"):
                shutil.rmtree(self.state_dir / sub, ignore_errors=True)
            for kubeconfig in self.state_dir.glob("kubeconfig*"):
                kubeconfig.unlink(missing_ok=True)

    def restart_apiserver(self, down_seconds: float = 2.0, timeout: float = 60.0) -> None:
        """Stop the kube-apiserver process (SIGTERM, as a rolling upgrade does), leave it
        down ``down_seconds``, and start it again with the same command line and log; returns
        once its ``/readyz`` answers. Every client's connections break; etcd keeps the data.

        Raises:
            ControlPlaneError: it did not come back within ``timeout`` seconds.
        """
        component = next(c for c in self.components if c.name == "kube-apiserver")
        stop_pids(
            {component.name: self.pids()[component.name]}, {component.name: component.argv[0]}
        )
        if component.process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                component.process.wait(timeout=STOP_TIMEOUT_S)
        time.sleep(down_seconds)
        spawn(component, self.state_dir)
        wait_until(
            "kube-apiserver /readyz after its restart",
            lambda: https_ok(f"{self.server}/readyz", self.ssl_context()),
            time.monotonic() + timeout,
            self.components,
        )

    def log_tails(self) -> str:
        """Last lines of each component's log, for failure messages."""
        logs = sorted((self.state_dir / "logs").glob("*.log"))
        return "\n".join(f"----- {log.name} -----\n{tail(log)}" for log in logs)
