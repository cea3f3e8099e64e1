"""Shared pieces of the end-to-end tests (``test_e2e_training.py``, ``test_e2e_scenarios.py``):
small datasets uploaded to the real S3 server, View and ModelVersion manifests, a watcher
that records what the status showed and when, and the checks of a successful training.

The ``e2e`` fixture bundles what every end-to-end test needs (control plane with the CRDs, a
fresh namespace, the S3 server with a fresh bucket, Pushgateway and Prometheus) in one
:class:`E2E`; a test module imports it (``from tests.integration.e2e_helpers import e2e``).
"""

from __future__ import annotations

import hashlib
import json
import ssl
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from kubevision_operator.settings import OperatorSettings
from kubevision_trainer.data import torchdata
from testenv.controlplane import ControlPlane
from testenv.operator_helpers import (
    ROOT,
    Operator,
    apply,
    get,
    mv_path,
    running_operator,
)
from tests.integration import services
from tests.trainer.trainer_helpers import NAMES, free_port, write_digits_imagefolder

STEP_NAMES = ("Scheduling", "LoadingDataset", "Training", "Evaluating", "Exporting")
STEP_ORDER = ("Pending", "Running", "Succeeded")
#: The Done-when's bound between an epoch's record in metrics.jsonl and the status showing it.
EPOCH_STATUS_LAG_S = 5.0
#: The operator's least interval between two status patches of one ModelVersion
#: (``OperatorSettings.status_write_interval_seconds``, default).
STATUS_WRITE_INTERVAL_S = OperatorSettings.model_fields["status_write_interval_seconds"].default


@dataclass(frozen=True)
class Dataset:
    """A dataset in S3: the View's ``spec.dataset`` and its concepts."""

    task: str
    uri: str
    format: str
    concepts: list[str]


@dataclass
class E2E:
    """One end-to-end test's world: control plane, namespace, S3 bucket, metrics servers."""

    cp: ControlPlane
    namespace: str
    s3: services.S3Server
    bucket: str
    pushgateway: services.Pushgateway
    prometheus: services.Prometheus
    tmp_path: Path
    client: Any = field(init=False)

    def __post_init__(self) -> None:
        self.client = self.s3.client()

    # --- storage ---------------------------------------------------------------------------

    def upload(self, folder: Path, prefix: str) -> None:
        """Every file under ``folder`` to ``s3://<bucket>/<prefix>/<relative path>``."""
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            if path.name.startswith("."):
                continue
            key = f"{prefix}/{path.relative_to(folder).as_posix()}"
            self.client.put_object(Bucket=self.bucket, Key=key, Body=path.read_bytes())

    def read(self, key: str) -> bytes | None:
        """An object of the bucket, or None when it does not exist."""
        try:
            body: bytes = self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None
            raise
        return body

    def records(self, prefix: str, name: str = "metrics.jsonl") -> list[dict[str, Any]]:
        """The JSON lines of ``<prefix>/<name>`` (empty while it does not exist)."""
        body = self.read(f"{prefix}/{name}")
        return [json.loads(line) for line in (body or b"").decode().splitlines() if line]

    # --- API -------------------------------------------------------------------------------

    def apply(self, *manifests: dict[str, Any]) -> None:
        apply(self.cp, *manifests, namespace=self.namespace)

    def path(self, name: str) -> str:
        return mv_path(self.namespace, name)

    def get(self, name: str) -> dict[str, Any] | None:
        return get(self.cp, self.path(name))

    def jobs(self) -> list[dict[str, Any]]:
        listing = get(self.cp, f"/apis/batch/v1/namespaces/{self.namespace}/jobs")
        return list((listing or {}).get("items", []))

    def pods(self, job: str) -> list[dict[str, Any]]:
        listing = get(
            self.cp, f"/api/v1/namespaces/{self.namespace}/pods?labelSelector=job-name%3D{job}"
        )
        return list((listing or {}).get("items", []))

    def secret(self) -> dict[str, Any]:
        """The storage Secret ``storage`` with the S3 server's ``AWS_*`` keys."""
        return {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "storage", "namespace": self.namespace},
            "stringData": self.s3.env(),
        }

    @contextmanager
    def operator(self, **env: str) -> Iterator[Operator]:
        """The operator, pushing trainer metrics to the Pushgateway, writing to this bucket."""
        settings = {
            "KUBEVISION_PUSHGATEWAY_URL": self.pushgateway.url,
            "KUBEVISION_TRAINER_METRICS_PORT": str(free_port()),
            "KUBEVISION_OUTPUT_BASE_URI": f"s3://{self.bucket}/default-runs",
            **env,
        }
        with running_operator(self.cp, self.tmp_path, **settings) as operator:
            yield operator


