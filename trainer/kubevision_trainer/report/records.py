"""``metrics.jsonl`` (one record per epoch) and ``batches.jsonl`` (learning rate and loss per
batch) under the output URI. Object stores have no append, so each file is rewritten whole and
atomically: at every epoch end, and at close."""

from __future__ import annotations

import json
import logging
from typing import Any

from kubevision_api.contract import StorageRole
from kubevision_api.modelversion import BestMetric, EpochMetrics
from kubevision_trainer import storage
from kubevision_trainer.report.reporter import BatchEvent, NullReporter, Selection

log = logging.getLogger(__name__)

METRICS = "metrics.jsonl"
BATCHES = "batches.jsonl"


def read_jsonl(uri: str) -> list[dict[str, Any]]:
    """The records of a JSON-lines object (empty if it does not exist)."""
    if not storage.exists(uri, role=StorageRole.OUTPUT):
        return []
    return [
        json.loads(line)
        for line in storage.read_bytes(uri, role=StorageRole.OUTPUT).decode().splitlines()
        if line
    ]


def _dump(records: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in records).encode()


class RecordsReporter(NullReporter):
    """Writes the run's records.

    Args:
        output_uri: the run's output folder.
        epochs: epoch records already done (a resumed run passes ``last.pt``'s history, so
            records of an epoch re-run after a restart are not doubled).
        resume_at: ``(epoch, batch)`` of the resume point; batch records at or after it are
            dropped from an existing ``batches.jsonl``.
    """

    def __init__(
        self,
        output_uri: str,
        epochs: list[dict[str, Any]] | None = None,
        resume_at: tuple[int, int] = (1, 0),
    ) -> None:
        self.metrics_uri = storage.join(output_uri, METRICS)
        self.batches_uri = storage.join(output_uri, BATCHES)
        self.epochs: list[dict[str, Any]] = list(epochs or [])
        epoch, batch = resume_at
        self.batches = [
            r for r in read_jsonl(self.batches_uri) if (r["epoch"], r["batch"]) < (epoch, batch)
        ]

    def batch(self, event: BatchEvent) -> None:
        self.batches.append(
            {
                "epoch": event.epoch,
                "batch": event.index,
                "learningRate": event.learning_rate,
                "loss": event.loss,
            }
        )

    def epoch(self, metrics: EpochMetrics, best: BestMetric | None, selection: Selection) -> None:
        self.epochs.append(metrics.model_dump(mode="json", by_alias=True))
        self.flush()

    def flush(self) -> None:
        """Rewrite both files."""
        storage.write_atomic(self.metrics_uri, _dump(self.epochs))
        storage.write_atomic(self.batches_uri, _dump(self.batches))

    def close(self, ok: bool) -> None:
        try:
            self.flush()
        except OSError as exc:
            log.warning("could not write records: %s", exc)
