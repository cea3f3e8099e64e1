"""statustable.py and status.py: the one table (a test per row), compose_status's rules, and
the rebuild."""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from kubevision_api.contract import StepName
from kubevision_api.progress import TrainerReport
from kubevision_api.status import (
    AttemptFailure,
    BestMetric,
    CheckpointStatus,
    DatasetStatus,
    EpochMetrics,
    MetricsStatus,
    ModelVersionStatus,
    Phase,
    Progress,
    ReportCursor,
    Step,
    StepState,
)
from kubevision_operator import podstate
from kubevision_operator import status as st
from kubevision_operator import statustable as tbl
from kubevision_operator.observe import Observation, Situation
from tests.operator.operator_helpers import at, modelversion, plan_for, view

PLAN = plan_for(view(), modelversion())
CAMEL = re.compile(r"^[A-Z][A-Za-z0-9]*$")
DOC = Path(__file__).resolve().parents[2] / "docs" / "operator-status.md"

_POD: dict[str, Any] = {"job_name": "kv-pets-v1", "pod_name": "kv-pets-v1-abcde"}
SAMPLES: dict[Situation, Observation] = {
    Situation.VIEW_MISSING: Observation(Situation.VIEW_MISSING, "View 'pets' was not found."),
    Situation.INVALID_PLAN: Observation(
        Situation.INVALID_PLAN, "'resnet18' does not fit the detection task.", reason="InvalidPlan"
    ),
    Situation.QUEUED: Observation(Situation.QUEUED, "Queued at position 2.", position=2),
    Situation.AWAITING_ADMISSION: Observation(
        Situation.AWAITING_ADMISSION, "The Job waits for Kueue.", job_name="kv-pets-v1"
    ),
    Situation.SUSPENDED: Observation(Situation.SUSPENDED, "spec.runPolicy.suspend is true."),
    Situation.STARTING: Observation(Situation.STARTING, "The training Job is being created."),
    Situation.UNSCHEDULABLE: Observation(
        Situation.UNSCHEDULABLE,
        "0/1 nodes are available: 1 Insufficient nvidia.com/gpu.",
        reason="Unschedulable",
        **_POD,
    ),
    Situation.POD_PENDING: Observation(
        Situation.POD_PENDING,
        "Back-off pulling image.",
        reason="ImagePullBackOff",
        scheduled_at=at(5),
        **_POD,
    ),
    Situation.RUNNING: Observation(
        Situation.RUNNING, "The trainer is running.", scheduled_at=at(5), started_at=at(9), **_POD
    ),
    Situation.RETRYING: Observation(
        Situation.RETRYING,
        "Loss is nan. The Job starts another attempt.",
        reason="TrainingFailed",
        scheduled_at=at(5),
        started_at=at(9),
        **_POD,
    ),
    Situation.SUCCEEDED: Observation(
        Situation.SUCCEEDED,
        "The training finished.",
        scheduled_at=at(5),
        started_at=at(9),
        finished_at=at(300),
        **_POD,
    ),
    Situation.FAILED: Observation(
        Situation.FAILED,
        "Empty validation split.",
        reason="InvalidInput",
        scheduled_at=at(5),
        started_at=at(9),
        finished_at=at(40),
        **_POD,
    ),
    Situation.OOM_KILLED: Observation(
        Situation.OOM_KILLED,
        "The trainer was killed for exceeding its memory limit of 16Gi.",
        reason="OOMKilled",
        scheduled_at=at(5),
        started_at=at(9),
        finished_at=at(40),
        **_POD,
    ),
    Situation.DEADLINE_EXCEEDED: Observation(
        Situation.DEADLINE_EXCEEDED,
        "The training ran longer than its activeDeadlineSeconds (60 s).",
        reason="DeadlineExceeded",
        finished_at=at(60),
        **_POD,
    ),
    Situation.BACKOFF_LIMIT_EXCEEDED: Observation(
        Situation.BACKOFF_LIMIT_EXCEEDED,
        "Job has reached the specified backoff limit.",
        reason="BackoffLimitExceeded",
        finished_at=at(60),
        job_name="kv-pets-v1",
    ),
}