@pytest.fixture
def e2e(
    crds: ControlPlane,
    namespace: str,
    s3_server: services.S3Server,
    pushgateway: services.Pushgateway,
    prometheus: services.Prometheus,
    tmp_path: Path,
) -> E2E:
    """An :class:`E2E` with a fresh namespace and bucket."""
    return E2E(
        crds, namespace, s3_server, s3_server.create_bucket(), pushgateway, prometheus, tmp_path
    )


# --- datasets --------------------------------------------------------------------------------


def _prepare(tmp_path: Path, name: str, limit: int) -> Path:
    """One of ``examples/prepare.py``'s datasets, capped at ``limit`` images."""
    out = tmp_path / "prepared"
    subprocess.run(
        [
            *(sys.executable, str(ROOT / "examples" / "prepare.py"), "--out", str(out)),
            *("--limit", str(limit), "--only", name),
        ],
        check=True,
        capture_output=True,
    )
    return out / name


def classification_dataset(
    env: E2E, digits: tuple[int, ...] = (0, 1, 2), per_class: int = 20, prefix: str = "digits"
) -> Dataset:
    """An ImageFolder of 32x32 digits scans."""
    data = write_digits_imagefolder(env.tmp_path / prefix, digits, per_class=per_class, size=32)
    env.upload(data, prefix)
    return Dataset(
        "classification",
        f"s3://{env.bucket}/{prefix}",
        "imagefolder",
        [NAMES[d] for d in digits],
    )


def tagging_dataset(env: E2E, images: int = 40) -> Dataset:
    """``tags.csv`` over pairs of digits tagged with three/five/eight; about 30% of the
    images have no concept (an empty cell)."""
    data = _prepare(env.tmp_path, "digits-tags", images)
    rows = (data / "tags.csv").read_text().splitlines()[1:]
    assert any(row.endswith(",") for row in rows), "expected images without concept"
    env.upload(data, "tags")
    return Dataset(
        "tagging", f"s3://{env.bucket}/tags/tags.csv", "tags-csv", ["eight", "five", "three"]
    )


def detection_dataset(env: E2E, images: int = 20) -> Dataset:
    """COCO canvases with zero/four/seven boxed, category ids 1, 3, 7 (not contiguous)."""
    data = _prepare(env.tmp_path, "digits-detection", images)
    coco = json.loads((data / "annotations.json").read_text())
    assert sorted(c["id"] for c in coco["categories"]) == [1, 3, 7]
    env.upload(data, "coco")
    return Dataset(
        "detection", f"s3://{env.bucket}/coco/annotations.json", "coco", ["four", "seven", "zero"]
    )


# --- manifests -------------------------------------------------------------------------------


def view(name: str, dataset: Dataset) -> dict[str, Any]:
    return {
        "apiVersion": "kubevision.dev/v1alpha1",
        "kind": "View",
        "metadata": {"name": name},
        "spec": {
            "task": dataset.task,
            "concepts": [{"name": c} for c in dataset.concepts],
            "dataset": {
                "uri": dataset.uri,
                "format": dataset.format,
                "credentialsSecretRef": {"name": "storage"},
            },
        },
    }


def modelversion(
    env: E2E,
    name: str,
    view_name: str,
    *,
    architecture: str = "resnet18",
    size: tuple[int, int] = (32, 32),
    epochs: int = 2,
    batch: int = 8,
    resources: dict[str, Any] | None = None,
    run_policy: dict[str, Any] | None = None,
    **training: Any,
) -> dict[str, Any]:
    """A lean ModelVersion writing to ``s3://<bucket>/runs/<name>/``."""
    spec: dict[str, Any] = {
        "viewRef": {"name": view_name},
        "architecture": architecture,
        "imageResizer": {"width": size[0], "height": size[1]},
        "augmentation": [{"name": "Brightness", "probability": 1.0, "magnitude": 0.2}],
        "training": {"epochs": epochs, "batchSize": batch, "dataLoaderWorkers": 0, **training},
        "resources": resources or {"gpus": 0, "cpu": "2", "memory": "6Gi"},
        "output": {
            "uri": f"s3://{env.bucket}/runs/{name}/",
            "credentialsSecretRef": {"name": "storage"},
        },
    }
    if run_policy:
        spec["runPolicy"] = run_policy
    return {
        "apiVersion": "kubevision.dev/v1alpha1",
        "kind": "ModelVersion",
        "metadata": {"name": name},
        "spec": spec,
    }


