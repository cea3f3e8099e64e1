"""A ModelVersion's status, composed from one observation and the trainer's latest report.

The row of ``statustable.TABLE`` for the observation's situation says what each condition
becomes and what happens to the steps; this module applies it, merges the report and carries
over what the previous status knew (docs/operator-status.md, Rules of ``compose_status``).
Nothing branches on ``phase``; it exists for the printer column. :func:`status_events` says
which Events a new status is worth. Pure: the caller passes ``now``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Final

from kubevision_api.contract import StepName
from kubevision_api.evaluation import HIGHER_IS_BETTER, EvaluationStatus, EvaluationSummary
from kubevision_api.export import ExportStatus
from kubevision_api.meta import Condition, transition_time
from kubevision_api.plan import TrainingPlan
from kubevision_api.progress import TrainerReport
from kubevision_api.status import (
    AttemptFailure,
    ModelVersionStatus,
    Progress,
    ReportCursor,
    Step,
    StepState,
)
from kubevision_operator import crdcheck, podstate
from kubevision_operator.situation import Observation, Situation
from kubevision_operator.statustable import CONDITION_TYPES, TABLE, Row, StepPolicy, summarize

TRAINER_STEPS: Final = tuple(s for s in StepName if s is not StepName.SCHEDULING)
_UNFINISHED: Final = (StepState.PENDING, StepState.RUNNING)


def is_finished(status: ModelVersionStatus | None) -> bool:
    """Whether the training is over (Succeeded or Failed is True). A finished ModelVersion
    never gets a new Job, even when its Job is gone (ttlSecondsAfterFinished)."""
    if status is None:
        return False
    return any(c.type in ("Succeeded", "Failed") and c.status == "True" for c in status.conditions)


def next_attempt(status: ModelVersionStatus | None) -> int:
    """The attempt number of a new Job: one more than the attempts the status counts (1 for
    the first). A multi-Pod training's Job carries it (``gang``)."""
    return (status.attempts or 0) + 1 if status is not None else 1


def between_attempts(status: ModelVersionStatus | None) -> bool:
    """Whether the status says that the latest attempt failed, and so that a new Job is due
    (a gang restart: the failed attempt's Job is deleted and the next one created)."""
    if status is None or status.last_failure is None:
        return False
    return status.last_failure.attempt == (status.attempts or 0)


def initial_status(generation: int, now: datetime) -> ModelVersionStatus:
    """The first visit's status: every condition Unknown, before anything is observed."""
    conditions = [
        Condition(
            type=ctype,
            status="Unknown",
            reason="Reconciling",
            message="The operator has not observed the training yet.",
            last_transition_time=now,
            observed_generation=generation,
        )
        for ctype in CONDITION_TYPES
    ]
    return ModelVersionStatus(
        phase=summarize(conditions).value,
        observed_generation=generation,
        conditions=conditions,
        steps=[Step(name=name) for name in StepName],
    )


def _conditions(
    row: Row,
    observation: Observation,
    previous: list[Condition],
    generation: int,
    now: datetime,
) -> list[Condition]:
    before = {c.type: c for c in previous}
    values = {
        "reason": observation.reason or observation.situation.value,
        "message": observation.message,
        "position": observation.position,
    }
    out = []
    for ctype, cell in zip(CONDITION_TYPES, row.conditions, strict=True):
        out.append(
            Condition(
                type=ctype,
                status=cell.status,
                reason=cell.reason.format(**values),
                message=cell.message.format(**values),
                last_transition_time=transition_time(before.get(ctype), cell.status, now),
                observed_generation=generation,
            )
        )
    return out


def _accepts(
    report: TrainerReport | None,
    report_pod: str | None,
    cursor: ReportCursor | None,
    observation: Observation,
) -> bool:
    """Whether ``report`` is newer than what the status holds. Within one Pod the sequence
    decides; a report from another Pod is newer only when that Pod is the Job's latest
    attempt (a terminating old Pod's last words are stale)."""
    if report is None:
        return False
    if cursor is None:
        return True
    if report_pod and cursor.pod and report_pod != cursor.pod:
        return report_pod == observation.pod_name
    return report.sequence > cursor.sequence


def _scheduling(row: Row, observation: Observation, previous: Step | None) -> Step:
    state = row.scheduling
    if state is None:
        state = StepState.SUCCEEDED if observation.started_at else StepState.PENDING
    same = previous is not None and previous.state is state
    started = observation.scheduled_at or (previous.started_at if same and previous else None)
    if state is StepState.RUNNING:
        return Step(
            name=StepName.SCHEDULING,
            state=state,
            started_at=started,
            message=observation.message,
        )
    if state is StepState.SUCCEEDED:
        finished = observation.started_at or (previous.finished_at if same and previous else None)
        return Step(name=StepName.SCHEDULING, state=state, started_at=started, finished_at=finished)
    # Pending (no start time: the scheduler has not bound the Pod) or Skipped; only an
    # unschedulable Pod has something to say: the scheduler's message.
    message = observation.message if observation.situation is Situation.UNSCHEDULABLE else None
    return Step(name=StepName.SCHEDULING, state=state, message=message)


