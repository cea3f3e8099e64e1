"""Checkpoints in object storage: ``checkpoints/best.pt`` and ``checkpoints/last.pt`` under the
output URI, written atomically (a reader sees the old file or the new one, never a part), and
read back with ``weights_only=True`` (state dicts and plain data only).

A checkpoint is serialised to a local scratch file and streamed from there in bounded parts
(``upload``): the payload's tensors, already in memory, are never copied into one more buffer
of the checkpoint's size."""

from __future__ import annotations

import io
import pickle
import tempfile
from pathlib import Path
from typing import Any

import torch

from kubevision_api.contract import StorageRole
from kubevision_api.errors import InputError
from kubevision_api.status import CheckpointStatus
from kubevision_trainer import finite, storage, upload

BEST = "checkpoints/best.pt"
LAST = "checkpoints/last.pt"


def from_bytes(data: bytes, source: str) -> dict[str, Any]:
    """Deserialise a checkpoint with ``weights_only=True``, on the CPU.

    Raises:
        InputError: not a checkpoint (names ``source``).
    """
    # See models.state_dict_from_bytes: only zip archives reach torch.load.
    if not data.startswith(b"PK\x03\x04"):
        raise InputError(source, "not a torch.save file (expected a zip archive)")
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError) as exc:
        raise InputError(source, f"not a readable checkpoint: {exc}") from exc
    if not isinstance(state, dict):
        raise InputError(source, "not a kubevision checkpoint (expected a dict)")
    return state


class CheckpointStore:
    """Checkpoints of one run, under ``output_uri`` (ending with '/'), uploaded with
    ``policy`` (parts, tries, timeouts)."""

    def __init__(self, output_uri: str, policy: upload.UploadPolicy | None = None) -> None:
        self.output_uri = output_uri
        self.policy = policy or upload.UploadPolicy()
        self.best_uri = storage.join(output_uri, BEST)
        self.last_uri = storage.join(output_uri, LAST)

    def save_last(self, state: dict[str, Any]) -> None:
        """Replace ``last.pt`` atomically.

        Raises:
            upload.UploadError: the upload failed; the previous ``last.pt`` is intact.
        """
        self._save(state, self.last_uri)

    def save_best(self, state: dict[str, Any], epoch: int) -> CheckpointStatus:
        """Replace ``best.pt`` atomically; returns its URI, epoch, sha256 and size.

        Raises:
            upload.UploadError: the upload failed; the previous ``best.pt`` is intact.
        """
        digest, size = self._save(state, self.best_uri)
        return CheckpointStatus(uri=self.best_uri, epoch=epoch, sha256=digest, bytes=size)

    def _save(self, state: dict[str, Any], uri: str) -> tuple[str, int]:
        where = finite.first_non_finite(state)
        if where is not None:
            # The engine refuses first, naming epoch and learning rate; this is the last guard.
            raise ValueError(f"{uri}: refusing to save a checkpoint whose {where} is not finite")
        with tempfile.TemporaryDirectory(prefix="kubevision-checkpoint-") as scratch:
            path = Path(scratch) / "checkpoint.pt"
            torch.save(state, path)
            digest = upload.file_sha256(path)
            upload.upload_file(path, uri, role=StorageRole.OUTPUT, policy=self.policy)
            return digest, path.stat().st_size

    def load_last(self) -> dict[str, Any] | None:
        """The ``last.pt`` payload, or None if the run has none yet."""
        if not storage.exists(self.last_uri, role=StorageRole.OUTPUT):
            return None
        return from_bytes(storage.read_bytes(self.last_uri, role=StorageRole.OUTPUT), self.last_uri)

    def load_best(self) -> dict[str, Any]:
        """The ``best.pt`` payload.

        Raises:
            InputError: missing or unreadable.
        """
        return from_bytes(storage.read_bytes(self.best_uri, role=StorageRole.OUTPUT), self.best_uri)

    def best_status(self, epoch: int) -> CheckpointStatus:
        """What ``best.pt`` holds now (for a resumed run's report)."""
        data = storage.read_bytes(self.best_uri, role=StorageRole.OUTPUT)
        return CheckpointStatus(
            uri=self.best_uri, epoch=epoch, sha256=storage.sha256(data), bytes=len(data)
        )
