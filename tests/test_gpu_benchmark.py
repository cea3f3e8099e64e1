"""The GPU benchmark runs in its CI mode on the CPU (``benchmarks/gpu.sh --device cpu
--quick``), so that it cannot rot: every figure is printed, measured (positive, finite), the
GPU-only one says why it was skipped, and each ratio is the quotient of the printed figures.
``-s`` shows them."""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow

RATES = ("cache_fill", "model", "trainer", "bare", "data_cpu", "trainer_compiled")


def test_gpu_benchmark_runs_on_the_cpu_in_quick_mode() -> None:
    done = subprocess.run(
        [str(ROOT / "benchmarks" / "gpu.sh"), "--device", "cpu", "--quick"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    print(f"\n{done.stdout}")
    lines: dict[str, dict[str, Any]] = {}
    for line in done.stdout.splitlines():
        record = json.loads(line)
        lines[record["figure"]] = record
    assert lines["setup"]["value"]["device"] == "cpu"
    assert lines["setup"]["value"]["architecture"] == "resnet18"
    assert lines["gpu"]["value"] is None
    assert lines["data_gpu"]["value"] is None and "CUDA" in lines["data_gpu"]["skipped"]
    # Its code (batched decode_jpeg, resize, flip, conversion) ran on the CPU's decoder.
    assert 0 < lines["data_gpu"]["same_code_on_cpu"] < math.inf
    for name in RATES:
        value = lines[name]["value"]
        assert isinstance(value, float) and math.isfinite(value) and value > 0, (name, value)
    for name in ("model", "trainer", "bare", "data_cpu", "trainer_compiled"):
        record = lines[name]
        # Each rate is its images over its seconds, as printed (rounded to 0.01 images/s).
        assert record["value"] == pytest.approx(record["images"] / record["seconds"], rel=1e-3)
    assert lines["trainer_compiled"]["backend"] == "eager"
    for ratio, (top, bottom) in {
        "trainer_over_bare": ("trainer", "bare"),
        "data_over_model": ("data_cpu", "model"),
        "compiled_over_eager": ("trainer_compiled", "trainer"),
    }.items():
        expected = lines[top]["value"] / lines[bottom]["value"]
        # Of the figures as printed (rounded to 0.01 images/s), the ratio rounded to 6 places.
        assert lines[ratio]["value"] == pytest.approx(expected, abs=1e-6), ratio
