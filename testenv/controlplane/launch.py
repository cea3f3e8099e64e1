"""A real Kubernetes control plane for kubevision's integration tests.

This module is the one implementation behind two entry points:

* the session-scoped pytest fixture :func:`control_plane`, and
* ``scripts/dev-cluster`` (``up`` / ``down`` / ``status`` / ``build``), which calls :func:`main`.

It builds ``etcd``, ``kube-apiserver``, ``kube-controller-manager`` and ``kube-scheduler`` from the
Go module in ``hack/controlplane`` (one ``go build``, cached outside the checkout and keyed by a
hash of the module files), generates a throw-away PKI and service-account signing key, and runs
the four processes on free loopback ports. See docs/control-plane.md.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import ctypes
import datetime as dt
import fcntl
import functools
import hashlib
import ipaddress
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

REPO_ROOT = Path(__file__).resolve().parents[2]
MODULE_DIR = REPO_ROOT / "hack" / "controlplane"

#: Audience our own components (operator, trainer) request tokens for; the API server accepts it.
KUBEVISION_AUDIENCE = "kubevision.dev"
#: Issuer written into service-account tokens; also the API server's default audience.
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
API_AUDIENCES: tuple[str, ...] = (SERVICE_ACCOUNT_ISSUER, KUBEVISION_AUDIENCE)
SERVICE_CLUSTER_IP_RANGE = "10.0.0.0/24"

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

_READY_TIMEOUT_S = 90.0
_POLL_INTERVAL_S = 0.1
_STOP_TIMEOUT_S = 10.0
_LOG_TAIL_LINES = 40


class ControlPlaneError(RuntimeError):
    """The control plane could not be built or did not become ready."""


def _log(message: str) -> None:
    # stderr, so that `eval "$(scripts/dev-cluster up)"` only sees the export line on stdout.
    print(f"[control-plane] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# Versions and build
# --------------------------------------------------------------------------------------------


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
        _log(f"building Kubernetes {versions.kubernetes} + etcd {versions.etcd} into {target}")
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
        _log(f"built in {time.monotonic() - started:.0f} s")
    return target


# --------------------------------------------------------------------------------------------
# PKI
# --------------------------------------------------------------------------------------------


def _write_private_key(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey, path: Path) -> None:
    # PKCS#8 PEM is read by Go's crypto/tls, Python's ssl and kubectl alike.
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


@dataclass(frozen=True)
class CertificateAuthority:
    """A throw-away CA that signs the serving and client certificates of one control plane."""

    cert_path: Path
    key_path: Path

    @classmethod
    def create(cls, directory: Path) -> CertificateAuthority:
        """Generate a self-signed CA in ``directory`` (ca.crt, ca.key)."""
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kubevision-test-ca")])
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .sign(key, hashes.SHA256())
        )
        ca = cls(cert_path=directory / "ca.crt", key_path=directory / "ca.key")
        ca.cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_private_key(key, ca.key_path)
        return ca

    def issue(
        self,
        directory: Path,
        stem: str,
        common_name: str,
        *,
        organizations: Sequence[str] = (),
        server_names: Sequence[str] = (),
        client: bool = True,
    ) -> tuple[Path, Path]:
        """Issue a leaf certificate; returns (cert path, key path) as ``<stem>.crt/.key``.

        ``server_names`` (DNS names or IP literals) make it a serving certificate; for client
        certificates the API server maps CN to the user name and O to groups.
        """
        ca_key = serialization.load_pem_private_key(self.key_path.read_bytes(), password=None)
        if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
            raise TypeError("unexpected CA key type")
        ca_cert = x509.load_pem_x509_certificate(self.cert_path.read_bytes())
        key = ec.generate_private_key(ec.SECP256R1())
        subject = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations]
        subject.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
        usages = [ExtendedKeyUsageOID.CLIENT_AUTH] if client else []
        if server_names:
            usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
        now = dt.datetime.now(dt.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name(subject))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
            )
        )
        if server_names:
            sans: list[x509.GeneralName] = []
            for name in server_names:
                try:
                    sans.append(x509.IPAddress(ipaddress.ip_address(name)))
                except ValueError:
                    sans.append(x509.DNSName(name))
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(ca_key, hashes.SHA256())
        cert_path, key_path = directory / f"{stem}.crt", directory / f"{stem}.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_private_key(key, key_path)
        return cert_path, key_path


def _write_service_account_keys(directory: Path) -> tuple[Path, Path]:
    """RSA key pair that signs (private) and verifies (public) service-account tokens."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private, public = directory / "sa.key", directory / "sa.pub"
    _write_private_key(key, private)
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return private, public


