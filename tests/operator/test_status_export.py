"""The serving bundle in a ModelVersion's status (issue 14): a report's ``export`` reaches
``status.export`` under the same staleness rules as the evaluation, stays once the training
is finished and after the Job is gone, and is worth one ``Exported`` Event."""

from __future__ import annotations

from kubevision_api.contract import StepName
from kubevision_api.export import ExportArtifact, ExportStatus
from kubevision_api.progress import TrainerReport
from kubevision_api.status import ModelVersionStatus, Progress, ReportCursor, Step, StepState
from kubevision_operator import status as st
from kubevision_operator.observe import Observation, Situation
from tests.operator.operator_helpers import at

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
BUNDLE = "s3://kv-runs/team-a/pets-v1/export"


def _export(onnx_bytes: int = 1_000_000, digest: str = "a") -> ExportStatus:
    def artifact(format_: str, path: str, size: int, fill: str) -> ExportArtifact:
        return ExportArtifact(format=format_, uri=f"{BUNDLE}/{path}", sha256=fill * 64, bytes=size)

    return ExportStatus(
        uri=f"{BUNDLE}/",
        artifacts=[
            artifact("onnx", "model.onnx", onnx_bytes, digest),
            artifact("preprocessing", "preprocessing.json", 300, "b"),
            artifact("postprocessing", "postprocessing.json", 400, "c"),
            artifact("triton-config", "triton/pets-v1/config.pbtxt", 500, "d"),
            artifact("triton-onnx", "triton/pets-v1/1/model.onnx", onnx_bytes, digest),
        ],
    )


def _report(sequence: int, export: ExportStatus | None) -> TrainerReport:
    exporting = StepState.SUCCEEDED if export is not None else StepState.RUNNING
    return TrainerReport(
        namespace="team-a",
        model_version="pets-v1",
        steps=[
            Step(name=StepName.LOADING_DATASET, state=StepState.SUCCEEDED),
            Step(name=StepName.TRAINING, state=StepState.SUCCEEDED),
            Step(name=StepName.EVALUATING, state=StepState.SUCCEEDED),
            Step(name=StepName.EXPORTING, state=exporting),
        ],
        progress=Progress(percent=100, epoch=2, epochs=2, display="2/2"),
        export=export,
        sequence=sequence,
    )


def _compose(
    previous: ModelVersionStatus | None,
    report: TrainerReport | None,
    observation: Observation = RUNNING,
    pod: str = POD,
) -> ModelVersionStatus:
    return st.compose_status(previous, observation, report, 1, at(100), report_pod=pod)


def test_the_reported_export_reaches_the_status() -> None:
    status = _compose(None, _report(7, _export()))
    assert status.export == _export()
    wire = status.wire()["export"]
    assert wire["uri"] == f"{BUNDLE}/"
    assert wire["artifacts"][0] == {
        "format": "onnx",
        "uri": f"{BUNDLE}/model.onnx",
        "sha256": "a" * 64,
        "bytes": 1_000_000,
    }
    assert [a["format"] for a in wire["artifacts"]] == [
        "onnx",
        "preprocessing",
        "postprocessing",
        "triton-config",
        "triton-onnx",
    ]
    # What the API server hands back reads back as the same status.
    assert ExportStatus.model_validate(wire) == _export()


def test_a_stale_report_never_replaces_the_export() -> None:
    held = _compose(None, _report(7, _export()))
    for sequence in (6, 7):
        again = _compose(held, _report(sequence, _export(5, "e")))
        assert again.export == _export()
        assert again.last_report == ReportCursor(pod=POD, sequence=7)
    newer = _compose(held, _report(8, _export(2_000_000, "f")))
    assert newer.export == _export(2_000_000, "f")
    # A report without it (the next attempt's first) keeps it.
    assert _compose(newer, _report(9, None)).export == _export(2_000_000, "f")
    retry = Observation(Situation.RUNNING, "The trainer is running.", pod_name="kv-pets-v1-zz")
    fresh = _compose(newer, _report(1, None), retry, pod="kv-pets-v1-zz")
    assert fresh.export == _export(2_000_000, "f")
    # The old Pod's late words are stale.
    assert _compose(fresh, _report(10, _export()), retry, pod=POD).export == fresh.export


def test_a_finished_training_keeps_its_export() -> None:
    running = _compose(None, _report(3, _export()))
    done = _compose(running, None, SUCCEEDED)
    assert done.phase == "Succeeded" and done.export == _export()
    gone = Observation(Situation.STARTING, "The training Job is being created.")
    assert st.compose_status(done, gone, None, 2, at(900)).export == _export()
    # Rebuildable: a blank status composes the same export from the report.
    assert _compose(None, _report(3, _export()), SUCCEEDED).export == _export()


def test_exported_event_once_per_export() -> None:
    before = _compose(None, _report(2, None))
    assert st.status_events(None, before) == []
    after = _compose(before, _report(3, _export()))
    message = (
        f"5 files, 2001200 bytes, in {BUNDLE}/: onnx, preprocessing, postprocessing, "
        "triton-config, triton-onnx."
    )
    assert st.status_events(before, after) == [st.StatusEvent("Normal", "Exported", message)]
    # A later report that repeats it, and the end of the training, post nothing more.
    repeated = _compose(after, _report(4, _export()))
    assert st.status_events(after, repeated) == []
    assert st.status_events(repeated, _compose(repeated, None, SUCCEEDED)) == []
    # A retried attempt that exports another bundle posts it again.
    changed = _compose(repeated, _report(5, _export(7, "9")))
    assert [e.reason for e in st.status_events(repeated, changed)] == ["Exported"]


def test_exported_message_of_one_file_and_of_none() -> None:
    one = ExportStatus(
        uri=f"{BUNDLE}/",
        artifacts=[
            ExportArtifact(format="onnx", uri=f"{BUNDLE}/model.onnx", sha256="0" * 64, bytes=9)
        ],
    )
    assert st.exported_message(one) == f"1 file, 9 bytes, in {BUNDLE}/: onnx."
    assert st.exported_message(ExportStatus(uri=f"{BUNDLE}/")) == f"0 files, 0 bytes, in {BUNDLE}/."
