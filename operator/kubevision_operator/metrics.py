"""The operator's Prometheus metrics (docs/operator.md, Metrics), in their own registry:
nothing is registered at import, and tests can run several operators in one process. The one
module of the operator that imports ``prometheus_client`` (pyproject's import contracts):
``/metrics`` serves :meth:`OperatorMetrics.exposition`.

The label ``kind`` of the watch and reconcile series is the Kubernetes kind of the object
(ModelVersion, View, Job, Pod).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

PHASES = ("Pending", "Queued", "Running", "Suspended", "Succeeded", "Failed")


def _as_float(count: Callable[[], int]) -> Callable[[], float]:
    return lambda: float(count())


class _QueuePositions(Collector):
    """``kubevision_operator_queue_position``: every waiting ModelVersion's exact position,
    computed from the queue at each scrape (free between scrapes, unlike a status write)."""

    def __init__(self, positions: Callable[[], Mapping[tuple[str, str], int]]) -> None:
        self._positions = positions

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "kubevision_operator_queue_position",
            "Position (from 1) of each ModelVersion waiting for the concurrency limit, exact "
            "at the scrape (the status shows it as last written).",
            labels=["namespace", "modelversion"],
        )
        for (namespace, name), position in sorted(self._positions().items()):
            family.add_metric([namespace, name], float(position))
        yield family

    def describe(self) -> Iterator[GaugeMetricFamily]:
        return iter(())


class OperatorMetrics:
    """Counters and gauges of one operator process."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.reconciles = Counter(
            "kubevision_operator_reconciles",
            "Reconciliations by kind (ModelVersion, View) and result (ok, error).",
            ["kind", "result"],
            registry=self.registry,
        )
        self.reconcile_seconds = Histogram(
            "kubevision_operator_reconcile_duration_seconds",
            "Wall time of one reconciliation, in seconds.",
            ["kind"],
            registry=self.registry,
        )
        self.phase = Gauge(
            "kubevision_modelversion_phase",
            "1 for the ModelVersion's current phase, 0 for the others.",
            ["namespace", "view", "modelversion", "phase"],
            registry=self.registry,
        )
        self.queue_length = Gauge(
            "kubevision_operator_queue_length",
            "ModelVersions waiting for the concurrency limit.",
            registry=self.registry,
        )
        self.watch_events = Counter(
            "kubevision_operator_watch_events",
            "Watch events received, by kind.",
            ["kind"],
            registry=self.registry,
        )
        self.last_watch_event = Gauge(
            "kubevision_operator_last_watch_event_timestamp_seconds",
            "Unix time of the last watch event, by kind: a silent watch shows here.",
            ["kind"],
            registry=self.registry,
        )
        self.reports = Counter(
            "kubevision_operator_status_reports",
            "Trainer reports received, by result (accepted, stale, refused).",
            ["result"],
            registry=self.registry,
        )
        self.api_requests = Counter(
            "kubevision_operator_api_requests",
            "Kubernetes API requests made by the reconciler and the status endpoint (not kopf's"
            " own watches), by verb and resource (with subresource, e.g. modelversions/status).",
            ["verb", "resource"],
            registry=self.registry,
        )

        self.reconciles_in_flight = Gauge(
            "kubevision_operator_reconciles_in_flight",
            "ModelVersion reconciles running now.",
            registry=self.registry,
        )
        self.oldest_reconcile_age = Gauge(
            "kubevision_operator_oldest_reconcile_age_seconds",
            "Seconds the oldest running ModelVersion reconcile has been running (0: none); "
            "/healthz fails above settings.reconcile_stall_seconds.",
            registry=self.registry,
        )
        self.pruned_status_writes = Counter(
            "kubevision_operator_pruned_status_writes",
            "Status writes from which the API server dropped fields (the installed CRD's "
            "status schema lacks them: docs/crds.md), by kind and the first dropped path.",
            ["kind", "path"],
            registry=self.registry,
        )
        self.crd_current = Gauge(
            "kubevision_operator_crd_current",
            "1 when the installed CRD carries this operator's schema hash, 0 when it differs "
            "or is missing (checked at start; docs/crds.md, Upgrading the CRDs on a cluster).",
            ["crd"],
            registry=self.registry,
        )

    def follow_cache(
        self, synced: Callable[[], bool], sizes: Mapping[str, Callable[[], int]]
    ) -> None:
        """Read the cache gauges at each scrape: whether the informer caches are synced, and
        the objects each holds (``sizes``: kind -> count)."""
        Gauge(
            "kubevision_operator_cache_synced",
            "1 once the watches' initial listings are all in the caches (no reconcile acts "
            "before), 0 before.",
            registry=self.registry,
        ).set_function(lambda: float(synced()))
        objects = Gauge(
            "kubevision_operator_cache_objects",
            "Objects in the operator's informer caches, by kind.",
            ["kind"],
            registry=self.registry,
        )
        for kind, count in sizes.items():
            objects.labels(kind=kind).set_function(_as_float(count))

    def follow_queue(self, positions: Callable[[], Mapping[tuple[str, str], int]]) -> None:
        """Serve ``kubevision_operator_queue_position`` from ``positions()`` at each scrape."""
        self.registry.register(_QueuePositions(positions))

    def follow_reconciles(self, count: Callable[[], int], oldest_age: Callable[[], float]) -> None:
        """Read the in-flight gauges from ``count()`` and ``oldest_age()`` at each scrape."""
        self.reconciles_in_flight.set_function(lambda: float(count()))
        self.oldest_reconcile_age.set_function(oldest_age)

    def exposition(self) -> tuple[bytes, str]:
        """The registry in Prometheus' text format, and that format's Content-Type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    def api_request(self, verb: str, resource: str) -> None:
        """Count one API request (``kube.Kube``'s ``on_request`` hook)."""
        self.api_requests.labels(verb=verb, resource=resource).inc()

    def set_crds_current(self, current: Mapping[str, bool]) -> None:
        """``kubevision_operator_crd_current``: 1 or 0 for each CRD (name -> current)."""
        for crd, ok in current.items():
            self.crd_current.labels(crd=crd).set(1.0 if ok else 0.0)

    def watch_event(self, kind: str) -> None:
        """Count a watch event of ``kind`` and stamp its time."""
        self.watch_events.labels(kind=kind).inc()
        self.last_watch_event.labels(kind=kind).set(time.time())

    def set_phase(self, namespace: str, view: str, modelversion: str, phase: str) -> None:
        """One series per phase: 1 for ``phase``, 0 for the others."""
        for name in PHASES:
            self.phase.labels(
                namespace=namespace, view=view, modelversion=modelversion, phase=name
            ).set(1.0 if name == phase else 0.0)

    def forget(self, namespace: str, view: str, modelversion: str) -> None:
        """Drop a deleted ModelVersion's series."""
        for name in PHASES:
            try:
                self.phase.remove(namespace, view, modelversion, name)
            except KeyError:
                continue
