"""The integration fixtures themselves: each server really answers, checks what it should,
and the process helpers notice a server that dies, hangs or ignores SIGTERM."""

from __future__ import annotations

import json
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from tests.integration import services


def test_free_ports_are_distinct() -> None:
    ports = services.free_ports(20)
    assert len(set(ports)) == 20
    assert all(1024 <= port <= 65535 for port in ports)


def test_s3_server_round_trip(s3_server: services.S3Server) -> None:
    assert s3_server.endpoint_url.startswith("http://127.0.0.1:")
    bucket = s3_server.create_bucket()
    client = s3_server.client()
    client.put_object(Bucket=bucket, Key="a/b.txt", Body=b"hello")
    assert client.get_object(Bucket=bucket, Key="a/b.txt")["Body"].read() == b"hello"
    assert bucket in {b["Name"] for b in client.list_buckets()["Buckets"]}


def test_s3_server_rejects_unknown_keys(s3_server: services.S3Server) -> None:
    if s3_server.kind == "moto":
        pytest.skip("moto accepts any credentials")
    import boto3

    intruder = boto3.client(
        "s3",
        endpoint_url=s3_server.endpoint_url,
        aws_access_key_id="intruder",
        aws_secret_access_key="wrong",
        region_name="us-east-1",
    )
    with pytest.raises(ClientError) as info:
        intruder.list_buckets()
    assert info.value.response["Error"]["Code"] == "InvalidAccessKeyId"


def test_s3_env_sets_the_standard_variables(
    s3_env: services.S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    assert os.environ["AWS_ACCESS_KEY_ID"] == s3_env.access_key
    assert os.environ["AWS_SECRET_ACCESS_KEY"] == s3_env.secret_key
    assert os.environ["AWS_ENDPOINT_URL_S3"] == s3_env.endpoint_url
    assert os.environ["AWS_REGION"] == "us-east-1"
    assert "AWS_PROFILE" not in os.environ


def test_pushgateway_answers(pushgateway: services.Pushgateway) -> None:
    text = pushgateway.metrics_text()
    assert "pushgateway_build_info" in text


def test_pushgateway_starts_empty(services_dir: Path) -> None:
    """A group pushed to one Pushgateway is not there when the next one starts (Debian's
    build persists to a shared file unless told otherwise)."""
    binary = services.find_binary("prometheus-pushgateway", services.PUSHGATEWAY_BINARY)
    assert binary is not None
    first = services.start_pushgateway(binary, services_dir / "pushgateway-first")
    try:
        request = urllib.request.Request(
            f"{first.url}/metrics/job/leftover", data=b"leftover_metric 1\n", method="PUT"
        )
        urllib.request.urlopen(request, timeout=5).close()
        assert "leftover_metric" in first.metrics_text()
    finally:
        first.process.stop()
    second = services.start_pushgateway(binary, services_dir / "pushgateway-second")
    try:
        assert "leftover_metric" not in second.metrics_text()
    finally:
        second.process.stop()


def test_prometheus_scrapes_pushgateway(
    prometheus: services.Prometheus, pushgateway: services.Pushgateway
) -> None:
    [up] = prometheus.query('up{job="pushgateway"}')
    assert up.value == 1.0
    assert up.labels["instance"] == pushgateway.url.removeprefix("http://")
    assert prometheus.query('nothing_has_this_name{job="x"}') == []


def test_prometheus_config_honors_labels() -> None:
    config = json.loads(services.prometheus_config(["127.0.0.1:9091"]))
    assert config["global"]["scrape_interval"] == "1s"
    [job] = config["scrape_configs"]
    assert job["honor_labels"] is True
    assert job["static_configs"] == [{"targets": ["127.0.0.1:9091"]}]


def test_prometheus_query_error_is_reported(prometheus: services.Prometheus) -> None:
    with pytest.raises(services.ServiceError, match="answered 400"):
        prometheus.query("sum(")


def test_prometheus_wait_for_is_bounded(prometheus: services.Prometheus) -> None:
    start = time.monotonic()
    with pytest.raises(services.ServiceError, match="not as expected after 1 s"):
        prometheus.wait_for("absent_metric_name", timeout=1)
    assert time.monotonic() - start < 5


def python_process(tmp_path: Path, code: str) -> services.ManagedProcess:
    return services.ManagedProcess.start("fake", [sys.executable, "-c", code], tmp_path)


def test_process_that_exits_raises_with_its_log(tmp_path: Path) -> None:
    process = python_process(tmp_path, "import sys; print('bad flag -x'); sys.exit(3)")
    with pytest.raises(services.ServiceError, match=r"exited with code 3(.|\n)*bad flag -x"):
        process.wait_until(lambda: False, "ready", timeout=10)


def test_process_that_never_gets_ready_times_out(tmp_path: Path) -> None:
    process = python_process(tmp_path, "import time; time.sleep(60)")
    try:
        start = time.monotonic()
        with pytest.raises(services.ServiceError, match="not ready after 1 s"):
            process.wait_until(lambda: False, "ready", timeout=1)
        assert time.monotonic() - start < 5
    finally:
        process.stop()
    assert not process.running()


def test_stop_kills_a_process_that_ignores_sigterm(tmp_path: Path) -> None:
    code = (
        "import signal, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "print('listen' + 'ing', flush=True)\n"
        "time.sleep(60)\n"
    )
    process = python_process(tmp_path, code)
    # (The log starts with the command line, so look for the joined word.)
    process.wait_until(lambda: "listening" in process.log_tail(), "ready", timeout=10)
    start = time.monotonic()
    assert process.stop(timeout=1) == -9  # SIGKILL after the grace period
    assert 1 <= time.monotonic() - start < 5


def test_stop_of_a_well_behaved_process_uses_sigterm(tmp_path: Path) -> None:
    process = python_process(tmp_path, "import time; time.sleep(60)")
    assert process.stop(timeout=5) == -15
