"""Real multi-process runs for the distributed trainer's tests: each rank is its own Python
process (``tests.trainer.dist_worker``) with torchrun's environment (``RANK``, ``LOCAL_RANK``,
``WORLD_SIZE``, ``LOCAL_WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``), joined by gloo over
loopback: no mock of torch.distributed. Every process, the single-process baselines included,
gets its share of the cores as intra-op threads."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from kubevision_api.plan import TrainingPlan
from kubevision_trainer import local
from tests.trainer.trainer_helpers import free_port

ROOT = Path(__file__).resolve().parents[2]


def worker_env(cache: Path, rank: int, world_size: int, port: int) -> dict[str, str]:
    """The environment of rank ``rank`` in a one-Pod world of ``world_size`` (no torchrun
    variables at all for a world of one: the single-process path)."""
    env = {
        **os.environ,
        "KUBEVISION_CACHE_DIR": str(cache),
        "CUDA_VISIBLE_DEVICES": "",
        # The cores shared out among the ranks (float64 runs do not depend on the split).
        "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // world_size)),
        "KUBEVISION_COLLECTIVE_TIMEOUT_SECONDS": "120",
    }
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE"):
        env.pop(name, None)
    if world_size > 1:
        env.update(
            RANK=str(rank),
            LOCAL_RANK=str(rank),
            WORLD_SIZE=str(world_size),
            LOCAL_WORLD_SIZE=str(world_size),
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=str(port),
        )
    return env


def start(
    args: list[str], world_size: int, cache: Path, logs: Path
) -> list[subprocess.Popen[bytes]]:
    """``python -m tests.trainer.dist_worker ARGS`` once per rank; output in ``logs/rank-N.log``."""
    logs.mkdir(parents=True, exist_ok=True)
    port = free_port()
    return [
        subprocess.Popen(
            [sys.executable, "-m", "tests.trainer.dist_worker", *args],
            cwd=ROOT,
            env=worker_env(cache, rank, world_size, port),
            stdout=(logs / f"rank-{rank}.log").open("ab"),
            stderr=subprocess.STDOUT,
        )
        for rank in range(world_size)
    ]


def wait(processes: list[subprocess.Popen[bytes]], logs: Path, timeout: float = 900) -> list[int]:
    """Every rank's exit code (all are killed if one outlives ``timeout``)."""
    try:
        return [p.wait(timeout=timeout) for p in processes]
    except subprocess.TimeoutExpired:
        for p in processes:
            p.kill()
        raise AssertionError(
            f"ranks still running after {timeout} s; logs:\n{tail(logs)}"
        ) from None


def tail(logs: Path) -> str:
    """The last lines of every rank's log."""
    return "\n".join(
        f"--- {path.name}\n{path.read_text(errors='replace')[-3000:]}"
        for path in sorted(logs.glob("rank-*.log"))
    )


def train(plan: TrainingPlan, world_size: int, work: Path, *, float64: bool = False) -> list[int]:
    """Run ``plan`` through ``main.run_plan_file`` on ``world_size`` processes (the model in
    float64 when asked); returns their exit codes."""
    work.mkdir(parents=True, exist_ok=True)
    plan_file = work / "plan.json"
    plan_file.write_text(plan.model_dump_json(by_alias=True))
    logs = work / "logs"
    args = ["plan", str(plan_file), *(["float64"] if float64 else [])]
    processes = start(args, world_size, work.parent / "cache", logs)
    return wait(processes, logs)


def call(function: str, kwargs: dict[str, Any], world_size: int, work: Path) -> list[Any]:
    """``function`` ("module:name") called with ``kwargs`` on every rank of a fresh gloo group;
    returns each rank's result, in rank order."""
    work.mkdir(parents=True, exist_ok=True)
    args_file = work / "kwargs.pickle"
    args_file.write_bytes(pickle.dumps(kwargs))
    logs = work / "logs"
    codes = wait(
        start(["call", function, str(args_file), str(work)], world_size, work / "cache", logs), logs
    )
    assert codes == [0] * world_size, tail(logs)
    return [pickle.loads((work / f"result-{r}.pickle").read_bytes()) for r in range(world_size)]