# The table again, spelt out: (ViewResolved, Admitted, Running, Succeeded, Failed, Suspended),
# the reason of the condition that says why, the Scheduling step, the phase.
U, T, F = "Unknown", "True", "False"
EXPECTED: dict[Situation, tuple[tuple[str, ...], tuple[str, str], StepState, Phase]] = {
    Situation.VIEW_MISSING: (
        (F, U, F, U, U, F),
        ("ViewResolved", "ViewNotFound"),
        StepState.PENDING,
        Phase.PENDING,
    ),
    Situation.INVALID_PLAN: (
        (T, F, F, F, T, F),
        ("Failed", "InvalidPlan"),
        StepState.SKIPPED,
        Phase.FAILED,
    ),
    Situation.QUEUED: (
        (T, F, F, U, U, F),
        ("Admitted", "ConcurrencyLimit"),
        StepState.PENDING,
        Phase.QUEUED,
    ),
    Situation.AWAITING_ADMISSION: (
        (T, F, F, U, U, F),
        ("Admitted", "WaitingForKueue"),
        StepState.PENDING,
        Phase.QUEUED,
    ),
    Situation.SUSPENDED: (
        (T, F, F, U, U, T),
        ("Suspended", "SuspendedByUser"),
        StepState.PENDING,
        Phase.SUSPENDED,
    ),
    Situation.STARTING: (
        (T, T, F, U, U, F),
        ("Running", "Starting"),
        StepState.PENDING,
        Phase.PENDING,
    ),
    Situation.UNSCHEDULABLE: (
        (T, T, F, U, U, F),
        ("Running", "Unschedulable"),
        StepState.PENDING,
        Phase.PENDING,
    ),
    Situation.POD_PENDING: (
        (T, T, F, U, U, F),
        ("Running", "ImagePullBackOff"),
        StepState.RUNNING,
        Phase.PENDING,
    ),
    Situation.RUNNING: (
        (T, T, T, U, U, F),
        ("Running", "TrainerRunning"),
        StepState.SUCCEEDED,
        Phase.RUNNING,
    ),
    Situation.RETRYING: (
        (T, T, F, U, U, F),
        ("Running", "Retrying"),
        StepState.PENDING,
        Phase.PENDING,
    ),
    Situation.SUCCEEDED: (
        (T, T, F, T, F, F),
        ("Succeeded", "Completed"),
        StepState.SUCCEEDED,
        Phase.SUCCEEDED,
    ),
    Situation.FAILED: (
        (T, T, F, F, T, F),
        ("Failed", "InvalidInput"),
        StepState.SUCCEEDED,
        Phase.FAILED,
    ),
    Situation.OOM_KILLED: (
        (T, T, F, F, T, F),
        ("Failed", "OOMKilled"),
        StepState.SUCCEEDED,
        Phase.FAILED,
    ),
    Situation.DEADLINE_EXCEEDED: (
        (T, T, F, F, T, F),
        ("Failed", "DeadlineExceeded"),
        StepState.FAILED,
        Phase.FAILED,
    ),
    Situation.BACKOFF_LIMIT_EXCEEDED: (
        (T, T, F, F, T, F),
        ("Failed", "BackoffLimitExceeded"),
        StepState.FAILED,
        Phase.FAILED,
    ),
}
NOW = at(1000)


def test_the_table_covers_every_situation() -> None:
    assert set(tbl.TABLE) == set(Situation) == set(SAMPLES) == set(EXPECTED)


@pytest.mark.parametrize("situation", list(Situation), ids=[s.value for s in Situation])
def test_row(situation: Situation) -> None:
    statuses, (why_type, why_reason), scheduling, phase = EXPECTED[situation]
    obs = SAMPLES[situation]
    status = st.compose_status(None, obs, None, 3, NOW, plan=PLAN)
    assert [c.type for c in status.conditions] == list(tbl.CONDITION_TYPES)
    assert tuple(c.status for c in status.conditions) == statuses
    by_type = {c.type: c for c in status.conditions}
    assert by_type[why_type].reason == why_reason
    assert by_type[why_type].message == obs.message  # the observation's sentence, verbatim
    for cond in status.conditions:
        assert CAMEL.match(cond.reason), cond
        assert cond.message.endswith("."), cond
        assert cond.observed_generation == 3
        assert cond.last_transition_time == NOW
    assert status.observed_generation == 3
    assert status.phase == phase.value == tbl.TABLE[situation].phase.value
    assert tbl.summarize(status.conditions) is phase
    assert [s.name for s in status.steps] == list(StepName)
    assert status.steps[0].state is scheduling
    assert status.model == PLAN.model and status.concepts == PLAN.concepts
    assert status.completion_time == (obs.finished_at if obs.terminal else None)


def test_first_visit_is_all_unknown() -> None:
    status = st.initial_status(1, NOW)
    assert [(c.type, c.status) for c in status.conditions] == [
        (t, "Unknown") for t in tbl.CONDITION_TYPES
    ]
    assert status.phase == "Pending"
    assert all(s.state is StepState.PENDING for s in status.steps)


