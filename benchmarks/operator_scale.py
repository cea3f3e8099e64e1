"""The operator at scale: N ModelVersions applied at once (one ``kubectl apply`` of a List)
over one View, with a concurrency limit, Jobs that run the stub trainer
(``testenv/scale/stub_trainer.py``) on a node agent. The workload of
``tests/integration/test_scale.py``, on a control plane of its own.

Printed, in a table: time from apply to Job created (p50, p95; for every ModelVersion, so
mostly the time spent queued, and for the admission alone: a place freed to the Job that took
it), time until every ModelVersion has a status and until all finished, the most Jobs active
at once, API requests per ModelVersion (the operator's own counter,
``kubevision_operator_api_requests_total``, and the API server's ``apiserver_request_total``
over all clients; reads and writes apart, and by verb and resource), reconciles per
ModelVersion, what exact queue positions in every status would have cost, and the operator
process's peak memory (VmHWM) and CPU time.

Side by side with a baseline: ``--baseline-ref REF`` runs the same workload first with the
operator of git ``REF`` (a worktree of it on the operator's PYTHONPATH; the stub trainer and
the control plane are this checkout's); otherwise the committed figures of
``benchmarks/baselines/operator_scale.json`` (measured on the development machine) stand
beside when they are of the same count and limit.

    python benchmarks/operator_scale.py [--count 300] [--limit 5] [--baseline-ref REF] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import defaultdict
from pathlib import Path

from testenv import controlplane
from testenv.nodeagent import NodeAgent
from testenv.operator_helpers import Operator, apply, install_crds
from testenv.scale import figures, workload
from testenv.scale.recorder import Recorder

ROOT = Path(__file__).resolve().parents[1]
BASELINE = ROOT / "benchmarks" / "baselines" / "operator_scale.json"
#: The source folders of a checkout, in the order of the package's PYTHONPATH.
SOURCES = ("api", "trainer", "operator", "cli", ".")

NAMESPACE = "scale"


def _proc_status(pid: int, field: str) -> str:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return line.split(":", 1)[1].strip()
    return "?"


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # utime and stime are fields 14 and 15 of /proc/<pid>/stat (1-based), in clock ticks.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _operator_metrics(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return str(response.read().decode())


def _apiserver_requests(cp: controlplane.ControlPlane) -> dict[tuple[str, str], float]:
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler({}),
        urllib.request.HTTPSHandler(context=cp.ssl_context()),
    )
    with opener.open(cp.server + "/metrics", timeout=30) as response:
        text = response.read().decode()
    totals: dict[tuple[str, str], float] = defaultdict(float)
    for labels, value in figures.parse_metrics(text, "apiserver_request_total"):
        if labels.get("verb") == "WATCH":
            continue
        resource = labels.get("resource", "")
        if labels.get("subresource"):
            resource += "/" + labels["subresource"]
        totals[(labels.get("verb", ""), resource)] += value
    return totals


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 10 else f"{seconds:.1f} s"


def run(count: int, limit: int, state: Path, source: Path | None = None) -> list[tuple[str, str]]:
    """Run the workload once, with the operator of the checkout at ``source`` (None: this
    one); returns the table's rows."""
    cp = controlplane.start(state / "control-plane")
    agent: NodeAgent | None = None
    operator: Operator | None = None
    try:
        install_crds(cp, NAMESPACE)
        agent = NodeAgent(
            cp,
            name="scale-node",
            pods=count + 50,
            cpu="64",
            memory="256Gi",
            workdir=state / "node",
        ).start()
        apply(cp, workload.view_manifest(), namespace=NAMESPACE)
        env = workload.operator_env(limit)
        if source is not None:
            env["PYTHONPATH"] = os.pathsep.join(str(source / folder) for folder in SOURCES)
        operator = Operator(cp, state, env)
        operator.start()
        assert operator.process is not None
        pid = operator.process.pid
        cpu_before = _cpu_seconds(pid)
        server_before = _apiserver_requests(cp)
        with Recorder(cp, NAMESPACE) as recorder:
            started = time.monotonic()
            apply_seconds = workload.apply_all(cp, NAMESPACE, count)

            def progress(done: int, jobs: int) -> None:
                if int(time.monotonic() * 2) % 20 == 0:
                    print(
                        f"  {time.monotonic() - started:5.0f} s: {jobs} Jobs, {done} finished",
                        file=sys.stderr,
                    )

            recorder.wait_finished(count, timeout=60 + 3.0 * count, progress=progress)
        text = _operator_metrics(operator.health_port)
        peak = _proc_status(pid, "VmHWM")
        cpu = _cpu_seconds(pid) - cpu_before
        server_after = _apiserver_requests(cp)
    finally:
        if operator is not None and operator.process is not None:
            operator.stop()
        if agent is not None:
            agent.stop()
        cp.stop()

    measured = figures.figures(recorder, count, limit, started, apply_seconds)
    requests = {
        (labels["verb"], labels["resource"]): value
        for labels, value in figures.parse_metrics(text, "kubevision_operator_api_requests_total")
    }
    reconciles = sum(
        value
        for labels, value in figures.parse_metrics(text, "kubevision_operator_reconciles_total")
        if labels.get("kind") == "ModelVersion"
    )
    server = {k: v - server_before.get(k, 0.0) for k, v in server_after.items()}
    top = sorted(requests.items(), key=lambda kv: -kv[1])[:8]
    reads, writes = figures.split_requests(requests)
    outcomes: dict[str, int] = defaultdict(int)
    for outcome in recorder.mv_outcome.values():
        outcomes[outcome] += 1
    violations = figures.order_violations(recorder, limit)
    p = figures.percentile
    return [
        ("ModelVersions, concurrency limit", f"{count}, {limit}"),
        ("outcomes", json.dumps(dict(outcomes))),
        ("kubectl apply of the List", _ms(apply_seconds)),
        ("apply -> Job created, p50", _ms(p(measured.apply_to_job, 0.50))),
        ("apply -> Job created, p95", _ms(p(measured.apply_to_job, 0.95))),
        ("place freed -> next Job created, p50", _ms(p(measured.slot_to_job, 0.50))),
        ("place freed -> next Job created, p95", _ms(p(measured.slot_to_job, 0.95))),
        ("apply -> every ModelVersion has a status", _ms(measured.all_status_seconds)),
        (
            "end of the apply -> every ModelVersion has a status",
            _ms(measured.all_status_seconds - apply_seconds),
        ),
        (
            "a ModelVersion created -> its first status, p50 / p95 / max",
            " / ".join(
                _ms(value)
                for value in (
                    p(measured.status_lag, 0.50),
                    p(measured.status_lag, 0.95),
                    max(measured.status_lag, default=float("nan")),
                )
            ),
        ),
        ("apply -> every ModelVersion finished", _ms(measured.all_finished_seconds)),
        ("Jobs created / most active at once", f"{measured.jobs} / {measured.max_active}"),
        (
            "admissions not at the queue's head / beyond its first places",
            f"{len(figures.order_violations(recorder, 1))} / {len(violations)}",
        ),
        ("operator API requests per ModelVersion", f"{sum(requests.values()) / count:.1f}"),
        ("  reads (get, list) / writes per MV", f"{reads / count:.1f} / {writes / count:.1f}"),
        (
            "  of which (verb resource: per MV)",
            ", ".join(f"{v} {r}: {n / count:.2f}" for (v, r), n in top),
        ),
        ("API server requests per MV, all clients", f"{sum(server.values()) / count:.1f}"),
        ("operator reconciles per ModelVersion", f"{reconciles / count:.1f}"),
        (
            "status patches exact queue positions would cost, per MV",
            f"{figures.exact_position_patches(recorder) / count:.1f}",
        ),
        ("operator peak memory (VmHWM)", peak),
        ("operator CPU time during the run", f"{cpu:.1f} s"),
    ]


