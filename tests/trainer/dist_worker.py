"""One rank of a test's distributed run (``tests.trainer.dist_helpers``).

- ``plan PLAN_FILE [float64]``: ``main.run_plan_file`` (SIGTERM handling included); exits with
  its code. ``float64`` builds the model in double precision (torch's default dtype), which
  the engine follows.
- ``call MODULE:FUNCTION KWARGS_PICKLE OUT``: joins a gloo group from torchrun's environment,
  calls the function with the pickled keyword arguments and pickles its result to
  ``OUT/result-RANK.pickle``."""

from __future__ import annotations

import importlib
import pickle
import sys
from pathlib import Path

import torch

from kubevision_trainer import distributed, main
from kubevision_trainer.settings import TrainerSettings


def _call(function: str, kwargs_file: str, out: str) -> int:
    world = distributed.World.from_env()
    settings = TrainerSettings()
    distributed.init(world, torch.device("cpu"), settings.collective_timeout_seconds)
    try:
        module, name = function.split(":")
        result = getattr(importlib.import_module(module), name)(
            **pickle.loads(Path(kwargs_file).read_bytes())
        )
        Path(out, f"result-{world.rank}.pickle").write_bytes(pickle.dumps(result))
    finally:
        distributed.destroy()
    return 0


def entry(argv: list[str]) -> int:
    """Dispatch on the first argument."""
    if argv[0] == "plan":
        path = Path(argv[1])
        rank = distributed.World.from_env().rank
        if argv[2:] == ["float64"]:
            torch.set_default_dtype(torch.float64)
        return main.run_plan_file(
            str(path), device="cpu", termination_log=str(path.with_name(f"termination-{rank}"))
        )
    return _call(argv[1], argv[2], argv[3])


if __name__ == "__main__":
    sys.exit(entry(sys.argv[1:]))
