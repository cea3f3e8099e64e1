"""Plans over small datasets on disk and the LoadingDataset step run on them, for the bad-data
tests (issue 10): the trainer's own path, from View and ModelVersion to dataset.json."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kubevision_api.modelversion import ModelVersion
from kubevision_api.plan import PlanDefaults, TrainingPlan, resolve
from kubevision_api.view import View
from kubevision_trainer.data import prepare as data_prepare
from kubevision_trainer.settings import TrainerSettings


def plan(
    tmp_path: Path,
    task: str,
    concepts: list[str],
    dataset: dict[str, Any],
    *,
    architecture: str = "resnet18",
    resizer: dict[str, Any] | None = None,
    **spec: Any,
) -> TrainingPlan:
    """The plan of a View over ``dataset`` (its ``spec.dataset``) and a ModelVersion with
    ``spec`` on top of small defaults (32 px, batch 4, 1 epoch, no workers)."""
    view = View.model_validate(
        {
            "metadata": {"name": "bad"},
            "spec": {
                "task": task,
                "concepts": [{"name": name} for name in concepts],
                "dataset": dataset,
            },
        }
    )
    mv = ModelVersion.model_validate(
        {
            "metadata": {"name": "bad-data", "namespace": "tests"},
            "spec": {
                "viewRef": {"name": "bad"},
                "architecture": architecture,
                "imageResizer": resizer or {"width": 32, "height": 32},
                "training": {"epochs": 1, "batchSize": 4, "dataLoaderWorkers": 0},
                "output": {"uri": (tmp_path / "out").as_uri()},
                **spec,
            },
        }
    )
    return resolve(view, mv, PlanDefaults(metrics_port=None))


def prepare(training: TrainingPlan, tmp_path: Path) -> data_prepare.Prepared:
    """The LoadingDataset step of ``training``, with a cache under ``tmp_path``."""
    settings = TrainerSettings(cache_dir=tmp_path / "cache", io_threads=2)
    return data_prepare.prepare(training, settings)
