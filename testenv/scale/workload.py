"""The operator's scale workload, shared by ``tests/integration/test_scale.py`` and
``benchmarks/operator_scale.py``: one View, N ModelVersions applied at once (one server-side
``kubectl apply`` of a List, so they are created one after the other in name order), and the
operator with a concurrency limit and the stub trainer (``stub_trainer.py``). ``recorder``
watches a run, ``figures`` sums it up.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import yaml

from testenv.controlplane import ControlPlane
from testenv.scale import stub_trainer

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "01-classification-digits"
VIEW = "digits"
MODELVERSION_LABEL = "kubevision.dev/modelversion"


def mv_name(index: int) -> str:
    """The ``index``-th ModelVersion's name: zero-padded, so names sort in creation order."""
    return f"mv-{index:04d}"


def view_manifest() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((EXAMPLE / "view.yaml").read_text())
    return doc


def modelversion_list(count: int) -> dict[str, Any]:
    """A v1 List of ``count`` small ModelVersions (2 epochs, 100m CPU, 256Mi) over the View."""
    base: dict[str, Any] = yaml.safe_load((EXAMPLE / "modelversion.yaml").read_text())
    base["spec"]["training"]["epochs"] = 2
    base["spec"]["training"]["dataLoaderWorkers"] = 0
    base["spec"]["resources"] = {"gpus": 0, "cpu": "100m", "memory": "256Mi"}
    items = []
    for index in range(count):
        item = json.loads(json.dumps(base))
        item["metadata"] = {"name": mv_name(index)}
        items.append(item)
    return {"apiVersion": "v1", "kind": "List", "items": items}


def operator_env(limit: int) -> dict[str, str]:
    """The operator's settings for the workload: the limit and the stub as trainer."""
    return {
        "KUBEVISION_CONCURRENCY_LIMIT": str(limit),
        "KUBEVISION_TRAINER_COMMAND_OVERRIDE": json.dumps(stub_trainer.command()),
        "KUBEVISION_TRAINER_METRICS_PORT": "0",
    }


def apply_all(cp: ControlPlane, namespace: str, count: int) -> float:
    """Apply the View's ModelVersions in one ``kubectl apply``; returns its seconds."""
    started = time.monotonic()
    cp.kubectl(
        "-n",
        namespace,
        "apply",
        "--server-side",
        "-f",
        "-",
        input=json.dumps(modelversion_list(count)),
        timeout=300,
    )
    return time.monotonic() - started


def delete_all(cp: ControlPlane, namespace: str, timeout: float = 120.0) -> None:
    """Delete the namespace's ModelVersions with one deletecollection request and wait until
    they are gone (their Jobs, Pods and ConfigMaps follow through the garbage collector)."""
    path = f"/apis/kubevision.dev/v1alpha1/namespaces/{namespace}/modelversions"
    cp.request("DELETE", path)
    deadline = time.monotonic() + timeout
    while cp.request("GET", path).get("items"):
        if time.monotonic() > deadline:
            raise AssertionError(f"ModelVersions in {namespace} still there after {timeout} s")
        time.sleep(0.5)
