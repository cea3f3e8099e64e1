"""jobstate: a Job has finished from the first condition that decides its outcome on; the
renderer and the observer read the same answer."""

from __future__ import annotations

import pytest

from kubevision_operator import jobstate, observe, render
from kubevision_operator.observe import Situation
from tests.operator.operator_helpers import condition, job, modelversion


@pytest.mark.parametrize(
    ("ctype", "succeeded"),
    [
        ("Complete", True),
        ("SuccessCriteriaMet", True),
        ("Failed", False),
        ("FailureTarget", False),
    ],
)
def test_each_outcome_condition_finishes_the_job(ctype: str, succeeded: bool) -> None:
    j = job(conditions=[condition(ctype, "Reason", seconds=7)])
    end = jobstate.job_end(j)
    assert end is not None and end.succeeded is succeeded
    assert end.condition["type"] == ctype
    assert jobstate.job_finished(j)
    # The renderer leaves it alone, the observer sees an outcome.
    assert render.job_patch(j, modelversion(runPolicy={"suspend": True})) is None
    obs = observe.observe(j, [], True, None, None, spec=modelversion().spec)
    assert obs.terminal
    assert (obs.situation is Situation.SUCCEEDED) is succeeded


@pytest.mark.parametrize(
    "conditions",
    [
        [],
        [condition("Suspended")],
        [{**condition("Complete"), "status": "False"}],
        [{**condition("FailureTarget"), "status": "Unknown"}],
    ],
)
def test_an_undecided_job_is_not_finished(conditions: list[dict[str, object]]) -> None:
    j = job(conditions=conditions)
    assert jobstate.job_end(j) is None and not jobstate.job_finished(j)
    assert render.job_patch(j, modelversion(runPolicy={"suspend": True})) == {
        "spec": {"suspend": True}
    }


def test_success_wins_over_a_failure_target() -> None:
    end = jobstate.job_end(job(conditions=[condition("FailureTarget"), condition("Complete")]))
    assert end is not None and end.succeeded and end.condition["type"] == "Complete"


def test_true_conditions_by_type() -> None:
    pod = {
        "status": {
            "conditions": [condition("PodScheduled"), condition("Ready") | {"status": "False"}]
        }
    }
    assert list(jobstate.true_conditions(pod)) == ["PodScheduled"]
    assert jobstate.true_conditions({}) == {}
