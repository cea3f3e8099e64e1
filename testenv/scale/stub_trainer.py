"""A quick stand-in for the trainer, for the operator's scale test and benchmark.

Run as the trainer container's command through ``KUBEVISION_TRAINER_COMMAND_OVERRIDE``
(:func:`command`): it reads the TrainingPlan the operator mounted, reports the trainer's steps
to the operator's status endpoint with the real
:class:`kubevision_trainer.report.status.StatusReporter` (LoadingDataset, Training with one or
two epochs of made-up metrics, Evaluating, Exporting), and exits 0, well within a second or
two. It trains nothing and writes nothing to storage.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from kubevision_api.contract import StepName
from kubevision_api.plan import TrainingPlan
from kubevision_api.status import BestMetric, DatasetStatus, EpochMetrics, StepState
from kubevision_trainer.report.status import StatusReporter

PLAN_PATH = "/etc/kubevision/plan.json"
TERMINATION_LOG = "/dev/termination-log"
#: Epochs the stub pretends to train, at most.
MAX_EPOCHS = 2

log = logging.getLogger("kubevision.stub_trainer")


def command(*, pause: float = 0.05) -> list[str]:
    """The container command that runs this stub (for ``trainer_command_override``). The
    plan and termination-log paths are the container's; whatever runs the container maps
    them.

    The interpreter is named, not given by path: the node agent's PATH finds this one (its
    folder comes first), while a path under a folder the Pod mounts (a virtual environment in
    ``/tmp``, where the trainer's Pod has an emptyDir) would name a file in that volume.
    """
    return [
        Path(sys.executable).name,
        str(Path(__file__).resolve()),
        "--plan",
        PLAN_PATH,
        "--termination-log",
        TERMINATION_LOG,
        "--pause",
        str(pause),
    ]


def run(plan: TrainingPlan, pause: float) -> bool:
    """Report a short, successful training; returns whether a status endpoint was used."""
    endpoint = plan.status_endpoint
    if endpoint is None:
        return False
    token_path = os.environ.get("KUBEVISION_STATUS_TOKEN_PATH")
    if token_path:
        endpoint = endpoint.model_copy(update={"token_path": token_path})
    epochs = max(1, min(MAX_EPOCHS, plan.spec.training.epochs))
    reporter = StatusReporter(
        endpoint,
        namespace=plan.namespace,
        model_version=plan.model_version,
        uid=plan.uid,
        epochs=epochs,
    )
    ok = False
    try:
        reporter.step(StepName.LOADING_DATASET, StepState.RUNNING)
        reporter.dataset(DatasetStatus(train=80, val=20))
        reporter.step(StepName.LOADING_DATASET, StepState.SUCCEEDED)
        reporter.step(StepName.TRAINING, StepState.RUNNING)
        best: BestMetric | None = None
        for epoch in range(1, epochs + 1):
            time.sleep(pause)
            accuracy = round(0.5 + 0.2 * epoch, 3)
            metrics = EpochMetrics(
                epoch=epoch,
                learning_rate=0.01,
                train_loss=round(1.0 / epoch, 3),
                val_loss=round(1.2 / epoch, 3),
                accuracy=accuracy,
            )
            if best is None or accuracy > best.value:
                best = BestMetric(epoch=epoch, value=accuracy)
            reporter.epoch(metrics, best, "accuracy")
        reporter.step(StepName.TRAINING, StepState.SUCCEEDED)
        reporter.step(StepName.EVALUATING, StepState.RUNNING)
        time.sleep(pause)
        reporter.step(StepName.EVALUATING, StepState.SUCCEEDED)
        reporter.step(StepName.EXPORTING, StepState.RUNNING)
        reporter.step(StepName.EXPORTING, StepState.SUCCEEDED)
        ok = True
    finally:
        reporter.close(ok)
    return True


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--plan", default=PLAN_PATH, help="the TrainingPlan (JSON)")
    parser.add_argument("--termination-log", default=None, help="written on failure")
    parser.add_argument(
        "--pause", type=float, default=0.05, help="seconds per pretended epoch and evaluation"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        plan = TrainingPlan.model_validate_json(Path(args.plan).read_text())
        reported = run(plan, args.pause)
    except (OSError, ValueError) as exc:
        # The trainer's termination-message convention: "Reason: message" in one line.
        if args.termination_log:
            Path(args.termination_log).write_text(f"Error: stub trainer: {exc}"[:1024])
        log.error("stub trainer failed: %s", exc)
        return 1
    log.info(
        "stub trainer done for %s/%s (reported: %s)", plan.namespace, plan.model_version, reported
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
