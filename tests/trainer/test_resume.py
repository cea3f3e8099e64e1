"""A trainer killed from outside resumes exactly: SIGKILL inside epoch 2 of 3, restart, and
every model and optimizer tensor and every metrics.jsonl value equals an uninterrupted run's.
A kill during a checkpoint write leaves best.pt as it was."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from kubevision_trainer import checkpoint
from tests.trainer.trainer_helpers import (
    batches_total,
    classification_plan,
    free_port,
    write_digits_imagefolder,
)

DIGITS = (0, 1, 2)
pytestmark = pytest.mark.slow


def _trainer(plan_file: Path, cache: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "KUBEVISION_CACHE_DIR": str(cache), "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "kubevision_cli",
            "trainer",
            "--plan",
            str(plan_file),
            "--device",
            "cpu",
            "--termination-log",
            str(plan_file.with_suffix(".termination")),
        ],
        env=env,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )


def _load(path: Path) -> dict[str, Any]:
    return checkpoint.from_bytes(path.read_bytes(), str(path))


def _assert_same_tensors(a: Any, b: Any, where: str) -> int:
    """Walks two nested state structures; returns the number of tensors compared."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and torch.equal(a, b), f"{where} differs"
        return 1
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        return sum(_assert_same_tensors(a[k], b[k], f"{where}.{k}") for k in a)
    if isinstance(a, list | tuple):
        assert len(a) == len(b), where
        pairs = enumerate(zip(a, b, strict=True))
        return sum(_assert_same_tensors(x, y, f"{where}[{i}]") for i, (x, y) in pairs)
    assert a == b, f"{where}: {a!r} != {b!r}"
    return 0


def test_sigkill_mid_epoch_then_resume_equals_uninterrupted_run(tmp_path: Path) -> None:
    data = write_digits_imagefolder(tmp_path / "data", DIGITS, per_class=40, size=32)
    cache = tmp_path / "cache"
    port = free_port()
    runs: dict[str, Path] = {}
    for name in ("straight", "killed"):
        out = tmp_path / name
        plan = classification_plan(
            data,
            f"file://{out}/",
            DIGITS,
            metrics_port=port if name == "killed" else None,
            epochs=3,
            dataLoaderWorkers=1,
            seed=7,
        )
        plan_file = tmp_path / f"{name}.json"
        plan_file.write_text(plan.model_dump_json(by_alias=True))
        runs[name] = plan_file
    log = tmp_path / "trainer.log"

    straight = _trainer(runs["straight"], cache, log)
    assert straight.wait(timeout=600) == 0, log.read_text()[-3000:]

    # 96 training images / batch 8 = 12 batches per epoch (validationFraction 0.2 of 120).
    steps = 12
    killed = _trainer(runs["killed"], cache, log)
    seen: float | None = None
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        seen = batches_total(port)
        if seen is not None and steps + 2 <= seen <= 2 * steps - 3:
            killed.send_signal(signal.SIGKILL)
            break
        assert killed.poll() is None, "the trainer ended before it was killed"
        time.sleep(0.01)
    killed.wait(timeout=30)
    assert killed.returncode == -signal.SIGKILL
    assert seen is not None and steps < seen < 2 * steps, f"not inside epoch 2: {seen} batches"
    last = _load(tmp_path / "killed" / "checkpoints" / "last.pt")
    assert last["progress"]["epoch"] == 1, "the kill came after epoch 1's checkpoint"
    assert last["progress"]["batch"] == 0

    # DataLoader workers forked after the /metrics server started hold its socket until they
    # notice their parent is gone: the restart serves on another port (the plan hash, which
    # resume checks, leaves the port out).
    restart_plan = tmp_path / "restart.json"
    restart_plan.write_text(
        runs["killed"].read_text().replace(f'"metricsPort":{port}', f'"metricsPort":{free_port()}')
    )
    assert restart_plan.read_text() != runs["killed"].read_text()
    restarted = _trainer(restart_plan, cache, log)
    assert restarted.wait(timeout=600) == 0, log.read_text()[-3000:]

    a = _load(tmp_path / "straight" / "checkpoints" / "last.pt")
    b = _load(tmp_path / "killed" / "checkpoints" / "last.pt")
    compared = _assert_same_tensors(a["model"], b["model"], "model")
    compared += _assert_same_tensors(a["optimizer"], b["optimizer"], "optimizer")
    assert compared > 100
    assert a["scheduler"] == b["scheduler"]
    assert a["progress"]["history"] == b["progress"]["history"]
    metrics_a = (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()
    metrics_b = (tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()
    assert len(metrics_a) == 3
    assert metrics_a == metrics_b
    _assert_same_tensors(
        _load(tmp_path / "straight" / "checkpoints" / "best.pt")["model"],
        _load(tmp_path / "killed" / "checkpoints" / "best.pt")["model"],
        "best",
    )


_WRITER = """
import sys, torch
from kubevision_trainer import checkpoint
store = checkpoint.CheckpointStore(sys.argv[1])
# ~400 MB, so the write lasts long enough to be caught in the middle.
store.save_best({"model": {"w": torch.ones(100_000_000)}, "epoch": 2}, 2)
"""


def test_kill_during_checkpoint_write_leaves_best_intact(tmp_path: Path) -> None:
    store = checkpoint.CheckpointStore(f"file://{tmp_path}/")
    status = store.save_best({"model": {"w": torch.arange(10.0)}, "epoch": 1}, 1)
    best = tmp_path / "checkpoints" / "best.pt"
    before = hashlib.sha256(best.read_bytes()).hexdigest()
    assert before == status.sha256

    writer = subprocess.Popen([sys.executable, "-c", _WRITER, f"file://{tmp_path}/"])
    deadline = time.monotonic() + 120
    caught = False
    while time.monotonic() < deadline and writer.poll() is None:
        partial = list((tmp_path / "checkpoints").glob("best.pt.tmp-*"))
        if partial and partial[0].stat().st_size > 1_000_000:
            writer.send_signal(signal.SIGKILL)
            caught = True
            break
        time.sleep(0.002)
    writer.wait(timeout=30)
    assert caught, "the write finished before it could be interrupted"
    assert hashlib.sha256(best.read_bytes()).hexdigest() == before
    state = torch.load(best, weights_only=True)
    assert torch.equal(state["model"]["w"], torch.arange(10.0))
