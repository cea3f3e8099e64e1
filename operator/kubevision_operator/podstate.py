"""What a trainer Pod says about its attempt, read from the Pod as the API server returns it:
when it was scheduled and started, how the trainer container ended (its exit code and
termination message, ``contract.parse_termination``), and which other containers (a service
mesh's sidecar) outlive it. Pure: plain dicts in, no clock.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from kubevision_api import contract
from kubevision_api.modelversion import ModelVersionSpec
from kubevision_operator.jobstate import true_conditions

#: Longest message taken from a container's log tail (FallbackToLogsOnError).
MAX_MESSAGE: Final = 1024
CAMEL: Final = re.compile(r"^[A-Z][A-Za-z0-9]*$")


def parse_time(value: Any) -> datetime | None:
    """An RFC 3339 timestamp from the API server (``2024-05-01T10:00:00Z``), or None when
    absent.

    Raises:
        ValueError: a string that is not an ISO 8601 timestamp.
    """
    if isinstance(value, datetime):
        return value
    if not value or not isinstance(value, str):
        return None
    return datetime.fromisoformat(value)


def _created(pod: dict[str, Any]) -> tuple[str, str]:
    meta = pod.get("metadata", {})
    created = parse_time(meta.get("creationTimestamp"))
    return (created.isoformat() if created else "", str(meta.get("name", "")))


def newest(pods: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The Job's latest attempt: newest creationTimestamp, then name (a total order)."""
    return max(pods, key=_created) if pods else None


def container_status(pod: dict[str, Any]) -> dict[str, Any]:
    for status in pod.get("status", {}).get("containerStatuses") or []:
        if status.get("name") == contract.CONTAINER:
            return dict(status)
    return {}


def terminated(pod: dict[str, Any]) -> dict[str, Any] | None:
    state = container_status(pod).get("state") or {}
    terminated = state.get("terminated")
    return dict(terminated) if terminated else None


def scheduled_at(pod: dict[str, Any]) -> datetime | None:
    cond = true_conditions(pod).get("PodScheduled")
    return parse_time(cond.get("lastTransitionTime")) if cond else None


def started_at(pod: dict[str, Any]) -> datetime | None:
    state = container_status(pod).get("state") or {}
    for key in ("running", "terminated"):
        if state.get(key) and state[key].get("startedAt"):
            return parse_time(state[key]["startedAt"])
    return None


def memory_limit(pod: dict[str, Any], spec: ModelVersionSpec) -> str:
    for container in pod.get("spec", {}).get("containers") or []:
        if container.get("name") == contract.CONTAINER:
            limit = (container.get("resources") or {}).get("limits", {}).get("memory")
            if limit:
                return str(limit)
    return spec.resources.memory


def last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    line = lines[-1] if lines else ""
    return line if len(line) <= MAX_MESSAGE else line[: MAX_MESSAGE - 3] + "..."


def sentence(text: str) -> str:
    """``text`` as a sentence: a capital first word (unless it is a name such as a URI or a
    file, whose case matters) and a final full stop."""
    text = text.strip()
    if not text:
        return text
    first = text.split(maxsplit=1)[0]
    if first.isalpha() and first.islower():
        text = text[0].upper() + text[1:]
    return text if text.endswith((".", "!", "?")) else text + "."


@dataclass(frozen=True)
class PodFailure:
    """Why one attempt's trainer stopped: ``reason`` a CamelCase word (the trainer's outcome,
    ``OOMKilled``, ``TrainerCrashed``, ``Disrupted``), ``message`` a sentence."""

    reason: str
    message: str
    exit_code: int | None
    #: The trainer exceeded its memory limit (the kubelet's OOMKilled).
    oom_killed: bool = False
    #: Whether another attempt may end otherwise (``contract.Outcome.retry``; crashes, OOM
    #: kills and disruptions may).
    retry: bool = True


