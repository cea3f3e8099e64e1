"""The operator under a dropped API connection: a TCP proxy between the operator and the real
API server blackholes every open connection (an idle-timeout load balancer that lost its
state: no FIN, no RST, no answer), while the node agent, the scheduler and the Job controller
talk to the API server directly. Trainers are the stub (``testenv.scale.stub_trainer``), which
reports every step to the operator's status endpoint and exits 0.

- ModelVersions waiting for the concurrency limit, and ModelVersions applied after the
  blackhole, get their Jobs within the bounds below while five trainings finish meanwhile;
- ``/healthz`` fails (503, naming the ModelVersion) while a reconcile is stuck past the stall
  bound, and the in-flight gauge shows it; it answers ok again once the call timed out;
- SIGTERM stops the operator within its shutdown timeout, whatever its threads do.
"""

from __future__ import annotations

import json
import signal
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from testenv.controlplane import ControlPlane
from testenv.operator_helpers import Operator, apply, job_exists, succeeded, wait_for
from testenv.scale import stub_trainer, workload
from testenv.tcpproxy import TcpProxy, tcp_proxy

pytestmark = pytest.mark.slow

READ_TIMEOUT_S = 4
ATTEMPTS = 2
WATCH_CLIENT_TIMEOUT_S = 12


def _kubeconfig_through(cp: ControlPlane, proxy: TcpProxy, path: Path) -> Path:
    """The control plane's kubeconfig, with its server moved to the proxy."""
    config = yaml.safe_load(Path(cp.kubeconfig).read_text())
    for cluster in config["clusters"]:
        cluster["cluster"]["server"] = f"https://{proxy.address}"
    path.write_text(yaml.safe_dump(config))
    return path


def _api_target(cp: ControlPlane) -> tuple[str, int]:
    server = urlsplit(cp.server)
    assert server.hostname is not None and server.port is not None
    return server.hostname, server.port


def _env(kubeconfig: Path, **extra: str) -> dict[str, str]:
    return {
        "KUBECONFIG": str(kubeconfig),
        "KUBEVISION_TRAINER_COMMAND_OVERRIDE": json.dumps(stub_trainer.command(pause=3.0)),
        "KUBEVISION_TRAINER_METRICS_PORT": "0",
        "KUBEVISION_API_READ_TIMEOUT_SECONDS": str(READ_TIMEOUT_S),
        "KUBEVISION_API_CONNECT_TIMEOUT_SECONDS": "2",
        "KUBEVISION_API_ATTEMPTS": str(ATTEMPTS),
        "KUBEVISION_WATCH_SERVER_TIMEOUT_SECONDS": "10",
        "KUBEVISION_WATCH_CLIENT_TIMEOUT_SECONDS": str(WATCH_CLIENT_TIMEOUT_S),
        **extra,
    }


def _apply_modelversions(cp: ControlPlane, namespace: str, names: list[str]) -> None:
    listing = workload.modelversion_list(len(names))
    for item, name in zip(listing["items"], names, strict=True):
        item["metadata"]["name"] = name
    apply(cp, listing, namespace=namespace)


def _healthz(operator: Operator) -> tuple[int, str]:
    url = f"http://127.0.0.1:{operator.health_port}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _accepted(operator: Operator) -> float:
    """Trainer reports the operator took so far."""
    text = operator.metrics_text()
    prefix = 'kubevision_operator_status_reports_total{result="accepted"} '
    return sum(float(line[len(prefix) :]) for line in text.splitlines() if line.startswith(prefix))


def _start(cp: ControlPlane, tmp_path: Path, env: dict[str, str]) -> Operator:
    operator = Operator(cp, tmp_path, env)
    operator.start()
    return operator


