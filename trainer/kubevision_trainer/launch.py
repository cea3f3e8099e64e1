"""The launcher (docs/distributed.md, "What runs where"): when the plan's world has more than one
process and this process is not a worker yet, run torchrun (``torch.distributed.run``, its own
argument parser and ``run``) with the same command line as the workers' entry point, and turn
the workers' ends into one exit code and one termination line.

- **One Pod** (``spec.resources.nodes`` 1): ``--standalone`` (a c10d rendezvous on a free local
  port), ``--nproc-per-node`` = ``spec.resources.processes()``.
- **Several Pods**: static rendezvous at the master (the Pod of node rank 0);
  ``--nnodes`` from the plan, the Pod's node rank and the master's address and port from
  torchrun's own ``PET_*`` variables, which the operator sets (``contract.ENV_*``). Before the
  rendezvous every node waits, bounded, for the master's DNS name to resolve (the Pods of an
  Indexed Job start in any order; node 0's TCPStore connects to that name as well).
- ``--max-restarts 0``: a failed worker fails the Pod; the operator restarts the gang.
- **Exit code and termination line**: each worker writes its termination line to one file the
  launcher names (:data:`ENV_FIRST_FAILURE`), only when the file is still empty (under
  ``flock``), so the file holds the line of the first worker that failed; the launcher exits
  with that line's ``contract.Outcome`` exit code and writes the line to the container's
  termination log. Why not torchrun's own choice: it dates failures to the second (a worker
  that fails because its peer died, 10 ms later, ties with the peer), and the line and the
  exit code must come from the same worker. Why a file of the launcher's and not the termination
  log itself: ``/dev`` is not writable beside it, and outside a Pod the log may hold an
  earlier run's line.
- **SIGTERM** (the kubelet's stop): torchrun forwards it to the workers, waits for them up to
  its shutdown timeout (:attr:`TrainerSettings.shutdown_timeout_seconds`, below the Pod's
  ``terminationGracePeriodSeconds``), then kills them; the launcher exits with
  ``Preempted``'s code after the workers ended.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import signal
import socket
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from torch.distributed import run as torchrun
from torch.distributed.elastic.multiprocessing.api import SignalException
from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

from kubevision_api import contract
from kubevision_api.modelversion import Resources
from kubevision_api.plan import TrainingPlan
from kubevision_trainer.settings import TrainerSettings

log = logging.getLogger(__name__)

#: torchrun sets it in every worker: a process that has it is a worker, never a launcher.
ENV_LOCAL_RANK: Final = "LOCAL_RANK"
#: The worker's global rank (torchrun).
ENV_RANK: Final = "RANK"
#: Set by the launcher for its workers: the file that keeps the first failing worker's
#: termination line (the trainer's own variable; nothing outside the trainer reads it).
ENV_FIRST_FAILURE: Final = f"{contract.ENV_PREFIX}FIRST_FAILURE_FILE"


class LaunchError(RuntimeError):
    """The launch cannot start or the rendezvous failed: a missing or inconsistent ``PET_*``
    variable, a master address that never resolved, a rendezvous timeout."""


@dataclass(frozen=True)
class Launch:
    """Where this Pod's processes sit in the world.

    Attributes:
        nodes: Pods in the world (``spec.resources.nodes``).
        nproc_per_node: processes in this Pod (``spec.resources.processes()``).
        node_rank: this Pod's index, 0 .. nodes - 1 (``PET_NODE_RANK``; 0 with one Pod).
        master_addr: the master Pod's address (``PET_MASTER_ADDR``); None with one Pod.
        master_port: the rendezvous port on the master (``PET_MASTER_PORT``).
    """

    nodes: int
    nproc_per_node: int
    node_rank: int = 0
    master_addr: str | None = None
    master_port: int = contract.MASTER_PORT

    @property
    def world_size(self) -> int:
        """Processes in all: nodes x processes per node."""
        return self.nodes * self.nproc_per_node


def is_worker(env: Mapping[str, str] = os.environ) -> bool:
    """True in a process started by torchrun (``LOCAL_RANK`` is set)."""
    return ENV_LOCAL_RANK in env


def global_rank(env: Mapping[str, str] = os.environ) -> int:
    """This process's rank in the world: torchrun's ``RANK``, 0 outside a launch."""
    return int(env.get(ENV_RANK, "0"))


def plan_launch(resources: Resources, env: Mapping[str, str] = os.environ) -> Launch | None:
    """The launch this process must run, or None when it trains in-process: a torchrun
    worker already, or a world of one process.

    Raises:
        LaunchError: several Pods without the operator's ``PET_NODE_RANK`` or
            ``PET_MASTER_ADDR``, or ``PET_NNODES``/``PET_NPROC_PER_NODE`` that contradict
            the plan (the world sizes of the Pods would differ and the rendezvous hang).
    """
    if is_worker(env) or resources.world_size() == 1:
        return None
    nodes, nproc = resources.nodes, resources.processes()
    for name, planned in ((contract.ENV_NNODES, nodes), (contract.ENV_NPROC_PER_NODE, nproc)):
        value = env.get(name, "")
        if value.isdigit() and int(value) != planned:
            raise LaunchError(f"{name}={value} but the plan has {planned} (spec.resources)")
    if nodes == 1:
        return Launch(nodes=1, nproc_per_node=nproc)
    missing = [n for n in (contract.ENV_NODE_RANK, contract.ENV_MASTER_ADDR) if not env.get(n)]
    if missing:
        raise LaunchError(
            f"{' and '.join(missing)} not set: a training on {nodes} Pods runs in the "
            "operator's Indexed Job, which sets them"
        )
    node_rank = int(env[contract.ENV_NODE_RANK])
    if not 0 <= node_rank < nodes:
        raise LaunchError(f"{contract.ENV_NODE_RANK}={node_rank} is not in 0..{nodes - 1}")
    return Launch(
        nodes=nodes,
        nproc_per_node=nproc,
        node_rank=node_rank,
        master_addr=env[contract.ENV_MASTER_ADDR],
        master_port=int(env.get(contract.ENV_MASTER_PORT) or contract.MASTER_PORT),
    )


def torchrun_args(launch: Launch, entry: Sequence[str], settings: TrainerSettings) -> list[str]:
    """torchrun's command line for ``launch``, running ``entry`` in each worker: ``["-m",
    module, *args]`` or ``[script, *args]``. The rendezvous is bounded by
    ``settings.rendezvous_timeout_seconds`` (c10d's ``join_timeout``, the static rendezvous'
    ``timeout``: its TCPStore's connect and wait-for-all-nodes timeout)."""
    timeout = int(settings.rendezvous_timeout_seconds)
    args = [
        f"--nnodes={launch.nodes}",
        f"--nproc-per-node={launch.nproc_per_node}",
        "--max-restarts=0",
        f"--shutdown-timeout={settings.shutdown_timeout_seconds}",
    ]
    if launch.nodes == 1:
        args += ["--standalone", f"--rdzv-conf=join_timeout={timeout}"]
    else:
        assert launch.master_addr is not None
        args += [
            "--rdzv-backend=static",
            f"--node-rank={launch.node_rank}",
            f"--master-addr={launch.master_addr}",
            f"--master-port={launch.master_port}",
            f"--rdzv-conf=timeout={timeout}",
        ]
    # "--" ends torchrun's options: argparse would otherwise read the workers' own flags as
    # abbreviations of torchrun's (``--nproc`` of ``--nproc-per-node``) and refuse them.
    if entry[0] == "-m":
        return [*args, "--module", "--", *entry[1:]]
    return [*args, "--", *entry]


def wait_for_master(
    address: str,
    timeout_seconds: float,
    *,
    interval_seconds: float = 2.0,
    resolve: Callable[[str], object] = socket.gethostbyname,
) -> float:
    """Wait until ``address`` resolves (the headless Service publishes the master Pod's name
    once it has an IP). Returns the seconds waited.

    Raises:
        LaunchError: it did not resolve within ``timeout_seconds``.
    """
    started = time.monotonic()
    logged = False
    while True:
        try:
            resolve(address)
            return time.monotonic() - started
        except OSError as exc:
            waited = time.monotonic() - started
            if waited >= timeout_seconds:
                raise LaunchError(
                    f"the master's address {address} ({contract.ENV_MASTER_ADDR}) did not "
                    f"resolve within {timeout_seconds:g} s: {exc}"
                ) from exc
            if not logged:
                log.info(
                    "waiting up to %g s for the master's address %s to resolve (%s)",
                    timeout_seconds,
                    address,
                    exc,
                )
                logged = True
            time.sleep(min(interval_seconds, max(timeout_seconds - waited, 0.01)))


def cli_entry(argv: Sequence[str]) -> list[str]:
    """The workers' entry point: the ``kubevision`` command line ``argv`` (without the program
    name) as ``python -m kubevision_cli``."""
    return ["-m", "kubevision_cli", *argv]


def launch_plan_file(
    path: str,
    argv: Sequence[str],
    *,
    termination_log: str,
    settings: TrainerSettings | None = None,
) -> int | None:
    """The Job's entry point, first step: when the plan in ``path`` has a world of more than one
    process and this process is no worker, run the workers with the same command line
    (``argv``) and return their exit code; None when this process trains itself (a plan that
    cannot be read is left to it, which reports it as ``InvalidInput``)."""
    try:
        plan = TrainingPlan.model_validate_json(Path(path).read_text())
    except (OSError, ValueError):
        return None
    try:
        launch = plan_launch(plan.spec.resources)
    except LaunchError as exc:
        line = contract.termination_line(contract.Outcome.ERROR, str(exc))
        with contextlib.suppress(OSError):
            Path(termination_log).write_text(line)
        log.error("%s", line)
        return contract.Outcome.ERROR.exit_code
    if launch is None:
        return None
    return run(launch, cli_entry(argv), termination_log=termination_log, settings=settings)


def record_worker_line(line: str, env: Mapping[str, str] = os.environ) -> bool:
    """In a launched worker, write ``line`` to the launcher's first-failure file unless a line
    is there already (another worker failed first). Returns False outside a launch (the caller
    writes its termination log itself). Storage errors are ignored: the launcher then writes a
    line of its own."""
    path = env.get(ENV_FIRST_FAILURE)
    if path is None:
        return False
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if os.fstat(fd).st_size == 0:
                os.write(fd, line.encode())
                os.fsync(fd)
        finally:
            os.close(fd)  # releases the lock
    return True


def _ending(
    line: str, fallback: contract.Outcome, message: str
) -> tuple[contract.Outcome, str, int]:
    """The outcome, line and exit code from a worker's ``line``; ``fallback`` and ``message``
    when no worker wrote a line it could be read from."""
    parsed = contract.parse_termination(line)
    if parsed is not None:
        return parsed[0], line.strip(), parsed[0].exit_code
    text = contract.termination_line(fallback, message)
    return fallback, text, fallback.exit_code


def run(
    launch: Launch,
    entry: Sequence[str],
    *,
    termination_log: str | None,
    settings: TrainerSettings | None = None,
) -> int:
    """Run torchrun for ``launch`` with ``entry`` in each worker; returns the exit code of the
    first failing worker's ``contract.Outcome`` (0 when every worker succeeded,
    ``Preempted``'s after a SIGTERM once the workers ended). The first failure's line goes to
    ``termination_log`` (when given) and to the log. Never raises for a worker's failure."""
    settings = settings or TrainerSettings()
    handle, first_failure = tempfile.mkstemp(prefix="kubevision-first-failure-")
    os.close(handle)
    os.environ[ENV_FIRST_FAILURE] = first_failure  # inherited by the workers
    started = time.monotonic()
    try:
        if launch.master_addr is not None:
            waited = wait_for_master(launch.master_addr, settings.master_wait_seconds)
            log.info("master %s resolved after %.1f s", launch.master_addr, waited)
        args = torchrun_args(launch, entry, settings)
        log.info(
            "launching %d of %d processes (node rank %d): torchrun %s",
            launch.nproc_per_node,
            launch.world_size,
            launch.node_rank,
            " ".join(args),
        )
        torchrun.run(torchrun.get_args_parser().parse_args(args))  # type: ignore[no-untyped-call]
        code = contract.Outcome.SUCCEEDED.exit_code
    except ChildFailedError as exc:
        rank, failure = exc.get_first_failure()
        how = (
            f"killed by {signal.Signals(-failure.exitcode).name}"
            if failure.exitcode < 0
            else f"exit code {failure.exitcode}"
        )
        code = _finish(
            first_failure,
            termination_log,
            contract.Outcome.ERROR,
            f"worker rank {rank} ended ({how}) without a termination line",
        )
    except SignalException as exc:
        sig = signal.Signals(exc.sigval)
        log.warning("%s: the workers ended after %.1f s", sig.name, time.monotonic() - started)
        ending = contract.Outcome.PREEMPTED if sig is signal.SIGTERM else contract.Outcome.ERROR
        code = _finish(
            first_failure,
            termination_log,
            ending,
            f"{sig.name}: the workers did not write a line (stopped before they could save, "
            f"or killed after the shutdown timeout of {settings.shutdown_timeout_seconds} s)",
        )
        if sig is not signal.SIGTERM:
            code = 128 + sig.value
    except (LaunchError, RuntimeError, ValueError, OSError) as exc:
        # torchrun's rendezvous errors (RendezvousTimeoutError, DistStoreError) are
        # RuntimeErrors; a failure before any worker ran is retryable (Outcome.ERROR).
        code = _finish(
            first_failure,
            termination_log,
            contract.Outcome.ERROR,
            f"launch failed: {type(exc).__name__}: {exc}",
        )
    finally:
        os.environ.pop(ENV_FIRST_FAILURE, None)
        with contextlib.suppress(OSError):
            os.unlink(first_failure)
    return code


def _finish(
    first_failure: str, termination_log: str | None, fallback: contract.Outcome, message: str
) -> int:
    """Pick the first failing worker's line (or the fallback), write it to the termination
    log, log it; returns its exit code."""
    try:
        line = Path(first_failure).read_text()
    except OSError:
        line = ""
    ending, text, code = _ending(line, fallback, message)
    if termination_log is not None:
        with contextlib.suppress(OSError):  # outside a Pod the log may not be writable
            Path(termination_log).write_text(text)
    log.error("the workers failed (exit code %d, %s): %s", code, ending.reason, text)
    return code
