"""The status reporter: full progress snapshots POSTed to the operator's HTTPS status endpoint
(docs/trainer.md, "Status reports"), authenticated with the Pod's projected ServiceAccount
token.

Snapshots are idempotent, so only the newest matters: events update one snapshot, and a
single background thread sends the latest one (at every step change, epoch end, dataset,
checkpoint and evaluation event at once; on batches at most every ``interval`` seconds). A
failed report is logged and never stops training; the next event retries with a fresher
snapshot. A resumed run's first snapshot starts where ``last.pt`` left off (progress and
metrics), not at 0."""

from __future__ import annotations

import logging
import ssl
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from typing_extensions import override

from kubevision_api import contract
from kubevision_api.contract import StepName
from kubevision_api.evaluation import Evaluation, EvaluationStatus
from kubevision_api.export import ExportStatus
from kubevision_api.plan import StatusEndpoint
from kubevision_api.progress import TrainerReport
from kubevision_api.status import (
    BestMetric,
    CheckpointStatus,
    DatasetStatus,
    EpochMetrics,
    MetricsStatus,
    Progress,
    Step,
    StepState,
)
from kubevision_trainer.report.reporter import BatchEvent, NullReporter, ResumePoint, Selection

log = logging.getLogger(__name__)

#: The trainer's steps; Scheduling is the operator's to observe.
TRAINER_STEPS = (
    StepName.LOADING_DATASET,
    StepName.TRAINING,
    StepName.EVALUATING,
    StepName.EXPORTING,
)


def report_url(endpoint: StatusEndpoint, namespace: str, name: str) -> str:
    """The endpoint's URL joined with ``contract.REPORT_PATH`` for ``namespace/name``."""
    return endpoint.url.rstrip("/") + contract.report_path(namespace, name)


