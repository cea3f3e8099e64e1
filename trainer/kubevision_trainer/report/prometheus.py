"""Prometheus metrics of a training run (docs/trainer.md, "Prometheus metrics"): served on
``/metrics`` and, where configured, pushed to a Pushgateway.

Every metric carries the labels ``namespace``, ``view`` and ``modelversion`` and lives in the
reporter's own ``CollectorRegistry`` (never the global one), so two reporters in one process
do not collide and nothing is registered at import.

Pushes (job ``kubevision-trainer``, grouping key ``namespace`` + ``modelversion`` + ``run``,
the ModelVersion's uid: a deleted and re-created ModelVersion of the same name pushes to a
group of its own; a Pushgateway scraped with ``honor_labels`` keeps the pushed labels) happen
at every epoch end, after the final evaluation, at ``close``, and on batches at most every
``push_interval`` seconds. A
failed push is logged and never raised: a failed report never stops training. The last push
carries the run's outcome (``kubevision_train_outcome``) and end time: the operator deletes the
group once the ModelVersion is gone, or some time after it finished (docs/trainer.md,
"Prometheus metrics").

Counters and resume: a resumed trainer is a new process whose counters would start at 0.
The ``resumed`` event (or ``start_batches`` and ``start_images`` where the totals are known
when the reporter is made) adds the totals recorded in ``last.pt`` for the batches already
done, so the pushed series (which ``rate()`` would not stitch across a Pushgateway group)
stays monotonic across restarts and equals epochs x batches per epoch.

The final evaluation (``evaluation``) adds gauges with a ``split`` label: the summary's
headline values, and a few figures per concept for at most ``max_concepts`` concepts per split
(``report.concept_series``: the worst ones; the rest are counted) so that a View with
thousands of concepts cannot flood Prometheus (docs/metrics.md, "Prometheus and Grafana").
"""

from __future__ import annotations

import http.client
import logging
import threading
import time
from collections.abc import Callable, Sequence
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, push_to_gateway, start_http_server
from typing_extensions import override  # Python 3.12's typing.override

from kubevision_api.evaluation import Evaluation, EvaluationStatus, EvaluationSummary, Indicator
from kubevision_api.status import BestMetric, EpochMetrics
from kubevision_trainer.report import concept_series
from kubevision_trainer.report.reporter import BatchEvent, NullReporter, ResumePoint, Selection
from kubevision_trainer.settings import PROMETHEUS_MAX_CONCEPTS

log = logging.getLogger(__name__)

JOB = "kubevision-trainer"
LABELS = ("namespace", "view", "modelversion")
#: The grouping key's labels, in the order of the Pushgateway's URL path.
GROUPING = ("namespace", "modelversion", "run")

Pusher = Callable[..., None]
"""``prometheus_client.push_to_gateway``'s signature: (gateway, job, registry, grouping_key,
timeout)."""


