"""A multi-Pod training (``spec.resources.nodes > 1``): the parts of its Indexed Job and
headless Service that say where each Pod is in the world, and what its Pods say about the
gang's attempt (which Pod failed first, which ones wait for a node).

Kubernetes cannot restart the other Pods of an Indexed Job when one fails, so the Job has
``backoffLimit: 0`` and the operator restarts the whole gang: the attempt number lives on the
Job (:data:`naming.ATTEMPT_ANNOTATION`) and in the trainer's environment
(``contract.ENV_ATTEMPT``). Pure: plain dicts in, plain dicts out (docs/operator.md, The
multi-Pod Job).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from kubevision_api import contract
from kubevision_api.modelversion import ModelVersionSpec
from kubevision_operator import naming, podstate

#: The trainer container's port of torchrun's rendezvous store (index 0 serves it).
PORT_NAME: Final = "rendezvous"


def is_gang(spec: ModelVersionSpec) -> bool:
    """Whether ``spec`` trains on several Pods (an Indexed Job and a headless Service)."""
    return spec.resources.nodes > 1


def is_gang_job(job: dict[str, Any]) -> bool:
    """Whether ``job`` (as the API server returns it) is a multi-Pod training's Job: read from
    the Job itself, so a restarted operator needs nothing else."""
    spec = job.get("spec", {})
    return spec.get("completionMode") == "Indexed" and int(spec.get("completions") or 1) > 1


def job_attempt(job: dict[str, Any]) -> int:
    """The gang attempt of ``job`` (1 when the annotation is absent or not a number)."""
    value = (job.get("metadata", {}).get("annotations") or {}).get(naming.ATTEMPT_ANNOTATION)
    try:
        return max(1, int(str(value)))
    except ValueError:
        return 1


def master_address(job: str, service: str, namespace: str) -> str:
    """DNS name of the Pod of index 0: Kubernetes names an Indexed Job's Pods
    ``<job>-<index>``, and the headless Service (the Pods' subdomain) publishes them as
    ``<hostname>.<service>.<namespace>.svc``."""
    return f"{job}-0.{service}.{namespace}.svc"


def world_env(
    spec: ModelVersionSpec, job: str, namespace: str, attempt: int
) -> list[dict[str, Any]]:
    """The trainer's torchrun variables (``contract.ENV_*``): none for one process; nodes and
    processes per Pod for one Pod with several; for several Pods also the node rank (the
    completion index), the master's address and port, and the gang attempt.

    Args:
        spec: the ModelVersion's spec (``resources``).
        job: the Job's name (the Pods' hostnames start with it).
        namespace: the Job's namespace.
        attempt: the gang attempt, from 1.
    """
    resources = spec.resources
    if resources.world_size() == 1:
        return []
    env: list[dict[str, Any]] = [
        {"name": contract.ENV_NNODES, "value": str(resources.nodes)},
        {"name": contract.ENV_NPROC_PER_NODE, "value": str(resources.processes())},
    ]
    if not is_gang(spec):
        return env
    index = f"metadata.annotations['{naming.COMPLETION_INDEX_ANNOTATION}']"
    service = job  # the Service is named after its Job (naming.service_name)
    return [
        *env,
        {"name": contract.ENV_NODE_RANK, "valueFrom": {"fieldRef": {"fieldPath": index}}},
        {"name": contract.ENV_MASTER_ADDR, "value": master_address(job, service, namespace)},
        {"name": contract.ENV_MASTER_PORT, "value": str(contract.MASTER_PORT)},
        {"name": contract.ENV_ATTEMPT, "value": str(attempt)},
    ]


def container_ports(spec: ModelVersionSpec) -> list[dict[str, Any]]:
    """The rendezvous port of a multi-Pod trainer container (none otherwise)."""
    if not is_gang(spec):
        return []
    return [{"name": PORT_NAME, "containerPort": contract.MASTER_PORT, "protocol": "TCP"}]


def job_spec_fields(spec: ModelVersionSpec) -> dict[str, Any]:
    """The Job spec's fields that differ for several Pods: an Indexed Job whose Pods all run
    at once, with no retry of its own (the operator restarts the gang)."""
    nodes = spec.resources.nodes
    if nodes == 1:
        return {"completions": 1, "parallelism": 1, "backoffLimit": spec.run_policy.backoff_limit}
    return {
        "completionMode": "Indexed",
        "completions": nodes,
        "parallelism": nodes,
        "backoffLimit": 0,
    }


def service_spec(job: str) -> dict[str, Any]:
    """The headless Service's spec: no virtual IP, DNS records for every Pod of the Job
    (``publishNotReadyAddresses``: trainer Pods have no readiness probe, and the rendezvous
    happens before any would pass), the rendezvous port."""
    return {
        "clusterIP": "None",
        "publishNotReadyAddresses": True,
        "selector": {naming.JOB_NAME_LABEL: job},
        "ports": [
            {
                "name": PORT_NAME,
                "port": contract.MASTER_PORT,
                "targetPort": contract.MASTER_PORT,
                "protocol": "TCP",
            }
        ],
    }


# --- the gang's Pods ---------------------------------------------------------------------------


def pod_name(pod: dict[str, Any]) -> str:
    return str(pod.get("metadata", {}).get("name", ""))


def completion_index(pod: dict[str, Any]) -> int | None:
    """The Pod's completion index (its node rank), or None when absent."""
    value = (pod.get("metadata", {}).get("annotations") or {}).get(
        naming.COMPLETION_INDEX_ANNOTATION
    )
    try:
        return int(str(value))
    except ValueError:
        return None


