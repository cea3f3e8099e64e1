"""The export latency benchmark runs in its CI mode (``--quick``) and prints its figures as
JSON lines: eager PyTorch and onnxruntime at batch 1 and 32 on the CPU for the classification
example's model. The latencies depend on the machine; the test checks that each is measured
(positive, finite), that images/s is the batch over the median, that the speed-ups are the
latencies' quotients and that the timed graph is the model (logits within 1e-4). ``-s`` shows
them."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _positive(value: Any) -> float:
    assert isinstance(value, int | float) and 0 < value < math.inf, value
    return float(value)


def test_export_benchmark_prints_latencies_side_by_side() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "export.py"), "--quick", "--threads", "1"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    print(f"\n{done.stdout}")
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    setup = lines[0]["setup"]
    assert setup["model"] == "resnet18 32x32" and setup["example"] == "01-classification-digits"
    assert setup["threads"] == 1 and setup["opset"] == 17
    figures = {line["figure"]: line for line in lines[1:]}
    assert set(figures) == {
        *(f"{name}_batch{b}" for name in ("eager", "onnxruntime") for b in (1, 32)),
        "onnxruntime_speedup_batch1",
        "onnxruntime_speedup_batch32",
        "max_abs_logit_diff",
    }, done.stdout
    for batch in (1, 32):
        medians = {}
        for name in ("eager", "onnxruntime"):
            figure = figures[f"{name}_batch{batch}"]
            assert figure["unit"] == "ms" and figure["batch"] == batch and figure["runs"] > 0
            medians[name] = _positive(figure["value"])
            assert _positive(figure["images_per_s"]) == pytest.approx(
                1000 * batch / medians[name], rel=1e-3
            )
        speedup = figures[f"onnxruntime_speedup_batch{batch}"]["value"]
        assert _positive(speedup) == pytest.approx(
            medians["eager"] / medians["onnxruntime"], rel=1e-3
        )
    assert 0 <= figures["max_abs_logit_diff"]["value"] < 1e-4