def pod_failure(pod: dict[str, Any], spec: ModelVersionSpec) -> PodFailure | None:
    """Why the trainer of a failed Pod stopped: OOMKilled (naming the memory limit), the
    trainer's termination message ("Reason: message"), a crash (its log's last line), or a
    disruption (DisruptionTarget, which the pod failure policy ignores); None when the Pod
    says nothing of it."""
    ended = terminated(pod)
    if ended is None:
        disruption = true_conditions(pod).get("DisruptionTarget")
        if disruption is None:
            return None
        detail = disruption.get("message") or disruption.get("reason") or "disrupted"
        return PodFailure("Disrupted", sentence(f"Pod disrupted: {detail}"), None)
    code = ended.get("exitCode")
    exit_code = int(code) if code is not None else None
    if ended.get("reason") == "OOMKilled":
        limit = memory_limit(pod, spec)
        return PodFailure(
            "OOMKilled",
            f"The trainer was killed for exceeding its memory limit of {limit} "
            "(spec.resources.memory).",
            exit_code,
            oom_killed=True,
        )
    text = str(ended.get("message") or "").strip()
    parsed = contract.parse_termination(text)
    if parsed is not None and parsed[0] is not contract.Outcome.SUCCEEDED:
        outcome, message = parsed
        return PodFailure(outcome.reason, sentence(message), exit_code, retry=outcome.retry)
    line = last_line(text)
    detail = f"The trainer exited with code {exit_code}"
    return PodFailure(
        "TrainerCrashed", sentence(f"{detail}: {line}" if line else detail), exit_code
    )


def lingering(pod: dict[str, Any]) -> tuple[str, ...]:
    """Containers of ``pod`` other than the trainer that have not terminated (a service
    mesh's proxy, a log shipper), by name: with ``restartPolicy: Never`` they keep the Pod,
    and so the Job, running after the trainer has ended."""
    names = []
    for status in pod.get("status", {}).get("containerStatuses") or []:
        if status.get("name") == contract.CONTAINER:
            continue
        if not (status.get("state") or {}).get("terminated"):
            names.append(str(status.get("name")))
    return tuple(sorted(names))


@dataclass(frozen=True)
class TrainerExit:
    """The trainer container's own end, whatever the Pod's phase says."""

    exit_code: int | None
    finished_at: datetime | None
    #: Other containers still running in the Pod (:func:`lingering`).
    lingering: tuple[str, ...]


def trainer_exit(pod: dict[str, Any]) -> TrainerExit | None:
    """How the trainer container of ``pod`` ended, or None while it has not."""
    ended = terminated(pod)
    if ended is None:
        return None
    code = ended.get("exitCode")
    return TrainerExit(
        int(code) if code is not None else None,
        parse_time(ended.get("finishedAt")),
        lingering(pod),
    )


def failed(pod: dict[str, Any]) -> bool:
    """Whether the attempt of ``pod`` failed: the Pod failed, or its trainer exited non-zero
    while another container keeps it running."""
    if pod.get("status", {}).get("phase") == "Failed":
        return True
    ended = trainer_exit(pod)
    return ended is not None and ended.exit_code not in (0, None)


@dataclass(frozen=True)
class Attempts:
    """What the Job's Pods say about its attempts: how many there were, and the latest that
    failed (its number from 1, in creation order, and why)."""

    count: int
    failure: PodFailure | None = None
    failed_attempt: int | None = None
    failed_at: datetime | None = None


def attempts(pods: list[dict[str, Any]], spec: ModelVersionSpec) -> Attempts:
    """The attempts of a Job from its Pods (each Pod is one attempt)."""
    ordered = sorted(pods, key=_created)
    for index in range(len(ordered), 0, -1):
        pod = ordered[index - 1]
        if not failed(pod):
            continue
        failure = pod_failure(pod, spec)
        if failure is None:
            continue
        ended = trainer_exit(pod)
        return Attempts(len(ordered), failure, index, ended.finished_at if ended else None)
    return Attempts(len(ordered))