# --- watching --------------------------------------------------------------------------------


def outcome(obj: dict[str, Any]) -> str | None:
    """``Succeeded`` or ``Failed`` once that condition is True, else None."""
    for cond in (obj.get("status") or {}).get("conditions", []):
        if cond["type"] in ("Succeeded", "Failed") and cond["status"] == "True":
            return str(cond["type"])
    return None


class Watcher:
    """Polls one ModelVersion (and optionally its ``metrics.jsonl`` and its Job's Pods) and
    records, on the test's monotonic clock, what it saw first and when.

    Attributes:
        steps: each distinct ``{step name: state}`` snapshot, with the time first seen.
        status_epochs: epoch -> (time ``status.metrics.last.epoch`` first showed it, that
            ``metrics.last``).
        record_epochs: epoch -> time its record was first readable in ``metrics.jsonl``.
        pods: pod name -> the last version of the Pod seen (its final status survives the
            Pod's deletion).
        last: the last ModelVersion read.
    """

    def __init__(
        self, env: E2E, name: str, *, records_prefix: str | None = None, every: float = 0.25
    ) -> None:
        self.env = env
        self.name = name
        self.records_prefix = records_prefix
        self.every = every
        self.steps: list[tuple[float, dict[str, str]]] = []
        self.status_epochs: dict[int, tuple[float, dict[str, Any]]] = {}
        self.record_epochs: dict[int, float] = {}
        self.pods: dict[str, dict[str, Any]] = {}
        self.watch_pods = False
        self.last: dict[str, Any] = {}

    def poll(self) -> dict[str, Any]:
        obj = self.env.get(self.name) or {}
        now = time.monotonic()
        status = obj.get("status") or {}
        steps = {s["name"]: s["state"] for s in status.get("steps", [])}
        if steps and (not self.steps or self.steps[-1][1] != steps):
            self.steps.append((now, steps))
        last = (status.get("metrics") or {}).get("last")
        if last and last.get("epoch") not in self.status_epochs:
            self.status_epochs[int(last["epoch"])] = (now, last)
        if self.records_prefix is not None:
            for record in self.env.records(self.records_prefix):
                self.record_epochs.setdefault(int(record["epoch"]), time.monotonic())
        if self.watch_pods and status.get("jobName"):
            for pod in self.env.pods(status["jobName"]):
                self.pods[pod["metadata"]["name"]] = pod
        self.last = obj
        return obj

    def until(
        self, what: str, done: Callable[[dict[str, Any]], Any], timeout: float = 600
    ) -> dict[str, Any]:
        """Poll until ``done(obj)`` is truthy; returns that ModelVersion."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            obj = self.poll()
            if done(obj):
                return obj
            time.sleep(self.every)
        status = json.dumps(self.last.get("status"), indent=1)[-3000:]
        raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}: {status}")

    def finished(self, timeout: float = 600) -> dict[str, Any]:
        """Poll until Succeeded or Failed is True."""
        return self.until("an outcome", outcome, timeout)

    def states(self, step: str) -> list[str]:
        """The states ``step`` went through, duplicates collapsed."""
        out: list[str] = []
        for _, steps in self.steps:
            if step in steps and (not out or out[-1] != steps[step]):
                out.append(steps[step])
        return out


def progress_epoch(obj: dict[str, Any]) -> int:
    return int(((obj.get("status") or {}).get("progress") or {}).get("epoch") or 0)


def training_running(obj: dict[str, Any]) -> bool:
    """The trainer has reported a first training batch (progress moved past 0 %)."""
    status = obj.get("status") or {}
    steps = {s["name"]: s["state"] for s in status.get("steps", [])}
    return (
        steps.get("Training") == "Running" and (status.get("progress") or {}).get("percent", 0) > 0
    )


class PodEvents:
    """Every version of the namespace's Pods, from a real watch (``?watch=true``) in a
    thread: unlike polling, it sees the last status the node agent writes before it finishes
    a graceful deletion (exit code, termination message)."""

    def __init__(self, env: E2E, timeout_s: int = 900) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []
        self._lock = threading.Lock()
        cp = env.cp
        context = ssl.create_default_context(cafile=str(cp.ca_cert))
        context.load_cert_chain(str(cp.admin_cert), str(cp.admin_key))
        self._opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context)
        )
        query = urllib.parse.urlencode({"watch": "true", "timeoutSeconds": str(timeout_s)})
        self._url = f"{cp.server}/api/v1/namespaces/{env.namespace}/pods?{query}"
        self._thread = threading.Thread(target=self._run, name="pod-events", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            with self._opener.open(self._url) as stream:
                for line in stream:
                    event = json.loads(line)
                    with self._lock:
                        self.events.append((str(event["type"]), event["object"]))
        except OSError:  # the test ended and the server went away
            return

    def terminated(self, pod: str) -> dict[str, Any] | None:
        """The trainer container's last ``state.terminated`` seen for ``pod``."""
        found = None
        with self._lock:
            events = list(self.events)
        for _, obj in events:
            if obj["metadata"]["name"] != pod:
                continue
            for status in (obj.get("status") or {}).get("containerStatuses") or []:
                terminated = (status.get("state") or {}).get("terminated")
                if status["name"] == "trainer" and terminated:
                    found = terminated
        return found

    def names(self) -> list[str]:
        """Pod names in the order they first appeared."""
        with self._lock:
            events = list(self.events)
        return list(dict.fromkeys(obj["metadata"]["name"] for _, obj in events))


