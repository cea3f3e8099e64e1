"""The Training dashboard's evaluation panels, evaluated by a real Prometheus after
``PrometheusReporter.evaluation`` pushed literal evaluations to a real Pushgateway: the values
each panel reads back, split by split, and the cap (more concepts than ``max_concepts``: the
worst are drawn, the rest counted)."""

from __future__ import annotations

import uuid

import pytest

from kubevision_api.evaluation import EvaluatedSplit
from kubevision_trainer.report.prometheus import PrometheusReporter
from tests.helm import dashboards
from tests.helm.test_helm_dashboards_prometheus import label_values
from tests.integration import services
from tests.trainer import evaluation_literals as literal

pytestmark = pytest.mark.integration

#: A namespace unique to this run: other sessions may share the machine's ports.
TAGGING = {"namespace": f"eval-{uuid.uuid4().hex[:8]}", "view": "shapes", "modelversion": "s-v1"}
DETECTION = {**TAGGING, "view": "boxes", "modelversion": "b-v1"}
#: Tagging, validation: 5 concepts (one without positive), 3 kept by the cap: the lowest AP.
VALIDATION_ROWS: list[literal.TaggingRow] = [
    ("red", 0.9, 0.8),
    ("green", 0.25, 0.5),
    ("blue", 0.5, 0.625),
    ("none", None, None),
    ("cyan", 0.75, 0.375),
    ("pink", 0.125, 0.25),
]
#: Tagging, test: 2 concepts, under the cap.
TEST_ROWS: list[literal.TaggingRow] = [("red", 0.875, 0.75), ("green", 0.5, 0.5)]
#: Detection, validation: 4 concepts, 3 kept: the highest oLRP (an error).
DETECTION_ROWS: list[literal.DetectionRow] = [
    ("digit-1", 0.5, 0.375, 0.75),
    ("digit-3", 0.875, 0.0625, 0.125),
    ("digit-7", 0.625, 0.25, 0.5),
    ("digit-9", 0.75, 0.125, 0.25),
]


def panel(title: str) -> str:
    (query,) = [q for q in dashboards.queries("Training") if q.panel == title]
    return query.expr


def make(labels: dict[str, str], run: str, gateway: services.Pushgateway) -> PrometheusReporter:
    """A reporter that pushes to ``gateway``, with a cap of 3 concepts per split."""
    return PrometheusReporter(
        namespace=labels["namespace"],
        view=labels["view"],
        modelversion=labels["modelversion"],
        run=run,
        pushgateway_url=gateway.url,
        max_concepts=3,
    )


def read(
    prometheus: services.Prometheus, title: str, chosen: dict[str, str], *labels: str
) -> dict[tuple[str, ...], float]:
    """The panel's series for the variables ``chosen``: ``labels``' values -> value."""
    samples = prometheus.query(dashboards.fill(panel(title), chosen))
    found = {tuple(s.labels[label] for label in labels): s.value for s in samples}
    assert len(found) == len(samples), samples
    return found


@pytest.fixture(scope="module")
def pushed(
    dashboards_prometheus: tuple[services.Pushgateway, services.Prometheus],
) -> services.Prometheus:
    gateway, prometheus = dashboards_prometheus
    tagging = make(TAGGING, "tagging", gateway)
    evaluations = [
        literal.tagging(VALIDATION_ROWS, map_=0.50625),
        literal.tagging(TEST_ROWS, map_=0.6875, split=EvaluatedSplit.TEST),
    ]
    tagging.evaluation(literal.status(evaluations), evaluations)
    detection = make(DETECTION, "detection", gateway)
    boxes = literal.detection(DETECTION_ROWS, mean_optimal_lrp=0.6875, map_=0.203125)
    detection.evaluation(literal.status([boxes]), [boxes])
    for done in (tagging, detection):
        assert done.pushes == 1 and done.push_failures == 0
        done.close(ok=True)
    namespace = TAGGING["namespace"]
    prometheus.wait_for(
        f'kubevision_evaluation_concepts_omitted{{namespace="{namespace}"}}',
        lambda samples: len(samples) == 3,
    )
    return prometheus


def test_variables_offer_the_splits_and_the_task_figures(pushed: services.Prometheus) -> None:
    by_name = {
        v["name"]: v["query"]["query"]
        for v in dashboards.variables("Training")
        if v["type"] == "query"
    }
    chosen = {**TAGGING, "split": ".*"}
    assert label_values(pushed, dashboards.fill(by_name["split"], chosen)) == [
        "test",
        "validation",
    ]
    assert label_values(pushed, dashboards.fill(by_name["metric"], chosen)) == ["ap", "f1"]
    chosen = {**DETECTION, "split": ".*"}
    assert label_values(pushed, dashboards.fill(by_name["split"], chosen)) == ["validation"]
    assert label_values(pushed, dashboards.fill(by_name["metric"], chosen)) == [
        "ap",
        "ap50",
        "optimal_lrp",
    ]


def test_tagging_panels_read_back(pushed: services.Prometheus) -> None:
    both = {**TAGGING, "split": ".*", "metric": "ap"}
    assert read(pushed, "Evaluation", both, "split", "indicator") == {
        ("validation", "mAP"): 0.50625,
        ("test", "mAP"): 0.6875,
    }
    # The cap: 5 concepts with figures on validation, 3 drawn (the lowest AP), 2 counted; the
    # concept without positive has no figure and is neither.
    assert read(pushed, "Concepts omitted", both, "split") == {
        ("validation",): 2.0,
        ("test",): 0.0,
    }
    assert read(pushed, "Per-concept evaluation", both, "split", "concept") == {
        ("validation", "pink"): 0.125,
        ("validation", "green"): 0.25,
        ("validation", "blue"): 0.5,
        ("test", "red"): 0.875,
        ("test", "green"): 0.5,
    }
    # The kept concepts' other figure, and one split at a time.
    f1 = {**TAGGING, "split": "validation", "metric": "f1"}
    assert read(pushed, "Per-concept evaluation", f1, "concept") == {
        ("pink",): 0.25,
        ("green",): 0.5,
        ("blue",): 0.625,
    }
    assert read(pushed, "Evaluation", f1, "split") == {("validation",): 0.50625}


def test_detection_panels_read_back(pushed: services.Prometheus) -> None:
    olrp = {**DETECTION, "split": "validation", "metric": "optimal_lrp"}
    assert read(pushed, "Evaluation", olrp, "indicator") == {
        ("meanOptimalLRP",): 0.6875,
        ("mAP",): 0.203125,
    }
    assert read(pushed, "Concepts omitted", olrp, "split") == {("validation",): 1.0}
    # oLRP is an error: the cap keeps the highest; digit-1 (0.5) is left out.
    assert read(pushed, "Per-concept evaluation", olrp, "concept") == {
        ("digit-3",): 0.875,
        ("digit-9",): 0.75,
        ("digit-7",): 0.625,
    }
    ap50 = {**olrp, "metric": "ap50"}
    assert read(pushed, "Per-concept evaluation", ap50, "concept") == {
        ("digit-3",): 0.125,
        ("digit-9",): 0.25,
        ("digit-7",): 0.5,
    }
