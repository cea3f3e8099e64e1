"""The operator's work beside the ModelVersion reconcile: each View's status, the sweep of
the trainers' Pushgateway groups, and the resync of a cache after kopf listed a kind again.
Reads come from the informer caches (``cache``); the one list is the resync's own.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime

from kubevision_api.modelversion import ModelVersion
from kubevision_api.view import View
from kubevision_operator import kube as kube_mod
from kubevision_operator import naming, pushgateway, viewstatus
from kubevision_operator.cache import Cache, Key, resource_version
from kubevision_operator.kube import Kube, Obj
from kubevision_operator.metrics import OperatorMetrics
from kubevision_operator.reconcile import Reconciler
from kubevision_operator.settings import OperatorSettings
from kubevision_operator.statuswrite import merge_patch

log = logging.getLogger(__name__)

#: The kinds the operator watches: (kind, plural, label selector of its watch).
WATCHED: tuple[tuple[str, str, str | None], ...] = (
    ("ModelVersion", "modelversions", None),
    ("View", "views", None),
    ("Job", "jobs", f"{naming.MANAGED_BY}={naming.MANAGED_BY_VALUE}"),
    ("Pod", "pods", f"{naming.MANAGED_BY}={naming.MANAGED_BY_VALUE}"),
)


def view_of(obj: Obj) -> str | None:
    """The name of the View a ModelVersion (as stored) names."""
    name = (obj.get("spec", {}).get("viewRef") or {}).get("name")
    return str(name) if name is not None else None


class Housekeeping:
    """View statuses, the Pushgateway sweep and cache resyncs.

    Args:
        reconciler: the ModelVersion reconciler (its cache, API calls, settings, metrics;
            the ModelVersions a resync touches are reconciled through it).
    """

    def __init__(self, reconciler: Reconciler) -> None:
        self.reconciler = reconciler
        self.cache: Cache = reconciler.cache
        self.kube: Kube = reconciler.kube
        self.settings: OperatorSettings = reconciler.settings
        self.metrics: OperatorMetrics = reconciler.metrics

    def _namespaces(self) -> list[str | None]:
        return [*sorted(self.settings.namespaces)] or [None]

    # --- Views -----------------------------------------------------------------------------

    def modelversions_of_view(self, namespace: str, view: str) -> list[str]:
        """Names of the ModelVersions that name ``view``."""
        return [
            obj["metadata"]["name"]
            for obj in self.cache.modelversions.items(namespace)
            if view_of(obj) == view
        ]

    def reconcile_view(self, namespace: str, name: str, *, phases_only: bool = False) -> bool:
        """The View's model id, concept count and models library; returns whether its status
        was patched. With ``phases_only``, only a change beyond the library's figures (a
        ModelVersion's phase, a model, a condition) is written; best metrics wait.

        Raises:
            KubeError: the status patch failed.
        """
        started = time.perf_counter()
        try:
            obj = self.cache.views.get(namespace, name)
            if obj is None:
                return False
            view = View.model_validate(obj)
            modelversions = [
                ModelVersion.model_validate(mv_obj)
                for mv_obj in self.cache.modelversions.items(namespace)
                if view_of(mv_obj) == name
            ]
            new = viewstatus.compose_view_status(
                view, modelversions, datetime.now(UTC), self.reconciler.schema_problem
            )
            previous = view.status
            old_wire = previous.wire() if previous is not None else {}
            written = None
            if new.wire() != old_wire and not (
                phases_only and _without_figures(new.wire()) == _without_figures(old_wire)
            ):
                written = self.kube.patch_status(
                    "views", namespace, name, merge_patch(old_wire, new.wire())
                )
                if written is not None:
                    self.cache.views.put(written)
            self.metrics.reconciles.labels(kind="View", result="ok").inc()
            return written is not None
        except kube_mod.KubeError:
            self.metrics.reconciles.labels(kind="View", result="error").inc()
            raise
        finally:
            self.metrics.reconcile_seconds.labels(kind="View").observe(
                time.perf_counter() - started
            )

    # --- Pushgateway -----------------------------------------------------------------------

    def sweep_pushgateway(self) -> int:
        """Delete the trainers' Pushgateway groups that have had their day
        (``pushgateway.stale``); returns how many were deleted. Groups outside the watched
        namespaces are left alone; nothing is deleted before the caches are synced (a group
        of a ModelVersion not listed yet would look orphaned).

        Raises:
            OSError: the Pushgateway did not answer.
        """
        url = self.settings.pushgateway_url
        if not url or not self.cache.synced:
            return 0
        watched = set(self.settings.namespaces)
        known: dict[tuple[str, str], pushgateway.Known] = {}
        for obj in self.cache.modelversions.items():
            meta, state = obj["metadata"], obj.get("status") or {}
            if watched and meta["namespace"] not in watched:
                continue
            completed = state.get("completionTime")
            known[(meta["namespace"], meta["name"])] = pushgateway.Known(
                meta.get("uid"), datetime.fromisoformat(completed) if completed else None
            )
        found = [g for g in pushgateway.groups(url) if not watched or g.namespace in watched]
        doomed = pushgateway.stale(
            found, known, datetime.now(UTC), self.settings.pushgateway_retention_seconds
        )
        for group, why in doomed:
            pushgateway.delete(url, group)
            log.info(
                "deleted Pushgateway group %s/%s run %s: %s",
                group.namespace,
                group.modelversion,
                group.run,
                why,
            )
        return len(doomed)

    # --- resync ----------------------------------------------------------------------------

    def resync(self, kind: str) -> list[Key]:
        """List ``kind`` afresh and forget what the cache holds of it that the list lacks (kopf
        lists a kind again after its watch's resourceVersion expired, as after an API server
        restart, and a list shows no deletions); the ModelVersions concerned are reconciled.
        Returns the keys forgotten.

        Raises:
            KubeError: the list failed.
            StopIteration: ``kind`` is not watched.
        """
        plural, selector = next((p, s) for k, p, s in WATCHED if k == kind)
        store = self.cache.store(kind)
        gone: list[Obj] = []
        for namespace in self._namespaces():
            listed = self.kube.list_objects(plural, namespace, selector)
            items: list[Obj] = listed.get("items") or []
            gone += store.keep_only(items, resource_version(listed), namespace)
        for obj in gone:
            meta = obj["metadata"]
            log.info(
                "%s %s/%s was deleted while no watch saw it", kind, meta["namespace"], meta["name"]
            )
            self._after_gone(kind, obj)
        return [(o["metadata"]["namespace"], o["metadata"]["name"]) for o in gone]

    def _after_gone(self, kind: str, obj: Obj) -> None:
        reconciler = self.reconciler
        namespace, name = obj["metadata"]["namespace"], obj["metadata"]["name"]
        if kind == "ModelVersion":
            reconciler.forget(namespace, name, view_of(obj))
            return
        if kind == "View":
            owners = self.modelversions_of_view(namespace, name)
        else:
            # Jobs and Pods carry their ModelVersion's label.
            label = (obj["metadata"].get("labels") or {}).get(naming.MODELVERSION_LABEL)
            owners = [
                mv["metadata"]["name"]
                for mv in self.cache.modelversions.items(namespace)
                if naming.label_value(mv["metadata"]["name"]) == label
            ]
        for owner in owners:
            reconciler.requeue(namespace, owner, 0.0)


def _without_figures(wire: Obj) -> Obj:
    """A View status without its library's figures (best metric, evaluation)."""
    models = [
        {
            **model,
            "modelVersions": [
                {k: v for k, v in mv.items() if k not in ("best", "indicator", "value")}
                for mv in model.get("modelVersions") or []
            ],
        }
        for model in wire.get("models") or []
    ]
    return {**wire, "models": models}