# --- the checks of a successful training ------------------------------------------------------


def assert_steps_in_order(watcher: Watcher) -> None:
    """Every step went Pending -> Running -> Succeeded, in that order, never back, and ended
    Succeeded."""
    for name in STEP_NAMES:
        states = watcher.states(name)
        order = [STEP_ORDER.index(s) for s in states]
        assert order == sorted(order), (name, states)
        assert states[-1] == "Succeeded", (name, states)


def assert_epochs_on_time(watcher: Watcher, records: list[dict[str, Any]]) -> dict[int, float]:
    """Each epoch reached the status within :data:`EPOCH_STATUS_LAG_S` plus the operator's
    status write interval of its record becoming readable in metrics.jsonl: that epoch or a
    later one (the operator merges the reports of one interval into one status patch, so an
    epoch shorter than the interval may be passed over, docs/scale.md). An epoch the status
    showed shows the record's values; the last epoch always shows. Both times are when the
    same polling loop first saw each (so each is late by at most one poll); returns the lags."""
    lags: dict[int, float] = {}
    bound = EPOCH_STATUS_LAG_S + STATUS_WRITE_INTERVAL_S
    for record in records:
        epoch = int(record["epoch"])
        assert epoch in watcher.record_epochs, (epoch, sorted(watcher.record_epochs))
        shown = [seen for e, (seen, _) in watcher.status_epochs.items() if e >= epoch]
        assert shown, (epoch, sorted(watcher.status_epochs))
        lags[epoch] = min(shown) - watcher.record_epochs[epoch]
        assert abs(lags[epoch]) <= bound, lags
        if epoch in watcher.status_epochs:
            assert_record(watcher.status_epochs[epoch][1], record)
    if records:
        assert int(records[-1]["epoch"]) in watcher.status_epochs, sorted(watcher.status_epochs)
    return lags


def assert_record(last: dict[str, Any], record: dict[str, Any]) -> None:
    """``status.metrics.last`` holds exactly the record's values (nulls left out)."""
    for key, value in record.items():
        if value is None:
            assert last.get(key) is None, (key, last)
        else:
            assert last[key] == pytest.approx(value, rel=1e-9), (key, last, record)


@dataclass(frozen=True)
class Trained:
    """What a successful run left: the final ModelVersion and its records."""

    obj: dict[str, Any]
    records: list[dict[str, Any]]
    batches: list[dict[str, Any]]
    train_images: int


