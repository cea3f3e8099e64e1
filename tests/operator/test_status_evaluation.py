"""The evaluation in a ModelVersion's status: a report's ``evaluation`` reaches the status under
the same staleness rules as its other parts, stays once the training is finished, is worth one
``Evaluated`` Event, and shows in the View's models library."""

from __future__ import annotations

from kubevision_api.contract import StepName
from kubevision_api.evaluation import (
    EvaluatedSplit,
    EvaluationArtifacts,
    EvaluationStatus,
    EvaluationSummary,
    Indicator,
)
from kubevision_api.progress import TrainerReport
from kubevision_api.status import (
    AttemptFailure,
    ModelVersionStatus,
    Progress,
    ReportCursor,
    Step,
    StepState,
)
from kubevision_api.view import ModelSummary
from kubevision_operator import status as st
from kubevision_operator.observe import Observation, Situation
from kubevision_operator.viewstatus import compose_view_status
from tests.operator.operator_helpers import at, modelversion, view

POD = "kv-pets-v1-abcde"
RUNNING = Observation(
    Situation.RUNNING,
    "The trainer is running.",
    job_name="kv-pets-v1",
    pod_name=POD,
    scheduled_at=at(5),
    started_at=at(9),
)
SUCCEEDED = Observation(
    Situation.SUCCEEDED,
    "The training finished.",
    job_name="kv-pets-v1",
    pod_name=POD,
    scheduled_at=at(5),
    started_at=at(9),
    finished_at=at(300),
)
RUNS = "s3://kv-runs/team-a/pets-v1"


def _accuracy(value: float | None, images: int = 20) -> EvaluationStatus:
    summary = EvaluationSummary(
        split=EvaluatedSplit.VALIDATION,
        images=images,
        indicator=Indicator.ACCURACY,
        value=value,
        accuracy=value,
    )
    return EvaluationStatus(
        indicator=Indicator.ACCURACY,
        value=value,
        validation=summary,
        artifacts=EvaluationArtifacts(
            evaluation=f"{RUNS}/evaluation.json",
            confusion_matrix=f"{RUNS}/confusion_matrix.png",
            report=f"{RUNS}/report.png",
        ),
    )


def _olrp() -> EvaluationStatus:
    def summary(split: EvaluatedSplit, images: int, olrp: float) -> EvaluationSummary:
        return EvaluationSummary(
            split=split,
            images=images,
            indicator=Indicator.MEAN_OPTIMAL_LRP,
            value=olrp,
            map=0.25,
            mean_optimal_lrp=olrp,
        )

    return EvaluationStatus(
        indicator=Indicator.MEAN_OPTIMAL_LRP,
        value=0.6125,
        validation=summary(EvaluatedSplit.VALIDATION, 20, 0.6125),
        test=summary(EvaluatedSplit.TEST, 10, 0.64),
        artifacts=EvaluationArtifacts(
            evaluation=f"{RUNS}/evaluation.json", pr_curves=f"{RUNS}/pr_curves.png"
        ),
        test_artifacts=EvaluationArtifacts(evaluation=f"{RUNS}/test/evaluation.json"),
    )


def _report(sequence: int, evaluation: EvaluationStatus | None) -> TrainerReport:
    evaluating = StepState.SUCCEEDED if evaluation is not None else StepState.RUNNING
    return TrainerReport(
        namespace="team-a",
        model_version="pets-v1",
        steps=[
            Step(name=StepName.LOADING_DATASET, state=StepState.SUCCEEDED),
            Step(name=StepName.TRAINING, state=StepState.SUCCEEDED),
            Step(name=StepName.EVALUATING, state=evaluating),
            Step(name=StepName.EXPORTING),
        ],
        progress=Progress(percent=100, epoch=2, epochs=2, display="2/2"),
        evaluation=evaluation,
        sequence=sequence,
    )


def _compose(
    previous: ModelVersionStatus | None,
    report: TrainerReport | None,
    observation: Observation = RUNNING,
    pod: str = POD,
) -> ModelVersionStatus:
    return st.compose_status(previous, observation, report, 1, at(100), report_pod=pod)


def test_the_reported_evaluation_reaches_the_status() -> None:
    status = _compose(None, _report(7, _accuracy(0.85)))
    assert status.evaluation == _accuracy(0.85)
    wire = status.wire()["evaluation"]
    assert wire == {
        "indicator": "accuracy",
        "value": 0.85,
        "validation": {
            "split": "validation",
            "images": 20,
            "indicator": "accuracy",
            "value": 0.85,
            "accuracy": 0.85,
        },
        "artifacts": {
            "evaluation": f"{RUNS}/evaluation.json",
            "confusionMatrix": f"{RUNS}/confusion_matrix.png",
            "report": f"{RUNS}/report.png",
        },
    }
    # An undefined value is left out, as the API server prunes a null; it reads back as None.
    undefined = _compose(None, _report(7, _accuracy(None, images=0))).wire()["evaluation"]
    assert "value" not in undefined and "value" not in undefined["validation"]
    assert EvaluationStatus.model_validate(undefined).value is None