def write_kubeconfig(
    path: Path,
    *,
    server: str,
    ca_cert: Path,
    user: Mapping[str, str],
    user_name: str = "admin",
    namespace: str = "default",
) -> Path:
    """Write a one-context kubeconfig. ``user`` holds kubeconfig user fields (token, certs)."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "kubevision",
                "cluster": {"server": server, "certificate-authority": str(ca_cert)},
            }
        ],
        "users": [{"name": user_name, "user": dict(user)}],
        "contexts": [
            {
                "name": "kubevision",
                "context": {"cluster": "kubevision", "user": user_name, "namespace": namespace},
            }
        ],
        "current-context": "kubevision",
    }
    # JSON is YAML: both kubectl and the Python client read it, with no YAML dependency here.
    path.write_text(json.dumps(config, indent=2) + "\n")
    path.chmod(0o600)
    return path


# --------------------------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------------------------


def _free_ports(count: int) -> list[int]:
    """Ports the kernel considers free right now (held open together so they are distinct)."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """preexec_fn: have the kernel SIGKILL the child if the test process dies.

    Teardown normally stops everything, but a pytest killed by a timeout or SIGKILL runs no
    teardown; without this the servers would outlive it and hold ports and memory.
    """
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


@dataclass
class _Component:
    name: str
    argv: list[str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None


def _tail(path: Path, lines: int = _LOG_TAIL_LINES) -> str:
    try:
        content = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(content[-lines:])


def _pid_matches(pid: int, binary: str) -> bool:
    """Whether ``pid`` is still our process (guards against PID reuse before signalling)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0] == binary.encode()
    except OSError:
        return False


def _stop_pids(pids: Mapping[str, int], binaries: Mapping[str, str]) -> None:
    """Stop the processes in reverse start order: SIGTERM, wait, SIGKILL stragglers.

    The order matters: an API server whose etcd is already gone spends its whole shutdown
    retrying etcd, and etcd waits for its clients; stopped after its clients, each one exits in
    about a second.
    """
    for name, pid in reversed(list(pids.items())):
        if not _pid_matches(pid, binaries[name]):
            continue
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + _STOP_TIMEOUT_S
        while _pid_matches(pid, binaries[name]) and time.monotonic() < deadline:
            time.sleep(_POLL_INTERVAL_S / 2)
        if _pid_matches(pid, binaries[name]):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@dataclass
class ControlPlane:
    """A running control plane: paths, endpoints and helpers for tests and the dev script.

    Attributes are plain paths and strings so tests can hand them to any client.
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
    _components: list[_Component] = field(default_factory=list, repr=False)

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

    def _ssl_context(self) -> ssl.SSLContext:
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
            urllib.request.HTTPSHandler(context=self._ssl_context()),
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
        return {c.name: c.process.pid for c in self._components if c.process is not None}

    def stop(self, *, remove_data: bool = True) -> None:
        """Stop every component and (by default) delete etcd data, keys and kubeconfigs.

        Logs are kept (under ``state_dir/logs``) unless the whole state dir is removed by the
        caller, since they are what one reads after a failed run.
        """
        binaries = {c.name: c.argv[0] for c in self._components}
        _stop_pids(self.pids(), binaries)
        for component in self._components:
            if component.process is not None:
                # Reap, so no zombie is left and Popen does not warn at interpreter exit.
                with contextlib.suppress(subprocess.TimeoutExpired):
                    component.process.wait(timeout=_STOP_TIMEOUT_S)
        self._components.clear()
        if remove_data:
            for sub in ("data", "pki"):
                shutil.rmtree(self.state_dir / sub, ignore_errors=True)
            for kubeconfig in self.state_dir.glob("kubeconfig*"):
                kubeconfig.unlink(missing_ok=True)

    def log_tails(self) -> str:
        """Last lines of each component's log, for failure messages."""
        logs = sorted((self.state_dir / "logs").glob("*.log"))
        return "\n".join(f"----- {log.name} -----\n{_tail(log)}" for log in logs)


def _wait_until(
    what: str, probe: Callable[[], bool], deadline: float, components: Sequence[_Component]
) -> None:
    """Poll ``probe`` until it is true, a component exits, or the deadline passes."""
    while True:
        for component in components:
            if component.process is not None and component.process.poll() is not None:
                raise ControlPlaneError(
                    f"{component.name} exited with {component.process.returncode} "
                    f"while waiting for {what}"
                )
        if probe():
            return
        if time.monotonic() > deadline:
            raise ControlPlaneError(f"timed out waiting for {what}")
        time.sleep(_POLL_INTERVAL_S)


