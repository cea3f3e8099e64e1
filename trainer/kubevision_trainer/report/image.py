"""The training report image: curves of every metric, per batch (learning rate, batch loss)
and per epoch (train and val loss, val accuracy, val mAP and AP50), as one PNG."""

from __future__ import annotations

import io
from typing import Any

from matplotlib.figure import Figure


def render(batches: list[dict[str, Any]], epochs: list[dict[str, Any]], title: str) -> bytes:
    """A PNG with one panel per metric.

    Args:
        batches: ``batches.jsonl`` records (epoch, batch, learningRate, loss).
        epochs: ``metrics.jsonl`` records.
        title: figure title (``namespace/modelversion``).

    Returns:
        The PNG bytes.
    """
    per_epoch = max(1, max((b["batch"] for b in batches), default=0) + 1)
    x_batch = [(b["epoch"] - 1) + b["batch"] / per_epoch for b in batches]
    x_epoch = [e["epoch"] for e in epochs]
    panels: list[tuple[str, list[tuple[str, list[float], list[Any]]]]] = [
        ("Learning rate (batch)", [("lr", x_batch, [b["learningRate"] for b in batches])]),
        ("Total loss (batch)", [("batch", x_batch, [b["loss"] for b in batches])]),
        (
            "Loss (epoch)",
            [
                ("train", x_epoch, [e.get("trainLoss") for e in epochs]),
                ("val", x_epoch, [e.get("valLoss") for e in epochs]),
            ],
        ),
        ("Accuracy (val set)", [("accuracy", x_epoch, [e.get("accuracy") for e in epochs])]),
        (
            "mAP (val set)",
            [
                ("mAP", x_epoch, [e.get("mAP") for e in epochs]),
                ("AP50", x_epoch, [e.get("ap50") for e in epochs]),
            ],
        ),
    ]
    # The object API draws with Agg and touches no global pyplot state or display.
    figure = Figure(figsize=(4 * len(panels), 3.4))
    axes = figure.subplots(1, len(panels))
    for axis, (name, series) in zip(axes, panels, strict=True):
        drawn = False
        for label, xs, ys in series:
            points = [(x, y) for x, y in zip(xs, ys, strict=True) if y is not None]
            if points:
                axis.plot(
                    *zip(*points, strict=True),
                    marker="." if len(points) < 30 else None,
                    label=label,
                )
                drawn = True
        if not drawn:
            axis.text(0.5, 0.5, "not defined\nfor this task", ha="center", va="center")
        elif len(series) > 1:
            axis.legend()
        if drawn and "loss" in name.lower():
            # An untrained network's first losses can be 100x the later ones: a linear axis
            # would flatten the part of the curve that matters.
            axis.set_yscale("log")
        axis.set_title(name)
        axis.set_xlabel("epoch")
        axis.grid(alpha=0.3)
    figure.suptitle(title)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90)
    return buffer.getvalue()
