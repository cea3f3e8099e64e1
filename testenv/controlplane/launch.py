"""Starting a control plane: PKI, kubeconfigs, the four processes on free loopback ports, and
waiting until the controllers run.

:func:`start` is the one implementation behind the pytest fixture ``control_plane``
(``testenv.fixtures``) and ``scripts/dev-cluster up`` (``testenv.controlplane.devcluster``). See
docs/control-plane.md.
"""

from __future__ import annotations

import functools
import json
import shutil
import ssl
import time
from pathlib import Path

from testenv.controlplane.build import ensure_binaries, pinned_versions
from testenv.controlplane.pki import (
    CertificateAuthority,
    write_kubeconfig,
    write_service_account_keys,
)
from testenv.controlplane.plane import (
    API_AUDIENCES,
    SERVICE_ACCOUNT_ISSUER,
    SERVICE_CLUSTER_IP_RANGE,
    ControlPlane,
)
from testenv.controlplane.processes import (
    Component,
    ControlPlaneError,
    https_ok,
    log,
    spawn,
    wait_until,
)
from testenv.ports import free_ports

_READY_TIMEOUT_S = 90.0


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
            log("a port was taken while starting; retrying with new ports")
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
    etcd_client, etcd_peer, apiserver_port, kcm_port, scheduler_port = free_ports(5)
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
    sa_private, sa_public = write_service_account_keys(pki)

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

    etcd = Component(
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
    apiserver = Component(
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

    kcm = Component(
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
    scheduler = Component(
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

    def launch(component: Component) -> None:
        spawn(component, state_dir, detach=detach)
        plane.components.append(component)
        _write_pids(state_dir, plane)

    probe_context = ssl.create_default_context(cafile=str(ca.cert_path))
    try:
        # The API server retries its etcd connection, so both start at once.
        launch(etcd)
        launch(apiserver)
        wait_until(
            "kube-apiserver /readyz",
            lambda: https_ok(f"{server}/readyz", plane.ssl_context()),
            deadline,
            plane.components,
        )
        # The controller manager gives up if the API server is not healthy within ~10 s of its
        # own start, which a busy machine can exceed; starting it after /readyz avoids that.
        launch(kcm)
        launch(scheduler)
        for name, port in (
            ("kube-controller-manager", kcm_port),
            ("kube-scheduler", scheduler_port),
        ):
            wait_until(
                f"{name} /healthz",
                functools.partial(https_ok, f"https://127.0.0.1:{port}/healthz", probe_context),
                deadline,
                plane.components,
            )
        # /healthz only says the controller manager serves; its controllers start once their
        # informers have synced. The `default` ServiceAccount, made by the serviceaccount
        # controller, marks that point; until then the ServiceAccount admission plugin would
        # reject every Pod a test creates.
        wait_until(
            "the `default` ServiceAccount (controllers running)",
            functools.partial(
                https_ok,
                f"{server}/api/v1/namespaces/default/serviceaccounts/default",
                plane.ssl_context(),
            ),
            deadline,
            plane.components,
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
    log(f"ready in {plane.startup_seconds:.1f} s at {server} (Kubernetes {versions.kubernetes})")
    return plane


def _write_pids(state_dir: Path, plane: ControlPlane) -> None:
    binaries = {c.name: c.argv[0] for c in plane.components}
    (state_dir / "pids.json").write_text(
        json.dumps({"pids": plane.pids(), "binaries": binaries, "server": plane.server})
    )
