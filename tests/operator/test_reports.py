"""Reports.offer(): the newest report of each ModelVersion, per sending Pod; the metric counts
each result. (Reports.authorize reads Pods, Jobs and ModelVersions: the integration tests
exercise it against the real API server.)"""

from __future__ import annotations

from kubevision_api.contract import StepName
from kubevision_api.progress import TrainerReport
from kubevision_api.status import Progress, Step
from kubevision_operator.kube import Caller, Kube
from kubevision_operator.metrics import OperatorMetrics
from kubevision_operator.reports import Reports


def _report(sequence: int, name: str = "digits") -> TrainerReport:
    return TrainerReport(
        namespace="team-a",
        model_version=name,
        steps=[Step(name=StepName.TRAINING)],
        progress=Progress(epochs=3, display="0/3"),
        sequence=sequence,
    )


def _caller(pod: str) -> Caller:
    return Caller("team-a", "default", pod, f"{pod}-uid")


def _count(metrics: OperatorMetrics, result: str) -> float:
    value = metrics.registry.get_sample_value(
        "kubevision_operator_status_reports_total", {"result": result}
    )
    return value or 0.0


def test_newest_report_per_pod() -> None:
    metrics = OperatorMetrics()
    # Offering makes no API call: an unconfigured client is never used.
    reports = Reports(Kube(), metrics)
    assert reports.latest("team-a", "digits") == (None, None)
    first, second = _report(2), _report(1)
    assert reports.offer(_caller("p1"), first)
    assert not reports.offer(_caller("p1"), second)  # older, same Pod
    assert not reports.offer(_caller("p1"), _report(2))  # as old
    assert reports.latest("team-a", "digits") == ("p1", first)
    # A new attempt numbers from 1 again: another Pod's report is kept (the status decides
    # whether that Pod is the newest).
    restart = _report(1)
    assert reports.offer(_caller("p2"), restart)
    assert reports.latest("team-a", "digits") == ("p2", restart)
    # Other ModelVersions are apart.
    assert reports.offer(_caller("p1"), _report(1, "other"))
    assert (_count(metrics, "accepted"), _count(metrics, "stale")) == (3.0, 2.0)
    reports.forget("team-a", "digits")
    assert reports.latest("team-a", "digits") == (None, None)
    assert reports.latest("team-a", "other")[0] == "p1"
