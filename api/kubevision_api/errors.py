"""The one error type for bad input: it names the file (or object), the record and the field,
so the user can fix the input without reading a traceback."""

from __future__ import annotations


class InputError(ValueError):
    """Bad input: a manifest, a dataset file, an image or a plan.

    Args:
        source: the file or object at fault, e.g. ``s3://b/coco.json`` or
            ``ModelVersion default/digits``.
        message: what is wrong, as a sentence fragment.
        record: the record inside it, e.g. ``annotations[3] (id 17)``; optional.
        field: the field path, e.g. ``bbox``; optional.
    """

    def __init__(
        self, source: str, message: str, *, record: str | None = None, field: str | None = None
    ) -> None:
        self.source = source
        self.record = record
        self.field = field
        self.message = message
        parts = [source]
        if record:
            parts.append(record)
        if field:
            parts.append(field)
        super().__init__(": ".join([*parts, message]))