def examples_copy(work: Path) -> Path:
    """A copy of ``examples/`` (manifests only) with its datasets written by
    ``examples/prepare.py``: every digits scan for classification, 48 images for tagging and
    detection. Returns the copy's folder."""
    target = work / "examples"
    shutil.copytree(ROOT / "examples", target, ignore=shutil.ignore_patterns("data"))
    for extra in (
        ["--only", "digits-imagefolder"],
        ["--only", "digits-tags", "--only", "digits-detection", "--limit", "48"],
    ):
        subprocess.run(
            [sys.executable, str(target / "prepare.py"), "--out", str(target / "data"), *extra],
            check=True,
            capture_output=True,
        )
    return target


def example_plan(examples: Path, folder: str, output: Path, **training: Any) -> TrainingPlan:
    """The plan of example ``folder`` with ``training`` fields replaced, writing to
    ``output``."""
    source = examples / folder / "modelversion.yaml"
    manifest = yaml.safe_load(source.read_text())
    manifest["spec"]["training"].update(training)
    patched = (
        examples / folder / f"modelversion-{abs(hash(json.dumps(training, sort_keys=True)))}.yaml"
    )
    patched.write_text(yaml.safe_dump(manifest))
    return local.plan_from_manifests(
        [examples / folder / "view.yaml", patched], output="file://" + str(output) + "/"
    )


def predictions_digest(predictions: Any) -> str:
    """sha256 over every array of ``predictions`` (``evaluation.predictions``), in order. For
    detection, the ground truth and each image's detection count only: a detector's float32
    scores move by an ulp with the intra-op thread count (each world size has its own share of
    the cores), which reorders near-tied boxes without changing any figure."""
    import hashlib

    import numpy as np

    digest = hashlib.sha256()
    images = getattr(predictions, "images", None)
    if images is None:
        arrays = [predictions.logits, getattr(predictions, "labels", None)]
        arrays.append(getattr(predictions, "targets", None))
    else:
        arrays = [
            a
            for image in images
            for a in (image.gt_boxes, image.gt_labels, np.array(len(image.dt_scores)))
        ]
    for value in arrays:
        if value is not None:
            digest.update(np.ascontiguousarray(value).tobytes() + str(value.shape).encode())
    return digest.hexdigest()


def evaluate_plans(plans: list[str], cache: str) -> list[tuple[float, dict[str, Any], str | None]]:
    """On every rank: the validation loss and metrics of each plan's untrained model (weights
    from the plan's seed alone), through the engine's sharded evaluation, and on rank 0 the
    digest of the predictions it keeps (None on the others)."""
    import dataclasses

    import torch

    from kubevision_trainer import distributed, engine, main, models, ranks
    from kubevision_trainer.data.torchdata import derive_seed
    from kubevision_trainer.report.reporter import NullReporter
    from kubevision_trainer.settings import TrainerSettings

    world = distributed.World.from_env()
    results = []
    for text in plans:
        plan = TrainingPlan.model_validate_json(text)
        data = ranks.prepare_once(plan, TrainerSettings(cache_dir=Path(cache)), world)
        torch.manual_seed(derive_seed(plan.spec.training.seed, 0xB1D))
        model = models.build(
            plan.spec.architecture, plan.task, len(plan.concepts), plan.spec.image_resizer
        )
        train_loader, val_loader = main.loaders(plan, data, torch.device("cpu"), world)
        trainer = engine.Engine(
            task=plan.task,
            concepts=plan.concepts,
            model=model,
            train_loader=train_loader,
            val_loader=val_loader,
            options=plan.spec.training,
            device=torch.device("cpu"),
            reporter=NullReporter(),
            checkpoints=ranks.NullCheckpoints("file:///nowhere/best.pt"),
            meta={},
            world=world,
        )
        validation = trainer.evaluate(keep_predictions=True)
        kept = validation.predictions
        digest = None if kept is None else predictions_digest(kept)
        results.append((validation.loss, dataclasses.asdict(validation.result), digest))
    return results
