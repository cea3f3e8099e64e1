"""Reading View and ModelVersion manifests from YAML files, with errors that name the file,
the object and the field."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import yaml
from pydantic import ValidationError

from kubevision_api.errors import InputError
from kubevision_api.modelversion import ModelVersion
from kubevision_api.view import View

KINDS: dict[str, type[View] | type[ModelVersion]] = {"View": View, "ModelVersion": ModelVersion}


class Loaded(NamedTuple):
    """A manifest and the file it came from."""

    source: Path
    obj: View | ModelVersion


def field_path(loc: Sequence[int | str]) -> str:
    """A pydantic error location as a field path: ``spec.concepts[0].name``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def validation_error(exc: ValidationError, source: str, record: str | None = None) -> InputError:
    """One ``InputError`` for a pydantic validation failure of the document in ``source``: its
    first error's message and field path, the count of the others after it."""
    errors = exc.errors()
    first = errors[0]
    extra = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return InputError(
        source, f"{first['msg']}{extra}", record=record, field=field_path(first["loc"])
    )


def parse(doc: dict[str, Any], source: str) -> View | ModelVersion:
    """Validate one manifest document.

    Raises:
        InputError: unknown kind, or a field fails validation (the first error is named; the
            others follow in the message).
    """
    kind = doc.get("kind")
    name = (doc.get("metadata") or {}).get("name", "?")
    cls = KINDS.get(str(kind))
    if cls is None:
        raise InputError(source, f"kind {kind!r} is not View or ModelVersion", field="kind")
    try:
        return cls.model_validate(doc)
    except ValidationError as exc:
        raise validation_error(exc, source, record=f"{kind} {name}") from exc


def load(paths: Iterable[str | Path]) -> list[Loaded]:
    """Every View and ModelVersion in the given files (a folder means its ``*.yaml`` files, in
    name order). Relative dataset and output paths stay as written; see ``local`` mode for how
    they are resolved.

    Raises:
        InputError: unreadable file, bad YAML, or a bad manifest.
    """
    objects: list[Loaded] = []
    for raw in paths:
        path = Path(raw)
        files = (
            sorted(path.glob("*.yaml")) + sorted(path.glob("*.yml")) if path.is_dir() else [path]
        )
        if not files:
            raise InputError(str(path), "folder holds no *.yaml manifest")
        for file in files:
            try:
                docs = list(yaml.safe_load_all(file.read_text()))
            except OSError as exc:
                raise InputError(str(file), f"cannot read: {exc.strerror}") from exc
            except yaml.YAMLError as exc:
                raise InputError(str(file), f"not valid YAML: {exc}") from exc
            for index, doc in enumerate(docs):
                if doc is None:
                    continue
                if not isinstance(doc, dict):
                    raise InputError(str(file), "not a mapping", record=f"document {index}")
                objects.append(Loaded(file, parse(doc, str(file))))
    return objects
