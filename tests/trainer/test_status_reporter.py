"""The status reporter POSTs whole snapshots over HTTPS with the Pod's token, throttles batch
reports, and never fails training when the operator is away."""

from __future__ import annotations

import datetime as dt
import http.server
import json
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kubevision_api.contract import StepName
from kubevision_api.evaluation import (
    Averages,
    ClassificationConcept,
    ClassificationEvaluation,
    EvaluatedSplit,
    Evaluation,
    EvaluationArtifacts,
    EvaluationStatus,
    EvaluationSummary,
    Indicator,
)
from kubevision_api.plan import StatusEndpoint
from kubevision_api.status import (
    BestMetric,
    CheckpointStatus,
    DatasetStatus,
    EpochMetrics,
    StepState,
)
from kubevision_api.view import Task
from kubevision_operator import tls
from kubevision_trainer.report.reporter import BatchEvent, ResumePoint
from kubevision_trainer.report.status import StatusReporter
from tests.trainer.trainer_helpers import free_port


def _certificate(tmp: Path) -> tuple[str, Path, Path]:
    """A CA and a certificate it signs for 127.0.0.1, as the operator makes them:
    (CA PEM, cert file, key file)."""
    now = dt.datetime.now(dt.UTC)
    ca = tls.new_ca(now)
    serving = tls.serving_certificate(ca, ["127.0.0.1"], now)
    (tmp / "tls.crt").write_bytes(serving.cert_pem)
    (tmp / "tls.key").write_bytes(serving.key_pem)
    return ca.cert_pem.decode(), tmp / "tls.crt", tmp / "tls.key"


class Received:
    def __init__(self) -> None:
        self.requests: list[tuple[str, str, dict[str, Any]]] = []
        self.event = threading.Event()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, str, Received]]:
    pem, cert, key = _certificate(tmp_path)
    received = Received()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.requests.append((self.path, self.headers["Authorization"], json.loads(body)))
            received.event.set()
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            return None

    port = free_port()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{port}", pem, received
    finally:
        httpd.shutdown()
        httpd.server_close()


def _reporter(url: str, pem: str, tmp_path: Path, clock: list[float]) -> StatusReporter:
    token = tmp_path / "token"
    token.write_text("the-token\n")
    endpoint = StatusEndpoint(url=url, ca_pem=pem, token_path=str(token))
    return StatusReporter(
        endpoint,
        namespace="team-a",
        model_version="digits",
        uid="u-1",
        epochs=2,
        interval=5.0,
        clock=lambda: clock[0],
    )


def test_snapshots_reach_the_endpoint(server: tuple[str, str, Received], tmp_path: Path) -> None:
    url, pem, received = server
    clock = [0.0]
    reporter = _reporter(url, pem, tmp_path, clock)
    reporter.step(StepName.LOADING_DATASET, StepState.RUNNING)
    reporter.dataset(DatasetStatus(train=8, val=2))
    reporter.step(StepName.LOADING_DATASET, StepState.SUCCEEDED, "8 train, 2 val images")
    reporter.step(StepName.TRAINING, StepState.RUNNING)
    for index in range(4):  # all within the interval: only the first batch is sent
        reporter.batch(BatchEvent(1, index, 4, 0.1, 1.0, 2, 0.1))
    clock[0] = 6.0
    reporter.batch(BatchEvent(1, 3, 4, 0.1, 1.0, 2, 0.1))
    reporter.epoch(
        EpochMetrics(epoch=1, val_loss=0.5, accuracy=0.75),
        BestMetric(epoch=1, value=0.75),
        "accuracy",
    )
    reporter.checkpoint(CheckpointStatus(uri="s3://b/best.pt", epoch=1, sha256="a" * 64, bytes=10))
    reporter.close(ok=True)

    assert reporter.failures == 0
    paths = {path for path, _, _ in received.requests}
    assert paths == {"/v1alpha1/namespaces/team-a/modelversions/digits/report"}
    assert {auth for _, auth, _ in received.requests} == {"Bearer the-token"}
    bodies = [body for _, _, body in received.requests]
    sequences = [body["sequence"] for body in bodies]
    assert sequences == sorted(sequences) and len(set(sequences)) == len(sequences)
    last = bodies[-1]
    assert last["sequence"] == 8  # 4 step/dataset events, 2 batches, epoch, checkpoint
    assert last["modelVersion"] == "digits" and last["uid"] == "u-1"
    assert last["progress"] == {"percent": 50, "epoch": 1, "epochs": 2, "display": "1/2"}
    assert last["metrics"]["best"] == {"epoch": 1, "value": 0.75}
    assert last["checkpoint"]["sha256"] == "a" * 64
    steps = {s["name"]: s for s in last["steps"]}
    assert steps["LoadingDataset"]["state"] == "Succeeded"
    assert steps["LoadingDataset"]["message"] == "8 train, 2 val images"
    assert "startedAt" in steps["Training"] and steps["Training"]["state"] == "Running"
    assert steps["Exporting"]["state"] == "Pending"


