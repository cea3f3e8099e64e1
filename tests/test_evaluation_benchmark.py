"""The evaluation benchmark runs in its CI mode (``--quick``: 200 synthetic detection images)
and prints both times and their ratio. The times depend on the machine; the test checks that
each is measured (positive, finite) and the ratio is the times' quotient. ``-s`` shows them."""

from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def test_evaluation_benchmark_compares_with_cocoeval_alone() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "evaluation.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    print(f"\n{out}")
    assert re.search(r"^200 images, 10 concepts, \d+ annotated boxes, \d+ detections", out, re.M)
    times = dict(re.findall(r"^(COCOeval alone|whole evaluation) .*? +([\d.]+) s$", out, re.M))
    assert set(times) == {"COCOeval alone", "whole evaluation"}, out
    alone, whole = float(times["COCOeval alone"]), float(times["whole evaluation"])
    assert 0 < alone < math.inf and 0 < whole < math.inf
    ratio = re.search(r"^whole / COCOeval alone ([\d.]+) \(target < 2\)$", out, re.M)
    assert ratio is not None, out
    assert float(ratio.group(1)) == pytest.approx(whole / alone, abs=0.01)
