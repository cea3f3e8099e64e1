"""Object storage through fsspec: ``file://``, ``s3://`` and any other fsspec URI, untested.
Every call names the :class:`~kubevision_api.contract.StorageRole` it reads or writes for, and
an S3 URI is reached with that role's credentials (:func:`credentials`). Writes are atomic:
write beside the target, verify the bytes read back, then move."""

from __future__ import annotations

import contextlib
import hashlib
import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import fsspec
from botocore.exceptions import BotoCoreError, ClientError
from fsspec.core import url_to_fs

from kubevision_api import contract
from kubevision_api.contract import StorageRole
from kubevision_api.errors import InputError

#: botocore's own variables, read from the plain environment only.
SESSION_TOKEN = "AWS_SESSION_TOKEN"
_ENDPOINT_ANY_SERVICE = "AWS_ENDPOINT_URL"


def credentials(role: StorageRole, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The ``AWS_*`` values (``contract.AWS_KEYS``, by their plain names) that ``role`` uses.

    The operator renders a role's own variables (``contract.role_variable``) only when its
    Secret differs from the one behind the plain ``AWS_*`` variables. A role with variables of
    its own uses them alone: that Secret is a whole identity (keys, endpoint and region), never
    mixed with another's. Otherwise the plain variables apply, with botocore's
    ``AWS_SESSION_TOKEN`` and ``AWS_ENDPOINT_URL`` beside them; with none at all botocore finds
    credentials itself (IRSA, instance profiles).
    """
    env = os.environ if environ is None else environ
    own = {
        key: env[contract.role_variable(role, key)]
        for key, _ in contract.AWS_KEYS
        if env.get(contract.role_variable(role, key))
    }
    if own:
        return own
    plain = {key: env[key] for key, _ in contract.AWS_KEYS if env.get(key)}
    for extra in (SESSION_TOKEN, _ENDPOINT_ANY_SERVICE):
        if env.get(extra):
            plain[extra] = env[extra]
    return plain


@dataclass(frozen=True)
class Timeouts:
    """Bounds of each S3 request of the trainer (botocore's ``Config``): a closed or frozen
    endpoint fails within ``attempts`` x (connect + read) seconds plus backoff, instead of
    botocore's and s3fs's own retries (about 30 s for a refused connection by default)."""

    connect_seconds: float = 10.0
    read_seconds: float = 60.0
    #: Tries per request, the first included (botocore's "standard" retry mode: exponential
    #: backoff with jitter, for connection errors, throttling and 5xx).
    attempts: int = 3


_timeouts = Timeouts()


def configure(timeouts: Timeouts) -> None:
    """Set the request bounds of every later storage call (the trainer's settings)."""
    global _timeouts  # noqa: PLW0603  (one process-wide policy, as fsspec's filesystem cache)
    _timeouts = timeouts


class StorageError(OSError):
    """A storage call failed for a reason other than a missing object: the message names the
    URI, the store's error code (``AccessDenied``, ``NoSuchBucket``, ``EndpointConnectionError``)
    and the endpoint; ``role`` says whose credentials were used."""

    def __init__(
        self,
        uri: str,
        role: StorageRole,
        exc: BaseException,
        *,
        context: str = "",
        code: str | None = None,
    ) -> None:
        self.uri = uri
        self.role = role
        self.code = code or error_code(exc)
        self.endpoint = endpoint(credentials(role)) if uri.startswith(("s3://", "s3a://")) else None
        detail = " ".join(str(exc).split()) or self.code
        where = f" (endpoint {self.endpoint})" if self.endpoint else ""
        super().__init__(f"{context}{uri}: {self.code}: {detail}{where}")


def error_code(exc: BaseException) -> str:
    """The S3 error code of a botocore ``ClientError`` (``AccessDenied``, ``NoSuchBucket``),
    else the exception's class name (``EndpointConnectionError``, ``ReadTimeoutError``). s3fs
    turns ``ClientError`` into ``OSError`` subclasses and keeps the original as the cause."""
    for current in (exc, exc.__cause__, exc.__context__):
        response = getattr(current, "response", None)
        if isinstance(response, dict):
            code = response.get("Error", {}).get("Code")
            if code:
                return str(code)
    cause = exc.__cause__
    if isinstance(exc, OSError) and isinstance(cause, (BotoCoreError, ClientError)):
        return type(cause).__name__
    return type(exc).__name__


#: What a storage library raises: OSError (fsspec, s3fs's translations) and botocore's own.
STORE_ERRORS = (OSError, BotoCoreError, ClientError)


def endpoint(creds: Mapping[str, str]) -> str | None:
    """The S3 endpoint URL of a set of :func:`credentials`, or None for AWS's own."""
    return creds.get(contract.AWS_ENDPOINT_URL_S3) or creds.get(_ENDPOINT_ANY_SERVICE) or None


def _options(uri: str, role: StorageRole) -> dict[str, Any]:
    if not uri.startswith(("s3://", "s3a://")):
        return {}
    creds = credentials(role)
    options: dict[str, Any] = {}
    url = endpoint(creds)
    if url:
        options["endpoint_url"] = url
    # Static keys become part of the options: fsspec reuses one filesystem per distinct options
    # (a new S3 client costs ~0.2 s), so each identity gets a client of its own.
    for option, variable in (
        ("key", contract.AWS_ACCESS_KEY_ID),
        ("secret", contract.AWS_SECRET_ACCESS_KEY),
        ("token", SESSION_TOKEN),
    ):
        if creds.get(variable):
            options[option] = creds[variable]
    if creds.get(contract.AWS_REGION):
        options["client_kwargs"] = {"region_name": creds[contract.AWS_REGION]}
    options["config_kwargs"] = {
        "connect_timeout": _timeouts.connect_seconds,
        "read_timeout": _timeouts.read_seconds,
        "retries": {"max_attempts": _timeouts.attempts, "mode": "standard"},
    }
    # No listings cache: we read back what we just wrote.
    options["use_listings_cache"] = False
    return options


def filesystem(uri: str, *, role: StorageRole) -> tuple[fsspec.AbstractFileSystem, str]:
    """The fsspec filesystem, with ``role``'s credentials, and the path inside it for ``uri``."""
    fs, path = url_to_fs(uri, **_options(uri, role))
    if hasattr(fs, "retries"):
        # s3fs's own retry loop (a class attribute, 5 tries) would multiply botocore's.
        fs.retries = 1
    return fs, path


def join(base: str, *parts: str) -> str:
    """``base`` joined with relative ``parts`` with '/' (URIs are not OS paths)."""
    out = base.rstrip("/")
    for part in parts:
        out += "/" + part.strip("/")
    return out


def read_bytes(uri: str, *, role: StorageRole) -> bytes:
    """The whole object, read with ``role``'s credentials.

    Raises:
        InputError: the object does not exist (names the URI).
        StorageError: the store refused or failed the read.
    """
    fs, path = filesystem(uri, role=role)
    try:
        data: bytes = fs.cat_file(path)
    except FileNotFoundError as exc:
        raise InputError(uri, "file not found") from exc
    except STORE_ERRORS as exc:
        raise StorageError(uri, role, exc) from exc
    return data


def exists(uri: str, *, role: StorageRole) -> bool:
    """Whether the object exists (seen with ``role``'s credentials).

    Raises:
        StorageError: the store refused or failed the request.
    """
    fs, path = filesystem(uri, role=role)
    try:
        # s3fs's exists() answers False for any error: ask for the object's info instead.
        fs.info(path)
    except FileNotFoundError:
        return False
    except STORE_ERRORS as exc:
        raise StorageError(uri, role, exc) from exc
    return True


def list_dir(uri: str, *, role: StorageRole) -> list[tuple[str, bool]]:
    """Entries directly under a folder, as ``(name, is_dir)``, sorted by name.

    Raises:
        InputError: the folder does not exist.
        StorageError: the store refused or failed the listing.
    """
    fs, path = filesystem(uri, role=role)
    try:
        entries = fs.ls(path, detail=True)
    except FileNotFoundError as exc:
        raise InputError(uri, "folder not found") from exc
    except STORE_ERRORS as exc:
        raise StorageError(uri, role, exc) from exc
    out = []
    for entry in entries:
        name = str(entry["name"]).rstrip("/").rsplit("/", 1)[-1]
        out.append((name, entry["type"] == "directory"))
    return sorted(out)


def sha256(data: bytes) -> str:
    """Hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def write_atomic(uri: str, data: bytes, *, role: StorageRole = StorageRole.OUTPUT) -> str:
    """Write ``data`` to ``uri`` so that a reader sees the old object or the new one, never a
    part. On S3 one PUT does it (an object appears whole or not at all; botocore checksums the
    body and the store verifies it); elsewhere a temporary file beside the target is written,
    read back and compared, then moved over it (``os.replace`` on a local disk, after fsync).

    Returns:
        The sha256 of ``data``.

    Raises:
        StorageError: the write or the verification failed; the target is untouched.
    """
    digest = sha256(data)
    fs, path = filesystem(uri, role=role)
    if uri.startswith(("s3://", "s3a://")):
        try:
            fs.pipe_file(path, data)
        except STORE_ERRORS as exc:
            raise StorageError(uri, role, exc) from exc
        return digest
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        with fs.open(tmp, "wb") as handle:
            handle.write(data)
            if hasattr(handle, "flush"):
                handle.flush()
            fileno = getattr(handle, "fileno", None)
            if fileno is not None and fs.protocol in ("file", ("file", "local")):
                os.fsync(fileno())
        if sha256(fs.cat_file(tmp)) != digest:
            raise OSError(f"{uri}: verification failed after write")
        fs.mv(tmp, path)
    except STORE_ERRORS as exc:
        # Best effort: the store that failed the write may fail this too; its error must not
        # hide the first one.
        with contextlib.suppress(*STORE_ERRORS):
            fs.rm(tmp)
        raise StorageError(uri, role, exc) from exc
    return digest


def require_bucket(uri: str, *, role: StorageRole) -> None:
    """On S3, that the bucket of ``uri`` exists (HeadBucket); nothing elsewhere. kubevision
    never creates a bucket: some stores (SeaweedFS, MinIO with an admin's keys) create one on
    the first write, and a mistyped bucket would then quietly hold a run's output.

    Raises:
        StorageError: the bucket does not exist (code ``NoSuchBucket``) or the store refused.
    """
    if not uri.startswith(("s3://", "s3a://")):
        return
    fs, _ = filesystem(uri, role=role)
    bucket = uri.split("://", 1)[1].split("/", 1)[0]
    try:
        fs.call_s3("head_bucket", Bucket=bucket)
    except STORE_ERRORS as exc:
        # A HEAD answer has no body: its status is all there is to name.
        code = {"404": "NoSuchBucket", "403": "AccessDenied"}.get(error_code(exc))
        if isinstance(exc, FileNotFoundError):
            code = "NoSuchBucket"
        raise StorageError(uri, role, exc, code=code) from exc


def remove(uri: str, *, role: StorageRole) -> None:
    """Delete the object (nothing happens when it is absent).

    Raises:
        StorageError: the store refused or failed the deletion.
    """
    fs, path = filesystem(uri, role=role)
    try:
        fs.rm(path)
    except FileNotFoundError:
        return
    except STORE_ERRORS as exc:
        raise StorageError(uri, role, exc) from exc


def append_text(uri: str, text: str, *, role: StorageRole = StorageRole.OUTPUT) -> None:
    """Append ``text`` to a small text object (read, extend, atomic rewrite: object stores have
    no append)."""
    old = read_bytes(uri, role=role) if exists(uri, role=role) else b""
    write_atomic(uri, old + text.encode(), role=role)
