"""The operator scale benchmark runs in a small mode in CI so that it cannot rot: 8
ModelVersions under a limit of 2, side by side with the operator of the committed HEAD (a
worktree of it, ``--baseline-ref``). It checks that both columns are measured and that the
figures the issue pins hold their shape (every ModelVersion Succeeded, at most 2 Jobs at
once, no read by this checkout's reconciles); the 300-ModelVersion figures are in
docs/scale.md. ``-s`` shows the table."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def test_operator_scale_benchmark_runs_side_by_side() -> None:
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "operator_scale.py"),
            "--count",
            "8",
            "--limit",
            "2",
            "--baseline-ref",
            "HEAD",
        ],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    print(f"\n{done.stdout}")
    lines = done.stdout.splitlines()
    assert lines[0] == "baseline: operator at HEAD", lines[:2]
    header = lines[1]
    first, second = header.index("baseline"), header.index("this checkout")
    rows = {
        line[:first].strip(): (line[first:second].strip(), line[second:].strip())
        for line in lines[3:]
    }
    for column in (0, 1):
        assert rows["outcomes"][column] == '{"Succeeded": 8}', rows["outcomes"]
        assert rows["Jobs created / most active at once"][column] == "8 / 2"
    # This checkout's reconciles read nothing: its only reads are the CA Secret and the CRDs
    # (the start-up check), at start.
    requests = rows["of which (verb resource: per MV)"][1]
    reads = [item for item in requests.split(", ") if item.startswith(("get ", "list "))]
    at_start = ("get secrets", "get customresourcedefinitions")
    assert all(item.startswith(at_start) for item in reads), requests
