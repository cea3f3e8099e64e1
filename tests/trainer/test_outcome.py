"""Every error a run can end with maps to one outcome and one line (``outcome.classify``)."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from kubevision_api.contract import Outcome, StorageRole
from kubevision_api.errors import InputError
from kubevision_trainer import engine, outcome, preflight, storage, upload

DENIED = ClientError({"Error": {"Code": "AccessDenied", "Message": "no"}}, "PutObject")


@pytest.mark.parametrize(
    ("error", "expected", "line"),
    [
        (InputError("s3://b/a.png", "empty file (0 bytes)"), Outcome.INVALID_INPUT, None),
        (engine.PreemptedError("stopped at epoch 2, batch 3"), Outcome.PREEMPTED, None),
        (engine.NonFiniteError("the loss is nan"), Outcome.NON_FINITE_LOSS, None),
        (engine.TrainingError("diverged"), Outcome.TRAINING_FAILED, None),
        (
            upload.UploadError("s3://b/best.pt", "part 2 of 5 failed"),
            Outcome.CHECKPOINT_UPLOAD_FAILED,
            None,
        ),
        (
            preflight.PreflightError("s3://b/run/", StorageRole.OUTPUT, DENIED, context="x: "),
            Outcome.STORAGE_CHECK_FAILED,
            "x: s3://b/run/: AccessDenied: An error occurred (AccessDenied) when calling the "
            "PutObject operation: no",
        ),
        (
            storage.StorageError("file:///d/metrics.jsonl", StorageRole.OUTPUT, OSError("full")),
            Outcome.STORAGE_ERROR,
            "file:///d/metrics.jsonl: OSError: full",
        ),
        (
            EndpointConnectionError(endpoint_url="http://s3:9000"),
            Outcome.STORAGE_ERROR,
            'EndpointConnectionError: Could not connect to the endpoint URL: "http://s3:9000"',
        ),
        (RuntimeError("CUDA out of memory"), Outcome.ERROR, "RuntimeError: CUDA out of memory"),
    ],
)
def test_classify(error: BaseException, expected: Outcome, line: str | None) -> None:
    assert isinstance(error, outcome.HANDLED)
    ending, message = outcome.classify(error)
    assert ending is expected
    assert message == (line if line is not None else str(error))
