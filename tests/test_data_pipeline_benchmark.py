"""The photo-scale data pipeline benchmark runs in its CI mode (``--quick``: 6 x 2 photos of
2000 x 1500, two rounds) and prints its figures as JSON lines. The throughputs depend on the
machine; the test checks that each is measured (positive, finite, the quotient of the images and
CPU seconds it prints), that the ratios are the throughputs' quotients and that the profile's stages
add up to its sum. ``-s`` shows them."""

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

THROUGHPUTS = ("imagefolder", "kubevision_first_epoch", "kubevision_later_epoch")
STAGES = ("read", "augment", "resize", "float_normalise", "collate")


def _positive(value: Any) -> float:
    assert isinstance(value, int | float) and 0 < value < math.inf, value
    return float(value)


def test_data_pipeline_benchmark_prints_throughputs_ratios_and_profile() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "data_pipeline.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    print(f"\n{done.stdout}")
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    setup = lines[0]["setup"]
    assert setup["photos"] == 12 and setup["size"] == "2000x1500"
    assert setup["resizer"] == "squash 224x224"
    assert [op["name"] for op in setup["augmentations"]] == [
        "HorizontalFlip",
        "VerticalFlip",
        "Rotate90",
        "Brightness",
    ]
    assert setup["torch_threads"] == 1 and setup["dataloader_workers"] == 0
    assert setup["machine_cores"] >= 1 and setup["load_average"] >= 0
    figures = {line["figure"]: line for line in lines[1:]}
    assert set(figures) == {
        *THROUGHPUTS,
        "first_over_imagefolder",
        "later_over_imagefolder",
        *(f"profile_{stage}" for stage in STAGES),
        "profile_sum",
    }, done.stdout

    rates = {}
    for name in THROUGHPUTS:
        figure = figures[name]
        assert figure["unit"] == "images/s per core" and figure["images"] == 12
        rates[name] = _positive(figure["value"])
        _positive(figure["wall_s"])
        assert rates[name] == pytest.approx(12 / _positive(figure["cpu_s"]), rel=1e-4)
    first = figures["kubevision_first_epoch"]
    assert first["cpu_s"] == pytest.approx(
        _positive(first["prepare_cpu_s"]) + _positive(first["epoch_cpu_s"]), abs=2e-6
    )

    a = rates["imagefolder"]
    assert figures["first_over_imagefolder"]["value"] == pytest.approx(
        rates["kubevision_first_epoch"] / a, rel=1e-3
    )
    assert figures["later_over_imagefolder"]["value"] == pytest.approx(
        rates["kubevision_later_epoch"] / a, rel=1e-3
    )

    stages = [_positive(figures[f"profile_{stage}"]["value"]) for stage in STAGES]
    total = figures["profile_sum"]
    assert total["value"] == pytest.approx(sum(stages), abs=1e-3)
    later = figures["kubevision_later_epoch"]
    assert total["later_epoch"] == pytest.approx(1000 * later["cpu_s"] / 12, rel=1e-4)
