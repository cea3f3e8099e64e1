"""A tiny worker for the launcher's tests (``test_launch.py``), and the launcher that runs it.

    python launch_worker.py launch --nproc N --termination-log T [--nodes K] -- WORKER ARGS
    python launch_worker.py work --scenario S --dir D [--fail-rank R] [--reason REASON]

``launch`` runs ``kubevision_trainer.launch`` (torchrun's own code) with this script as each
worker; with ``--nodes`` > 1 the node's place comes from the ``PET_*`` variables, as in a Pod.
``work`` is one worker; it writes its termination line as ``main._terminate`` does in a
worker (``launch.record_worker_line``; importing ``main`` would cost each worker seconds, and
``test_launch.py`` checks ``main._terminate`` on its own). Scenarios:

- ``fail``: rank R writes its line, lingers 0.5 s and exits with the outcome's code; every
  other rank waits for that line and exits at once with a line of its own (``Error``, exit 1),
  as a rank whose collective lost its peer does: torchrun sees the other rank fail first.
- ``sigterm``: every rank says it is ready, waits for SIGTERM, "saves" for 1 s, writes
  ``Preempted`` and exits 143; each records when it got the signal and when it ended.
- ``ignore-sigterm``: as ``sigterm`` but never ends after the signal (killed by torchrun after
  its shutdown timeout).
- ``allreduce``: a gloo process group from torchrun's environment, one all-reduce of the
  ranks; each rank writes ``rank WORLD_SIZE sum`` to ``D/rank.<RANK>``.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time
from pathlib import Path

from kubevision_api import contract
from kubevision_api.modelversion import Resources
from kubevision_trainer import launch


def _launch(args: argparse.Namespace, worker: list[str]) -> int:
    resources = Resources(gpus=0, nodes=args.nodes, processes_per_node=args.nproc)
    start = launch.plan_launch(resources)
    assert start is not None
    return launch.run(start, [__file__, *worker], termination_log=args.termination_log)


def _terminate(outcome: contract.Outcome, message: str) -> int:
    """What ``main._terminate`` does in a launched worker."""
    line = contract.termination_line(outcome, message)
    assert launch.record_worker_line(line)
    print(line, file=sys.stderr)
    return outcome.exit_code


def _stamp(path: Path) -> None:
    path.write_text(f"{time.time():.6f}")


def _work(args: argparse.Namespace) -> int:
    rank = int(os.environ["RANK"])
    folder = Path(args.dir)
    if args.scenario == "fail":
        if rank == args.fail_rank:
            outcome = contract.Outcome.from_reason(args.reason)
            assert outcome is not None
            code = _terminate(outcome, f"rank {rank} failed first")
            time.sleep(0.5)
            return code
        first = Path(os.environ[launch.ENV_FIRST_FAILURE])
        deadline = time.monotonic() + 60
        while first.stat().st_size == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        return _terminate(contract.Outcome.ERROR, f"rank {rank}: peer closed")
    if args.scenario in ("sigterm", "ignore-sigterm"):
        got: list[float] = []
        signal.signal(signal.SIGTERM, lambda signum, frame: got.append(time.time()))
        _stamp(folder / f"ready.{rank}")
        while not got:
            time.sleep(0.02)
        (folder / f"got.{rank}").write_text(f"{got[0]:.6f}")
        if args.scenario == "ignore-sigterm":
            while True:
                time.sleep(1)
        time.sleep(1.0)  # finishing the batch and writing last.pt
        _stamp(folder / f"ended.{rank}")
        return _terminate(contract.Outcome.PREEMPTED, f"stopped by rank {rank}")
    if args.scenario == "allreduce":
        import torch
        import torch.distributed as dist

        dist.init_process_group("gloo")
        total = torch.tensor([float(rank)])
        dist.all_reduce(total)
        world = dist.get_world_size()
        dist.destroy_process_group()
        (folder / f"rank.{rank}").write_text(f"{rank} {world} {total.item():g}")
        return 0
    raise SystemExit(f"unknown scenario {args.scenario}")


def main_(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    worker: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, worker = argv[:cut], argv[cut + 1 :]
    parser = argparse.ArgumentParser()
    parser.add_argument("role", choices=["launch", "work"])
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--nodes", type=int, default=1)
    parser.add_argument("--termination-log")
    parser.add_argument("--scenario")
    parser.add_argument("--dir")
    parser.add_argument("--fail-rank", type=int, default=1)
    parser.add_argument("--reason", default="Error")
    args = parser.parse_args(argv)
    if args.role == "launch":
        return _launch(args, worker)
    return _work(args)


if __name__ == "__main__":
    sys.exit(main_(sys.argv[1:]))
