"""The pure core imports no Kubernetes client, no kopf, no HTTP server and no torch
(docs/operator.md, Modules)."""

from __future__ import annotations

import json
import subprocess
import sys

PURE = [
    "settings",
    "naming",
    "jobstate",
    "podstate",
    "workqueue",
    "observe",
    "situation",
    "gang",
    "statustable",
    "status",
    "viewstatus",
    "queue",
    "render",
    "completion",
    "pruning",
    "crdcheck",
]
FORBIDDEN = ("kopf", "kubernetes", "aiohttp", "prometheus_client", "torch", "torchvision")

CHECK = """
import importlib, json, sys
for name in {modules!r}:
    importlib.import_module("kubevision_operator." + name)
loaded = sorted(m for m in sys.modules if m.split(".")[0] in {forbidden!r})
print(json.dumps(loaded))
"""


def test_pure_modules_load_no_client() -> None:
    code = CHECK.format(modules=PURE, forbidden=FORBIDDEN)
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []


def test_the_check_can_fail() -> None:
    """The same check sees a forbidden module when one is imported."""
    code = "import json\n" + CHECK.format(modules=PURE, forbidden=("json",))
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert "json" in json.loads(result.stdout)
