"""CheckpointStore on file://: what save_best reports is what lies in storage, and both payloads
that the Engine builds load with ``weights_only=True``."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader

from kubevision_api.errors import InputError
from kubevision_api.modelversion import (
    ImageResizer,
    TrainingOptions,
)
from kubevision_api.status import (
    BestMetric,
    CheckpointStatus,
    EpochMetrics,
)
from kubevision_api.view import Task
from kubevision_trainer import checkpoint, presets
from kubevision_trainer.data.loading import CachedImage
from kubevision_trainer.data.sample import Sample
from kubevision_trainer.data.torchdata import EpochBatchSampler, EpochSampler, VisionDataset
from kubevision_trainer.engine import Engine
from kubevision_trainer.report.reporter import NullReporter, ResumePoint, Selection
from kubevision_trainer.runstate import RunState

RESIZER = ImageResizer(width=16, height=16)


def _saved(obj: object) -> bytes:
    """What ``torch.save`` writes for ``obj``."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


META = {"planHash": "ab" * 32, "concepts": ["a", "b"], "model": "m000000000000"}


class RecordingReporter(NullReporter):
    """A Reporter that keeps the checkpoint statuses it is told about."""

    def __init__(self) -> None:
        self.checkpoints: list[CheckpointStatus] = []
        self.epochs: list[EpochMetrics] = []
        self.resumed_at: list[ResumePoint] = []

    def resumed(self, at: ResumePoint) -> None:
        self.resumed_at.append(at)

    def epoch(self, metrics: EpochMetrics, best: BestMetric | None, selection: Selection) -> None:
        self.epochs.append(metrics)

    def checkpoint(self, status: CheckpointStatus) -> None:
        self.checkpoints.append(status)


def tiny_model() -> nn.Module:
    # BatchNorm gives the state dict buffers (running stats, an int64 counter) besides weights.
    return nn.Sequential(
        nn.Conv2d(3, 4, 3),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 2),
    )


def cached_images(folder: Path, count: int) -> list[CachedImage]:
    rng = np.random.default_rng(0)
    items = []
    for i in range(count):
        path = folder / f"img{i}.png"
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8), "RGB").save(path)
        sample = Sample(path=path.name, uri=path.as_uri(), labels=(i % 2,))
        items.append(CachedImage(sample=sample, sha256="", local_path=path, width=16, height=16))
    return items


def make_engine(
    tmp_path: Path, store: checkpoint.CheckpointStore, reporter: RecordingReporter
) -> Engine:
    items: Sequence[CachedImage] = cached_images(tmp_path, 4)
    transform = presets.eval_preset(Task.CLASSIFICATION, RESIZER)
    dataset = VisionDataset(items, Task.CLASSIFICATION, 2, transform, seed=0)
    train = DataLoader(
        dataset, batch_sampler=EpochBatchSampler(EpochSampler(len(dataset), 0, True), 2)
    )
    val = DataLoader(dataset, batch_size=2)
    torch.manual_seed(0)
    return Engine(
        task=Task.CLASSIFICATION,
        concepts=["a", "b"],
        model=tiny_model(),
        train_loader=train,
        val_loader=val,
        options=TrainingOptions(epochs=1, batch_size=2, data_loader_workers=0),
        device=torch.device("cpu"),
        reporter=reporter,
        checkpoints=store,
        meta=META,
    )


def local_file(uri: str) -> Path:
    assert uri.startswith("file://")
    return Path(uri.removeprefix("file://"))


@pytest.fixture
def store(tmp_path: Path) -> checkpoint.CheckpointStore:
    return checkpoint.CheckpointStore((tmp_path / "run").as_uri() + "/")


def test_uris(store: checkpoint.CheckpointStore) -> None:
    assert store.best_uri == store.output_uri + "checkpoints/best.pt"
    assert store.last_uri == store.output_uri + "checkpoints/last.pt"


def test_save_best_reports_what_is_stored(store: checkpoint.CheckpointStore) -> None:
    state = {"format": 1, "model": {"w": torch.arange(6.0)}, "epoch": 4}
    status = store.save_best(state, epoch=4)
    data = local_file(status.uri).read_bytes()
    assert status.uri == store.best_uri
    assert status.epoch == 4
    assert status.bytes == len(data) > 0
    assert status.sha256 == hashlib.sha256(data).hexdigest()
    # best_status (used by a resumed run) recomputes the same thing from storage.
    assert store.best_status(4) == status
    # Atomic write: no temporary file left beside the checkpoint.
    assert [p.name for p in local_file(status.uri).parent.iterdir()] == ["best.pt"]


def test_save_best_replaces_the_old_file(store: checkpoint.CheckpointStore) -> None:
    first = store.save_best({"model": {"w": torch.zeros(2)}}, epoch=1)
    second = store.save_best({"model": {"w": torch.ones(2)}}, epoch=2)
    assert first.sha256 != second.sha256
    loaded = store.load_best()
    assert torch.equal(loaded["model"]["w"], torch.ones(2))


def test_load_last_is_none_before_the_first_save(store: checkpoint.CheckpointStore) -> None:
    assert store.load_last() is None
    with pytest.raises(InputError, match="file not found"):
        store.load_best()