def test_last_transition_time_is_kept_while_the_status_stays() -> None:
    first = st.compose_status(None, SAMPLES[Situation.STARTING], None, 1, at(10))
    second = st.compose_status(first, SAMPLES[Situation.RUNNING], None, 1, at(20))
    times = {c.type: c.last_transition_time for c in second.conditions}
    assert times["Admitted"] == at(10)  # True, then True
    assert times["Running"] == at(20)  # False, then True
    assert times["Succeeded"] == at(10)  # Unknown, then Unknown
    # The message may change without a transition.
    third = st.compose_status(
        second,
        Observation(Situation.RUNNING, "The trainer is running: Training.", **_POD),
        None,
        2,
        at(30),
    )
    running = next(c for c in third.conditions if c.type == "Running")
    assert running.last_transition_time == at(20) and running.observed_generation == 2


def _report(
    sequence: int,
    *,
    training: StepState = StepState.RUNNING,
    epoch: int = 1,
    metrics: bool = True,
) -> TrainerReport:
    steps = [
        Step(
            name=StepName.LOADING_DATASET,
            state=StepState.SUCCEEDED,
            started_at=at(10),
            finished_at=at(20),
            message="80 train, 20 val images",
        ),
        Step(name=StepName.TRAINING, state=training, started_at=at(20)),
        Step(name=StepName.EVALUATING),
        Step(name=StepName.EXPORTING),
    ]
    return TrainerReport(
        namespace="team-a",
        model_version="pets-v1",
        steps=steps,
        progress=Progress(percent=epoch * 10, epoch=epoch, epochs=10, display=f"{epoch}/10"),
        metrics=MetricsStatus(
            selection="accuracy",
            best=BestMetric(epoch=epoch, value=0.5 + epoch / 100),
            last=EpochMetrics(epoch=epoch, accuracy=0.5 + epoch / 100, train_loss=1.0 / epoch),
        )
        if metrics
        else None,
        dataset=DatasetStatus(train=80, val=20),
        checkpoint=CheckpointStatus(
            uri="s3://kv-runs/x/checkpoints/best.pt", epoch=epoch, sha256="a" * 64, bytes=1000
        )
        if metrics
        else None,
        sequence=sequence,
    )


RUNNING = SAMPLES[Situation.RUNNING]


def test_report_is_merged() -> None:
    status = st.compose_status(
        None, RUNNING, _report(5, epoch=3), 1, NOW, report_pod="kv-pets-v1-abcde"
    )
    assert status.progress is not None and status.progress.display == "3/10"
    assert status.metrics is not None and status.metrics.best == BestMetric(epoch=3, value=0.53)
    assert status.dataset == DatasetStatus(train=80, val=20)
    assert status.checkpoint is not None and status.checkpoint.epoch == 3
    assert status.current_step is StepName.TRAINING
    assert status.last_report == ReportCursor(pod="kv-pets-v1-abcde", sequence=5)
    assert status.start_time == at(9)
    scheduling = status.steps[0]
    assert (scheduling.state, scheduling.started_at, scheduling.finished_at) == (
        StepState.SUCCEEDED,
        at(5),
        at(9),
    )


@pytest.mark.parametrize("sequence", [3, 5])
def test_stale_reports_are_dropped(sequence: int) -> None:
    newer = st.compose_status(
        None, RUNNING, _report(5, epoch=3), 1, NOW, report_pod="kv-pets-v1-abcde"
    )
    again = st.compose_status(
        newer, RUNNING, _report(sequence, epoch=2), 1, NOW, report_pod="kv-pets-v1-abcde"
    )
    assert again.progress == newer.progress and again.metrics == newer.metrics
    assert again.last_report == newer.last_report


def test_a_new_attempt_reports_afresh_but_an_old_pod_cannot() -> None:
    first = st.compose_status(
        None, RUNNING, _report(40, epoch=4), 1, NOW, report_pod="kv-pets-v1-abcde"
    )
    new_attempt = Observation(
        Situation.RUNNING,
        "The trainer is running.",
        job_name="kv-pets-v1",
        pod_name="kv-pets-v1-zzzzz",
    )
    # The new Pod's sequence starts over; it is its first report, from the Job's latest Pod.
    fresh = _report(1, epoch=4, metrics=False)
    second = st.compose_status(first, new_attempt, fresh, 1, NOW, report_pod="kv-pets-v1-zzzzz")
    assert second.last_report == ReportCursor(pod="kv-pets-v1-zzzzz", sequence=1)
    # What the new attempt does not know yet is kept from the earlier one.
    assert second.metrics == first.metrics and second.checkpoint == first.checkpoint
    # The old Pod's last words, late, are stale.
    late = st.compose_status(
        second, new_attempt, _report(41, epoch=5), 1, NOW, report_pod="kv-pets-v1-abcde"
    )
    assert late.last_report == second.last_report and late.progress == second.progress