def _worktree(ref: str, state: Path) -> Path:
    """A detached worktree of this repository at ``ref``."""
    path = state / "baseline-src"
    subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(path), ref],
        check=True,
        capture_output=True,
    )
    return path


def _committed(count: int, limit: int) -> tuple[str, dict[str, str]] | None:
    """The committed baseline's rows, when they are of ``count`` and ``limit``."""
    if not BASELINE.exists():
        return None
    data = json.loads(BASELINE.read_text())
    if (data.get("count"), data.get("limit")) != (count, limit):
        return None
    return str(data["label"]), dict(data["rows"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=300, help="ModelVersions (300)")
    parser.add_argument("--limit", type=int, default=5, help="concurrency limit (5)")
    parser.add_argument("--baseline-ref", help="also run the operator of this git ref, first")
    parser.add_argument("--keep", action="store_true", help="keep the state folder (logs)")
    args = parser.parse_args(argv)
    state = Path(tempfile.mkdtemp(prefix="kubevision-scale-"))
    print(f"state and logs in {state}", file=sys.stderr)
    baseline: tuple[str, dict[str, str]] | None = None
    try:
        if args.baseline_ref:
            source = _worktree(args.baseline_ref, state)
            rows = run(args.count, args.limit, state / "baseline", source)
            baseline = (f"operator at {args.baseline_ref}", dict(rows))
        else:
            baseline = _committed(args.count, args.limit)
        rows = run(args.count, args.limit, state / "current")
    finally:
        if args.baseline_ref:
            subprocess.run(
                [
                    "git",
                    "-C",
                    str(ROOT),
                    "worktree",
                    "remove",
                    "--force",
                    str(state / "baseline-src"),
                ],
                check=False,
                capture_output=True,
            )
    if baseline is None:
        print("\n".join(figures.iter_lines(rows)))
    else:
        label, before = baseline
        print(f"baseline: {label}")
        table = [(key, before.get(key, "-"), value) for key, value in rows]
        print("\n".join(figures.iter_columns(table, ("figure", "baseline", "this checkout"))))
    if not args.keep:
        shutil.rmtree(state, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