def test_a_blackholed_connection_does_not_wedge_the_operator(
    crds: ControlPlane, namespace: str, node_agent: Any, tmp_path: Path
) -> None:
    node_agent(pods=20, cpu="64", memory="256Gi")
    apply(crds, workload.view_manifest(), namespace=namespace)
    running = [f"run-{i}" for i in range(5)]
    waiting = [f"wait-{i}" for i in range(3)]
    later = [f"late-{i}" for i in range(2)]
    with tcp_proxy(_api_target(crds)) as proxy:
        kubeconfig = _kubeconfig_through(crds, proxy, tmp_path / "kubeconfig")
        operator = _start(crds, tmp_path, _env(kubeconfig, KUBEVISION_CONCURRENCY_LIMIT="5"))
        try:
            _apply_modelversions(crds, namespace, running + waiting)
            wait_for("five Jobs", lambda: all(job_exists(crds, namespace, n) for n in running), 60)
            assert not any(job_exists(crds, namespace, n) for n in waiting)
            assert proxy.blackhole() > 0
            blackholed = time.monotonic()
            _apply_modelversions(crds, namespace, later)
            # The five finish meanwhile (their status is the operator's: a wedged operator
            # never writes it); each frees a place for one waiting ModelVersion. The bound
            # starts when the last place is free, so that slow stub trainers on a loaded
            # machine do not count against the operator.
            wait_for(
                "the five running trainings to succeed",
                lambda: all(succeeded(crds, namespace, n) for n in running),
                120,
            )
            freed = time.monotonic()
            bound = ATTEMPTS * READ_TIMEOUT_S + WATCH_CLIENT_TIMEOUT_S + 10
            wait_for(
                "the waiting ModelVersions' Jobs",
                lambda: all(job_exists(crds, namespace, n) for n in waiting),
                bound,
            )
            waited = time.monotonic() - blackholed
            after_freed = time.monotonic() - freed
            wait_for(
                "every training to succeed",
                lambda: all(succeeded(crds, namespace, n) for n in running + waiting + later),
                120,
            )
            assert _healthz(operator) == (200, "ok")
            print(
                f"after the blackhole: waiting ModelVersions had Jobs in {waited:.1f} s "
                f"({after_freed:.1f} s after the last place was freed), all "
                f"{len(running + waiting + later)} Succeeded in "
                f"{time.monotonic() - blackholed:.1f} s"
            )
        finally:
            code = operator.stop()
    assert code == 0, operator.log_text()[-3000:]
    assert "Traceback" not in operator.log_text(), operator.log_text()[-5000:]


def test_healthz_fails_while_a_reconcile_is_stuck_and_sigterm_still_stops(
    crds: ControlPlane, namespace: str, node_agent: Any, tmp_path: Path
) -> None:
    """A stall bound of 2 s under read and connect timeouts of 20 and 10 s, and a partition
    between the operator and the API server: the stuck reconcile shows in
    ``/healthz`` and in the in-flight gauge until its call times out; SIGTERM during a
    stall stops the process within the shutdown timeout."""
    node_agent(pods=5, cpu="16", memory="64Gi")
    apply(crds, workload.view_manifest(), namespace=namespace)
    with tcp_proxy(_api_target(crds)) as proxy:
        kubeconfig = _kubeconfig_through(crds, proxy, tmp_path / "kubeconfig")
        env = _env(
            kubeconfig,
            KUBEVISION_API_READ_TIMEOUT_SECONDS="20",
            # A request on a new connection through the partition hangs in its TLS handshake,
            # which the connect timeout bounds.
            KUBEVISION_API_CONNECT_TIMEOUT_SECONDS="10",
            KUBEVISION_API_ATTEMPTS="1",
            KUBEVISION_RECONCILE_STALL_SECONDS="2",
            KUBEVISION_SHUTDOWN_TIMEOUT_SECONDS="3",
        )
        operator = _start(crds, tmp_path, env)
        try:
            _apply_modelversions(crds, namespace, ["first"])
            wait_for("the first Job", lambda: job_exists(crds, namespace, "first"), 60)
            # Once a report was taken, the trainer's token is known (TokenReview results are
            # cached): the next report goes straight to a reconcile, whose status patch hangs.
            wait_for("a report of the first trainer", lambda: _accepted(operator) >= 1, 60)
            assert _healthz(operator) == (200, "ok")
            # A partition: open connections and new ones alike hang.
            proxy.blackhole()
            proxy.partition()
            stuck = wait_for("/healthz to fail", lambda: _healthz(operator)[0] == 503, 60)
            assert stuck
            status, text = _healthz(operator)
            assert status == 503 and f"ModelVersion {namespace}/first" in text, text
            gauges = operator.metrics_text()
            assert "kubevision_operator_reconciles_in_flight 1.0" in gauges
            # The partition ends; the hung call times out and /healthz recovers.
            proxy.partition(on=False)
            wait_for("/healthz to recover", lambda: _healthz(operator)[0] == 200, 40)
            # The first stub is done by now: a second one reports meanwhile. (The operator
            # reads from its watches: only a write, here a status patch, can hang.)
            taken = _accepted(operator)
            _apply_modelversions(crds, namespace, ["second"])
            wait_for("the second Job", lambda: job_exists(crds, namespace, "second"), 60)
            wait_for("a report of the second", lambda: _accepted(operator) > taken, 60)
            proxy.blackhole()
            proxy.partition()
            wait_for("a stall again", lambda: _healthz(operator)[0] == 503, 60)
            assert operator.process is not None
            started = time.monotonic()
            operator.process.send_signal(signal.SIGTERM)
            code = operator.process.wait(timeout=30)
            took = time.monotonic() - started
            operator.process = None
        finally:
            if operator.process is not None:
                operator.stop(signal.SIGKILL)
    print(f"SIGTERM during a stall: exit {code} after {took:.1f} s")
    assert took < 3 + 5, took
