"""How ``upload`` splits a file into S3 parts (the S3 rules: parts of at least 5 MiB but the
last, at most 10,000 parts)."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError

from kubevision_trainer import upload

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
    assert upload.error_code(denied) == "AccessDenied"
    assert upload.error_code(TimeoutError()) == "TimeoutError"
