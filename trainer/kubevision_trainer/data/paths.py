"""Image paths inside annotation files: relative to the annotation file's folder, and never
outside it (an annotation file must not read arbitrary objects of the bucket)."""

from __future__ import annotations

import posixpath
from typing import Any

from kubevision_api import errors


def relative_path(name: Any, source_uri: str, record: str, field: str) -> str:
    """The normalised relative path of an image named in an annotation file.

    Args:
        name: the value read from the file.
        source_uri: the annotation file, for the error.
        record: the record naming it (``images[3] (id 7)``, ``line 12``).
        field: the field holding it (``file_name``, ``image``).

    Raises:
        InputError: not a non-empty string, absolute, a URI, or leaving the folder.
    """
    if not isinstance(name, str) or not name:
        raise errors.InputError(
            source_uri, f"must be a non-empty string, got {name!r}", record=record, field=field
        )
    path = posixpath.normpath(name)
    if name.startswith("/") or "://" in name or path in (".", "..") or path.startswith("../"):
        raise errors.InputError(
            source_uri,
            f"{name!r} must be a path relative to the annotation file's folder, inside it",
            record=record,
            field=field,
        )
    return path