def test_a_stale_report_never_replaces_the_evaluation() -> None:
    held = _compose(None, _report(7, _accuracy(0.85)))
    for sequence in (6, 7):
        again = _compose(held, _report(sequence, _accuracy(0.1)))
        assert again.evaluation == _accuracy(0.85)
        assert again.last_report == ReportCursor(pod=POD, sequence=7)
    # A newer report from the same Pod replaces it; one without evaluation keeps it.
    newer = _compose(held, _report(8, _accuracy(0.9)))
    assert newer.evaluation == _accuracy(0.9)
    assert _compose(newer, _report(9, None)).evaluation == _accuracy(0.9)
    # A new attempt's first report (another Pod, the Job's newest) knows no evaluation yet.
    retry = Observation(Situation.RUNNING, "The trainer is running.", pod_name="kv-pets-v1-zz")
    fresh = _compose(newer, _report(1, None), retry, pod="kv-pets-v1-zz")
    assert fresh.last_report == ReportCursor(pod="kv-pets-v1-zz", sequence=1)
    assert fresh.evaluation == _accuracy(0.9)
    # The old Pod's late words are stale.
    late = _compose(fresh, _report(10, _accuracy(0.2)), retry, pod=POD)
    assert late.evaluation == _accuracy(0.9)


def test_a_finished_training_keeps_its_evaluation() -> None:
    running = _compose(None, _report(3, _olrp()))
    done = _compose(running, None, SUCCEEDED)
    assert done.phase == "Succeeded" and done.evaluation == _olrp()
    # The Job removed after ttlSecondsAfterFinished: nothing but the generation moves.
    gone = Observation(Situation.STARTING, "The training Job is being created.")
    assert st.compose_status(done, gone, None, 2, at(900)).evaluation == _olrp()
    # Rebuildable: a blank status composes the same evaluation from the report.
    assert _compose(None, _report(3, _olrp()), SUCCEEDED).evaluation == _olrp()


def test_evaluated_event_once_per_evaluation() -> None:
    before = _compose(None, _report(2, None))
    assert st.status_events(None, before) == []
    after = _compose(before, _report(3, _olrp()))
    assert st.status_events(before, after) == [
        st.StatusEvent(
            "Normal",
            "Evaluated",
            "meanOptimalLRP 0.6125 on 20 validation images (lower is better); test: "
            f"meanOptimalLRP 0.6400 on 10 test images. Figures in {RUNS}/evaluation.json.",
        )
    ]
    # A later report that repeats it, and the end of the training, post nothing more.
    repeated = _compose(after, _report(4, _olrp()))
    assert st.status_events(after, repeated) == []
    assert st.status_events(repeated, _compose(repeated, None, SUCCEEDED)) == []


def test_evaluated_message_of_a_higher_better_and_an_undefined_value() -> None:
    assert st.evaluated_message(_accuracy(0.85)) == (
        f"accuracy 0.8500 on 20 validation images. Figures in {RUNS}/evaluation.json."
    )
    assert st.evaluated_message(_accuracy(None, images=0)) == (
        f"accuracy undefined on 0 validation images. Figures in {RUNS}/evaluation.json."
    )


def test_failed_attempt_events_as_before() -> None:
    failure = AttemptFailure(attempt=1, reason="OOMKilled", message="Out of memory (16Gi).")
    previous = ModelVersionStatus(attempts=1)
    new = ModelVersionStatus(attempts=1, last_failure=failure)
    assert st.status_events(previous, new) == [
        st.StatusEvent("Warning", "OOMKilled", "Attempt 1 failed: Out of memory (16Gi).")
    ]
    assert st.status_events(new, new) == []
    second = failure.model_copy(update={"attempt": 2})
    assert st.status_events(new, ModelVersionStatus(attempts=2, last_failure=second)) == [
        st.StatusEvent("Warning", "OOMKilled", "Attempt 2 failed: Out of memory (16Gi).")
    ]


def test_models_library_shows_the_first_indicator() -> None:
    evaluated = modelversion(name="evaluated")
    evaluated.status = ModelVersionStatus(phase="Succeeded", evaluation=_olrp())
    undefined = modelversion(name="undefined")
    undefined.status = ModelVersionStatus(phase="Succeeded", evaluation=_accuracy(None, 0))
    training = modelversion(name="training")
    training.status = ModelVersionStatus(phase="Running")
    status = compose_view_status(view(), [evaluated, undefined, training], at(10))
    (entry,) = status.models
    assert entry.model_versions == [
        ModelSummary(
            model_version="evaluated", phase="Succeeded", indicator="meanOptimalLRP", value=0.6125
        ),
        ModelSummary(model_version="undefined", phase="Succeeded", indicator="accuracy"),
        ModelSummary(model_version="training", phase="Running"),
    ]
    assert status.wire()["models"][0]["modelVersions"][0] == {
        "modelVersion": "evaluated",
        "phase": "Succeeded",
        "indicator": "meanOptimalLRP",
        "value": 0.6125,
    }
