"""The distributed benchmarks run in their CI mode (``--quick``) and print their figures: the
scaling benchmark images/s of 1 and 2 processes and the efficiency, the overhead benchmark
both paths' images/s and their ratio. Their values depend on the machine; the test checks
that each is measured (positive, finite). ``-s`` shows them."""

from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _run(script: str) -> str:
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), "--quick", "--device", "cpu"],
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    print(f"\n{done.stdout}")
    return done.stdout


def test_scaling_benchmark_measures_one_and_two_processes() -> None:
    out = _run("distributed_scaling.py")
    rows = re.findall(
        r"^(\d) process\(es\), global batch +(\d+): +([\d.]+) images/s, "
        r"scaling efficiency ([\d.]+)$",
        out,
        re.M,
    )
    assert [(r[0], r[1]) for r in rows] == [("1", "16"), ("2", "32")], out
    assert float(rows[0][3]) == 1.0
    for _, _, rate, efficiency in rows:
        assert 0 < float(rate) < math.inf and 0 < float(efficiency) < math.inf


def test_overhead_benchmark_compares_both_paths() -> None:
    out = _run("distributed_overhead.py")
    rates = re.findall(
        r"^(single-process path|distributed path \(1 process\)) +([\d.]+) images/s$", out, re.M
    )
    assert [name for name, _ in rates] == ["single-process path", "distributed path (1 process)"]
    assert all(float(rate) > 0 for _, rate in rates)
    ratio = re.search(
        r"^distributed / single +([\d.]+) \(cost [+-][\d.]+%, target < 3 %\)$", out, re.M
    )
    assert ratio is not None, out