def _https_ok(url: str, context: ssl.SSLContext) -> bool:
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context)
    )
    try:
        with opener.open(url, timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def start(
    state_dir: Path,
    *,
    detach: bool = False,
    ready_timeout: float = _READY_TIMEOUT_S,
) -> ControlPlane:
    """Build if needed, then start etcd, kube-apiserver, controller manager and scheduler.

    ``state_dir`` receives pki/, data/, logs/ and the admin kubeconfig. With ``detach`` the
    processes get their own session and outlive this Python process (``dev-cluster up``);
    otherwise the kernel kills them if this process dies. Retries once with fresh ports if a
    port picked as free was taken in the meantime (another test run on the same machine).
    """
    binaries = ensure_binaries()
    for attempt in range(2):
        try:
            return _start_once(state_dir, binaries, detach=detach, ready_timeout=ready_timeout)
        except _PortTakenError:
            if attempt:
                raise
            _log("a port was taken while starting; retrying with new ports")
    raise AssertionError("unreachable")


class _PortTakenError(ControlPlaneError):
    pass


def _start_once(
    state_dir: Path, binaries: Path, *, detach: bool, ready_timeout: float
) -> ControlPlane:
    versions = pinned_versions()
    shutil.rmtree(state_dir, ignore_errors=True)
    pki, data, logs = state_dir / "pki", state_dir / "data", state_dir / "logs"
    for directory in (pki, data, logs):
        directory.mkdir(parents=True, mode=0o700)

    started = time.monotonic()
    etcd_client, etcd_peer, apiserver_port, kcm_port, scheduler_port = _free_ports(5)
    server = f"https://127.0.0.1:{apiserver_port}"

    ca = CertificateAuthority.create(pki)
    serving_names = [
        "127.0.0.1",
        "localhost",
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
        # First address of the service range: the in-cluster `kubernetes` Service's ClusterIP.
        "10.0.0.1",
    ]
    serving_cert, serving_key = ca.issue(
        pki, "serving", "kube-apiserver", server_names=serving_names, client=False
    )
    admin_cert, admin_key = ca.issue(
        pki, "admin", "kubevision-admin", organizations=["system:masters"]
    )
    # The aggregation layer's identity. Configuring it also fills the requestheader CA in
    # kube-system/extension-apiserver-authentication, which the controller manager and the
    # scheduler otherwise report as missing, every second, in their logs.
    proxy_cert, proxy_key = ca.issue(pki, "front-proxy-client", "front-proxy-client")
    sa_private, sa_public = _write_service_account_keys(pki)

    def component_kubeconfig(user: str) -> Path:
        # The controller manager and scheduler use their own identities, so the bootstrap RBAC
        # roles (system:kube-controller-manager, system:kube-scheduler) are what they get.
        cert, key = ca.issue(pki, user, f"system:{user}")
        return write_kubeconfig(
            state_dir / f"kubeconfig-{user}",
            server=server,
            ca_cert=ca.cert_path,
            user={"client-certificate": str(cert), "client-key": str(key)},
            user_name=user,
        )

    kcm_kubeconfig = component_kubeconfig("kube-controller-manager")
    scheduler_kubeconfig = component_kubeconfig("kube-scheduler")
    admin_kubeconfig = write_kubeconfig(
        state_dir / "kubeconfig",
        server=server,
        ca_cert=ca.cert_path,
        user={"client-certificate": str(admin_cert), "client-key": str(admin_key)},
    )

    def exe(name: str) -> str:
        return str(binaries / name)

    etcd = _Component(
        "etcd",
        [
            exe("etcd"),
            "--name=kubevision",
            f"--data-dir={data / 'etcd'}",
            f"--listen-client-urls=http://127.0.0.1:{etcd_client}",
            f"--advertise-client-urls=http://127.0.0.1:{etcd_client}",
            f"--listen-peer-urls=http://127.0.0.1:{etcd_peer}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer}",
            f"--initial-cluster=kubevision=http://127.0.0.1:{etcd_peer}",
            # Test data is thrown away; fsync only costs time on a shared disk.
            "--unsafe-no-fsync=true",
            "--log-level=warn",
        ],
        logs / "etcd.log",
    )
    apiserver = _Component(
        "kube-apiserver",
        [
            exe("kube-apiserver"),
            f"--etcd-servers=http://127.0.0.1:{etcd_client}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={apiserver_port}",
            f"--cert-dir={pki}",
            f"--tls-cert-file={serving_cert}",
            f"--tls-private-key-file={serving_key}",
            f"--client-ca-file={ca.cert_path}",
            f"--requestheader-client-ca-file={ca.cert_path}",
            # Only the front proxy may assert identities in headers, not every CA-signed client.
            "--requestheader-allowed-names=front-proxy-client",
            "--requestheader-username-headers=X-Remote-User",
            "--requestheader-group-headers=X-Remote-Group",
            "--requestheader-extra-headers-prefix=X-Remote-Extra-",
            f"--proxy-client-cert-file={proxy_cert}",
            f"--proxy-client-key-file={proxy_key}",
            "--authorization-mode=Node,RBAC",
            f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
            f"--service-account-key-file={sa_public}",
            f"--service-account-signing-key-file={sa_private}",
            f"--api-audiences={','.join(API_AUDIENCES)}",
            f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
            # The endpoint reconcilers refuse a loopback advertise address, and nothing here
            # reaches the API server through the in-cluster `kubernetes` Service anyway.
            "--endpoint-reconciler-type=none",
            "--allow-privileged=true",
            "--profiling=false",
            "--v=1",
        ],
        logs / "kube-apiserver.log",
    )

    def serving_flags(port: int) -> list[str]:
        # Our CA-signed cert instead of a self-signed one, so health probes verify TLS too.
        return [
            "--bind-address=127.0.0.1",
            f"--secure-port={port}",
            f"--tls-cert-file={serving_cert}",
            f"--tls-private-key-file={serving_key}",
        ]

    kcm = _Component(
        "kube-controller-manager",
        [
            exe("kube-controller-manager"),
            f"--kubeconfig={kcm_kubeconfig}",
            f"--authentication-kubeconfig={kcm_kubeconfig}",
            f"--authorization-kubeconfig={kcm_kubeconfig}",
            *serving_flags(kcm_port),
            "--leader-elect=false",
            # All default controllers: job, garbagecollector, serviceaccount, serviceaccount-token,
            # namespace, ... (the ones off by default, e.g. bootstrapsigner, are not needed).
            "--controllers=*",
            # Each controller acts as its own ServiceAccount, via TokenRequest, as in production.
            "--use-service-account-credentials=true",
            # The default client rate limit (20 QPS) paces the start of ~40 controllers, each
            # fetching its ServiceAccount token first: 5 s of a 3 s start. A test cluster has no
            # API server to protect from its controllers.
            "--kube-api-qps=200",
            "--kube-api-burst=400",
            f"--service-account-private-key-file={sa_private}",
            f"--root-ca-file={ca.cert_path}",
            f"--cluster-signing-cert-file={ca.cert_path}",
            f"--cluster-signing-key-file={ca.key_path}",
            "--profiling=false",
            "--v=1",
        ],
        logs / "kube-controller-manager.log",
    )
    scheduler = _Component(
        "kube-scheduler",
        [
            exe("kube-scheduler"),
            f"--kubeconfig={scheduler_kubeconfig}",
            f"--authentication-kubeconfig={scheduler_kubeconfig}",
            f"--authorization-kubeconfig={scheduler_kubeconfig}",
            *serving_flags(scheduler_port),
            "--leader-elect=false",
            "--profiling=false",
            "--v=1",
        ],
        logs / "kube-scheduler.log",
    )

    plane = ControlPlane(
        state_dir=state_dir,
        kubeconfig=admin_kubeconfig,
        server=server,
        ca_cert=ca.cert_path,
        admin_cert=admin_cert,
        admin_key=admin_key,
        versions=versions,
        _ca=ca,
    )
    deadline = time.monotonic() + ready_timeout

    def launch(component: _Component) -> None:
        with component.log_path.open("ab") as log:
            component.process = subprocess.Popen(
                component.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=state_dir,
                start_new_session=detach,
                preexec_fn=None if detach else _die_with_parent,  # noqa: PLW1509
            )
        plane._components.append(component)
        _write_pids(state_dir, plane)

    probe_context = ssl.create_default_context(cafile=str(ca.cert_path))
    try:
        # The API server retries its etcd connection, so both start at once.
        launch(etcd)
        launch(apiserver)
        _wait_until(
            "kube-apiserver /readyz",
            lambda: _https_ok(f"{server}/readyz", plane._ssl_context()),
            deadline,
            plane._components,
        )
        # The controller manager gives up if the API server is not healthy within ~10 s of its
        # own start, which a busy machine can exceed; starting it after /readyz avoids that.
        launch(kcm)
        launch(scheduler)
        for name, port in (
            ("kube-controller-manager", kcm_port),
            ("kube-scheduler", scheduler_port),
        ):
            _wait_until(
                f"{name} /healthz",
                functools.partial(_https_ok, f"https://127.0.0.1:{port}/healthz", probe_context),
                deadline,
                plane._components,
            )
        # /healthz only says the controller manager serves; its controllers start once their
        # informers have synced. The `default` ServiceAccount, made by the serviceaccount
        # controller, marks that point; until then the ServiceAccount admission plugin would
        # reject every Pod a test creates.
        _wait_until(
            "the `default` ServiceAccount (controllers running)",
            functools.partial(
                _https_ok,
                f"{server}/api/v1/namespaces/default/serviceaccounts/default",
                plane._ssl_context(),
            ),
            deadline,
            plane._components,
        )
    except ControlPlaneError as exc:
        tails = plane.log_tails()
        plane.stop(remove_data=False)
        message = f"{exc}\nlogs in {logs}:\n{tails}"
        if "address already in use" in tails:
            raise _PortTakenError(message) from exc
        raise ControlPlaneError(message) from exc
    except BaseException:
        plane.stop(remove_data=False)
        raise
    plane.startup_seconds = time.monotonic() - started
    _log(f"ready in {plane.startup_seconds:.1f} s at {server} (Kubernetes {versions.kubernetes})")
    return plane


def _write_pids(state_dir: Path, plane: ControlPlane) -> None:
    binaries = {c.name: c.argv[0] for c in plane._components}
    (state_dir / "pids.json").write_text(
        json.dumps({"pids": plane.pids(), "binaries": binaries, "server": plane.server})
    )


# --------------------------------------------------------------------------------------------
# pytest fixture
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """A running control plane shared by the whole test session; torn down at its end."""
    plane = start(tmp_path_factory.mktemp("control-plane"))
    # Belt and braces next to the fixture teardown: also stop on an interpreter exit that
    # skips fixture finalisation (e.g. an internal pytest error). stop() is idempotent.
    atexit.register(plane.stop)
    try:
        yield plane
    finally:
        plane.stop()
        atexit.unregister(plane.stop)


# --------------------------------------------------------------------------------------------
# scripts/dev-cluster
# --------------------------------------------------------------------------------------------


def dev_state_dir() -> Path:
    """State directory of ``dev-cluster``: ``${XDG_RUNTIME_DIR:-/tmp}/kubevision-dev-cluster``."""
    return Path(os.environ.get("XDG_RUNTIME_DIR") or "/tmp") / "kubevision-dev-cluster"


def _read_pids(state_dir: Path) -> tuple[dict[str, int], dict[str, str], str]:
    try:
        recorded = json.loads((state_dir / "pids.json").read_text())
    except (OSError, ValueError):
        return {}, {}, ""
    return recorded["pids"], recorded["binaries"], recorded["server"]


def _running(state_dir: Path) -> bool:
    pids, binaries, _ = _read_pids(state_dir)
    return bool(pids) and all(_pid_matches(pid, binaries[name]) for name, pid in pids.items())


def main(argv: Sequence[str] | None = None) -> int:
    """Command line of ``scripts/dev-cluster``: build, up, down, status."""
    parser = argparse.ArgumentParser(
        prog="dev-cluster", description="Local Kubernetes control plane for kubevision."
    )
    parser.add_argument(
        "command",
        choices=["up", "down", "status", "build"],
        help="up: build if needed, start in the background and print `export KUBECONFIG=...`; "
        "down: stop and delete its data; status: say whether it runs; build: only build",
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        help="default: ${XDG_RUNTIME_DIR:-/tmp}/kubevision-dev-cluster",
    )
    args = parser.parse_args(argv)
    state_dir: Path = args.state_dir or dev_state_dir()
    kubeconfig = state_dir / "kubeconfig"

    if args.command == "build":
        print(ensure_binaries())
        return 0
    if args.command == "status":
        if _running(state_dir):
            _log(f"running at {_read_pids(state_dir)[2]}")
            print(f"export KUBECONFIG={kubeconfig}")
            return 0
        _log("not running")
        return 1
    if args.command == "down":
        pids, binaries, _ = _read_pids(state_dir)
        _stop_pids(pids, binaries)
        shutil.rmtree(state_dir, ignore_errors=True)
        _log(f"stopped; removed {state_dir}")
        return 0
    # up
    if _running(state_dir):
        _log("already running")
    else:
        # Leftovers of a half-dead cluster (one component crashed) are stopped, not reused.
        pids, binaries, _ = _read_pids(state_dir)
        _stop_pids(pids, binaries)
        try:
            start(state_dir, detach=True)
        except ControlPlaneError as exc:
            _log(str(exc))
            return 1
    print(f"export KUBECONFIG={kubeconfig}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
