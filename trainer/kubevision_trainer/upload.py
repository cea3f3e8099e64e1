"""Uploads of large files (checkpoints) to object storage, in bounded parts.

On S3 a file goes up as one multipart upload to its final key: the object appears only when
``CompleteMultipartUpload`` succeeds, so a reader sees the old object or the new one, never a
part, with no temporary object and no server-side copy. Each part is read from the local file
into one buffer (:attr:`UploadPolicy.part_bytes`), sent with connect and read timeouts, and
retried with exponential backoff; a failed upload is aborted so that no incomplete upload is
left behind (and :func:`abort_incomplete` sweeps those a killed trainer could not abort). Other
fsspec URIs get a copy beside the target and a move.

Sources: the S3 multipart rules (parts of 5 MiB to 5 GiB, at most 10,000; AWS S3 User Guide,
"Uploading and copying objects using multipart upload"); botocore's client ``Config``
(``connect_timeout``, ``read_timeout``, ``retries``).
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import botocore.config
import botocore.session
from botocore.exceptions import BotoCoreError, ClientError

from kubevision_api import contract
from kubevision_api.contract import StorageRole
from kubevision_trainer import storage

log = logging.getLogger(__name__)

MIB = 1 << 20
#: S3's smallest part (all but the last) and most parts per upload.
MIN_PART_BYTES = 5 * MIB
MAX_PARTS = 10_000


@dataclass(frozen=True)
class UploadPolicy:
    """How an upload is split and retried.

    Attributes:
        part_bytes: bytes per part (64 MiB: large enough that a 10 GB checkpoint needs 160
            parts, small enough that a retry resends little and one buffer stays small).
        attempts: tries per part (and per single-request upload), the first included.
        backoff_seconds: wait before the second try, doubled before each later one.
        connect_timeout_seconds, read_timeout_seconds: per request (botocore's ``Config``); a
            frozen store fails a part after ``read_timeout_seconds`` instead of hanging.
    """

    part_bytes: int = 64 * MIB
    attempts: int = 4
    backoff_seconds: float = 1.0
    connect_timeout_seconds: float = 10.0
    read_timeout_seconds: float = 60.0


class UploadError(OSError):
    """An upload failed for good; the target is untouched. The message names the URI and the
    store's error (its S3 error code where it gave one)."""

    def __init__(self, uri: str, detail: str, code: str | None = None) -> None:
        super().__init__(f"{uri}: {detail}")
        self.uri = uri
        self.code = code


def file_sha256(path: Path, chunk: int = 8 * MIB) -> str:
    """Hex sha256 of a file, read in ``chunk``-byte pieces (one buffer, whatever its size)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


class FileRange(io.RawIOBase):
    """``length`` bytes of an open binary file from ``offset``, as a seekable stream of its
    own: what botocore reads a part from (it seeks back to the start to retry, sign and
    checksum). Reading moves the shared handle, so one part is read at a time."""

    def __init__(self, handle: BinaryIO, offset: int, length: int) -> None:
        super().__init__()
        self._handle = handle
        self._offset = offset
        self._length = length
        self._position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._length}[whence]
        self._position = min(max(base + offset, 0), self._length)
        return self._position

    def read(self, size: int | None = -1) -> bytes:
        left = self._length - self._position
        count = left if size is None or size < 0 else min(size, left)
        if count <= 0:
            return b""
        self._handle.seek(self._offset + self._position)
        data = self._handle.read(count)
        self._position += len(data)
        return data

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def __len__(self) -> int:
        return self._length


def _split(uri: str) -> tuple[str, str]:
    bucket, _, key = uri.split("://", 1)[1].partition("/")
    return bucket, key


def s3_client(role: StorageRole, policy: UploadPolicy) -> Any:
    """A botocore S3 client with ``role``'s credentials (``storage.credentials``) and the
    policy's timeouts. botocore's own retries are off: parts are retried here, so that the
    number of tries and the time they take are the policy's."""
    creds = storage.credentials(role)
    config = botocore.config.Config(
        connect_timeout=policy.connect_timeout_seconds,
        read_timeout=policy.read_timeout_seconds,
        retries={"max_attempts": 1, "mode": "standard"},
    )
    return botocore.session.get_session().create_client(
        "s3",
        endpoint_url=storage.endpoint(creds),
        aws_access_key_id=creds.get(contract.AWS_ACCESS_KEY_ID),
        aws_secret_access_key=creds.get(contract.AWS_SECRET_ACCESS_KEY),
        aws_session_token=creds.get(storage.SESSION_TOKEN),
        region_name=creds.get(contract.AWS_REGION) or "us-east-1",
        config=config,
    )


def _retry(
    what: str, call: Callable[[], Any], policy: UploadPolicy, sleep: Callable[[float], None]
) -> Any:
    """``call()``, tried ``policy.attempts`` times with exponential backoff; the last error is
    raised. Only the store's errors are retried (botocore's, and OSError)."""
    delay = policy.backoff_seconds
    for attempt in range(1, policy.attempts + 1):
        try:
            return call()
        except (BotoCoreError, ClientError, OSError) as exc:
            if attempt == policy.attempts:
                raise
            log.warning("%s: %s (try %d of %d)", what, exc, attempt, policy.attempts)
            sleep(delay)
            delay *= 2
    raise AssertionError("unreachable")


def part_ranges(size: int, part_bytes: int) -> list[tuple[int, int]]:
    """``(offset, length)`` of each part of a ``size``-byte file: ``part_bytes`` each (raised
    when needed to stay within 10,000 parts), the last one shorter.

    Raises:
        ValueError: ``part_bytes`` below S3's 5 MiB minimum.
    """
    if part_bytes < MIN_PART_BYTES:
        raise ValueError(f"part_bytes {part_bytes} is below S3's minimum of {MIN_PART_BYTES}")
    part_bytes = max(part_bytes, -(-size // MAX_PARTS))
    return [(offset, min(part_bytes, size - offset)) for offset in range(0, size, part_bytes)]


def upload_file(
    path: Path,
    uri: str,
    *,
    role: StorageRole = StorageRole.OUTPUT,
    policy: UploadPolicy | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Put the local file ``path`` at ``uri``, replacing what is there only once the whole file
    is stored.

    Raises:
        UploadError: the upload failed after its retries (an S3 multipart upload is aborted
            first); the object at ``uri`` is unchanged.
    """
    policy = policy or UploadPolicy()
    if not uri.startswith(("s3://", "s3a://")):
        _copy_then_move(path, uri, role)
        return
    client = s3_client(role, policy)
    bucket, key = _split(uri)
    size = path.stat().st_size
    try:
        if size <= policy.part_bytes:
            with path.open("rb") as handle:
                _retry(
                    f"{uri}: put",
                    lambda: client.put_object(
                        Bucket=bucket, Key=key, Body=FileRange(handle, 0, size)
                    ),
                    policy,
                    sleep,
                )
            return
        _multipart(client, path, uri, size, policy, sleep)
    except (BotoCoreError, ClientError, OSError) as exc:
        if isinstance(exc, UploadError):
            raise
        raise UploadError(
            uri, f"{storage.error_code(exc)}: {exc}", storage.error_code(exc)
        ) from exc


def _multipart(
    client: Any,
    path: Path,
    uri: str,
    size: int,
    policy: UploadPolicy,
    sleep: Callable[[float], None],
) -> None:
    bucket, key = _split(uri)
    ranges = part_ranges(size, policy.part_bytes)
    upload = _retry(
        f"{uri}: create multipart upload",
        lambda: client.create_multipart_upload(Bucket=bucket, Key=key),
        policy,
        sleep,
    )
    upload_id = upload["UploadId"]
    parts: list[dict[str, Any]] = []
    try:
        with path.open("rb") as handle:
            for number, (offset, length) in enumerate(ranges, 1):

                def send(number: int = number, offset: int = offset, length: int = length) -> Any:
                    # A fresh view of the part per try: botocore reads it in small chunks (to
                    # sign, checksum and send it), so no buffer of the part's size exists.
                    return client.upload_part(
                        Bucket=bucket,
                        Key=key,
                        UploadId=upload_id,
                        PartNumber=number,
                        Body=FileRange(handle, offset, length),
                    )

                result = _retry(f"{uri}: part {number}/{len(ranges)}", send, policy, sleep)
                parts.append({"PartNumber": number, "ETag": result["ETag"]})
        _retry(
            f"{uri}: complete multipart upload",
            lambda: client.complete_multipart_upload(
                Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
            ),
            policy,
            sleep,
        )
    except (BotoCoreError, ClientError, OSError) as exc:
        part = len(parts) + 1
        _abort(client, bucket, key, upload_id)
        raise UploadError(
            uri,
            f"part {min(part, len(ranges))} of {len(ranges)} failed after {policy.attempts} "
            f"tries: {storage.error_code(exc)}: {exc}",
            storage.error_code(exc),
        ) from exc


def _abort(client: Any, bucket: str, key: str, upload_id: str) -> None:
    try:
        client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
    except (BotoCoreError, ClientError) as exc:
        # The store may be gone; abort_incomplete() sweeps the upload at the next start.
        log.warning("s3://%s/%s: could not abort upload %s: %s", bucket, key, upload_id, exc)


def abort_incomplete(
    prefix_uri: str, *, role: StorageRole = StorageRole.OUTPUT, policy: UploadPolicy | None = None
) -> int:
    """Abort every incomplete multipart upload under ``prefix_uri`` (an S3 folder URI ending
    with '/'): those that a killed or frozen trainer left. Returns how many were aborted; 0 for
    other URIs."""
    if not prefix_uri.startswith(("s3://", "s3a://")):
        return 0
    policy = policy or UploadPolicy()
    client = s3_client(role, policy)
    bucket, prefix = _split(prefix_uri)
    listing = client.list_multipart_uploads(Bucket=bucket, Prefix=prefix)
    uploads = listing.get("Uploads") or []
    for item in uploads:
        _abort(client, bucket, item["Key"], item["UploadId"])
    return len(uploads)


def _copy_then_move(path: Path, uri: str, role: StorageRole) -> None:
    """Any other fsspec URI: copy beside the target, then move over it (``os.replace`` on a
    local disk, after an fsync)."""
    fs, target = storage.filesystem(uri, role=role)
    parent = target.rsplit("/", 1)[0]
    fs.makedirs(parent, exist_ok=True)
    tmp = f"{target}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        if fs.protocol in ("file", ("file", "local")):
            with path.open("rb") as source, open(tmp, "wb") as handle:
                shutil.copyfileobj(source, handle, 8 * MIB)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, target)
        else:
            fs.put_file(str(path), tmp)
            fs.mv(tmp, target)
    except OSError as exc:
        raise UploadError(uri, f"{type(exc).__name__}: {exc}") from exc
    finally:
        if fs.exists(tmp):
            fs.rm(tmp)
