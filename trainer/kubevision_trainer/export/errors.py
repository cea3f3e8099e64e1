"""The Exporting step's error, apart from the exporters: ``outcome`` classifies it, and the
trainer imports ``outcome`` at start, whereas the exporters (``graphs``, ``triton``: onnx) are
imported only when a bundle is written (``main``'s Exporting step)."""

from __future__ import annotations

from kubevision_api.export import ExportFormat


class ExportError(RuntimeError):
    """A model could not be written in a format: names the format and the architecture."""

    def __init__(self, fmt: ExportFormat, architecture: str, reason: str) -> None:
        super().__init__(f"cannot export {architecture} to {fmt.value}: {reason}")
        self.format = fmt
        self.architecture = architecture
        self.reason = reason