def test_engine_payloads_load_with_weights_only(
    tmp_path: Path, store: checkpoint.CheckpointStore
) -> None:
    reporter = RecordingReporter()
    engine = make_engine(tmp_path, store, reporter)
    result = engine.fit()
    assert result.run.epoch == 1

    # best.pt: what the engine reported is the file in storage.
    (status,) = reporter.checkpoints
    best_bytes = local_file(store.best_uri).read_bytes()
    assert status.sha256 == hashlib.sha256(best_bytes).hexdigest()
    assert status.bytes == len(best_bytes)
    best = torch.load(local_file(store.best_uri), map_location="cpu", weights_only=True)
    assert set(best) == {"format", "model", "epoch", "metrics", "meta"}
    assert (best["format"], best["epoch"], best["meta"]) == (1, 1, META)
    assert best["metrics"]["epoch"] == 1 and "mAP" in best["metrics"]
    fresh = tiny_model()
    fresh.load_state_dict(best["model"])  # strict: every tensor present, names match
    for name, tensor in engine.model.state_dict().items():
        assert torch.equal(fresh.state_dict()[name], tensor), name

    # last.pt: model, optimizer, scheduler, RNG and plain progress data.
    last = torch.load(local_file(store.last_uri), map_location="cpu", weights_only=True)
    assert set(last) == {
        "format",
        "model",
        "optimizer",
        "scheduler",
        "scaler",
        "rng",
        "progress",
        "meta",
    }
    assert last["progress"]["epoch"] == 1 and last["progress"]["batches_total"] == 2
    assert last["scheduler"]["last_epoch"] == 2  # stepped once per batch
    # SGD with momentum: one buffer per parameter after the first step.
    assert len(last["optimizer"]["state"]) == len(list(engine.model.parameters()))
    assert last["rng"].dtype == torch.uint8
    # The store's own reader agrees.
    assert checkpoint.from_bytes(_saved(last), "x")["progress"] == last["progress"]
    loaded_last = store.load_last()
    assert loaded_last is not None and loaded_last["meta"] == META


def test_state_restores_into_a_new_engine(
    tmp_path: Path, store: checkpoint.CheckpointStore
) -> None:
    first = RecordingReporter()
    engine = make_engine(tmp_path, store, first)
    engine.fit()
    state = store.load_last()
    assert state is not None
    assert first.resumed_at == []
    reporter = RecordingReporter()
    other = make_engine(tmp_path, store, reporter)
    run = other.restore(state)
    assert isinstance(run, RunState) and run.epoch == 1
    # The reporters hear where the run resumes: after epoch 1 of 1, its 2 batches of 2 images.
    (at,) = reporter.resumed_at
    assert (at.epoch, at.batch, at.batches, at.epochs) == (1, 0, 2, 1)
    assert (at.batches_total, at.images_total) == (2, 4)
    assert at.history == tuple(first.epochs) and len(at.history) == 1
    assert at.best is not None and at.best.epoch == 1 and at.selection == "accuracy"
    assert other.scheduler.last_epoch == engine.scheduler.last_epoch
    for name, tensor in engine.model.state_dict().items():
        assert torch.equal(other.model.state_dict()[name], tensor), name


def test_best_state_payload_direct(tmp_path: Path, store: checkpoint.CheckpointStore) -> None:
    engine = make_engine(tmp_path, store, RecordingReporter())
    record = EpochMetrics(epoch=3, learning_rate=0.01, accuracy=0.5)
    status = store.save_best(engine.best_state(3, record), epoch=3)
    payload = torch.load(local_file(status.uri), weights_only=True)
    assert payload["metrics"] == {
        "epoch": 3,
        "learningRate": 0.01,
        "trainLoss": None,
        "valLoss": None,
        "accuracy": 0.5,
        "mAP": None,
        "ap50": None,
    }
    store.save_last(engine.state(RunState(epoch=2)))
    last = torch.load(local_file(store.last_uri), weights_only=True)
    assert last["progress"]["epoch"] == 2 and last["progress"]["history"] == []


def test_from_bytes_refuses_a_non_dict() -> None:
    with pytest.raises(InputError, match=r"^last\.pt: not a kubevision checkpoint"):
        checkpoint.from_bytes(_saved([torch.zeros(1)]), "last.pt")


class NotAllowlisted:
    """A class that ``weights_only=True`` refuses to unpickle."""


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"PK\x03\x04 cut short",
        b"this is not a torch file at all",
        b"garbage bytes here",
        _saved({"model": {}, "x": NotAllowlisted()}),
    ],
    ids=["empty", "truncated zip", "text (IndexError)", "text (UnpicklingError)", "foreign class"],
)
def test_from_bytes_refuses_garbage_with_input_error(data: bytes) -> None:
    # A corrupt last.pt must fail naming the file, not with a pickle traceback.
    with pytest.raises(InputError) as info:
        checkpoint.from_bytes(data, "s3://b/run/checkpoints/last.pt")
    assert info.value.source == "s3://b/run/checkpoints/last.pt"


def test_load_last_refuses_a_corrupt_file(store: checkpoint.CheckpointStore) -> None:
    path = local_file(store.last_uri)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"PK\x03\x04 cut short")
    with pytest.raises(InputError, match="not a readable checkpoint"):
        store.load_last()
