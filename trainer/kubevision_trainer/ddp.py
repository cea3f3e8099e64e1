"""Data-parallel training pieces of the engine: the DDP wrap (after an optional SyncBatchNorm
conversion) and the one all-reduce per batch on which every rank agrees about the global batch's
loss, a stop and a non-finite loss (docs/distributed.md, "In the trainer").

With a world of one nothing here talks to anyone: the model is not wrapped, the conversion
leaves the model as it is, and the agreement is the rank's own numbers."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.parallel import DistributedDataParallel

from kubevision_trainer import distributed


class GlooSyncBatchNorm(nn.BatchNorm2d):
    """BatchNorm whose training statistics are those of the GLOBAL batch, on the CPU (torch's
    ``nn.SyncBatchNorm`` only runs on accelerators).

    Each rank computes its (count, sum, centred sum of squares + count x mean^2) per channel in
    float64; one differentiable all-reduce (``torch.distributed.nn.functional.all_reduce``,
    whose backward all-reduces the gradients) sums them, and the global mean and biased variance
    normalise, as ``F.batch_norm`` does for the whole batch in one process; the running
    statistics take the unbiased variance. Outside a process group, in eval mode or without
    batch statistics it is plain BatchNorm. State dict keys are BatchNorm's."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if not (self.training and distributed.active()):
            return super().forward(input)
        self._check_input_dim(input)
        momentum = 0.0 if self.momentum is None else self.momentum
        if self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:
                momentum = 1.0 / float(self.num_batches_tracked)
        dims = [d for d in range(input.dim()) if d != 1]
        wide = input.double()
        count = wide.numel() // input.shape[1]
        var, mean = torch.var_mean(wide, dim=dims, correction=0)
        # [count, sum, M2 + count * mean^2] add up over ranks; float64 keeps the subtraction below
        # exact to far below float32's resolution.
        local = torch.stack(
            [torch.full_like(mean, float(count)), mean * count, (var + mean * mean) * count]
        )
        total: torch.Tensor = dist_fn.all_reduce(  # type: ignore[no-untyped-call]
            local, op=dist.ReduceOp.SUM
        )
        n, s1, s2 = total[0], total[1], total[2]
        global_mean = s1 / n
        global_var = (s2 / n - global_mean * global_mean).clamp_min(0.0)
        if self.track_running_stats and self.running_mean is not None:
            assert self.running_var is not None
            with torch.no_grad():
                unbiased = global_var * n / (n - 1).clamp_min(1.0)
                # In float64, rounded once, as F.batch_norm updates them on the CPU.
                for running, batch in (
                    (self.running_mean, global_mean),
                    (self.running_var, unbiased),
                ):
                    running.copy_(momentum * batch + (1 - momentum) * running.double())
        # As F.batch_norm on the CPU: inverse std and mean rounded to the input's dtype, then
        # x * alpha + beta (alpha = invstd * weight, beta = bias - mean * alpha).
        shape = [1, -1] + [1] * (input.dim() - 2)
        invstd = torch.rsqrt(global_var + self.eps).to(input.dtype)
        alpha, beta = invstd, -global_mean.to(input.dtype) * invstd
        if self.affine:
            alpha = invstd * self.weight
            beta = self.bias - global_mean.to(input.dtype) * alpha
        out: torch.Tensor = input * alpha.reshape(shape) + beta.reshape(shape)
        return out

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")


def convert_sync_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """Every BatchNorm layer of ``module`` made to normalise with the global batch's statistics:
    ``nn.SyncBatchNorm`` on accelerators, :class:`GlooSyncBatchNorm` on the CPU. Weights,
    buffers and state dict keys are kept (checkpoints load either way)."""
    if device.type != "cpu":
        synced: nn.Module = nn.SyncBatchNorm.convert_sync_batchnorm(module)  # type: ignore[no-untyped-call]
        return synced
    converted = module
    if isinstance(module, _BatchNorm) and not isinstance(module, GlooSyncBatchNorm):
        converted = GlooSyncBatchNorm(
            module.num_features, module.eps, module.momentum, module.affine,
            module.track_running_stats,
        )  # fmt: skip
        with torch.no_grad():
            if module.affine:
                converted.weight = module.weight
                converted.bias = module.bias
            converted.running_mean = module.running_mean
            converted.running_var = module.running_var
            converted.num_batches_tracked = module.num_batches_tracked
        converted.train(module.training)
    for name, child in module.named_children():
        converted.add_module(name, convert_sync_batchnorm(child, device))
    return converted


def wrap(
    model: nn.Module,
    world: distributed.World,
    device: torch.device,
    *,
    sync_batch_norm: bool,
    compile_backend: str | None = None,
) -> tuple[nn.Module, nn.Module]:
    """The module to train and the plain module (for state dicts, validation and checkpoints).

    A world of one returns ``model`` twice. Otherwise BatchNorm becomes synchronised when
    ``sync_batch_norm`` (spec.training.syncBatchNorm), then ``DistributedDataParallel``
    wraps it (``device_ids=[local rank]`` on CUDA), which first broadcasts rank 0's weights.

    With ``compile_backend`` (spec.training.compile; "inductor" is torch.compile's default)
    the model's forward is compiled in place (``nn.Module.compile``) after the SyncBatchNorm
    conversion and before DDP wraps it: training and validation both run the compiled
    forward, and the state dict keeps the plain names (no ``_orig_mod.`` prefix, which
    ``torch.compile(model)`` would add). Compiling the module inside DDP is what PyTorch's
    "Where to apply torch.compile?" recommends; Dynamo still sees DDP as the active module
    when it traces the inner forward and splits the graph at DDP's bucket boundaries
    (DDPOptimizer), so gradient all-reduces overlap the backward as in eager mode."""
    if world.distributed and sync_batch_norm:
        model = convert_sync_batchnorm(model, device)
    if compile_backend is not None:
        model.compile(backend=compile_backend)
    if not world.distributed:
        return model, model
    device_ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids), model


@dataclass(frozen=True)
class BatchAgreement:
    """What every rank knows about a global batch after :func:`agree`.

    Attributes:
        loss: the global batch's mean loss (sum over ranks of loss x local count, over the
            global count).
        count: images in the global batch.
        stop: some rank was asked to stop (SIGTERM).
        non_finite: some rank's loss is NaN or infinite.
    """

    loss: float
    count: int
    stop: bool
    non_finite: bool


def agree(loss: torch.Tensor, count: int, stop: bool) -> BatchAgreement:
    """One all-reduce of [loss x count, count, stop, non-finite] (the batch's only collective
    besides DDP's gradient buckets); a world of one gets its own numbers back. ``loss`` is the
    rank's mean over its ``count`` images."""
    value = float(loss.detach())
    finite = bool(torch.isfinite(loss.detach()))
    summed = distributed.all_reduce_sum(
        [value * count if finite else 0.0, float(count), float(stop), float(not finite)]
    )
    total = int(summed[1])
    non_finite = summed[3] > 0
    mean = float("nan") if non_finite else summed[0] / max(1, total)
    if not distributed.active():
        mean = value  # bit for bit the single-process figure
    return BatchAgreement(mean, total, summed[2] > 0, non_finite)


def loss_scale(local_count: int, global_count: int, world_size: int) -> float:
    """The factor on a rank's mean loss that makes DDP's gradient average (sum over ranks /
    world size) the gradient of the global batch's mean: local_count x world_size /
    global_count (1 when the batch divides evenly)."""
    return local_count * world_size / global_count
