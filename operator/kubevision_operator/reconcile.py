"""Level-based reconciliation: from what the watches show now (ModelVersion, View, Job, Pods,
in the informer caches of ``cache``) and the trainer's latest report, create what is missing
and write the status that is true. A reconcile reads nothing from the API server; it writes
what changed, and a status at most once per ``settings.status_write_interval_seconds``
(``pacing``). What to create and which status is true come from the pure modules
(``render``, ``observe``, ``status``) and the queue. Called from the scheduler's threads and
after a trainer's report; safe to call again at any time, from any thread: one reconcile per
ModelVersion runs at a time, and a caller that finds one running leaves its work to it
instead of waiting (``workqueue.KeyedRunner``). Nothing is decided before the caches are
synced (``cache.Cache.synced``)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime

from kubevision_api.errors import InputError
from kubevision_api.modelversion import ModelVersion
from kubevision_api.plan import TrainingPlan, resolve
from kubevision_api.status import ModelVersionStatus
from kubevision_api.view import View
from kubevision_operator import (
    completion,
    gang,
    jobstate,
    naming,
    observe,
    render,
    status,
)
from kubevision_operator import kube as kube_mod
from kubevision_operator.cache import Cache
from kubevision_operator.kube import Kube, Obj
from kubevision_operator.metrics import OperatorMetrics
from kubevision_operator.queue import Key, Queue, entry_of
from kubevision_operator.reports import Reports
from kubevision_operator.settings import OperatorSettings
from kubevision_operator.statuswrite import StatusWriter
from kubevision_operator.workqueue import KeyedRunner

log = logging.getLogger(__name__)

#: Seconds between looks at a gang whose Job is being deleted for a restart (its deletion
#: event wakes the reconcile too; this bounds a lost event).
RESTART_POLL_SECONDS = 5.0
#: Seconds before a reconcile asked for before the caches were synced runs again.
UNSYNCED_RETRY_SECONDS = 1.0


def _now() -> datetime:
    return datetime.now(UTC)


class Reconciler:
    """The reconcile of ModelVersions, and the queue they share (Views: ``housekeeping``).

    Args:
        kube: the API calls (writes; reads only for what the caches cannot know).
        cache: the informer caches the reads come from.
        queue: the concurrency queue (filled by the caches' feed).
        settings: operator settings.
        metrics: operator metrics.
        reports: the trainers' newest reports.
        status_ca_pem: CA of the status endpoint, for the plans (None: no endpoint).
    """

    def __init__(
        self,
        kube: Kube,
        cache: Cache,
        queue: Queue,
        settings: OperatorSettings,
        metrics: OperatorMetrics,
        reports: Reports,
        status_ca_pem: str | None,
    ) -> None:
        self.kube = kube
        self.cache = cache
        self.settings = settings
        self.metrics = metrics
        self.reports = reports
        self.status_ca_pem = status_ca_pem
        self.queue = queue
        self.runner: KeyedRunner[Key] = KeyedRunner()
        #: The start-up check's message while the CRDs differ (``crdcheck``; set by the runtime).
        self.schema_problem: str | None = None
        #: ``requeue(namespace, name, seconds)``: reconcile again after ``seconds`` (set by
        #: the scheduler; a ModelVersion waiting for a deadline has no event to wake it).
        self.requeue: Callable[[str, str, float], None] = lambda namespace, name, seconds: None
        self.writer = StatusWriter(
            kube,
            cache,
            settings.status_write_interval_seconds,
            metrics,
            # Late-bound: the scheduler replaces ``self.requeue`` after this.
            lambda namespace, name, seconds: self.requeue(namespace, name, seconds),  # noqa: PLW0108
        )
        metrics.follow_reconciles(lambda: len(self.runner.running()), self.runner.oldest_age)
        metrics.follow_queue(self.queue.table)

    def stalled(self) -> str | None:
        """Why the operator is not healthy: a reconcile running longer than
        ``settings.reconcile_stall_seconds`` (None when there is none)."""
        running = self.runner.running()
        age = self.runner.oldest_age()
        if not running or age <= self.settings.reconcile_stall_seconds:
            return None
        namespace, name = running[0].key
        return (
            f"the reconcile of ModelVersion {namespace}/{name} has been running for {age:.0f} s "
            f"(limit {self.settings.reconcile_stall_seconds:.0f} s)"
        )

    # --- ModelVersion ----------------------------------------------------------------------

    def forget(self, namespace: str, name: str, view: str | None) -> None:
        """A ModelVersion was deleted: its children go with the garbage collector."""
        key = (namespace, name)
        self.queue.remove(key)
        self.writer.forget(key)
        self.reports.forget(namespace, name)
        if view:
            self.metrics.forget(namespace, view, name)
        self.admit_waiting()

    def admit_waiting(self) -> None:
        """Reconcile the ModelVersions that a freed place lets start."""
        for namespace, name in self.queue.next_admissible():
            self.reconcile_modelversion(namespace, name)

    def reconcile_modelversion(self, namespace: str, name: str) -> None:
        """Bring one ModelVersion's children and status in line with what is true now, on this
        thread, or leave it to the thread reconciling it already (which then runs it again).
        Before the caches are synced it only asks to run again in ``UNSYNCED_RETRY_SECONDS``.

        Raises:
            KubeError: an API call failed (after its retries).
            ValueError: the ModelVersion as stored does not validate.
        """

        if not self.cache.synced:
            self.requeue(namespace, name, UNSYNCED_RETRY_SECONDS)
            return

        def work() -> None:
            started = time.perf_counter()
            result = "ok"
            try:
                self._reconcile_modelversion(namespace, name)
            except (kube_mod.KubeError, ValueError) as exc:
                result = "error"
                log.warning("ModelVersion %s/%s: %s", namespace, name, exc)
                raise
            finally:
                self.metrics.reconciles.labels(kind="ModelVersion", result=result).inc()
                self.metrics.reconcile_seconds.labels(kind="ModelVersion").observe(
                    time.perf_counter() - started
                )

        self.runner.run((namespace, name), work)

    def _reconcile_modelversion(self, namespace: str, name: str) -> None:
        cache = self.cache
        obj = cache.modelversions.get(namespace, name)
        if obj is None:
            self.queue.remove((namespace, name))
            return
        mv = ModelVersion.model_validate(obj)
        previous = mv.status
        finished = status.is_finished(previous)
        view_obj = cache.views.get(namespace, mv.spec.view_ref.name)
        plan: TrainingPlan | None = None
        plan_error: str | None = None
        if view_obj is not None:
            try:
                plan = resolve(
                    View.model_validate(view_obj),
                    mv,
                    self.settings.plan_defaults(self.status_ca_pem),
                )
            except InputError as exc:
                plan_error = exc.message
        job_name = naming.job_name(name)
        job = cache.jobs.get(namespace, job_name)
        recorded = completion.read(obj)
        if recorded is not None and job is None and not finished:
            self._restore(obj, mv, previous, recorded)
            return
        # A finished training is a fact once recorded, whatever its status says (a pruning
        # CRD strips the conditions each write): it never gets another Job.
        finished = finished or recorded is not None
        multi = gang.is_gang(mv.spec)
        # A ModelVersion that cannot start (no plan, or suspended by its user) holds no place.
        on_hold = plan is None or mv.spec.run_policy.suspend
        # A training holds its place while its Job runs, even once its outcome is known (the
        # trainer exited, a sidecar still holds the Pod): the place frees when the Job ends.
        live = job is not None and not jobstate.job_finished(job)
        # A gang between two attempts (its Job deleted for a restart) keeps its place too.
        holds = job is not None or (multi and not finished and status.between_attempts(previous))
        freed = self.queue.update(
            entry_of(obj, admitted=holds, held=on_hold, finished=finished and not live)
        )
        position = None if holds or on_hold else self.queue.position((namespace, name))
        if job is None and plan is not None and not finished and position is None:
            self.kube.create_configmap(namespace, render.render_configmap(plan, mv))
            if multi:
                self.kube.create_service(namespace, render.render_service(plan, mv))
            suspend = render.creation_suspend(mv.spec)
            attempt = status.next_attempt(previous)
            job, created = self.kube.create_job(
                namespace,
                render.render_job(plan, mv, self.settings, suspend=suspend, attempt=attempt),
            )
            cache.jobs.put(job)
            if created:
                log.info("created Job %s/%s (attempt %d)", namespace, job_name, attempt)
            self.queue.update(entry_of(obj, admitted=True, held=on_hold))
        elif job is not None:
            patch = render.job_patch(job, mv)
            if patch is not None:
                patched = self.kube.patch_job(namespace, job_name, patch)
                if patched is not None:
                    cache.jobs.put(patched)
                    job = patched
        pods = _pods_of(job, cache.pods.by_label(namespace, job_name)) if job is not None else []
        report_pod, report = self.reports.latest(namespace, name)
        observation = observe.observe(
            job,
            pods,
            view_obj is not None,
            report,
            position,
            spec=mv.spec,
            plan_error=plan_error,
        )
        generation = int(mv.metadata.generation or 0)
        new = status.compose_status(
            previous,
            observation,
            report,
            generation,
            _now(),
            plan=plan,
            report_pod=report_pod,
            schema_problem=self.schema_problem,
        )
        stored = self.writer.write(
            obj,
            previous,
            new,
            observation,
            # Written at once: the outcome, before a lingering Job is deleted, and a failed
            # gang attempt, before its Job is deleted for the next (a restarted operator
            # finds them in the status).
            urgent=observation.restart or (status.is_finished(new) and not finished),
        )
        if stored and status.is_finished(new):
            self.writer.record(obj, recorded, new, generation)
        if job is not None and observation.restart and stored:
            self._restart_gang(namespace, name, job)
        if job is not None and observation.lingering:
            self._end_lingering(namespace, name, job_name, observation)
        if multi and status.is_finished(new) and not finished:
            # The rendezvous is over: the Pods' DNS names are of no more use.
            self.kube.delete_service(namespace, naming.service_name(name))
        self.metrics.set_phase(namespace, mv.spec.view_ref.name, name, new.phase or "Pending")
        self.metrics.queue_length.set(len(self.queue.waiting()))
        done = status.is_finished(new) and not live
        holds = job is not None or (multi and not done and status.between_attempts(new))
        freed = (
            self.queue.update(entry_of(obj, admitted=holds, held=on_hold, finished=done)) or freed
        )
        if freed:
            self.admit_waiting()

    def _restore(
        self,
        obj: Obj,
        mv: ModelVersion,
        previous: ModelVersionStatus | None,
        recorded: completion.Completion,
    ) -> None:
        """The status lacks the outcome (lost in a restore, replaced by hand, pruned) and the
        Job is gone, but the completion record says the training finished at this generation:
        write the recorded status back instead of training again. It holds no place."""
        namespace, name = mv.metadata.namespace or "", mv.metadata.name or ""
        self.writer.restore(obj, previous, recorded)
        self.metrics.set_phase(namespace, mv.spec.view_ref.name, name, recorded.outcome)
        if self.queue.update(entry_of(obj, admitted=False, finished=True)):
            self.admit_waiting()

    def _restart_gang(self, namespace: str, name: str, job: Obj) -> None:
        """The status says that the gang's attempt failed (written first, so a restarted
        operator finds it): delete the Job in the foreground, which keeps it, marked for
        deletion, until its Pods are gone, then create the next attempt's once it is gone."""
        meta = job["metadata"]
        if not meta.get("deletionTimestamp"):
            log.info(
                "Job %s/%s: attempt %d failed; deleting it to restart the gang",
                namespace,
                meta["name"],
                gang.job_attempt(job),
            )
            self.kube.delete_job(namespace, meta["name"], foreground=True)
        self.requeue(namespace, name, RESTART_POLL_SECONDS)

    def _end_lingering(
        self, namespace: str, name: str, job_name: str, observation: observe.Observation
    ) -> None:
        """The trainer ended but other containers keep its Pod running: once they have
        outlived it by ``settings.sidecar_grace_seconds``, end the attempt. A finished
        training's Job is deleted (its outcome is in the status already); the Pod of an attempt
        to retry is deleted, and the Job starts the next one."""
        ended = observation.trainer_ended_at or _now()
        left = self.settings.sidecar_grace_seconds - (_now() - ended).total_seconds()
        if left > 0:
            self.requeue(namespace, name, left + 0.5)
            return
        held = ", ".join(observation.lingering)
        if observation.terminal:
            log.info(
                "Job %s/%s: %s outlived the trainer; deleting the Job", namespace, job_name, held
            )
            self.kube.delete_job(namespace, job_name)
        elif observation.pod_name is not None:
            log.info(
                "Pod %s/%s: %s outlived the trainer; deleting the Pod",
                namespace,
                observation.pod_name,
                held,
            )
            self.kube.delete_pod(namespace, observation.pod_name)


def _pods_of(job: Obj, pods: list[Obj]) -> list[Obj]:
    """The Pods ``job`` owns (by uid): a gang's next Job has the same name, and the Pods of
    the one before may still be in the cache (the Pod and Job watches are not ordered)."""
    uid = job["metadata"].get("uid")
    return [
        pod
        for pod in pods
        if any(ref.get("uid") == uid for ref in pod["metadata"].get("ownerReferences") or [])
    ]
