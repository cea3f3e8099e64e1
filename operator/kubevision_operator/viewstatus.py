"""A View's status, composed from the View and its ModelVersions: the model id of its
concepts now, their count, a Ready condition and the models library (every model seen, with
its ModelVersions, their phase, best metric and first indicator). Pure: the caller passes
``now``; the ModelVersion's own status is ``status.compose_status``.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from kubevision_api.meta import Condition
from kubevision_api.modelversion import ModelVersion
from kubevision_api.view import ModelEntry, ModelSummary, View, ViewStatus, model_id
from kubevision_operator import crdcheck


def compose_view_status(
    view: View,
    modelversions: Iterable[ModelVersion],
    now: datetime,
    schema_problem: str | None = None,
) -> ViewStatus:
    """The status that ``view`` and ``modelversions`` make true.

    Args:
        view: the View as stored; its status is the previous one (None on the first visit).
        modelversions: the ModelVersions whose ``spec.viewRef`` names ``view``, in any order.
        now: the time of this composition (the Ready condition's transition).
        schema_problem: the start-up check's message while the installed CRDs are not the
            operator's (``crdcheck``): a ``CRDsCurrent`` False condition after Ready.

    Each ModelVersion is filed under the model of its admission snapshot (``status.model``),
    or the View's current model when it has none yet; a model's concept count is that
    snapshot's, or the View's current count. Models are sorted by id, their ModelVersions
    kept in the given order. Ready keeps its ``lastTransitionTime`` while its message stays.
    """
    names = view.spec.concept_names()
    current = model_id(view.spec.task, names)
    library: dict[str, ModelEntry] = {}
    for mv in modelversions:
        mv_status = mv.status
        model = (mv_status.model if mv_status else None) or current
        count = len(mv_status.concepts) if mv_status and mv_status.concepts else len(names)
        entry = library.setdefault(model, ModelEntry(model=model, concept_count=count))
        best = mv_status.metrics.best if mv_status and mv_status.metrics else None
        evaluation = mv_status.evaluation if mv_status else None
        entry.model_versions.append(
            ModelSummary(
                model_version=mv.metadata.name,
                phase=mv_status.phase if mv_status else None,
                best=best.value if best else None,
                indicator=evaluation.indicator.value if evaluation else None,
                value=evaluation.value if evaluation else None,
            )
        )
    previous = view.status
    generation = int(view.metadata.generation or 0)
    ready = Condition(
        type="Ready",
        status="True",
        reason="ModelComputed",
        message=f"{len(names)} concepts make model {current}.",
        last_transition_time=now,
        observed_generation=generation,
    )
    before = previous.conditions if previous is not None else []
    for old in before:
        if old.type == "Ready" and old.status == "True" and old.message == ready.message:
            ready = ready.model_copy(update={"last_transition_time": old.last_transition_time})
    kept = [c for c in before if c.type == crdcheck.CONDITION_TYPE]
    conditions = crdcheck.crd_condition([ready, *kept], schema_problem, generation, now)
    return ViewStatus(
        observed_generation=generation,
        model=current,
        concept_count=len(names),
        conditions=conditions,
        models=sorted(library.values(), key=lambda e: e.model),
    )
