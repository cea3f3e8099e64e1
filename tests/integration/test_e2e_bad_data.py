"""End to end, bad data as a careless user makes it (issue 10): the real operator, control
plane, node agent running the real trainer, and the S3 server (``e2e_helpers``).

A View whose concept differs from its folder by case (``Zero`` over ``zero``) fails before its
Training step with the reason ``InvalidInput`` and the trainer's one-line message naming both
names, after one attempt (exit code 2 fails the Job at once).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from testenv.operator_helpers import condition
from tests.integration import e2e_helpers as h
from tests.integration.e2e_helpers import e2e  # noqa: F401  (fixture)

pytestmark = pytest.mark.slow


def _step(obj: dict[str, Any], name: str) -> dict[str, Any]:
    return next(s for s in obj["status"]["steps"] if s["name"] == name)


def test_concept_differing_from_its_folder_by_case_fails_with_invalid_input(
    e2e: h.E2E,  # noqa: F811
    node_agent: Any,
) -> None:
    digits = h.classification_dataset(e2e, digits=(0, 1), per_class=6, prefix="case")
    dataset = h.Dataset(digits.task, digits.uri, digits.format, ["Zero", "one"])
    node_agent()  # its Pods run this checkout's trainer (PYTHONPATH passes through)
    watcher = h.Watcher(e2e, "case-e2e")
    with e2e.operator():
        e2e.apply(e2e.secret(), h.view("case", dataset), h.modelversion(e2e, "case-e2e", "case"))
        obj = watcher.finished(timeout=300)

    assert h.outcome(obj) == "Failed", json.dumps(obj.get("status"), indent=1)
    failed = condition(obj, "Failed")
    assert failed is not None and failed["reason"] == "InvalidInput", failed
    message = (
        f"{digits.uri}: a View concept has no image in the dataset: 'Zero' (the data has "
        "'zero': concept names are case-sensitive, so rename the concept or the data); or set "
        "spec.dataset.allowEmptyConcepts to train without them"
    )
    assert message in failed["message"], failed
    assert "\n" not in failed["message"]
    loading = _step(obj, "LoadingDataset")
    assert loading["state"] == "Failed" and message in loading["message"], loading
    assert [_step(obj, s)["state"] for s in ("Training", "Evaluating", "Exporting")] == [
        "Skipped"
    ] * 3
    # One attempt: one Job, one Pod, no retry.
    assert len(e2e.jobs()) == 1
    assert len(e2e.pods("kv-case-e2e")) == 1