def test_a_resumed_run_starts_where_last_pt_left_off(
    server: tuple[str, str, Received], tmp_path: Path
) -> None:
    url, pem, received = server
    reporter = _reporter(url, pem, tmp_path, [0.0])
    history = (
        EpochMetrics(epoch=1, val_loss=0.75, accuracy=0.5),
        EpochMetrics(epoch=2, val_loss=0.5, accuracy=0.25),
    )
    # Epoch 1 of 2 done, 1 of the 4 batches of epoch 2 too: 5/8 of the run.
    reporter.resumed(
        ResumePoint(
            epoch=1,
            batch=1,
            batches=4,
            epochs=2,
            batches_total=5,
            images_total=10,
            history=history[:1],
            best=BestMetric(epoch=1, value=0.5),
            selection="accuracy",
        )
    )
    reporter.close(ok=False)

    assert reporter.failures == 0
    (body,) = [body for _, _, body in received.requests]
    assert body["progress"] == {"percent": 62, "epoch": 1, "epochs": 2, "display": "1/2"}
    assert body["metrics"] == {
        "selection": "accuracy",
        "best": {"epoch": 1, "value": 0.5},
        "last": {"epoch": 1, "valLoss": 0.75, "accuracy": 0.5},
    }


def test_the_evaluation_summary_is_reported(
    server: tuple[str, str, Received], tmp_path: Path
) -> None:
    url, pem, received = server
    reporter = _reporter(url, pem, tmp_path, [0.0])
    # 3 of 4 validation images right: cat 2/2, dog 1/2.
    summary = EvaluationSummary(
        split=EvaluatedSplit.VALIDATION,
        images=4,
        indicator=Indicator.ACCURACY,
        value=0.75,
        accuracy=0.75,
    )
    status = EvaluationStatus(
        indicator=Indicator.ACCURACY,
        value=0.75,
        validation=summary,
        artifacts=EvaluationArtifacts(
            evaluation="s3://b/run/evaluation.json",
            confusion_matrix="s3://b/run/confusion_matrix.png",
        ),
    )
    figures = ClassificationEvaluation(
        accuracy=0.75,
        top5=None,
        concepts=[
            ClassificationConcept(
                concept="cat", precision=2 / 3, recall=1.0, f1=0.8, support=2, predicted=3
            ),
            ClassificationConcept(
                concept="dog", precision=1.0, recall=0.5, f1=2 / 3, support=2, predicted=1
            ),
        ],
        confusion_matrix=[[2, 0], [1, 1]],
        macro=Averages(precision=5 / 6, recall=0.75, f1=11 / 15),
        weighted=Averages(precision=5 / 6, recall=0.75, f1=11 / 15),
    )
    evaluation = Evaluation(
        task=Task.CLASSIFICATION,
        split=EvaluatedSplit.VALIDATION,
        images=4,
        concepts=["cat", "dog"],
        concepts_without_ground_truth=[],
        summary=summary,
        classification=figures,
    )
    reporter.step(StepName.EVALUATING, StepState.RUNNING)
    reporter.evaluation(status, [evaluation])
    reporter.step(StepName.EVALUATING, StepState.SUCCEEDED)
    reporter.close(ok=True)

    assert reporter.failures == 0
    last = received.requests[-1][2]
    assert last["sequence"] == 3
    assert last["evaluation"] == {
        "indicator": "accuracy",
        "value": 0.75,
        "validation": {
            "split": "validation",
            "images": 4,
            "indicator": "accuracy",
            "value": 0.75,
            "accuracy": 0.75,
        },
        "artifacts": {
            "evaluation": "s3://b/run/evaluation.json",
            "confusionMatrix": "s3://b/run/confusion_matrix.png",
        },
    }
    # The per-concept figures stay in evaluation.json: no concept name travels.
    assert '"cat"' not in json.dumps(last) and "[2, 0]" not in json.dumps(last)


def test_an_absent_operator_never_fails_training(tmp_path: Path) -> None:
    pem, _, _ = _certificate(tmp_path)
    reporter = _reporter(f"https://127.0.0.1:{free_port()}", pem, tmp_path, [0.0])
    reporter.step(StepName.TRAINING, StepState.RUNNING)
    reporter.close(ok=False)
    assert reporter.sent == 0
    assert reporter.failures >= 1


def test_wrong_certificate_is_refused(server: tuple[str, str, Received], tmp_path: Path) -> None:
    url, _, received = server
    (tmp_path / "other").mkdir()
    other_pem, _, _ = _certificate(tmp_path / "other")
    reporter = _reporter(url, other_pem, tmp_path, [0.0])
    reporter.step(StepName.TRAINING, StepState.RUNNING)
    reporter.close(ok=False)
    assert received.requests == []
    assert reporter.failures == 1
