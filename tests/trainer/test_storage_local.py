"""``kubevision_trainer.storage`` on a local disk (``file://``): writes go beside the target,
are read back and compared, then moved over it, so a failure leaves the old file; on S3 a
single PUT is atomic by itself (tests/integration/test_storage_s3.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from kubevision_api.contract import StorageRole
from kubevision_trainer import storage

OUTPUT = StorageRole.OUTPUT


@pytest.fixture
def base(tmp_path: Path) -> str:
    return (tmp_path / "run").as_uri()


def keys(folder: str) -> list[str]:
    root = Path(folder.removeprefix("file://"))
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def test_failed_verification_leaves_old_object(base: str, monkeypatch: pytest.MonkeyPatch) -> None:
    uri = storage.join(base, "checkpoints/last.pt")
    storage.write_atomic(uri, b"old")
    real_sha256 = storage.sha256
    calls: list[bytes] = []

    def corrupt_on_read_back(data: bytes) -> str:
        # First call: the digest of the data to write; second: the read-back, made wrong.
        calls.append(data)
        return real_sha256(data) if len(calls) == 1 else "0" * 64

    monkeypatch.setattr(storage, "sha256", corrupt_on_read_back)
    with pytest.raises(OSError, match="verification failed"):
        storage.write_atomic(uri, b"new")

    assert calls == [b"new", b"new"]  # the read-back really came from the server
    monkeypatch.setattr(storage, "sha256", real_sha256)
    assert storage.read_bytes(uri, role=OUTPUT) == b"old"
    assert keys(base) == ["checkpoints/last.pt"]


def test_failed_move_leaves_old_object(base: str, monkeypatch: pytest.MonkeyPatch) -> None:
    uri = storage.join(base, "model.json")
    storage.write_atomic(uri, b"old")
    real_filesystem = storage.filesystem

    def failing_move(target: str, *, role: StorageRole) -> tuple[Any, str]:
        fs, path = real_filesystem(target, role=role)

        def mv(*args: object, **kwargs: object) -> None:
            raise OSError("injected: connection lost during copy")

        # The filesystem instance is shared (storage reuses it): patch it through monkeypatch
        # so the next tests get the real move back.
        monkeypatch.setattr(fs, "mv", mv)
        return fs, path

    monkeypatch.setattr(storage, "filesystem", failing_move)
    with pytest.raises(OSError, match="injected"):
        storage.write_atomic(uri, b"new")

    monkeypatch.setattr(storage, "filesystem", real_filesystem)
    assert storage.read_bytes(uri, role=OUTPUT) == b"old"
    assert keys(base) == ["model.json"]
