"""The end-to-end checks of a training's evaluation (issue 12): what ``status.evaluation``
holds, read back from the API server, against the files the trainer wrote to S3 (the
``evaluation.json`` of each split read against its schema, every PNG opened), the ``Evaluated``
Event, and the View's models library."""

from __future__ import annotations

import io
from typing import Any

from PIL import Image

from kubevision_api.evaluation import (
    CONFUSION_MATRIX_PNG,
    EVALUATION_JSON,
    PR_CURVES_PNG,
    REPORT_PNG,
    TEST_FOLDER,
    EvaluatedSplit,
    Evaluation,
    EvaluationStatus,
    first_indicator,
)
from kubevision_api.view import Task
from kubevision_operator.status import evaluated_message
from testenv.operator_helpers import get, wait_for
from tests.integration.e2e_helpers import E2E

#: The smallest figure a PNG artifact may be, in pixels (matplotlib's smallest default
#: figure, 4 x 3 inches at 72 dpi, is larger).
MIN_PNG_SIDE = 200
#: A figure is blank when fewer than this share of its pixels differ from the most common one.
MIN_INK = 0.01


def _key(env: E2E, uri: str) -> str:
    """The bucket key of ``s3://<bucket>/<key>`` (in this test's bucket)."""
    head = f"s3://{env.bucket}/"
    assert uri.startswith(head), uri
    return uri[len(head) :]


def assert_png(env: E2E, uri: str) -> tuple[int, int]:
    """The PNG at ``uri`` exists and passes :func:`check_png`; its size."""
    body = env.read(_key(env, uri))
    assert body is not None, f"{uri} is missing"
    return check_png(uri, body)


def check_png(uri: str, body: bytes) -> tuple[int, int]:
    """``body`` opens as a PNG at least ``MIN_PNG_SIDE`` on each side and is not blank (at
    least ``MIN_INK`` of its pixels differ from the most common colour); its size."""
    with Image.open(io.BytesIO(body)) as image:
        assert image.format == "PNG", (uri, image.format)
        width, height = image.size
        assert min(width, height) >= MIN_PNG_SIDE, (uri, image.size)
        colours = image.convert("RGB").getcolors(maxcolors=width * height)
    assert colours is not None
    commonest = max(count for count, _ in colours)
    ink = 1 - commonest / (width * height)
    assert ink >= MIN_INK, f"{uri} is blank: {ink:.2%} of its pixels differ from the background"
    return width, height


def _evaluation_file(env: E2E, uri: str) -> Evaluation:
    body = env.read(_key(env, uri))
    assert body is not None, f"{uri} is missing"
    return Evaluation.model_validate_json(body)


def assert_evaluation(env: E2E, obj: dict[str, Any], prefix: str, task: str) -> EvaluationStatus:
    """``status.evaluation`` of a Succeeded ModelVersion, as the API server holds it: the
    task's first indicator; the summary of each split equal to that split's evaluation.json
    (read from S3 and validated against the schema), the value exactly its first indicator;
    the artifacts where docs/metrics.md puts them (``<output>/``, the test split's under
    ``<output>/test/``), each PNG opened and not blank. Returns the status's evaluation."""
    wire = obj["status"].get("evaluation")
    assert wire is not None, f"no status.evaluation: {sorted(obj['status'])}"
    status = EvaluationStatus.model_validate(wire)
    kind = Task(task)
    assert status.indicator is first_indicator(kind)
    assert status.value == status.validation.value
    output = f"s3://{env.bucket}/{prefix}"
    splits = [(EvaluatedSplit.VALIDATION, status.validation, status.artifacts, output)]
    if status.test is not None or status.test_artifacts is not None:
        assert status.test is not None and status.test_artifacts is not None, wire
        test_folder = f"{output}/{TEST_FOLDER}"
        splits.append((EvaluatedSplit.TEST, status.test, status.test_artifacts, test_folder))
    for split, summary, artifacts, folder in splits:
        assert artifacts.evaluation == f"{folder}/{EVALUATION_JSON}"
        evaluation = _evaluation_file(env, artifacts.evaluation)
        assert (evaluation.task, evaluation.split) == (kind, split)
        assert summary == evaluation.summary, (summary, evaluation.summary)
        assert summary.indicator is status.indicator and summary.split is split
        assert summary.images == evaluation.images > 0
        assert summary.value is not None, f"{split}: the first indicator is undefined"
        headline = {
            Task.CLASSIFICATION: summary.accuracy,
            Task.TAGGING: summary.map,
            Task.DETECTION: summary.mean_optimal_lrp,
        }[kind]
        assert summary.value == headline
        assert 0.0 <= summary.value <= 1.0
        figure = CONFUSION_MATRIX_PNG if kind is Task.CLASSIFICATION else PR_CURVES_PNG
        pngs = {
            "confusion_matrix": artifacts.confusion_matrix,
            "pr_curves": artifacts.pr_curves,
        }
        present = {name: uri for name, uri in pngs.items() if uri is not None}
        assert present == {figure.removesuffix(".png"): f"{folder}/{figure}"}, present
        for uri in present.values():
            assert_png(env, uri)
    # The training curves: one per run, at the output's root.
    assert status.artifacts.report == f"{output}/{REPORT_PNG}"
    assert_png(env, status.artifacts.report)
    return status


def assert_evaluated_event(env: E2E, name: str, status: EvaluationStatus) -> None:
    """The operator posted an ``Evaluated`` Event on the ModelVersion, with the summary."""

    def events() -> list[dict[str, Any]]:
        listing = get(env.cp, f"/api/v1/namespaces/{env.namespace}/events")
        return [
            e
            for e in (listing or {}).get("items", [])
            if e["involvedObject"].get("name") == name and e["reason"] == "Evaluated"
        ]

    found = wait_for("the Evaluated Event", events, timeout=15)
    assert {(e["type"], e["message"]) for e in found} == {("Normal", evaluated_message(status))}, (
        found
    )


def assert_models_library(env: E2E, view: str, name: str, status: EvaluationStatus) -> None:
    """The View's models library shows the version's first indicator and its value (the
    operator refreshes it at most once a second, so it is waited for)."""
    path = f"/apis/kubevision.dev/v1alpha1/namespaces/{env.namespace}/views/{view}"

    def entry() -> dict[str, Any] | None:
        obj = get(env.cp, path) or {}
        for model in (obj.get("status") or {}).get("models", []):
            for summary in model.get("modelVersions", []):
                # The evaluation lands before the phase turns Succeeded: wait for both.
                if summary["modelVersion"] == name and summary.get("phase") == "Succeeded":
                    return dict(summary)
        return None

    summary = wait_for(f"{name}, Succeeded, in View {view}'s models library", entry, timeout=30)
    assert (summary["indicator"], summary.get("value")) == (status.indicator.value, status.value)
