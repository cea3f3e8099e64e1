"""Exported model latency on the CPU: eager PyTorch and onnxruntime side by side, batch 1 and
batch 32, for the classification example's model, in one run.

The model: ``examples/01-classification-digits`` (the View's 10 concepts, the ModelVersion's
architecture resnet18 and its resizer, squash 32 x 32), freshly initialised by the trainer's
``models.build`` (latency does not depend on the weights), in eval mode. The ONNX graph:
``export.graphs.onnx_bytes`` (the Exporting step's own graph: dynamic batch, opset 17), loaded
in an onnxruntime ``InferenceSession`` on the ``CPUExecutionProvider`` with all graph
optimisations (its default).

Both run with the same threads (``--threads``, default 1: figures per core, steadier on a shared
machine, where a busy core stalls every thread of an eager pass):
``torch.set_num_threads`` and onnxruntime's ``intra_op_num_threads``, its workers not spinning
between runs (``session.intra_op.allow_spinning = 0``: spinning workers would slow the eager
runs that follow). Each batch size is timed
in rounds of eager then onnxruntime in turn, so that a change in the machine's load hits both
alike; after warm-up runs, the figure is the median wall-clock latency of one forward pass
(``torch.no_grad()``; ``session.run``) on the same random float32 batch. Figures, one JSON line
each:

- ``eager_batch1``, ``onnxruntime_batch1``, ``eager_batch32``, ``onnxruntime_batch32``: the
  median ms per forward pass (``value``) and images/s (``images_per_s`` = batch / median);
- ``onnxruntime_speedup_batch1``, ``onnxruntime_speedup_batch32``: eager median over
  onnxruntime median (> 1: onnxruntime is faster);
- ``max_abs_logit_diff``: the largest |onnxruntime - eager| logit over the batch-32 input, the
  parity check of the graph timed.

    python benchmarks/export.py                 # 200 runs at batch 1, 50 at batch 32
    python benchmarks/export.py --quick         # CI: 20 and 5 runs
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch
import yaml

from kubevision_api.export import INPUT_NAME, LOGITS_NAME, ONNX_OPSET
from kubevision_api.modelversion import ModelVersion
from kubevision_api.view import View
from kubevision_trainer import models
from kubevision_trainer.export import graphs

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "01-classification-digits"
BATCHES = (1, 32)


def emit(figure: str, value: float, unit: str, **extra: Any) -> None:
    """One JSON line: ``{"figure": ..., "value": ..., "unit": ..., **extra}``."""
    print(json.dumps({"figure": figure, "value": round(value, 4), "unit": unit, **extra}))


def example_model() -> tuple[torch.nn.Module, bytes, int, int, str]:
    """The classification example's model, eval mode, and its ONNX graph as the Exporting
    step writes it (``export.graphs.onnx_bytes``): (model, graph, height, width,
    architecture)."""
    view = View.model_validate(yaml.safe_load((EXAMPLE / "view.yaml").read_text()))
    mv = ModelVersion.model_validate(yaml.safe_load((EXAMPLE / "modelversion.yaml").read_text()))
    resizer = mv.spec.image_resizer
    model = models.build(mv.spec.architecture, view.spec.task, len(view.spec.concepts), resizer)
    graph = graphs.onnx_bytes(
        graphs.serving_copy(model), view.spec.task, resizer, mv.spec.architecture
    )
    return model.eval(), graph, resizer.height, resizer.width, mv.spec.architecture


def median_ms(run: Callable[[], object], warmup: int, runs: int) -> float:
    """Median wall-clock ms of ``run()`` over ``runs`` calls, after ``warmup`` untimed ones."""
    for _ in range(warmup):
        run()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="Threads of both (default 1).")
    parser.add_argument("--runs", type=int, default=200, help="Timed runs at batch 1.")
    parser.add_argument("--rounds", type=int, default=3, help="Rounds of eager, onnxruntime.")
    parser.add_argument("--quick", action="store_true", help="CI: 20 runs at batch 1, 2 rounds.")
    args = parser.parse_args()
    runs, rounds = (20, 2) if args.quick else (args.runs, args.rounds)
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    model, graph, height, width, architecture = example_model()
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    # onnxruntime's workers otherwise spin on the cores after each run, and the eager runs of
    # the next round then share the cores with them (measured: eager batch 1 at 279 ms instead
    # of 6 ms on 2 cores).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
    print(
        json.dumps(
            {
                "setup": {
                    "model": f"{architecture} {height}x{width}",
                    "example": EXAMPLE.name,
                    "threads": args.threads,
                    "torch": torch.__version__,
                    "onnxruntime": ort.__version__,
                    "opset": ONNX_OPSET,
                    "machine_cores": os.cpu_count(),
                    "load_average": round(os.getloadavg()[0], 2),
                }
            }
        )
    )
    rng = np.random.default_rng(0)
    for batch in BATCHES:
        images = rng.standard_normal((batch, 3, height, width), dtype=np.float32)
        tensor = torch.from_numpy(images)
        # Fewer runs of the larger batch: each costs ~batch times more.
        count = max(3, runs // 4) if batch > 1 else runs
        warmup = max(2, count // 10)

        def eager(tensor: torch.Tensor = tensor) -> object:
            with torch.no_grad():
                return model(tensor)

        def onnx(images: np.ndarray[Any, Any] = images) -> object:
            return session.run([LOGITS_NAME], {INPUT_NAME: images})

        eager_ms, onnx_ms = [], []
        for _ in range(rounds):
            eager_ms.append(median_ms(eager, warmup, count))
            onnx_ms.append(median_ms(onnx, warmup, count))
        # The median of each round's median: one busy round does not decide the figure.
        results = {"eager": statistics.median(eager_ms), "onnxruntime": statistics.median(onnx_ms)}
        for name, ms in results.items():
            emit(
                f"{name}_batch{batch}",
                ms,
                "ms",
                images_per_s=round(1000 * batch / ms, 2),
                batch=batch,
                runs=count * rounds,
            )
        emit(
            f"onnxruntime_speedup_batch{batch}",
            results["eager"] / results["onnxruntime"],
            "eager ms / onnxruntime ms",
        )
        if batch == BATCHES[-1]:
            with torch.no_grad():
                expected = model(tensor).numpy()
            (got,) = session.run([LOGITS_NAME], {INPUT_NAME: images})
            diff = float(np.abs(np.asarray(got) - expected).max())
            print(json.dumps({"figure": "max_abs_logit_diff", "value": diff, "unit": "logit"}))


if __name__ == "__main__":
    main()
