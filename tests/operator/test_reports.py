"""Reports.offer(): the newest report of each ModelVersion, per sending Pod; the metric counts
each result. Reports.authorize() from synced caches makes no API call (the integration tests
exercise it against the real API server, before and after the caches are synced)."""

from __future__ import annotations

from typing import Any

from kubevision_api.contract import StepName
from kubevision_api.progress import TrainerReport
from kubevision_api.status import Progress, Step
from kubevision_operator import naming
from kubevision_operator.cache import Cache
from kubevision_operator.kube import Caller, Kube, Obj
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
    reports = Reports(Kube(), Cache(pod_index_label="job-name"), metrics)
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


class _NoCalls(Kube):
    def _call(self, *args: Any, **kwargs: Any) -> Obj | None:
        raise AssertionError(f"an API call from a synced cache: {args[:3]}")


def _meta(name: str, uid: str, owner: tuple[str, str, str] | None = None) -> Obj:
    meta: Obj = {"name": name, "namespace": "team-a", "uid": uid, "resourceVersion": "1"}
    if owner is not None:
        kind, owner_name, owner_uid = owner
        meta["ownerReferences"] = [{"kind": kind, "name": owner_name, "uid": owner_uid}]
    return {"metadata": meta}


def test_authorize_reads_the_synced_caches() -> None:
    cache = Cache(pod_index_label="job-name")
    cache.modelversions.put(_meta("digits", "mv-uid"))
    cache.jobs.put(
        _meta(naming.job_name("digits"), "job-uid", ("ModelVersion", "digits", "mv-uid"))
    )
    cache.pods.put(_meta("p1", "p1-uid", ("Job", naming.job_name("digits"), "job-uid")))
    cache.mark_synced()
    metrics = OperatorMetrics()
    reports = Reports(_NoCalls(), cache, metrics)
    assert reports.authorize(_caller("p1"), "team-a", "digits")
    # Another ModelVersion's name: its Job is not the Pod's owner.
    assert not reports.authorize(_caller("p1"), "team-a", "other")
    # The Job belongs to an earlier ModelVersion of the same name (another uid).
    cache.modelversions.put(
        _meta("digits", "new-uid")
        | {
            "metadata": {
                "name": "digits",
                "namespace": "team-a",
                "uid": "new-uid",
                "resourceVersion": "2",
            }
        }
    )
    assert not reports.authorize(_caller("p1"), "team-a", "digits")
    assert _count(metrics, "refused") == 2.0
