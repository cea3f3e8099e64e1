"""compose_view_status(): the View's model id, concept count, Ready condition and models
library, from the View and its ModelVersions."""

from __future__ import annotations

from kubevision_api.meta import Condition
from kubevision_api.modelversion import (
    ModelVersion,
)
from kubevision_api.status import BestMetric, MetricsStatus, ModelVersionStatus
from kubevision_api.view import ModelSummary, View, ViewStatus, model_id
from kubevision_operator.viewstatus import compose_view_status
from tests.operator.operator_helpers import at, modelversion, view

CURRENT = model_id(view().spec.task, ["cat", "dog"])


def _trained(
    name: str, *, model: str | None, concepts: list[str], phase: str, best: float | None
) -> ModelVersion:
    mv = modelversion(name=name)
    metrics = (
        MetricsStatus(selection="accuracy", best=BestMetric(epoch=3, value=best))
        if best is not None
        else None
    )
    mv.status = ModelVersionStatus(phase=phase, model=model, concepts=concepts, metrics=metrics)
    return mv


def _with_status(v: View, status: ViewStatus) -> View:
    return v.model_copy(update={"status": status})


def test_models_library_groups_by_admission_snapshot() -> None:
    old = "m000000000001"
    mvs = [
        _trained("b", model=old, concepts=["cat"], phase="Succeeded", best=0.75),
        modelversion(name="fresh"),  # no status yet: the View's current model
        _trained("a", model=CURRENT, concepts=["cat", "dog"], phase="Running", best=None),
    ]
    status = compose_view_status(view(), mvs, at(10))
    assert (status.model, status.concept_count, status.observed_generation) == (CURRENT, 2, 0)
    assert [(e.model, e.concept_count) for e in status.models] == sorted([(old, 1), (CURRENT, 2)])
    by_model = {e.model: e.model_versions for e in status.models}
    assert by_model[old] == [ModelSummary(model_version="b", phase="Succeeded", best=0.75)]
    assert by_model[CURRENT] == [
        ModelSummary(model_version="fresh", phase=None, best=None),
        ModelSummary(model_version="a", phase="Running", best=None),
    ]
    (ready,) = status.conditions
    assert (ready.type, ready.status, ready.reason) == ("Ready", "True", "ModelComputed")
    assert ready.message == f"2 concepts make model {CURRENT}."
    assert ready.last_transition_time == at(10)


def test_no_modelversions_an_empty_library() -> None:
    status = compose_view_status(view(concepts=("a", "b", "c")), [], at(0))
    assert status.models == [] and status.concept_count == 3


def test_ready_keeps_its_transition_time_while_its_message_stays() -> None:
    first = compose_view_status(view(), [], at(10))
    again = compose_view_status(_with_status(view(), first), [], at(20))
    assert again.conditions[0].last_transition_time == at(10)
    assert again == first
    # A new concept makes another model: the message changes, and so does the time.
    changed = _with_status(view(concepts=("cat", "dog", "fox")), first)
    moved = compose_view_status(changed, [], at(30))
    assert moved.conditions[0].last_transition_time == at(30)
    assert moved.model != first.model


def test_a_ready_condition_that_was_false_is_replaced() -> None:
    stale = ViewStatus(
        conditions=[
            Condition(
                type="Ready",
                status="False",
                reason="Unknown",
                message=f"2 concepts make model {CURRENT}.",
                last_transition_time=at(1),
            )
        ]
    )
    status = compose_view_status(_with_status(view(), stale), [], at(5))
    assert status.conditions[0].status == "True"
    assert status.conditions[0].last_transition_time == at(5)
