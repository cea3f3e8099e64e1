"""Object storage through fsspec: ``file://``, ``s3://`` and any other fsspec URI, untested.
Every call names the :class:`~kubevision_api.contract.StorageRole` it reads or writes for, and
an S3 URI is reached with that role's credentials (:func:`credentials`). Writes are atomic:
write beside the target, verify the bytes read back, then move."""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Mapping
from typing import Any

import fsspec
from fsspec.core import url_to_fs

from kubevision_api import contract
from kubevision_api.contract import StorageRole
from kubevision_api.errors import InputError

#: botocore's own variables, read from the plain environment only.
_SESSION_TOKEN = "AWS_SESSION_TOKEN"
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
    for extra in (_SESSION_TOKEN, _ENDPOINT_ANY_SERVICE):
        if env.get(extra):
            plain[extra] = env[extra]
    return plain


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
        ("token", _SESSION_TOKEN),
    ):
        if creds.get(variable):
            options[option] = creds[variable]
    if creds.get(contract.AWS_REGION):
        options["client_kwargs"] = {"region_name": creds[contract.AWS_REGION]}
    # No listings cache: we read back what we just wrote.
    options["use_listings_cache"] = False
    return options


def filesystem(uri: str, *, role: StorageRole) -> tuple[fsspec.AbstractFileSystem, str]:
    """The fsspec filesystem, with ``role``'s credentials, and the path inside it for ``uri``."""
    fs, path = url_to_fs(uri, **_options(uri, role))
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
        InputError: the object does not exist or cannot be read (names the URI).
    """
    fs, path = filesystem(uri, role=role)
    try:
        data: bytes = fs.cat_file(path)
    except FileNotFoundError as exc:
        raise InputError(uri, "file not found") from exc
    except OSError as exc:
        raise InputError(uri, f"cannot read: {exc}") from exc
    return data


def exists(uri: str, *, role: StorageRole) -> bool:
    """Whether the object exists (seen with ``role``'s credentials)."""
    fs, path = filesystem(uri, role=role)
    return bool(fs.exists(path))


def list_dir(uri: str, *, role: StorageRole) -> list[tuple[str, bool]]:
    """Entries directly under a folder, as ``(name, is_dir)``, sorted by name.

    Raises:
        InputError: the folder does not exist.
    """
    fs, path = filesystem(uri, role=role)
    try:
        entries = fs.ls(path, detail=True)
    except FileNotFoundError as exc:
        raise InputError(uri, "folder not found") from exc
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
    part: write a temporary object beside it, read it back and compare sha256, then move it
    over the target (``os.replace`` locally; on S3 a server-side copy, itself atomic).

    Returns:
        The sha256 of ``data``.

    Raises:
        OSError: the write or the verification failed; the target is untouched.
    """
    digest = sha256(data)
    fs, path = filesystem(uri, role=role)
    parent = path.rsplit("/", 1)[0]
    fs.makedirs(parent, exist_ok=True)
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    try:
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
    finally:
        if fs.exists(tmp):
            fs.rm(tmp)
    return digest


def append_text(uri: str, text: str, *, role: StorageRole = StorageRole.OUTPUT) -> None:
    """Append ``text`` to a small text object (read, extend, atomic rewrite: object stores have
    no append)."""
    old = read_bytes(uri, role=role) if exists(uri, role=role) else b""
    write_atomic(uri, old + text.encode(), role=role)