def assert_trained(env: E2E, obj: dict[str, Any], prefix: str, epochs: int) -> Trained:
    """Succeeded with full progress, a checkpoint in S3 with the recorded sha256 and size,
    one metrics.jsonl record per epoch whose last equals ``status.metrics.last``, and the
    dataset counts of dataset.json."""
    status = obj["status"]
    assert outcome(obj) == "Succeeded", json.dumps(status, indent=1)
    assert status["phase"] == "Succeeded"
    assert status["progress"] == {
        "percent": 100,
        "epoch": epochs,
        "epochs": epochs,
        "display": f"{epochs}/{epochs}",
    }
    checkpoint = status["checkpoint"]
    assert checkpoint["uri"] == f"s3://{env.bucket}/{prefix}/checkpoints/best.pt"
    best = env.read(f"{prefix}/checkpoints/best.pt")
    assert best is not None
    assert hashlib.sha256(best).hexdigest() == checkpoint["sha256"]
    assert len(best) == checkpoint["bytes"]

    records = env.records(prefix)
    assert [r["epoch"] for r in records] == list(range(1, epochs + 1))
    assert_record(status["metrics"]["last"], records[-1])
    dataset = json.loads(env.read(f"{prefix}/dataset.json") or b"{}")
    train = sum(1 for image in dataset["images"] if image["split"] == "train")
    assert status["dataset"]["train"] == train
    return Trained(obj, records, env.records(prefix, "batches.jsonl"), train)


def assert_prometheus(
    env: E2E, name: str, view_name: str, trained: Trained, epochs: int, batch: int
) -> None:
    """Each trainer metric, queried with the ModelVersion's labels and the dashboards'
    ``max by (namespace, view, modelversion)``, equals what the run recorded: the epoch
    gauges the last metrics.jsonl record, the batch gauges the last batches.jsonl record,
    the counters epochs x batches per epoch (and the images they held). A metric the task
    has no value for (detection's accuracy) is absent."""
    status = trained.obj["status"]
    record = trained.records[-1]
    dataset = status["dataset"]
    n_train = dataset.get("trainBalanced") or dataset["train"]
    per_epoch = torchdata.batches_per_epoch(n_train, batch)
    assert len(trained.batches) == epochs * per_epoch
    expected: dict[str, float | None] = {
        "kubevision_train_batches_total": epochs * per_epoch,
        "kubevision_train_images_total": epochs * n_train,
        "kubevision_train_epoch": record["epoch"],
        "kubevision_val_loss": record["valLoss"],
        "kubevision_val_accuracy": record.get("accuracy"),
        "kubevision_val_map": record.get("mAP"),
        "kubevision_best_metric": status["metrics"]["best"]["value"],
        # "Learning rate of the last training batch", not the record's "at the end of the
        # epoch" (the schedule has stepped once more since): batches.jsonl holds that batch.
        "kubevision_train_learning_rate": trained.batches[-1]["learningRate"],
        "kubevision_train_batch_loss": trained.batches[-1]["loss"],
    }
    labels = f'namespace="{env.namespace}",modelversion="{name}"'
    for metric, value in expected.items():
        promql = f"max by (namespace, view, modelversion) ({metric}{{{labels}}})"
        if value is None:
            continue

        def equal(found: list[services.Sample], value: float = value) -> bool:
            return bool(found) and found[0].value == pytest.approx(value, rel=1e-9)

        samples = env.prometheus.wait_for(promql, equal, timeout=30)
        assert samples[0].labels["view"] == view_name, samples
    for metric, value in expected.items():
        if value is None:
            promql = f"{metric}{{{labels}}}"
            assert env.prometheus.query(promql) == [], metric


@dataclass(frozen=True)
class Case:
    """One task's lean training."""

    dataset: Callable[[E2E], Dataset]
    architecture: str
    size: tuple[int, int]
    epochs: int
    batch: int


CASES = {
    "classification": Case(classification_dataset, "resnet18", (32, 32), 2, 8),
    # tags-csv, about 30% of the images without concept.
    "tagging": Case(tagging_dataset, "resnet18", (32, 32), 2, 8),
    # COCO with category ids 1, 3, 7; the lightest torchvision detector at its canvas size.
    "detection": Case(detection_dataset, "fasterrcnn_mobilenet_v3_large_320_fpn", (128, 128), 1, 4),
}
