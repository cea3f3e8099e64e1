"""``kubevision_trainer.storage`` against a real S3 server, configured only through the
``AWS_*`` variables (as in the trainer's Job)."""

from __future__ import annotations

import hashlib
import uuid

import pytest

from kubevision_api import contract
from kubevision_api.contract import StorageRole
from kubevision_api.errors import InputError
from kubevision_trainer import storage
from tests.integration import services

OUTPUT = StorageRole.OUTPUT


@pytest.fixture(scope="module")
def bucket(s3_server: services.S3Server) -> str:
    """One bucket for this module (SeaweedFS allocates volumes per bucket: ~0.4 s each)."""
    return s3_server.create_bucket()


@pytest.fixture
def base(bucket: str, s3_env: services.S3Server) -> str:
    """A fresh ``s3://`` prefix for one test, with the ``AWS_*`` variables set."""
    return f"s3://{bucket}/{uuid.uuid4().hex[:8]}/mv-1"


def keys(server: services.S3Server, base: str) -> list[str]:
    """Every object key under ``base``, relative to it, read with boto3 (not through the code
    under test)."""
    bucket, prefix = base.removeprefix("s3://").split("/", 1)
    response = server.client().list_objects_v2(Bucket=bucket, Prefix=prefix + "/")
    return sorted(item["Key"].removeprefix(prefix + "/") for item in response.get("Contents", []))


def test_write_atomic_then_read_back(base: str, s3_env: services.S3Server) -> None:
    data = b"\x00checkpoint\xff" * 1000
    digest = storage.write_atomic(storage.join(base, "checkpoints/best.pt"), data)

    assert digest == hashlib.sha256(data).hexdigest()
    assert storage.read_bytes(storage.join(base, "checkpoints/best.pt"), role=OUTPUT) == data
    # Exactly the target: no temporary object left beside it.
    assert keys(s3_env, base) == ["checkpoints/best.pt"]
    bucket, prefix = base.removeprefix("s3://").split("/", 1)
    body = s3_env.client().get_object(Bucket=bucket, Key=f"{prefix}/checkpoints/best.pt")
    assert body["Body"].read() == data


def test_overwrite_replaces_content(base: str) -> None:
    uri = storage.join(base, "model.json")
    storage.write_atomic(uri, b'{"v": 1}')
    storage.write_atomic(uri, b'{"v": 2}')
    assert storage.read_bytes(uri, role=OUTPUT) == b'{"v": 2}'


def test_exists(base: str) -> None:
    uri = storage.join(base, "metrics.jsonl")
    assert not storage.exists(uri, role=OUTPUT)
    storage.write_atomic(uri, b"{}\n")
    assert storage.exists(uri, role=OUTPUT)
    assert not storage.exists(storage.join(base, "metrics.json"), role=OUTPUT)


def test_list_dir_names_files_and_folders(base: str) -> None:
    storage.write_atomic(storage.join(base, "model.json"), b"{}")
    storage.write_atomic(storage.join(base, "metrics.jsonl"), b"")
    storage.write_atomic(storage.join(base, "checkpoints/last.pt"), b"last")
    storage.write_atomic(storage.join(base, "checkpoints/best.pt"), b"best")

    assert storage.list_dir(base, role=OUTPUT) == [
        ("checkpoints", True),
        ("metrics.jsonl", False),
        ("model.json", False),
    ]
    assert storage.list_dir(storage.join(base, "checkpoints"), role=OUTPUT) == [
        ("best.pt", False),
        ("last.pt", False),
    ]


def test_missing_object_and_folder_name_the_uri(base: str) -> None:
    uri = storage.join(base, "nope.json")
    with pytest.raises(InputError, match=r"nope\.json: file not found"):
        storage.read_bytes(uri, role=OUTPUT)
    with pytest.raises(InputError, match="folder not found"):
        storage.list_dir(storage.join(base, "no-such-folder"), role=OUTPUT)


def test_append_text(base: str) -> None:
    uri = storage.join(base, "batches.jsonl")
    storage.append_text(uri, '{"batch": 1}\n')
    storage.append_text(uri, '{"batch": 2}\n')
    assert storage.read_bytes(uri, role=OUTPUT) == b'{"batch": 1}\n{"batch": 2}\n'


def test_wrong_secret_is_refused(
    base: str, s3_env: services.S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server checks the key, so the tests above really used the configured one."""
    if s3_env.kind == "moto":
        pytest.skip("moto accepts any credentials")
    storage.write_atomic(storage.join(base, "a.txt"), b"a")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    with pytest.raises((InputError, PermissionError, OSError)):
        storage.read_bytes(storage.join(base, "a.txt"), role=OUTPUT)


def test_each_role_reads_and_writes_with_its_own_identity(
    s3_env: services.S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Dataset Secret A (the plain ``AWS_*``) may touch bucket A alone, output Secret B (the
    ``KUBEVISION_OUTPUT_AWS_*`` the operator renders) bucket B alone: each role's URIs are
    reached with its own identity, and the server refuses the other's."""
    if s3_env.kind != "seaweedfs":
        pytest.skip("moto accepts any credentials")
    dataset_bucket, output_bucket = sorted(s3_env.scoped)
    s3_env.client().put_object(Bucket=dataset_bucket, Key="ds/a.txt", Body=b"image")
    for name, value in s3_env.scoped_env(dataset_bucket).items():
        monkeypatch.setenv(name, value)
    for name, value in s3_env.scoped_env(output_bucket).items():
        monkeypatch.setenv(contract.role_variable(StorageRole.OUTPUT, name), value)

    dataset_uri = f"s3://{dataset_bucket}/ds/a.txt"
    output_uri = f"s3://{output_bucket}/{uuid.uuid4().hex[:8]}/model.json"
    assert storage.read_bytes(dataset_uri, role=StorageRole.DATASET) == b"image"
    storage.write_atomic(output_uri, b"{}")
    assert storage.read_bytes(output_uri, role=OUTPUT) == b"{}"
    # The server does refuse each identity the other bucket: the roles above were needed.
    with pytest.raises((InputError, PermissionError, OSError)):
        storage.read_bytes(output_uri, role=StorageRole.DATASET)
    with pytest.raises((InputError, PermissionError, OSError)):
        storage.read_bytes(dataset_uri, role=OUTPUT)
    # The weights role has no variables of its own: it uses the plain ones (Secret A).
    assert storage.read_bytes(dataset_uri, role=StorageRole.WEIGHTS) == b"image"