def _rank_order(pod: dict[str, Any]) -> tuple[int, str]:
    index = completion_index(pod)
    return (index if index is not None else 1 << 30, pod_name(pod))


def by_rank(pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``pods`` by completion index, then name."""
    return sorted(pods, key=_rank_order)


def _finished_at(pod: dict[str, Any]) -> datetime | None:
    ended = podstate.trainer_exit(pod)
    if ended is not None and ended.finished_at is not None:
        return ended.finished_at
    # A Pod that failed without its trainer's end (disrupted, evicted): its Ready condition's
    # last change is when it stopped.
    for cond in pod.get("status", {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return podstate.parse_time(cond.get("lastTransitionTime"))
    return None


@dataclass(frozen=True)
class GangFailure:
    """The first Pod of an attempt that failed, by finish time (the others failed because of
    it, or were stopped when the Job failed)."""

    pod: str
    failure: podstate.PodFailure
    finished_at: datetime | None


def first_failure(pods: list[dict[str, Any]], spec: ModelVersionSpec) -> GangFailure | None:
    """The gang's first failed Pod by finish time (then completion index, then name), with why
    it failed as :func:`podstate.pod_failure` reads it; None while no Pod has failed. A failed
    Pod that says nothing of why is a crash with no message (``TrainerCrashed``)."""
    failed = [p for p in pods if podstate.failed(p)]
    if not failed:
        return None

    def order(pod: dict[str, Any]) -> tuple[str, int, str]:
        at = _finished_at(pod)
        # Unknown times last: a Pod that says when it stopped is the better witness.
        return (at.isoformat() if at else "~", *_rank_order(pod))

    first = min(failed, key=order)
    failure = podstate.pod_failure(first, spec) or podstate.PodFailure(
        "TrainerCrashed", f"Pod {pod_name(first)} failed.", None
    )
    return GangFailure(pod_name(first), failure, _finished_at(first))


def attempt_failure(
    pods: list[dict[str, Any]], spec: ModelVersionSpec, job_condition: dict[str, Any] | None
) -> tuple[podstate.PodFailure, datetime | None]:
    """Why a failed attempt failed, and when: its first failed Pod (:func:`first_failure`,
    the Pod named in the message), or, when no Pod says, the Job's failure condition (a
    retryable ``PodFailed``)."""
    first = first_failure(pods, spec)
    if first is None:
        cond = job_condition or {}
        said = podstate.sentence(str(cond.get("message") or "The training Job failed"))
        return (
            podstate.PodFailure("PodFailed", said, None),
            podstate.parse_time(cond.get("lastTransitionTime")),
        )
    why = first.failure
    return (
        podstate.PodFailure(
            why.reason,
            f"Pod {first.pod}: {why.message}",
            why.exit_code,
            oom_killed=why.oom_killed,
            retry=why.retry,
        ),
        first.finished_at,
    )


def all_done(
    pods: list[dict[str, Any]], nodes: int
) -> tuple[tuple[str, ...], datetime | None] | None:
    """When every one of the ``nodes`` trainers exited 0: the containers that still hold
    their Pods (a sidecar) and when the last trainer ended; None otherwise."""
    ended = [podstate.trainer_exit(p) for p in pods]
    done = [e for e in ended if e is not None and e.exit_code == 0]
    if len(done) < nodes or len(done) < len(pods):
        return None
    lingering = tuple(sorted({name for e in done for name in e.lingering}))
    times = [e.finished_at for e in done if e.finished_at is not None]
    return lingering, max(times) if times else None


def starting(pods: list[dict[str, Any]], nodes: int) -> tuple[str, str] | None:
    """While some of the gang's Pods are bound but not running: ``"k of N Pods are starting:
    <pod>: <why>"`` (the first by rank speaks) and its container's waiting reason; None when
    all run."""
    slow = [p for p in by_rank(pods) if not running(p)]
    if not slow:
        return None
    first = slow[0]
    waiting = (podstate.container_status(first).get("state") or {}).get("waiting") or {}
    reason = str(waiting.get("reason") or "ContainerCreating")
    detail = waiting.get("message") or f"the trainer container is waiting ({reason})"
    message = podstate.sentence(
        f"{len(slow)} of {nodes} Pods are starting: {pod_name(first)}: {detail}"
    )
    return message, reason if podstate.CAMEL.match(reason) else "ContainerCreating"


def waiting(pods: list[dict[str, Any]], nodes: int) -> str | None:
    """``"k of N Pods wait to be scheduled: <pod>: <scheduler message>"`` while ``k`` of the
    gang's ``N`` Pods are unschedulable (the first by rank speaks for them), else None."""
    stuck = []
    for pod in by_rank(pods):
        cond = next(
            (
                c
                for c in pod.get("status", {}).get("conditions") or []
                if c.get("type") == "PodScheduled"
            ),
            None,
        )
        if cond is not None and cond.get("status") == "False":
            stuck.append((pod, cond))
    if not stuck:
        return None
    pod, cond = stuck[0]
    said = str(cond.get("message") or cond.get("reason") or "not scheduled yet").strip()
    return podstate.sentence(
        f"{len(stuck)} of {nodes} Pods wait to be scheduled: {pod_name(pod)}: {said}"
    )


def scheduled_at(pods: list[dict[str, Any]], nodes: int) -> datetime | None:
    """When the last of the ``nodes`` Pods was bound to a node, once all are (None before)."""
    times = [podstate.scheduled_at(p) for p in pods]
    if len(pods) < nodes or any(t is None for t in times):
        return None
    return max(t for t in times if t is not None)


def started_at(pods: list[dict[str, Any]], nodes: int) -> datetime | None:
    """When the last trainer of the ``nodes`` Pods started, once all have (the gang trains
    from then on; None before)."""
    times = [podstate.started_at(p) for p in pods]
    if len(pods) < nodes or any(t is None for t in times):
        return None
    return max(t for t in times if t is not None)


def running(pod: dict[str, Any]) -> bool:
    """Whether the Pod runs (or its containers have all ended well)."""
    return pod.get("status", {}).get("phase") in ("Running", "Succeeded")
