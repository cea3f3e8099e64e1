"""How ``upload`` splits a file into S3 parts (the S3 rules: parts of at least 5 MiB but the
last, at most 10,000 parts)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from kubevision_trainer import storage, upload

MIB = upload.MIB


def test_part_ranges() -> None:
    assert upload.part_ranges(12 * MIB, 5 * MIB) == [
        (0, 5 * MIB),
        (5 * MIB, 5 * MIB),
        (10 * MIB, 2 * MIB),
    ]
    assert upload.part_ranges(0, 5 * MIB) == []
    # 10,000 parts at most: a larger file gets larger parts.
    ranges = upload.part_ranges(60_000 * MIB, 5 * MIB)
    assert len(ranges) == 10_000 and sum(length for _, length in ranges) == 60_000 * MIB
    with pytest.raises(ValueError, match="minimum"):
        upload.part_ranges(10, MIB)


def test_error_code_names_the_s3_code_or_the_class() -> None:
    denied = ClientError({"Error": {"Code": "AccessDenied", "Message": "no"}}, "PutObject")
    assert storage.error_code(denied) == "AccessDenied"
    assert storage.error_code(TimeoutError()) == "TimeoutError"


def test_file_range_reads_and_seeks_within_its_part(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(bytes(range(100)))
    with path.open("rb") as handle:
        part = upload.FileRange(handle, 10, 20)
        assert len(part) == 20
        assert part.read(5) == bytes(range(10, 15))
        assert part.read() == bytes(range(15, 30))
        assert part.read() == b""
        assert part.seek(0, io.SEEK_END) == 20 and part.tell() == 20
        part.seek(-3, io.SEEK_END)
        assert part.read(100) == bytes(range(27, 30))
        part.seek(0)
        buffer = bytearray(8)
        assert part.readinto(buffer) == 8 and bytes(buffer) == bytes(range(10, 18))