def test_unschedulable_pod_shows_in_the_scheduling_step() -> None:
    status = st.compose_status(None, SAMPLES[Situation.UNSCHEDULABLE], None, 1, NOW)
    scheduling = status.steps[0]
    assert scheduling.state is StepState.PENDING
    assert scheduling.message == "0/1 nodes are available: 1 Insufficient nvidia.com/gpu."
    assert scheduling.started_at is None
    assert status.start_time is None
    assert status.current_step is StepName.SCHEDULING


def test_pod_pending_runs_the_scheduling_step() -> None:
    status = st.compose_status(None, SAMPLES[Situation.POD_PENDING], None, 1, NOW)
    scheduling = status.steps[0]
    assert (scheduling.state, scheduling.started_at) == (StepState.RUNNING, at(5))
    assert status.current_step is StepName.SCHEDULING


def test_failure_fails_the_running_step_and_skips_the_rest() -> None:
    running = st.compose_status(None, RUNNING, _report(5), 1, at(30))
    failed = st.compose_status(running, SAMPLES[Situation.OOM_KILLED], None, 1, at(50))
    states = {s.name: s.state for s in failed.steps}
    assert states == {
        StepName.SCHEDULING: StepState.SUCCEEDED,
        StepName.LOADING_DATASET: StepState.SUCCEEDED,
        StepName.TRAINING: StepState.FAILED,
        StepName.EVALUATING: StepState.SKIPPED,
        StepName.EXPORTING: StepState.SKIPPED,
    }
    training = failed.steps[2]
    assert training.finished_at == at(40) and training.message is not None
    assert "16Gi" in training.message
    assert failed.completion_time == at(40) and failed.current_step is None


def test_deadline_while_unschedulable_fails_scheduling() -> None:
    stuck = st.compose_status(None, SAMPLES[Situation.UNSCHEDULABLE], None, 1, at(30))
    failed = st.compose_status(stuck, SAMPLES[Situation.DEADLINE_EXCEEDED], None, 1, at(70))
    assert [s.state for s in failed.steps] == [StepState.FAILED] + [StepState.SKIPPED] * 4
    assert failed.start_time is None


def test_success_completes_every_step() -> None:
    running = st.compose_status(None, RUNNING, _report(5), 1, at(30))
    done = st.compose_status(running, SAMPLES[Situation.SUCCEEDED], None, 1, at(301))
    assert [s.state for s in done.steps] == [StepState.SUCCEEDED] * 5
    assert done.completion_time == at(300) and done.phase == "Succeeded"


def test_suspend_pauses_the_running_step() -> None:
    running = st.compose_status(None, RUNNING, _report(5), 1, at(30))
    paused = st.compose_status(running, SAMPLES[Situation.SUSPENDED], None, 2, at(40))
    training = paused.steps[2]
    assert (training.state, training.started_at) == (StepState.PENDING, None)
    assert paused.steps[1].state is StepState.SUCCEEDED  # what is done stays done
    assert paused.current_step is None and paused.phase == "Suspended"
    assert paused.metrics == running.metrics


def test_a_finished_training_stays_finished_when_its_job_is_gone() -> None:
    done = st.compose_status(None, SAMPLES[Situation.SUCCEEDED], None, 1, at(301))
    later = st.compose_status(done, SAMPLES[Situation.STARTING], None, 2, at(900))
    assert later.phase == "Succeeded"
    assert later.conditions[3].status == "True"
    assert all(c.observed_generation == 2 for c in later.conditions)
    assert st.is_finished(later) and not st.is_finished(None)


def test_progress_starts_from_the_plan() -> None:
    status = st.compose_status(None, SAMPLES[Situation.STARTING], None, 1, NOW, plan=PLAN)
    assert status.progress == Progress(percent=0, epoch=0, epochs=10, display="0/10")


def _without_transition_times(status: ModelVersionStatus) -> dict[str, Any]:
    data = status.model_dump()
    for cond in data["conditions"]:
        cond.pop("last_transition_time")
    return data


