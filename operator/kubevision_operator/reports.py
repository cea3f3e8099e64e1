"""Trainer reports: who may report on which ModelVersion, and the newest report of each.

A trainer POSTs full progress snapshots to the status endpoint (``servers.report_app``) with
its Pod's projected ServiceAccount token; TokenReview (``Kube.token_review``, cached by
``tokens``) names the Pod, :meth:`Reports.authorize` checks that the Pod trains that
ModelVersion (from the informer caches), and
:meth:`Reports.offer` keeps the newest snapshot, which the reconcile merges into the status
(docs/operator.md, The status endpoint). Safe to call from any thread.
"""

from __future__ import annotations

import threading

from kubevision_api.progress import TrainerReport
from kubevision_operator import naming
from kubevision_operator.cache import Cache
from kubevision_operator.kube import Caller, Kube, Obj
from kubevision_operator.metrics import OperatorMetrics

Key = tuple[str, str]


class Reports:
    """The newest report of each ModelVersion, and the checks before one is taken.

    Args:
        kube: the API calls: a Pod the Pod watch has not shown yet is read from the API.
        cache: the informer caches (the Pod, Job and ModelVersion that authorise a caller).
        metrics: counts reports by result (accepted, stale, refused).
    """

    def __init__(self, kube: Kube, cache: Cache, metrics: OperatorMetrics) -> None:
        self.kube = kube
        self.cache = cache
        self.metrics = metrics
        self._latest: dict[Key, tuple[str | None, TrainerReport]] = {}
        self._lock = threading.Lock()

    def authorize(self, caller: Caller, namespace: str, name: str) -> bool:
        """Whether ``caller``'s Pod belongs to the Job of ModelVersion ``namespace/name``: the
        Pod exists with the token's uid, it is owned by the Job, and the Job by that
        ModelVersion (uid checked). A refusal is counted. Read from the caches; from the API
        only before they are synced, and for a Pod its watch has not shown yet (a report can
        outrun the watch event of its own Pod).

        Raises:
            KubeError: an API call failed (the endpoint answers 500; the trainer retries).
        """
        allowed = self._owns(caller, namespace, name)
        if not allowed:
            self.metrics.reports.labels(result="refused").inc()
        return allowed

    def cached_pod(self, caller: Caller, namespace: str) -> Obj | None:
        """The Pod ``caller``'s token was bound to, in ``namespace``, as the Pod cache holds it
        (name and uid); None when the cache holds no such Pod (gone, or not shown yet)."""
        if caller.pod_name is None:
            return None
        pod = self.cache.pods.get(namespace, caller.pod_name)
        return pod if pod is not None and pod["metadata"].get("uid") == caller.pod_uid else None

    def _owns(self, caller: Caller, namespace: str, name: str) -> bool:
        if caller.pod_name is None:
            return False
        cache = self.cache
        synced = cache.synced
        pod = self.cached_pod(caller, namespace) or self.kube.get_pod(namespace, caller.pod_name)
        if pod is None or pod["metadata"].get("uid") != caller.pod_uid:
            return False
        job_name = naming.job_name(name)
        if not any(
            ref.get("kind") == "Job" and ref.get("name") == job_name
            for ref in pod["metadata"].get("ownerReferences", [])
        ):
            return False
        if synced:
            job, mv = cache.jobs.get(namespace, job_name), cache.modelversions.get(namespace, name)
        else:
            job = self.kube.get_job(namespace, job_name)
            mv = self.kube.get_modelversion(namespace, name)
        if job is None or mv is None:
            return False
        return any(
            ref.get("kind") == "ModelVersion" and ref.get("uid") == mv["metadata"].get("uid")
            for ref in job["metadata"].get("ownerReferences", [])
        )

    def offer(self, caller: Caller, report: TrainerReport) -> bool:
        """Keep ``report`` (already authorised for ``caller``) unless the one held from the
        same Pod has a sequence as high: True when it was kept, and the status is to be
        reconciled. Whether it is newer than what the status holds is the status's rule
        (``status.compose_status``: a report from another Pod counts only from the newest)."""
        key = (report.namespace, report.model_version)
        with self._lock:
            held = self._latest.get(key)
            stale = (
                held is not None
                and held[0] == caller.pod_name
                and held[1].sequence >= report.sequence
            )
            if not stale:
                self._latest[key] = (caller.pod_name, report)
        self.metrics.reports.labels(result="stale" if stale else "accepted").inc()
        return not stale

    def latest(self, namespace: str, name: str) -> tuple[str | None, TrainerReport | None]:
        """The Pod that sent the newest report on ``namespace/name``, and that report (None,
        None when there is none)."""
        with self._lock:
            held = self._latest.get((namespace, name))
        return held if held is not None else (None, None)

    def forget(self, namespace: str, name: str) -> None:
        """The ModelVersion was deleted: drop its report."""
        with self._lock:
            self._latest.pop((namespace, name), None)
