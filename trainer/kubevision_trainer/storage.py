"""Object storage through fsspec: ``file://``, ``s3://`` (endpoint and keys from the standard
``AWS_*`` variables, read by botocore) and any other fsspec URI, untested. Writes are atomic:
write beside the target, verify the bytes read back, then move."""

from __future__ import annotations

import hashlib
import os
import uuid
from typing import Any

import fsspec
from fsspec.core import url_to_fs

from kubevision_api.errors import InputError


def _options(uri: str) -> dict[str, Any]:
    if uri.startswith(("s3://", "s3a://")):
        options: dict[str, Any] = {}
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        if endpoint:
            options["endpoint_url"] = endpoint
        # Static keys from the environment become part of the options: fsspec reuses one
        # filesystem per distinct options (a new S3 client costs ~0.2 s), so other keys get
        # another client. Without them botocore finds credentials itself (IRSA, profiles).
        for option, variable in (
            ("key", "AWS_ACCESS_KEY_ID"),
            ("secret", "AWS_SECRET_ACCESS_KEY"),
            ("token", "AWS_SESSION_TOKEN"),
        ):
            if os.environ.get(variable):
                options[option] = os.environ[variable]
        # No listings cache: we read back what we just wrote.
        options["use_listings_cache"] = False
        return options
    return {}


def filesystem(uri: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """The fsspec filesystem and the path inside it for ``uri``."""
    fs, path = url_to_fs(uri, **_options(uri))
    return fs, path


def join(base: str, *parts: str) -> str:
    """``base`` joined with relative ``parts`` with '/' (URIs are not OS paths)."""
    out = base.rstrip("/")
    for part in parts:
        out += "/" + part.strip("/")
    return out


def read_bytes(uri: str) -> bytes:
    """The whole object.

    Raises:
        InputError: the object does not exist or cannot be read (names the URI).
    """
    fs, path = filesystem(uri)
    try:
        data: bytes = fs.cat_file(path)
    except FileNotFoundError as exc:
        raise InputError(uri, "file not found") from exc
    except OSError as exc:
        raise InputError(uri, f"cannot read: {exc}") from exc
    return data


def exists(uri: str) -> bool:
    """Whether the object exists."""
    fs, path = filesystem(uri)
    return bool(fs.exists(path))


def list_dir(uri: str) -> list[tuple[str, bool]]:
    """Entries directly under a folder, as ``(name, is_dir)``, sorted by name.

    Raises:
        InputError: the folder does not exist.
    """
    fs, path = filesystem(uri)
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


def write_atomic(uri: str, data: bytes) -> str:
    """Write ``data`` to ``uri`` so that a reader sees the old object or the new one, never a
    part: write a temporary object beside it, read it back and compare sha256, then move it
    over the target (``os.replace`` locally; on S3 a server-side copy, itself atomic).

    Returns:
        The sha256 of ``data``.

    Raises:
        OSError: the write or the verification failed; the target is untouched.
    """
    digest = sha256(data)
    fs, path = filesystem(uri)
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


def append_text(uri: str, text: str) -> None:
    """Append ``text`` to a small text object (read, extend, atomic rewrite: object stores have
    no append)."""
    old = read_bytes(uri) if exists(uri) else b""
    write_atomic(uri, old + text.encode())
