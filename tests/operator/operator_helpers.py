"""Builders shared by the operator's unit tests: manifests, plans, and the Job/Pod dicts the
API server would return."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from kubevision_api.modelversion import ModelVersion
from kubevision_api.plan import TrainingPlan, resolve
from kubevision_api.view import View
from kubevision_operator.settings import OperatorSettings

UID = "3f2a1c9e-5b7d-4e21-9a0c-7d1e2f3a4b5c"
CA_PEM = "-----BEGIN CERTIFICATE-----\nMIIBfake\n-----END CERTIFICATE-----\n"
T0 = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)


def at(seconds: int) -> datetime:
    """T0 plus ``seconds``."""
    return T0 + timedelta(seconds=seconds)


def stamp(seconds: int) -> str:
    """The API server's spelling of :func:`at`."""
    return at(seconds).strftime("%Y-%m-%dT%H:%M:%SZ")


def settings(**overrides: Any) -> OperatorSettings:
    """Settings as the Helm chart would set them, ignoring the test's environment."""
    values: dict[str, Any] = {
        "trainer_image": "registry.example/kubevision/trainer:0.1.0",
        "output_base_uri": "s3://kv-runs",
        "status_url": "https://kubevision-operator.kubevision.svc:8443",
    }
    values.update(overrides)
    return OperatorSettings(_env_prefix="KUBEVISION_TEST_UNSET_", **values)


def view(
    task: str = "classification",
    concepts: tuple[str, ...] = ("cat", "dog"),
    dataset: dict[str, Any] | None = None,
    name: str = "pets",
) -> View:
    return View.model_validate(
        {
            "metadata": {"name": name, "namespace": "team-a"},
            "spec": {
                "task": task,
                "concepts": [{"name": c} for c in concepts],
                "dataset": dataset or {"uri": "s3://data/pets/", "format": "imagefolder"},
            },
        }
    )


def modelversion(
    name: str = "pets-v1",
    view_name: str = "pets",
    architecture: str = "resnet18",
    uid: str | None = UID,
    **spec: Any,
) -> ModelVersion:
    metadata: dict[str, Any] = {"name": name, "namespace": "team-a", "generation": 1}
    if uid is not None:
        metadata["uid"] = uid
    body: dict[str, Any] = {"viewRef": {"name": view_name}, "architecture": architecture}
    body.update(spec)
    return ModelVersion.model_validate({"metadata": metadata, "spec": body})


def plan_for(v: View, mv: ModelVersion, cfg: OperatorSettings | None = None) -> TrainingPlan:
    cfg = cfg or settings()
    return resolve(v, mv, cfg.plan_defaults(CA_PEM))


def job(
    *,
    suspend: bool = False,
    conditions: list[dict[str, Any]] | None = None,
    completion: int | None = None,
    deadline: int | None = None,
) -> dict[str, Any]:
    status: dict[str, Any] = {"conditions": conditions or []}
    if completion is not None:
        status["completionTime"] = stamp(completion)
    spec: dict[str, Any] = {"suspend": suspend}
    if deadline is not None:
        spec["activeDeadlineSeconds"] = deadline
    return {"metadata": {"name": "kv-pets-v1", "uid": "job-uid"}, "spec": spec, "status": status}


def condition(ctype: str, reason: str = "", message: str = "", seconds: int = 0) -> dict[str, Any]:
    return {
        "type": ctype,
        "status": "True",
        "reason": reason,
        "message": message,
        "lastTransitionTime": stamp(seconds),
    }


def pod(
    name: str = "kv-pets-v1-abcde",
    *,
    phase: str = "Pending",
    created: int = 0,
    scheduled: int | None = None,
    unschedulable: str | None = None,
    state: dict[str, Any] | None = None,
    memory: str = "16Gi",
    disrupted: bool = False,
    sidecar: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A trainer Pod; ``state`` is the trainer container's, ``sidecar`` the state of a second
    container named ``mesh-proxy`` (as a service mesh injects)."""
    conditions: list[dict[str, Any]] = []
    if scheduled is not None:
        conditions.append(
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": stamp(scheduled)}
        )
    if unschedulable is not None:
        conditions.append(
            {
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": unschedulable,
                "lastTransitionTime": stamp(created),
            }
        )
    if disrupted:
        conditions.append(
            {
                "type": "DisruptionTarget",
                "status": "True",
                "reason": "PreemptionByScheduler",
                "message": "Preempted in order to admit critical pod",
            }
        )
    status: dict[str, Any] = {"phase": phase, "conditions": conditions}
    if state is not None:
        status["containerStatuses"] = [{"name": "trainer", "state": state}]
    if sidecar is not None:
        status.setdefault("containerStatuses", []).append({"name": "mesh-proxy", "state": sidecar})
    return {
        "metadata": {"name": name, "creationTimestamp": stamp(created)},
        "spec": {"containers": [{"name": "trainer", "resources": {"limits": {"memory": memory}}}]},
        "status": status,
    }


def running(started: int) -> dict[str, Any]:
    return {"running": {"startedAt": stamp(started)}}


def terminated(
    code: int, message: str = "", reason: str = "Error", started: int = 20, finished: int = 100
) -> dict[str, Any]:
    return {
        "terminated": {
            "exitCode": code,
            "reason": reason,
            "message": message,
            "startedAt": stamp(started),
            "finishedAt": stamp(finished),
        }
    }