def _apply_policy(
    policy: StepPolicy, steps: list[Step], observation: Observation, now: datetime
) -> list[Step]:
    """``steps`` is Scheduling then the trainer's steps; PAUSE and SUCCEED touch only the
    trainer's, FAIL and SKIP all of them."""
    out: list[Step] = []
    failed = any(s.state is StepState.FAILED for s in steps)
    for index, original in enumerate(steps):
        step = original
        trainer = index > 0
        if policy is StepPolicy.PAUSE and trainer and step.state is StepState.RUNNING:
            step = Step(name=step.name, state=StepState.PENDING, message=observation.message)
        elif policy is StepPolicy.SUCCEED and trainer and step.state in _UNFINISHED:
            step = step.model_copy(
                update={
                    "state": StepState.SUCCEEDED,
                    "finished_at": step.finished_at or observation.finished_at,
                }
            )
        elif policy is StepPolicy.FAIL and step.state in _UNFINISHED:
            if failed:
                step = Step(name=step.name, state=StepState.SKIPPED)
            else:
                failed = True
                step = step.model_copy(
                    update={
                        "state": StepState.FAILED,
                        "finished_at": observation.finished_at or now,
                        "message": observation.message,
                    }
                )
        elif policy is StepPolicy.SKIP:
            step = Step(name=step.name, state=StepState.SKIPPED)
        out.append(step)
    return out


def _current_step(steps: list[Step], observation: Observation) -> StepName | None:
    for step in steps:
        if step.state is StepState.RUNNING:
            return step.name
    # An unschedulable Pod is stuck in Scheduling: the column should say where.
    return StepName.SCHEDULING if observation.situation is Situation.UNSCHEDULABLE else None


def compose_status(
    previous: ModelVersionStatus | None,
    observation: Observation,
    report: TrainerReport | None,
    generation: int,
    now: datetime,
    *,
    plan: TrainingPlan | None = None,
    report_pod: str | None = None,
    schema_problem: str | None = None,
) -> ModelVersionStatus:
    """The status that ``observation`` and ``report`` make true.

    Args:
        previous: the status as stored (None or blank on the first visit). Only
            lastTransitionTime, the merged report, times that the observation cannot see
            again, the admission snapshot and a finished outcome are carried over.
        observation: what :func:`observe.observe` found now.
        report: the trainer's latest report; merged only when newer than ``previous``'s.
        generation: the ModelVersion's metadata.generation.
        now: the time of this composition (condition transitions, failures).
        plan: the resolved plan: its model id and concepts are the admission snapshot.
        report_pod: the Pod whose token sent ``report`` (the status endpoint's TokenReview).
        schema_problem: the start-up check's message while the installed CRDs are not the
            operator's (``crdcheck``): a ``CRDsCurrent`` False condition; None: none.

    A finished training (Succeeded or Failed True) stays finished: an observation that is
    not an outcome (its Job was deleted after ttlSecondsAfterFinished) changes nothing but
    the generation.
    """
    prev = previous or ModelVersionStatus()
    cursor = previous.last_report if previous is not None else None
    if is_finished(prev) and not observation.terminal:
        kept = ModelVersionStatus.model_validate(
            {**prev.model_dump(), "last_report": cursor, "observed_generation": generation}
        )
        for cond in kept.conditions:
            cond.observed_generation = generation
        kept.conditions = crdcheck.crd_condition(kept.conditions, schema_problem, generation, now)
        return kept

    row = TABLE[observation.situation]
    conditions = _conditions(row, observation, prev.conditions, generation, now)
    # The table's conditions, and CRDsCurrent (carried over from prev, or removed) after them.
    conditions = crdcheck.crd_condition(
        [*conditions, *(c for c in prev.conditions if c.type == crdcheck.CONDITION_TYPE)],
        schema_problem,
        generation,
        now,
    )
    before = {s.name: s for s in prev.steps}
    trainer_steps = {name: before.get(name) or Step(name=name) for name in TRAINER_STEPS}
    progress, metrics, dataset, checkpoint, evaluation, export = (
        prev.progress,
        prev.metrics,
        prev.dataset,
        prev.checkpoint,
        prev.evaluation,
        prev.export,
    )
    if report is not None and _accepts(report, report_pod, cursor, observation):
        # A report is a whole snapshot: its steps replace ours; fields it does not know yet
        # (a new attempt before its first epoch) keep what the earlier attempts found.
        reported = {s.name: s for s in report.steps}
        trainer_steps = {name: reported.get(name) or Step(name=name) for name in TRAINER_STEPS}
        # A new attempt reports from epoch 0 until it has read last.pt: progress never goes
        # back below what an earlier report showed.
        if progress is None or report.progress.epoch >= progress.epoch:
            progress = report.progress
        metrics = report.metrics or metrics
        dataset = report.dataset or dataset
        checkpoint = report.checkpoint or checkpoint
        evaluation = report.evaluation or evaluation
        export = report.export or export
        cursor = ReportCursor(pod=report_pod, sequence=report.sequence)
    if progress is None and plan is not None:
        epochs = plan.spec.training.epochs
        progress = Progress(epochs=epochs, display=f"0/{epochs}")
    scheduling = _scheduling(row, observation, before.get(StepName.SCHEDULING))
    steps = _apply_policy(row.steps, [scheduling, *trainer_steps.values()], observation, now)
    start = [t for t in (prev.start_time, observation.started_at) if t is not None]
    seen = observation.attempts
    return ModelVersionStatus(
        phase=summarize(conditions).value,
        observed_generation=generation,
        conditions=conditions,
        model=prev.model or (plan.model if plan else None),
        concepts=prev.concepts or (list(plan.concepts) if plan else []),
        steps=steps,
        current_step=_current_step(steps, observation),
        progress=progress,
        metrics=metrics,
        dataset=dataset,
        checkpoint=checkpoint,
        evaluation=evaluation,
        export=export,
        job_name=observation.job_name or prev.job_name,
        start_time=min(start) if start else None,
        completion_time=observation.finished_at if observation.terminal else None,
        last_report=cursor,
        attempts=max(prev.attempts or 0, seen.count if seen else 0) or None,
        last_failure=_last_failure(prev.last_failure, seen),
    )


