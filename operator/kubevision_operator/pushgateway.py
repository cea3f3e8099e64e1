"""The trainers' Pushgateway groups, and which of them have had their day.

A trainer pushes its metrics to the group ``job=kubevision-trainer``, ``namespace``,
``modelversion``, ``run`` (the ModelVersion's uid). Nothing deletes a group on the trainer's
side, and the operator adds no finalizer (a ModelVersion can be deleted while it is away), so
the operator sweeps: every ``settings.pushgateway_sweep_seconds`` it lists the groups
(the Pushgateway's ``/api/v1/metrics``) and deletes those whose ModelVersion is gone or was
re-created (another uid), and those of a finished ModelVersion older than
``settings.pushgateway_retention_seconds``. :func:`stale` decides, purely; :func:`groups` and
:func:`delete` talk to the Pushgateway (its HTTP API, with the standard library).
"""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

#: The trainers' job label (``kubevision_trainer.report.prometheus.JOB``).
JOB: Final = "kubevision-trainer"


@dataclass(frozen=True)
class Group:
    """One trainer's Pushgateway group.

    Attributes:
        namespace, modelversion, run: its grouping key (run: the ModelVersion's uid).
        pushed_at: Unix time of its last push (the Pushgateway's ``push_time_seconds``).
    """

    namespace: str
    modelversion: str
    run: str
    pushed_at: float | None = None


@dataclass(frozen=True)
class Known:
    """What the operator knows of one ModelVersion: its uid, and when it finished (None while
    it has not)."""

    uid: str | None
    completed_at: datetime | None


def stale(
    found: list[Group],
    modelversions: Mapping[tuple[str, str], Known],
    now: datetime,
    retention_seconds: int,
) -> list[tuple[Group, str]]:
    """The groups to delete, each with why: the ModelVersion is gone, or is another one now
    (a re-created name: another uid), or finished more than ``retention_seconds`` ago.

    ``modelversions`` must hold every ModelVersion of the namespaces the groups belong to
    (the operator lists them all); a group outside those is left alone by the caller.
    """
    out = []
    for group in found:
        known = modelversions.get((group.namespace, group.modelversion))
        if known is None:
            out.append((group, "the ModelVersion was deleted"))
        elif known.uid is not None and known.uid != group.run:
            out.append((group, f"the ModelVersion was re-created (uid {known.uid})"))
        elif (
            known.completed_at is not None
            and (now - known.completed_at).total_seconds() > retention_seconds
        ):
            out.append((group, f"the training finished over {retention_seconds} s ago"))
    return out


def groups(url: str, timeout: float = 10.0) -> list[Group]:
    """The trainers' groups on the Pushgateway at ``url``.

    Raises:
        OSError: the Pushgateway did not answer (URLError is an OSError).
        ValueError: the answer is not the API's JSON.
    """
    with urllib.request.urlopen(f"{url.rstrip('/')}/api/v1/metrics", timeout=timeout) as answer:
        body: dict[str, Any] = json.loads(answer.read())
    out = []
    for item in body.get("data") or []:
        labels = item.get("labels") or {}
        if labels.get("job") != JOB or not all(
            labels.get(k) for k in ("namespace", "modelversion", "run")
        ):
            continue
        pushed = None
        for metric in (item.get("push_time_seconds") or {}).get("metrics") or []:
            pushed = float(metric["value"])
        out.append(Group(labels["namespace"], labels["modelversion"], labels["run"], pushed))
    return out


def delete(url: str, group: Group, timeout: float = 10.0) -> None:
    """Delete ``group`` from the Pushgateway (its DELETE of a grouping key; deleting an absent
    group succeeds).

    Raises:
        OSError: the Pushgateway did not answer, or refused.
    """
    parts = [
        "metrics/job",
        JOB,
        "namespace",
        group.namespace,
        "modelversion",
        group.modelversion,
        "run",
        group.run,
    ]
    path = "/".join(urllib.parse.quote(part, safe="/") for part in parts)
    request = urllib.request.Request(f"{url.rstrip('/')}/{path}", method="DELETE")
    with urllib.request.urlopen(request, timeout=timeout) as answer:
        answer.read()
