"""What one real training costs the API server: the digits example (examples/01-classification-
digits: all ten digits, ResNet-18 at 32x32, 6 epochs, batches of 64) through the operator, the
real trainer on the node agent, S3 and the Pushgateway. The trainer reports about two dozen
times; the operator reads nothing (its watches' caches), reviews the trainer's token once and
merges the reports of each 5 s into one status patch: at most 30 API requests over the whole
training (docs/scale.md; 274 before)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from testenv.scale import figures
from tests.integration import e2e_helpers as h
from tests.integration.e2e_helpers import e2e  # noqa: F401  (fixture)

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "01-classification-digits"
#: The Done-when of the lean operator (issue 15).
MAX_REQUESTS = 30


@pytest.mark.slow
def test_the_digits_example_costs_at_most_30_api_requests(
    e2e: h.E2E,  # noqa: F811
    node_agent: Any,
) -> None:
    example = yaml.safe_load((EXAMPLE / "modelversion.yaml").read_text())
    epochs = example["spec"]["training"]["epochs"]
    dataset = h.classification_dataset(e2e, digits=tuple(range(10)), per_class=200)
    name = "digits-requests"
    mv = h.modelversion(e2e, name, "digits")
    # The example's recipe, written to the test's bucket.
    mv["spec"] = {**example["spec"], "viewRef": {"name": "digits"}, "output": mv["spec"]["output"]}
    node_agent(cpu="4", memory="16Gi")
    watcher = h.Watcher(e2e, name)
    with e2e.operator() as operator:
        # The operator's own start (its CA Secret) is not the training's cost.
        started = _requests(operator.metrics_text())
        e2e.apply(e2e.secret(), h.view("digits", dataset), mv)
        obj = watcher.finished(timeout=900)
        text = operator.metrics_text()
    assert h.outcome(obj) == "Succeeded", obj.get("status")
    requests = {
        key: value - started.get(key, 0.0)
        for key, value in _requests(text).items()
        if value > started.get(key, 0.0)
    }
    reports = {
        labels["result"]: value
        for labels, value in figures.parse_metrics(text, "kubevision_operator_status_reports_total")
    }
    total = sum(requests.values())
    print(
        f"\ndigits example, {epochs} epochs: {reports} reports, {total:.0f} operator API"
        f" requests: {sorted(requests.items(), key=lambda kv: -kv[1])}"
    )
    assert obj["status"]["metrics"]["last"]["epoch"] == epochs
    assert reports.get("accepted", 0) >= 2 * epochs, reports
    reads, _ = figures.split_requests(requests)
    assert reads == 0, requests
    assert total <= MAX_REQUESTS, requests


def _requests(text: str) -> dict[tuple[str, str], float]:
    return {
        (labels["verb"], labels["resource"]): value
        for labels, value in figures.parse_metrics(text, "kubevision_operator_api_requests_total")
    }
