"""The completion record (kubevision_operator.completion): what a finished status leaves in
the ModelVersion's annotation, and what is read back from it (docs/operator-status.md, A
finished version stays finished)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from kubevision_api.status import ModelVersionStatus
from kubevision_operator import completion

FINISHED: dict[str, Any] = {
    "phase": "Succeeded",
    "observedGeneration": 2,
    "conditions": [
        {
            "type": "Succeeded",
            "status": "True",
            "reason": "TrainingSucceeded",
            "message": "best accuracy 0.9 at epoch 3",
            "lastTransitionTime": "2026-12-07T00:00:00Z",
        }
    ],
    "concepts": ["zero", "one"],
    "metrics": {"selection": "accuracy", "best": {"epoch": 3, "value": 0.9}},
    "checkpoint": {
        "uri": "s3://runs/a/checkpoints/best.pt",
        "epoch": 3,
        "sha256": "0" * 64,
        "bytes": 1234,
    },
    "jobName": "kv-a",
    "attempts": 1,
    "lastReport": {"pod": "kv-a-x", "sequence": 9},
}


def _obj(annotation: str | None, generation: int = 2) -> dict[str, Any]:
    meta: dict[str, Any] = {"namespace": "ns", "name": "a", "generation": generation}
    if annotation is not None:
        meta["annotations"] = {completion.ANNOTATION: annotation, "other": "kept"}
    return {"metadata": meta}


def test_a_finished_status_round_trips_without_its_report_cursor() -> None:
    status = ModelVersionStatus.model_validate(FINISHED)
    text = completion.record(status, 2)
    assert json.loads(text)["generation"] == 2
    found = completion.read(_obj(text))
    assert found is not None and found.outcome == "Succeeded"
    expected = {k: v for k, v in status.wire().items() if k != "lastReport"}
    assert found.status.wire() == expected
    assert found.status.checkpoint == status.checkpoint
    assert completion.is_recorded(completion.read(_obj(text)), status, 2)


def test_only_a_finished_status_is_recorded() -> None:
    running = ModelVersionStatus.model_validate({**FINISHED, "conditions": [], "phase": "Running"})
    with pytest.raises(ValueError, match="finished"):
        completion.record(running, 2)


def test_another_generations_record_is_not_this_ones() -> None:
    status = ModelVersionStatus.model_validate(FINISHED)
    text = completion.record(status, 2)
    assert completion.read(_obj(text, generation=3)) is None
    assert not completion.is_recorded(completion.read(_obj(text, generation=3)), status, 3)
    assert completion.read(_obj(None)) is None


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        '{"generation": 2}',
        '{"generation": "x", "status": {}}',
        # Parses, but records no outcome: not a reason to stop training.
        '{"generation": 2, "status": {"phase": "Succeeded"}}',
    ],
)
def test_a_record_that_does_not_parse_is_ignored(
    text: str, caplog: pytest.LogCaptureFixture
) -> None:
    assert completion.read(_obj(text)) is None
    assert completion.ANNOTATION in caplog.text


def test_a_large_status_keeps_what_a_restore_needs() -> None:
    concepts = [f"concept-{i:05d}-{'x' * 40}" for i in range(2000)]
    status = ModelVersionStatus.model_validate({**FINISHED, "concepts": concepts})
    text = completion.record(status, 2)
    assert len(text) <= completion.MAX_RECORD_CHARS
    found = completion.read(_obj(text))
    assert found is not None
    assert found.status.concepts == []
    assert found.status.checkpoint == status.checkpoint
    assert found.status.metrics == status.metrics
    assert found.status.conditions == status.conditions
