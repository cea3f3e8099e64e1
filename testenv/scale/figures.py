"""What a scale run measured, from its :class:`~testenv.scale.recorder.Recorder`: latencies,
queue-order violations and percentiles, Prometheus samples, and the printed table."""

from __future__ import annotations

import re
import statistics
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from testenv.scale.recorder import JobRecord, Recorder


def queue_key(created: str, namespace: str, name: str) -> tuple[str, str, str]:
    """The design's queue order (§7): (creationTimestamp, namespace, name)."""
    return (created, namespace, name)


def order_violations(recorder: Recorder, limit: int) -> list[str]:
    """Admissions out of queue order. Jobs are taken in creation order; each must belong to
    one of the ``limit`` first ModelVersions, in (creationTimestamp, namespace, name) order,
    that had no Job yet: when several places free at once, their Jobs may be created in
    either order (each ModelVersion is reconciled on its own thread), but never one from
    further back in the queue."""
    ns = recorder.namespace
    waiting = sorted(recorder.mv_created, key=lambda n: queue_key(recorder.mv_created[n], ns, n))
    problems = []
    for index, job in enumerate(recorder.jobs):
        try:
            position = waiting.index(job.modelversion)
        except ValueError:
            problems.append(f"Job #{index} {job.name}: its ModelVersion had a Job already")
            continue
        if position >= limit:
            problems.append(
                f"Job #{index} {job.name} admitted at queue position {position + 1}, ahead of"
                f" {waiting[:position][:5]}"
            )
        waiting.pop(position)
    return problems


def percentile(values: list[float], q: float) -> float:
    """The ``q``-quantile (0..1) by linear interpolation; NaN for no values."""
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[round(q * 100) - 1]


@dataclass(frozen=True)
class Figures:
    """What a run measured (seconds unless named otherwise)."""

    count: int
    limit: int
    apply_seconds: float
    apply_to_job: list[float]
    slot_to_job: list[float]
    all_status_seconds: float
    status_lag: list[float]
    all_finished_seconds: float
    max_active: int
    jobs: int


def figures(
    recorder: Recorder, count: int, limit: int, apply_started: float, apply_seconds: float
) -> Figures:
    """Latencies from the recorder: apply (the ModelVersion's ADDED event) to its Job's
    ADDED event; a freed place (the k-th outcome decided) to the Job that took it."""
    first_job: dict[str, JobRecord] = {}
    for job in recorder.jobs:
        first_job.setdefault(job.modelversion, job)
    apply_to_job = [
        first_job[n].seen - recorder.mv_seen[n] for n in recorder.mv_seen if n in first_job
    ]
    decided = sorted(j.decided for j in recorder.jobs if j.decided is not None)
    slot_to_job = [
        job.seen - decided[k - limit]
        for k, job in enumerate(recorder.jobs)
        if limit <= k and k - limit < len(decided)
    ]
    status_at = list(recorder.mv_status_at.values())
    outcome_at = list(recorder.mv_outcome_at.values())
    return Figures(
        count=count,
        limit=limit,
        apply_seconds=apply_seconds,
        apply_to_job=apply_to_job,
        slot_to_job=slot_to_job,
        all_status_seconds=(max(status_at) - apply_started) if status_at else float("nan"),
        status_lag=[
            at - recorder.mv_seen[name]
            for name, at in recorder.mv_status_at.items()
            if name in recorder.mv_seen
        ],
        all_finished_seconds=(max(outcome_at) - apply_started) if outcome_at else float("nan"),
        max_active=recorder.max_active,
        jobs=len(recorder.jobs),
    )


def exact_position_patches(recorder: Recorder) -> int:
    """Status patches that exact queue positions would have cost: at each admission (a Job
    created), every ModelVersion still waiting without a Job moves up by one and would need
    its status rewritten."""
    created = sorted(recorder.mv_seen.values())
    admissions = sorted(job.seen for job in recorder.jobs)
    total = 0
    for k, at in enumerate(admissions):
        total += max(0, sum(1 for seen in created if seen <= at) - (k + 1))
    return total


#: Verbs that read and that write.
READS = frozenset({"get", "list"})


def split_requests(requests: dict[tuple[str, str], float]) -> tuple[float, float]:
    """(reads, writes) of ``{(verb, resource): count}``."""
    reads = sum(n for (verb, _), n in requests.items() if verb in READS)
    return reads, sum(requests.values()) - reads


_SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?P<labels>[^}]*)\})? (?P<value>\S+)$")


def parse_metrics(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    """Samples of metric ``name`` in Prometheus text format."""
    out = []
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match is None or match["name"] != name:
            continue
        labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match["labels"] or ""))
        out.append((labels, float(match["value"])))
    return out


def iter_lines(table: list[tuple[str, str]]) -> Iterator[str]:
    """A two-column table, aligned."""
    width = max(len(k) for k, _ in table)
    yield f"{'figure'.ljust(width)}  value"
    yield f"{'-' * width}  {'-' * 24}"
    for key, value in table:
        yield f"{key.ljust(width)}  {value}"


def iter_columns(table: Sequence[tuple[str, ...]], header: tuple[str, ...]) -> Iterator[str]:
    """A table of any number of columns, aligned."""
    widths = [max(len(row[i]) for row in [header, *table]) for i in range(len(header))]
    for row in [header, tuple("-" * w for w in widths), *table]:
        yield "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
