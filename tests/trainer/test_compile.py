"""spec.training.compile on the CPU with real compilations: the engine trains a tiny model
through torch.compile's default backend (TorchInductor, C++ kernels) as it does in eager mode,
validates through the compiled forward, and saves the plain module's state dict; and two gloo
ranks train the compiled model inside DDP like one eager process (``ddp.wrap``)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from kubevision_api.modelversion import TrainingOptions
from kubevision_api.view import Task
from kubevision_trainer import checkpoint, ddp, distributed, presets
from kubevision_trainer.data.torchdata import EpochBatchSampler, EpochSampler, VisionDataset
from kubevision_trainer.engine import Engine
from tests.trainer import dist_helpers
from tests.trainer.test_checkpoint import (
    META,
    RESIZER,
    RecordingReporter,
    cached_images,
    local_file,
    tiny_model,
)

pytestmark = pytest.mark.slow


def _engine(
    tmp_path: Path, name: str, *, compile_: bool
) -> tuple[Engine, checkpoint.CheckpointStore]:
    """The tiny classifier on 8 random 16-px images, 2 epochs of 2 batches of 4, and where
    its checkpoints go."""
    items = cached_images(tmp_path, 8)
    transform = presets.eval_preset(Task.CLASSIFICATION, RESIZER)
    dataset = VisionDataset(items, Task.CLASSIFICATION, 2, transform, seed=0)
    train = DataLoader(
        dataset, batch_sampler=EpochBatchSampler(EpochSampler(len(dataset), 0, True), 4)
    )
    store = checkpoint.CheckpointStore((tmp_path / name).as_uri() + "/")
    torch.manual_seed(0)
    engine = Engine(
        task=Task.CLASSIFICATION,
        concepts=["a", "b"],
        model=tiny_model(),
        train_loader=train,
        val_loader=DataLoader(dataset, batch_size=4),
        options=TrainingOptions(epochs=2, batch_size=4, data_loader_workers=0, compile=compile_),
        device=torch.device("cpu"),
        reporter=RecordingReporter(),
        checkpoints=store,
        meta=META,
    )
    return engine, store


def test_compiled_engine_trains_like_eager_and_saves_plain_names(tmp_path: Path) -> None:
    torch._dynamo.reset()
    frames = torch._dynamo.utils.counters["frames"]["ok"]
    eager, eager_store = _engine(tmp_path, "eager", compile_=False)
    eager_fit = eager.fit()
    assert torch._dynamo.utils.counters["frames"]["ok"] == frames
    compiled, store = _engine(tmp_path, "compiled", compile_=True)
    compiled_fit = compiled.fit()
    graphs = torch._dynamo.utils.counters["frames"]["ok"] - frames
    # The training forward (train mode) and validation's (eval mode, no grad) were compiled.
    assert graphs >= 2, graphs

    plain_names = list(tiny_model().state_dict())
    best = torch.load(local_file(store.best_uri), weights_only=True)
    last = torch.load(local_file(store.last_uri), weights_only=True)
    assert list(best["model"]) == plain_names and list(last["model"]) == plain_names
    fresh = tiny_model()
    fresh.load_state_dict(best["model"])  # strict: an uncompiled model takes it as it is
    fresh.load_state_dict(last["model"])
    # The same recipe: the weights after 4 SGD steps agree to float32 rounding (Inductor fuses
    # BatchNorm and the convolution's epilogue, which rounds differently).
    for name, tensor in eager.model.state_dict().items():
        other = compiled.model.state_dict()[name]
        assert torch.allclose(other.float(), tensor.float(), rtol=1e-4, atol=1e-5), name
    eager_epochs = [e["valLoss"] for e in eager_fit.run.history]
    compiled_epochs = [e["valLoss"] for e in compiled_fit.run.history]
    print(f"\nvalidation loss per epoch: eager {eager_epochs}, compiled {compiled_epochs}")
    assert compiled_epochs == pytest.approx(eager_epochs, rel=1e-4)
    # The compiled forward gives what last.pt's weights give in an eager model.
    fresh.eval()
    compiled.model.eval()
    pixels = torch.stack([compiled.val_loader.dataset[i][0] for i in range(4)])
    images = presets.model_input(Task.CLASSIFICATION, pixels, torch.float32)
    with torch.no_grad():
        assert torch.allclose(compiled.model(images), fresh(images), atol=1e-5)
    # A compiled engine restores an eager one's last.pt and vice versa: the names are shared.
    restored, _ = _engine(tmp_path, "restored", compile_=True)
    restored.restore(torch.load(local_file(eager_store.last_uri), weights_only=True))
    for name, tensor in eager.model.state_dict().items():
        assert torch.equal(restored.model.state_dict()[name], tensor), name


def train_tiny(backend: str | None, steps: int) -> tuple[dict[str, torch.Tensor], int]:
    """On every rank of a world (one process without torchrun's environment): the tiny
    classifier in float64 trained ``steps`` SGD steps on fixed batches of 8 random images,
    each rank on its share, through ``ddp.wrap`` (SyncBatchNorm when distributed, compiled
    with ``backend`` unless None). Returns the plain module's state dict and the number of
    frames Dynamo compiled."""
    world = distributed.World.from_env()
    before = torch._dynamo.utils.counters["frames"]["ok"]
    torch.manual_seed(0)
    model = tiny_model().double()
    train, plain = ddp.wrap(
        model,
        world,
        torch.device("cpu"),
        sync_batch_norm=world.distributed,
        compile_backend=backend,
    )
    optimizer = torch.optim.SGD(plain.parameters(), lr=0.1, momentum=0.9)
    generator = torch.Generator().manual_seed(1)
    images = torch.rand(steps, 8, 3, 16, 16, generator=generator, dtype=torch.float64)
    labels = torch.randint(0, 2, (steps, 8), generator=generator)
    share = 8 // world.world_size
    mine = slice(world.rank * share, (world.rank + 1) * share)
    plain.train()
    for step in range(steps):
        loss = nn.functional.cross_entropy(train(images[step, mine]), labels[step, mine])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
    state = {name: tensor.detach().clone() for name, tensor in plain.state_dict().items()}
    return state, int(torch._dynamo.utils.counters["frames"]["ok"] - before)


def test_two_ranks_train_the_compiled_model_in_ddp_like_one_eager_process(
    tmp_path: Path,
) -> None:
    """In float64 (see test_distributed's first test): 2 ranks with SyncBatchNorm and DDP
    around the compiled model against one process's eager full batch."""
    eager, none = train_tiny(None, 3)
    assert none == 0
    results = dist_helpers.call(
        "tests.trainer.test_compile:train_tiny",
        {"backend": "inductor", "steps": 3},
        2,
        tmp_path / "w2",
    )
    ranks = [state for state, _ in results]
    # Compiled, in part: GlooSyncBatchNorm's autograd all-reduce breaks the graph (Dynamo
    # refuses torch.distributed.nn.functional.all_reduce), so it runs in eager mode.
    assert all(frames >= 1 for _, frames in results), [frames for _, frames in results]
    assert list(ranks[0]) == list(eager)  # plain names, no "_orig_mod." or "module."
    for name, tensor in eager.items():
        # DDP broadcast rank 0's weights and averaged the gradients: the ranks agree exactly.
        assert torch.equal(ranks[1][name], ranks[0][name]), name
        if tensor.is_floating_point():
            assert torch.allclose(ranks[0][name], tensor, rtol=1e-9, atol=1e-12), name
        else:
            assert torch.equal(ranks[0][name], tensor), name
    # The weights moved: the comparison above is not one of untrained models.
    torch.manual_seed(0)
    untrained = tiny_model().double().state_dict()
    assert not torch.allclose(eager["5.weight"], untrained["5.weight"], atol=1e-3)