def _last_failure(
    previous: AttemptFailure | None, seen: podstate.Attempts | None
) -> AttemptFailure | None:
    """The latest failed attempt: the one the Pods show, unless the status already holds a
    later one (the Pods of earlier attempts go with their Job)."""
    if seen is None or seen.failure is None or seen.failed_attempt is None:
        return previous
    if previous is not None and previous.attempt > seen.failed_attempt:
        return previous
    return AttemptFailure(
        attempt=seen.failed_attempt,
        reason=seen.failure.reason,
        message=seen.failure.message,
        exit_code=seen.failure.exit_code,
        finished_at=seen.failed_at,
    )


@dataclass(frozen=True)
class StatusEvent:
    """An Event that a status change is worth (``render.render_event`` makes it).

    Attributes:
        type: Normal or Warning.
        reason: CamelCase.
        message: one or two sentences for people.
    """

    type: str
    reason: str
    message: str


def status_events(
    previous: ModelVersionStatus | None, new: ModelVersionStatus
) -> list[StatusEvent]:
    """The Events of the change from ``previous`` to ``new`` (phase events aside, which need
    the observation): a Warning for a failed attempt the status shows for the first time
    (its reason, "Attempt N failed: ..."), ``Evaluated`` when an evaluation lands or
    changes (a retried attempt evaluates again), and ``Exported`` likewise for the serving
    bundle (``status.export``); a report that repeats either posts nothing."""
    events = []
    failure = new.last_failure
    before = previous.last_failure if previous is not None else None
    if failure is not None and (before is None or before.attempt < failure.attempt):
        events.append(
            StatusEvent(
                "Warning", failure.reason, f"Attempt {failure.attempt} failed: {failure.message}"
            )
        )
    evaluation = new.evaluation
    if evaluation is not None and (previous is None or previous.evaluation != evaluation):
        events.append(StatusEvent("Normal", "Evaluated", evaluated_message(evaluation)))
    export = new.export
    if export is not None and (previous is None or previous.export != export):
        events.append(StatusEvent("Normal", "Exported", exported_message(export)))
    return events


def _figure(summary: EvaluationSummary) -> str:
    value = "undefined" if summary.value is None else f"{summary.value:.4f}"
    return f"{summary.indicator.value} {value} on {summary.images} {summary.split.value} images"


def evaluated_message(evaluation: EvaluationStatus) -> str:
    """The ``Evaluated`` Event's message, e.g. "meanOptimalLRP 0.6125 on 20 validation images
    (lower is better); test: meanOptimalLRP 0.6400 on 10 test images. Figures in
    s3://runs/v1/evaluation.json." Values with 4 decimals; "undefined" for a null value."""
    message = _figure(evaluation.validation)
    if not HIGHER_IS_BETTER[evaluation.indicator]:
        message += " (lower is better)"
    if evaluation.test is not None:
        message += f"; test: {_figure(evaluation.test)}"
    return f"{message}. Figures in {evaluation.artifacts.evaluation}."


def exported_message(export: ExportStatus) -> str:
    """The ``Exported`` Event's message, e.g. "5 files, 1234567 bytes, in
    s3://runs/v1/export/: onnx, preprocessing, postprocessing, triton-config, triton-onnx."
    Formats in the status's order, each once."""
    formats = list(dict.fromkeys(artifact.format for artifact in export.artifacts))
    size = sum(artifact.bytes for artifact in export.artifacts)
    files = len(export.artifacts)
    message = f"{files} file{'s' if files != 1 else ''}, {size} bytes, in {export.uri}"
    return f"{message}: {', '.join(formats)}." if formats else f"{message}."