def test_status_is_rebuilt_by_observation() -> None:
    """Blank the status, observe the same world: the same status, but for when each condition
    last changed (a rebuild cannot know it)."""
    history: list[tuple[Observation, TrainerReport | None, datetime]] = [
        (SAMPLES[Situation.QUEUED], None, at(1)),
        (SAMPLES[Situation.STARTING], None, at(2)),
        (SAMPLES[Situation.UNSCHEDULABLE], None, at(3)),
        (SAMPLES[Situation.POD_PENDING], None, at(5)),
        (RUNNING, _report(1, epoch=1), at(10)),
        (RUNNING, _report(2, epoch=2), at(20)),
        (RUNNING, _report(3, epoch=3), at(30)),
    ]
    status: ModelVersionStatus | None = None
    for obs, report, now in history:
        status = st.compose_status(status, obs, report, 1, now, plan=PLAN, report_pod="p")
    assert status is not None
    rebuilt = st.compose_status(
        None, RUNNING, _report(3, epoch=3), 1, at(30), plan=PLAN, report_pod="p"
    )
    assert _without_transition_times(rebuilt) == _without_transition_times(status)
    # And for an outcome (terminal observations carry their own times).
    final = st.compose_status(status, SAMPLES[Situation.FAILED], None, 1, at(41), plan=PLAN)
    again = st.compose_status(
        None, SAMPLES[Situation.FAILED], _report(3, epoch=3), 1, at(41), plan=PLAN, report_pod="p"
    )
    assert _without_transition_times(again) == _without_transition_times(final)


@pytest.mark.parametrize(
    ("statuses", "phase"),
    [
        ({"Succeeded": T, "Failed": F}, Phase.SUCCEEDED),
        ({"Failed": T, "Suspended": T}, Phase.FAILED),
        ({"Suspended": T, "Running": T}, Phase.SUSPENDED),
        ({"Running": T}, Phase.RUNNING),
        ({"Admitted": F}, Phase.QUEUED),
        ({"Admitted": U}, Phase.PENDING),
        ({}, Phase.PENDING),
    ],
)
def test_summarize(statuses: dict[str, str], phase: Phase) -> None:
    conditions = st.initial_status(1, NOW).conditions
    for cond in conditions:
        if cond.type in statuses:
            cond.status = statuses[cond.type]  # type: ignore[assignment]
    assert tbl.summarize(conditions) is phase


def test_docs_hold_the_table() -> None:
    text = DOC.read_text()
    start, end = "<!-- status-table:start -->\n", "<!-- status-table:end -->"
    assert start in text and end in text
    documented = text.split(start, 1)[1].split(end, 1)[0]
    assert documented == tbl.markdown_table(), (
        "docs/operator-status.md is out of date; "
        "paste statustable.markdown_table() between the markers"
    )


def test_a_resumed_attempt_loading_again_never_moves_progress_back() -> None:
    first = st.compose_status(
        None, RUNNING, _report(40, epoch=2), 1, NOW, report_pod="kv-pets-v1-abcde"
    )
    second_pod = Observation(
        Situation.RUNNING, "The trainer is running.", job_name="kv-pets-v1", pod_name="kv-pets-v1-z"
    )
    loading = _report(1, epoch=0, metrics=False)
    second = st.compose_status(first, second_pod, loading, 1, NOW, report_pod="kv-pets-v1-z")
    assert second.last_report == ReportCursor(pod="kv-pets-v1-z", sequence=1)
    assert second.progress == first.progress and second.progress is not None
    assert second.progress.epoch == 2
    onwards = st.compose_status(
        second, second_pod, _report(2, epoch=3), 1, NOW, report_pod="kv-pets-v1-z"
    )
    assert onwards.progress is not None and onwards.progress.epoch == 3


def test_attempts_and_the_last_failure_survive_the_next_attempt() -> None:
    failure = podstate.PodFailure("TrainingFailed", "The loss is nan.", 1)
    retrying = Observation(
        Situation.RUNNING,
        "The trainer is running.",
        job_name="kv-pets-v1",
        attempts=podstate.Attempts(2, failure, 1, at(50)),
    )
    status = st.compose_status(None, retrying, None, 1, NOW)
    assert status.attempts == 2
    assert status.last_failure == AttemptFailure(
        attempt=1,
        reason="TrainingFailed",
        message="The loss is nan.",
        exit_code=1,
        finished_at=at(50),
    )
    # The Job's Pods are gone (its TTL): what the status says stays.
    done = st.compose_status(status, SAMPLES[Situation.SUCCEEDED], None, 1, at(300))
    assert done.attempts == 2 and done.last_failure == status.last_failure
    assert st.compose_status(done, SAMPLES[Situation.STARTING], None, 1, at(900)).attempts == 2
