"""End to end: a View and a ModelVersion applied to the real control plane; the operator
creates the Job; the node agent runs the real trainer on a dataset in the real S3 server; the
status follows every step; the checkpoint lands in S3 with the recorded sha256; the trainer's
metrics reach Prometheus through the Pushgateway."""

from __future__ import annotations

import hashlib
import json
import math
import time
from pathlib import Path
from typing import Any

import pytest

from tests.integration import services
from tests.integration.cluster import ControlPlane
from tests.integration.node_agent import NodeAgent
from tests.integration.operator_helpers import apply, condition, get, mv_path, running_operator
from tests.trainer.trainer_helpers import NAMES, free_port, write_digits_imagefolder

pytestmark = pytest.mark.slow

DIGITS = (0, 1, 2)
EPOCHS = 2
BATCH = 8
STEP_ORDER = ("Pending", "Running", "Succeeded")


def _secret(namespace: str, s3: services.S3Server) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "storage", "namespace": namespace},
        "stringData": s3.env(),
    }


def _watch(cp: ControlPlane, path: str, timeout: float) -> tuple[dict[str, Any], list[Any]]:
    """Poll the ModelVersion until it finishes; returns it and every distinct step snapshot
    seen, with the time it was first seen."""
    seen: list[tuple[float, dict[str, str]]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        obj = get(cp, path) or {}
        status = obj.get("status") or {}
        steps = {s["name"]: s["state"] for s in status.get("steps", [])}
        if steps and (not seen or seen[-1][1] != steps):
            seen.append((time.monotonic(), steps))
        if any(
            c["type"] in ("Succeeded", "Failed") and c["status"] == "True"
            for c in status.get("conditions", [])
        ):
            return obj, seen
        time.sleep(0.2)
    raise AssertionError(f"no outcome after {timeout} s; last steps {seen[-1:] if seen else None}")


def test_classification_trains_through_the_operator(
    crds: ControlPlane,
    namespace: str,
    node_agent: Any,
    s3_server: services.S3Server,
    pushgateway: services.Pushgateway,
    prometheus: services.Prometheus,
    tmp_path: Path,
) -> None:
    data = write_digits_imagefolder(tmp_path / "digits", DIGITS, per_class=20, size=32)
    client = s3_server.client()
    bucket = s3_server.create_bucket()
    for path in sorted(data.rglob("*.png")):
        client.put_object(
            Bucket=bucket, Key=f"digits/{path.relative_to(data)}", Body=path.read_bytes()
        )

    view = {
        "apiVersion": "kubevision.dev/v1alpha1",
        "kind": "View",
        "metadata": {"name": "digits"},
        "spec": {
            "task": "classification",
            "concepts": [{"name": NAMES[d]} for d in DIGITS],
            "dataset": {
                "uri": f"s3://{bucket}/digits",
                "format": "imagefolder",
                "credentialsSecretRef": {"name": "storage"},
            },
        },
    }
    mv = {
        "apiVersion": "kubevision.dev/v1alpha1",
        "kind": "ModelVersion",
        "metadata": {"name": "digits-e2e"},
        "spec": {
            "viewRef": {"name": "digits"},
            "architecture": "resnet18",
            "imageResizer": {"width": 32, "height": 32},
            "augmentation": [{"name": "Brightness", "probability": 1.0, "magnitude": 0.2}],
            "training": {"epochs": EPOCHS, "batchSize": BATCH, "dataLoaderWorkers": 0},
            "resources": {"gpus": 0, "cpu": "2", "memory": "6Gi"},
            "output": {
                "uri": f"s3://{bucket}/runs/e2e/",
                "credentialsSecretRef": {"name": "storage"},
            },
        },
    }
    agent: NodeAgent = node_agent(cpu="4", memory="16Gi")
    assert agent is not None
    with running_operator(
        crds,
        tmp_path,
        KUBEVISION_PUSHGATEWAY_URL=pushgateway.url,
        KUBEVISION_TRAINER_METRICS_PORT=str(free_port()),
        KUBEVISION_OUTPUT_BASE_URI=f"s3://{bucket}/default-runs",
    ):
        apply(crds, _secret(namespace, s3_server), view, mv, namespace=namespace)
        obj, seen = _watch(crds, mv_path(namespace, "digits-e2e"), timeout=900)

    status = obj["status"]
    assert condition(obj, "Succeeded")["status"] == "True", json.dumps(status, indent=1)  # type: ignore[index]
    assert status["phase"] == "Succeeded"
    # Every step went Pending -> Running -> Succeeded, in that order, and never back.
    for name in ("Scheduling", "LoadingDataset", "Training", "Evaluating", "Exporting"):
        states = [steps[name] for _, steps in seen if name in steps]
        order = [STEP_ORDER.index(s) for s in states]
        assert order == sorted(order), (name, states)
        assert states[-1] == "Succeeded", (name, states)
    assert status["progress"] == {
        "percent": 100,
        "epoch": EPOCHS,
        "epochs": EPOCHS,
        "display": f"{EPOCHS}/{EPOCHS}",
    }

    def s3(key: str) -> bytes:
        body: bytes = client.get_object(Bucket=bucket, Key=f"runs/e2e/{key}")["Body"].read()
        return body

    checkpoint = status["checkpoint"]
    assert checkpoint["uri"] == f"s3://{bucket}/runs/e2e/checkpoints/best.pt"
    best = s3("checkpoints/best.pt")
    assert hashlib.sha256(best).hexdigest() == checkpoint["sha256"]
    assert len(best) == checkpoint["bytes"]

    records = [json.loads(line) for line in s3("metrics.jsonl").decode().splitlines()]
    assert [r["epoch"] for r in records] == list(range(1, EPOCHS + 1))
    last = status["metrics"]["last"]
    for key in ("epoch", "valLoss", "accuracy", "trainLoss", "learningRate"):
        assert last[key] == pytest.approx(records[-1][key], rel=1e-9), key
    dataset = json.loads(s3("dataset.json"))
    train = sum(1 for image in dataset["images"] if image["split"] == "train")
    assert status["dataset"]["train"] == train

    labels = f'namespace="{namespace}",modelversion="digits-e2e"'
    expected = {
        "kubevision_train_batches_total": EPOCHS * math.ceil(train / BATCH),
        "kubevision_train_epoch": EPOCHS,
        "kubevision_val_loss": records[-1]["valLoss"],
        "kubevision_val_accuracy": records[-1]["accuracy"],
        "kubevision_best_metric": status["metrics"]["best"]["value"],
    }
    for metric, value in expected.items():

        def equal(found: list[services.Sample], value: float = value) -> bool:
            return bool(found) and found[0].value == pytest.approx(value)

        samples = prometheus.wait_for(
            f"max by (namespace, view, modelversion) ({metric}{{{labels}}})", equal, timeout=30
        )
        assert samples[0].labels["view"] == "digits"
