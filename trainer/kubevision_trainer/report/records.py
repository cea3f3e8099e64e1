"""``metrics.jsonl`` (one record per epoch) and ``batches.jsonl`` (learning rate and loss per
batch) under the output URI. Object stores have no append, so each file is rewritten whole and
atomically: at every epoch end, and at close."""

from __future__ import annotations

import json
import logging
import math
from typing import Any

from kubevision_api.contract import StorageRole
from kubevision_api.status import BestMetric, EpochMetrics
from kubevision_trainer import storage
from kubevision_trainer.report.reporter import BatchEvent, NullReporter, ResumePoint, Selection

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


def _json_safe(value: Any) -> Any:
    """``value`` with NaN and infinities as None: JSON has no such numbers (Python's ``json``
    would write a bare ``NaN`` that other readers refuse)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


def _dump(records: list[dict[str, Any]]) -> bytes:
    return "".join(
        json.dumps(_json_safe(r), separators=(",", ":"), allow_nan=False) + "\n" for r in records
    ).encode()


class RecordsReporter(NullReporter):
    """Writes the run's records under ``output_uri``.

    A resumed run (``resumed``) starts from ``last.pt``'s epoch records and keeps the batch
    records of an existing ``batches.jsonl`` before the resume point, so the records of an
    epoch re-run after a restart are not doubled. Nothing is written before the reporter was
    told something: a run that fails before its first batch leaves existing records alone.
    """

    def __init__(self, output_uri: str) -> None:
        self.metrics_uri = storage.join(output_uri, METRICS)
        self.batches_uri = storage.join(output_uri, BATCHES)
        self.epochs: list[dict[str, Any]] = []
        self.batches: list[dict[str, Any]] = []
        self._changed = False

    def resumed(self, at: ResumePoint) -> None:
        self.epochs = [m.model_dump(mode="json", by_alias=True) for m in at.history]
        resume_at = (at.epoch + 1, at.batch)
        self.batches = [
            r for r in read_jsonl(self.batches_uri) if (r["epoch"], r["batch"]) < resume_at
        ]
        self._changed = True

    def batch(self, event: BatchEvent) -> None:
        self.batches.append(
            {
                "epoch": event.epoch,
                "batch": event.index,
                "learningRate": event.learning_rate,
                "loss": event.loss,
            }
        )
        self._changed = True

    def epoch(self, metrics: EpochMetrics, best: BestMetric | None, selection: Selection) -> None:
        self.epochs.append(metrics.model_dump(mode="json", by_alias=True))
        self.flush()

    def flush(self) -> None:
        """Rewrite both files."""
        storage.write_atomic(self.metrics_uri, _dump(self.epochs))
        storage.write_atomic(self.batches_uri, _dump(self.batches))

    def close(self, ok: bool) -> None:
        if not self._changed:
            return
        try:
            self.flush()
        except OSError as exc:
            log.warning("could not write records: %s", exc)