class StatusReporter(NullReporter):
    """Keeps the run's snapshot and sends it to the operator.

    Args:
        endpoint: the plan's status endpoint (URL, CA, token path).
        namespace, model_version, uid: the ModelVersion reported on.
        epochs: planned epochs (progress bar denominator).
        interval: least seconds between two sends caused by batches.
        timeout: seconds one POST may take.
        clock: seconds, monotonic (tests pass a fake one).
    """

    def __init__(
        self,
        endpoint: StatusEndpoint,
        *,
        namespace: str,
        model_version: str,
        uid: str | None,
        epochs: int,
        interval: float = 5.0,
        timeout: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.endpoint = endpoint
        self.url = report_url(endpoint, namespace, model_version)
        self.interval = interval
        self.timeout = timeout
        self.clock = clock
        self.context = (
            ssl.create_default_context(cadata=endpoint.ca_pem) if endpoint.ca_pem else None
        )
        self.snapshot = TrainerReport(
            namespace=namespace,
            model_version=model_version,
            uid=uid,
            steps=[Step(name=name) for name in TRAINER_STEPS],
            progress=Progress(epochs=epochs, display=f"0/{epochs}"),
            sequence=0,
        )
        self.sent = 0
        self.failures = 0
        self._last_batch_send: float | None = None
        self._pending: bytes | None = None
        self._lock = threading.Condition()
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="status-reporter", daemon=True)
        self._thread.start()

    # --- sending -------------------------------------------------------------------------

    def _queue(self) -> None:
        with self._lock:
            self.snapshot = self.snapshot.model_copy(
                update={"sequence": self.snapshot.sequence + 1}
            )
            self._pending = self.snapshot.model_dump_json(by_alias=True, exclude_none=True).encode()
            self._lock.notify()

    def _run(self) -> None:
        while True:
            with self._lock:
                while self._pending is None and not self._closing:
                    self._lock.wait()
                body, self._pending = self._pending, None
                if body is None:
                    return
            self._post(body)

    def _post(self, body: bytes) -> None:
        try:
            token = Path(self.endpoint.token_path).read_text().strip()
        except OSError as exc:
            self._failed(f"no token at {self.endpoint.token_path}: {exc.strerror}")
            return
        request = urllib.request.Request(
            self.url,
            data=body,
            method="POST",
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout, context=self.context) as r:
                r.read()
        except urllib.error.HTTPError as exc:
            self._failed(f"HTTP {exc.code}: {exc.read()[:200]!r}")
        except (OSError, ValueError) as exc:
            self._failed(str(exc))
        else:
            self.sent += 1

    def _failed(self, why: str) -> None:
        self.failures += 1
        # One warning, then quiet: the operator may be restarting for a while.
        level = logging.WARNING if self.failures == 1 else logging.DEBUG
        log.log(level, "status report to %s failed: %s", self.url, why)

    # --- events --------------------------------------------------------------------------

    def _set_step(self, name: StepName, state: StepState, message: str | None) -> None:
        now = datetime.now(UTC)

        def changed(step: Step) -> Step:
            if step.name is not name:
                return step
            update: dict[str, object] = {"state": state, "message": message}
            if state is StepState.RUNNING and step.started_at is None:
                update["started_at"] = now
            if state in (StepState.SUCCEEDED, StepState.FAILED):
                update["finished_at"] = now
            return step.model_copy(update=update)

        steps = [changed(step) for step in self.snapshot.steps]
        self.snapshot = self.snapshot.model_copy(update={"steps": steps})

    def _progress(self, epoch_fraction: float, epoch: int) -> None:
        epochs = self.snapshot.progress.epochs
        percent = min(100, int(100 * epoch_fraction / max(1, epochs)))
        self.snapshot = self.snapshot.model_copy(
            update={
                "progress": Progress(
                    percent=percent, epoch=epoch, epochs=epochs, display=f"{epoch}/{epochs}"
                )
            }
        )

    @override
    def step(self, name: StepName, state: StepState, message: str | None = None) -> None:
        self._set_step(name, state, message)
        if name is StepName.EXPORTING and state is StepState.SUCCEEDED:
            epochs = self.snapshot.progress.epochs
            self._progress(epochs, self.snapshot.progress.epoch)
        self._queue()

    @override
    def dataset(self, status: DatasetStatus) -> None:
        self.snapshot = self.snapshot.model_copy(update={"dataset": status})
        self._queue()

    @override
    def resumed(self, at: ResumePoint) -> None:
        """Progress and metrics as ``last.pt`` left them, sent at once: the operator keeps the
        last snapshot, which a restart must not move back to 0."""
        self._progress(at.epoch + at.batch / max(1, at.batches), at.epoch)
        if at.history:
            metrics = MetricsStatus(selection=at.selection, best=at.best, last=at.history[-1])
            self.snapshot = self.snapshot.model_copy(update={"metrics": metrics})
        self._queue()

    @override
    def batch(self, event: BatchEvent) -> None:
        self._progress(event.epoch - 1 + (event.index + 1) / event.batches, event.epoch - 1)
        now = self.clock()
        if self._last_batch_send is None or now - self._last_batch_send >= self.interval:
            self._last_batch_send = now
            self._queue()

    @override
    def epoch(self, metrics: EpochMetrics, best: BestMetric | None, selection: Selection) -> None:
        self._progress(metrics.epoch, metrics.epoch)
        self.snapshot = self.snapshot.model_copy(
            update={"metrics": MetricsStatus(selection=selection, best=best, last=metrics)}
        )
        self._queue()

    @override
    def checkpoint(self, status: CheckpointStatus) -> None:
        self.snapshot = self.snapshot.model_copy(update={"checkpoint": status})
        self._queue()

    @override
    def evaluation(self, status: EvaluationStatus, evaluations: Sequence[Evaluation]) -> None:
        """Only the summary and the artifacts' URIs travel (``status``): the full figures stay
        in evaluation.json, whose size grows with the concepts."""
        self.snapshot = self.snapshot.model_copy(update={"evaluation": status})
        self._queue()

    @override
    def export(self, status: ExportStatus) -> None:
        self.snapshot = self.snapshot.model_copy(update={"export": status})
        self._queue()

    @override
    def close(self, ok: bool) -> None:
        """Sends the last snapshot (waits at most ``timeout`` seconds for it)."""
        with self._lock:
            self._closing = True
            self._lock.notify()
        self._thread.join(timeout=self.timeout + 1)