class PrometheusReporter(NullReporter):
    """Reports training events as Prometheus metrics.

    Args:
        namespace, view, modelversion: the label values of every metric.
        run: what tells this training from another of the same name: the ModelVersion's uid
            (local mode: its own id); a label of the Pushgateway group only.
        port: serve ``/metrics`` on this port (0: a free one; see ``port``); None: no server.
        address: the address the server binds (all interfaces by default, for the PodMonitor).
        pushgateway_url: push to this Pushgateway (``http://host:port``); None: never push.
        push_interval: the least seconds between two pushes on batches.
        push_timeout: seconds a push may take before it counts as failed.
        start_batches, start_images: the counters' starting totals on resume (or see
            ``resumed``).
        max_concepts: the most concepts per evaluated split with per-concept series
            (``TrainerSettings.prometheus_max_concepts``).
        clock: monotonic seconds (tests pass a fake one).
        pusher: the push function (tests may pass a fake one).

    Raises:
        OSError: the ``/metrics`` server cannot bind ``port``.
        ValueError: a negative starting total or ``max_concepts``.
    """

    def __init__(
        self,
        *,
        namespace: str,
        view: str,
        modelversion: str,
        run: str = "local",
        port: int | None = None,
        address: str = "0.0.0.0",
        pushgateway_url: str | None = None,
        push_interval: float = 5.0,
        push_timeout: float = 5.0,
        start_batches: int = 0,
        start_images: int = 0,
        max_concepts: int = PROMETHEUS_MAX_CONCEPTS,
        clock: Callable[[], float] = time.monotonic,
        pusher: Pusher = push_to_gateway,
    ) -> None:
        if start_batches < 0 or start_images < 0:
            raise ValueError("start_batches and start_images must not be negative")
        if max_concepts < 0:
            raise ValueError(f"max_concepts must not be negative, got {max_concepts}")
        self.max_concepts = max_concepts
        self.registry = CollectorRegistry(auto_describe=True)
        self.labels = {"namespace": namespace, "view": view, "modelversion": modelversion}
        self.grouping_key = {"namespace": namespace, "modelversion": modelversion, "run": run}
        self.pushgateway_url = pushgateway_url
        self.push_interval = push_interval
        self.push_timeout = push_timeout
        self.pushes = 0
        self.push_failures = 0
        self._clock = clock
        self._pusher = pusher
        self._last_push: float | None = None
        self._failing = False
        self._closed = False
        self._lock = threading.Lock()

        # Gauges get their labelled child on the first set (a gauge never set is absent, not
        # 0); the counters' children exist from the start (0 batches done is a fact).
        def gauge(name: str, documentation: str) -> Gauge:
            return Gauge(name, documentation, LABELS, registry=self.registry)

        def counter(name: str, documentation: str) -> Counter:
            return Counter(name, documentation, LABELS, registry=self.registry).labels(
                **self.labels
            )

        self.learning_rate = gauge(
            "kubevision_train_learning_rate", "Learning rate of the last training batch."
        )
        self.batch_loss = gauge("kubevision_train_batch_loss", "Loss of the last training batch.")
        self.batches = counter("kubevision_train_batches_total", "Training batches done.")
        self.images = counter("kubevision_train_images_total", "Training images processed.")
        self.images_per_second = gauge(
            "kubevision_train_images_per_second", "Throughput of the last training batch."
        )
        self.epoch_number = gauge(
            "kubevision_train_epoch", "Current epoch (1-based): started or last finished."
        )
        self.val_loss = gauge("kubevision_val_loss", "Validation loss of the last epoch.")
        self.val_accuracy = gauge(
            "kubevision_val_accuracy", "Validation accuracy of the last epoch."
        )
        self.val_map = gauge("kubevision_val_map", "Validation mAP of the last epoch.")
        self.best_metric = gauge(
            "kubevision_best_metric", "Best value so far of the selection metric."
        )
        self.outcome = Gauge(
            "kubevision_train_outcome",
            "1 once the run ended, labelled with how (Succeeded, Failed).",
            [*LABELS, "outcome"],
            registry=self.registry,
        )
        self.finished = gauge(
            "kubevision_train_finished_timestamp_seconds", "Unix time the run ended."
        )
        self.evaluation_value = Gauge(
            "kubevision_evaluation_value",
            "Final evaluation of the best checkpoint: a headline value of the split "
            "(accuracy, mAP, meanOptimalLRP).",
            [*LABELS, "split", "indicator"],
            registry=self.registry,
        )
        self.evaluation_concept = Gauge(
            "kubevision_evaluation_concept_value",
            "Final evaluation of the best checkpoint: one figure of one concept, for at most "
            "max_concepts concepts per split (the worst).",
            [*LABELS, "split", "concept", "metric"],
            registry=self.registry,
        )
        self.evaluation_omitted = Gauge(
            "kubevision_evaluation_concepts_omitted",
            "Concepts of the split whose figures the cap left out (see evaluation.json).",
            [*LABELS, "split"],
            registry=self.registry,
        )
        self._continue_counters(start_batches, start_images)

        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None
        self.port: int | None = None
        if port is not None:
            self._server, self._thread = start_http_server(
                port, addr=address, registry=self.registry
            )
            self.port = int(self._server.server_port)
            log.info("serving Prometheus metrics on %s:%d/metrics", address, self.port)

    def _set(self, gauge: Gauge, value: float) -> None:
        gauge.labels(**self.labels).set(value)

    def _continue_counters(self, batches: int, images: int) -> None:
        if batches:
            self.batches.inc(batches)
        if images:
            self.images.inc(images)

    # --- Reporter events -------------------------------------------------------------------

    @override
    def resumed(self, at: ResumePoint) -> None:
        """Continues the counters from the batches and images ``last.pt`` recorded."""
        self._continue_counters(at.batches_total, at.images_total)

    @override
    def start_epoch(self, epoch: int, epochs: int, batches: int) -> None:
        """Sets ``kubevision_train_epoch``."""
        self._set(self.epoch_number, epoch)

    @override
    def batch(self, event: BatchEvent) -> None:
        """Sets the batch gauges, counts the batch and its images; pushes if the last push is
        ``push_interval`` seconds old."""
        self._set(self.learning_rate, event.learning_rate)
        self._set(self.batch_loss, event.loss)
        self.batches.inc()
        self.images.inc(event.images)
        if event.seconds > 0:
            self._set(self.images_per_second, event.images / event.seconds)
        if self._last_push is None or self._clock() - self._last_push >= self.push_interval:
            self.push()

    @override
    def epoch(self, metrics: EpochMetrics, best: BestMetric | None, selection: Selection) -> None:
        """Sets the validation gauges that have a value, and the best metric; pushes."""
        self._set(self.epoch_number, metrics.epoch)
        if metrics.val_loss is not None:
            self._set(self.val_loss, metrics.val_loss)
        if metrics.accuracy is not None:
            self._set(self.val_accuracy, metrics.accuracy)
        if metrics.map is not None:
            self._set(self.val_map, metrics.map)
        if best is not None:
            self._set(self.best_metric, best.value)
        self.push()

    @override
    def evaluation(self, status: EvaluationStatus, evaluations: Sequence[Evaluation]) -> None:
        """Sets the evaluation gauges of each split (those of an earlier call are removed
        first); pushes.

        Per split: ``kubevision_evaluation_value{indicator}`` for each headline value of the
        summary that is not null (the first indicator, and detection's COCO mAP too),
        ``kubevision_evaluation_concept_value{concept, metric}`` for the non-null figures of
        at most ``max_concepts`` concepts (``concept_series.worst``), and
        ``kubevision_evaluation_concepts_omitted``, the concepts with figures left out (0 when
        none). ``status`` is not read: each evaluation's summary holds the same headline
        values, and the URIs are the status reporter's to send.

        Raises:
            ValueError: two evaluations of one split, or an evaluation without its task's
                figures (a caller's bug, not a transport failure).
        """
        splits = [e.split for e in evaluations]
        if len(set(splits)) != len(splits):
            raise ValueError(f"one evaluation per split, got {[s.value for s in splits]}")
        capped = [concept_series.worst(e, self.max_concepts) for e in evaluations]
        for gauge in (self.evaluation_value, self.evaluation_concept, self.evaluation_omitted):
            gauge.clear()
        for evaluation, selection in zip(evaluations, capped, strict=True):
            split = evaluation.split.value
            for indicator, value in headline(evaluation.summary).items():
                self.evaluation_value.labels(
                    **self.labels, split=split, indicator=indicator.value
                ).set(value)
            for figures in selection.kept:
                for metric, value in figures.values.items():
                    self.evaluation_concept.labels(
                        **self.labels, split=split, concept=figures.concept, metric=metric
                    ).set(value)
            self.evaluation_omitted.labels(**self.labels, split=split).set(selection.omitted)
        self.push()

    @override
    def close(self, ok: bool) -> None:
        """Sets the outcome and end time, pushes a last time and stops the ``/metrics``
        server. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self.outcome.labels(**self.labels, outcome="Succeeded" if ok else "Failed").set(1)
        self._set(self.finished, time.time())
        self.push()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            if self._thread is not None:
                self._thread.join(timeout=5)
            self._server = None

    # --- Pushgateway ---------------------------------------------------------------------

    def push(self) -> bool:
        """Push the registry to the Pushgateway now (no-op without one). Failures are logged
        (the first of a series as a warning, the rest at debug level) and counted in
        ``push_failures``; returns whether the push succeeded."""
        if self.pushgateway_url is None:
            return False
        with self._lock:
            self._last_push = self._clock()
            try:
                self._pusher(
                    self.pushgateway_url,
                    job=JOB,
                    registry=self.registry,
                    grouping_key=self.grouping_key,
                    timeout=self.push_timeout,
                )
            except (OSError, http.client.HTTPException) as exc:
                self.push_failures += 1
                level = logging.DEBUG if self._failing else logging.WARNING
                log.log(level, "push to Pushgateway %s failed: %s", self.pushgateway_url, exc)
                self._failing = True
                return False
            self.pushes += 1
            if self._failing:
                log.info("push to Pushgateway %s works again", self.pushgateway_url)
                self._failing = False
            return True


def headline(summary: EvaluationSummary) -> dict[Indicator, float]:
    """The summary's headline values that are not null, by indicator: the first indicator
    always, when it has a value; detection's COCO mAP beside its mean optimal LRP."""
    values = {
        Indicator.ACCURACY: summary.accuracy,
        Indicator.MAP: summary.map,
        Indicator.MEAN_OPTIMAL_LRP: summary.mean_optimal_lrp,
    }
    if summary.value is not None:
        values[summary.indicator] = summary.value
    return {indicator: value for indicator, value in values.items() if value is not None}
