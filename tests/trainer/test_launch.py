"""The launcher (``kubevision_trainer.launch``) with real processes: torchrun's own code starts
tiny workers (``launch_worker.py``), no mock of torch.distributed.

- Each outcome of a failing worker becomes the launcher's exit code and termination line, even
  when another rank fails (exits) before it, after it wrote its line: the line decides.
- SIGTERM to the launcher reaches every worker; the launcher exits 143 after they ended, and
  kills workers that outlive the shutdown timeout (a trainer setting).
- Two "nodes" (two launchers on loopback, the node's place from ``PET_*`` as in a Pod) meet at
  a static rendezvous and all-reduce over gloo; a node whose master never answers fails within
  the rendezvous timeout, and one whose master does not resolve within the wait.
- When to launch, and torchrun's command line, from the plan and the environment.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from torch.distributed import run as torchrun

from kubevision_api import contract
from kubevision_api.modelversion import Resources
from kubevision_trainer import launch, main
from kubevision_trainer.settings import TrainerSettings

WORKER = Path(__file__).with_name("launch_worker.py")


def _launcher(
    tmp_path: Path, *worker: str, nodes: int = 1, env: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            str(WORKER),
            "launch",
            "--nproc",
            "2" if nodes == 1 else "1",
            "--nodes",
            str(nodes),
            "--termination-log",
            str(tmp_path / "termination-log"),
            "--",
            "work",
            "--dir",
            str(tmp_path),
            *worker,
        ],
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _finish(process: subprocess.Popen[str], timeout: float = 240) -> tuple[int, str]:
    out, _ = process.communicate(timeout=timeout)
    return process.returncode, out


@pytest.mark.parametrize(
    "outcome",
    [
        contract.Outcome.INVALID_INPUT,
        contract.Outcome.STORAGE_CHECK_FAILED,
        contract.Outcome.NON_FINITE_LOSS,
        contract.Outcome.PREEMPTED,
        contract.Outcome.ERROR,
    ],
    ids=lambda o: o.reason,
)
def test_the_first_failing_workers_outcome_is_the_launchers(
    tmp_path: Path, outcome: contract.Outcome
) -> None:
    # Rank 1 fails first (writes its line) but exits 0.5 s after rank 0, which fails with
    # Error (exit 1) on seeing it: torchrun's own first failure is rank 0's.
    (tmp_path / "termination-log").write_text("Error: a line of an earlier run")
    code, out = _finish(
        _launcher(tmp_path, "--scenario", "fail", "--fail-rank", "1", "--reason", outcome.reason)
    )
    assert code == outcome.exit_code, out
    assert (tmp_path / "termination-log").read_text() == f"{outcome.reason}: rank 1 failed first"
    assert "Error: rank 0: peer closed" in out  # rank 0 did fail, and was not chosen


def test_sigterm_reaches_the_workers_and_the_launcher_exits_143_after_them(
    tmp_path: Path,
) -> None:
    process = _launcher(tmp_path, "--scenario", "sigterm")
    deadline = time.monotonic() + 180
    while not all((tmp_path / f"ready.{r}").exists() for r in (0, 1)):
        assert process.poll() is None, process.communicate()[0]
        assert time.monotonic() < deadline, "the workers never started"
        time.sleep(0.1)
    sent = time.time()
    process.send_signal(signal.SIGTERM)
    code, out = _finish(process)
    exited = time.time()
    assert code == contract.Outcome.PREEMPTED.exit_code, out
    got = [float((tmp_path / f"got.{r}").read_text()) for r in (0, 1)]
    ended = [float((tmp_path / f"ended.{r}").read_text()) for r in (0, 1)]
    assert all(sent <= t < sent + 10 for t in got)  # forwarded at once
    assert max(ended) <= exited  # the launcher waited for the workers' 1 s save
    assert min(ended) - sent >= 1.0
    line = (tmp_path / "termination-log").read_text()
    assert line.startswith("Preempted: stopped by rank "), line
    print(f"\nSIGTERM -> workers {max(got) - sent:.2f} s, launcher exit {exited - sent:.2f} s")


def test_workers_that_outlive_the_shutdown_timeout_are_killed(tmp_path: Path) -> None:
    env = {"KUBEVISION_SHUTDOWN_TIMEOUT_SECONDS": "2"}
    process = _launcher(tmp_path, "--scenario", "ignore-sigterm", env=env)
    deadline = time.monotonic() + 180
    while not all((tmp_path / f"ready.{r}").exists() for r in (0, 1)):
        assert process.poll() is None, process.communicate()[0]
        assert time.monotonic() < deadline, "the workers never started"
        time.sleep(0.1)
    sent = time.monotonic()
    process.send_signal(signal.SIGTERM)
    code, out = _finish(process, timeout=60)
    took = time.monotonic() - sent
    assert code == contract.Outcome.PREEMPTED.exit_code, out
    assert 2.0 <= took < 20, took
    assert (tmp_path / "got.0").exists() and (tmp_path / "got.1").exists()
    line = (tmp_path / "termination-log").read_text()
    assert line.startswith("Preempted: SIGTERM: the workers did not write a line"), line
    assert "shutdown timeout of 2 s" in line


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _node_env(rank: int, port: int, master: str = "localhost") -> dict[str, str]:
    return {
        contract.ENV_NNODES: "2",
        contract.ENV_NPROC_PER_NODE: "1",
        contract.ENV_NODE_RANK: str(rank),
        contract.ENV_MASTER_ADDR: master,
        contract.ENV_MASTER_PORT: str(port),
    }


def test_two_nodes_meet_at_the_static_rendezvous(tmp_path: Path) -> None:
    port = _free_port()
    nodes = [
        _launcher(tmp_path, "--scenario", "allreduce", nodes=2, env=_node_env(rank, port))
        for rank in (1, 0)  # the other node first: it waits for the master
    ]
    results = [_finish(node) for node in nodes]
    for code, out in results:
        assert code == 0, out
    assert "--rdzv-backend=static --node-rank=1 --master-addr=localhost" in results[0][1]
    assert [(tmp_path / f"rank.{r}").read_text() for r in (0, 1)] == ["0 2 1", "1 2 1"]


def test_a_rendezvous_without_master_fails_within_its_timeout(tmp_path: Path) -> None:
    env = {**_node_env(1, _free_port()), "KUBEVISION_RENDEZVOUS_TIMEOUT_SECONDS": "3"}
    started = time.monotonic()
    code, out = _finish(_launcher(tmp_path, "--scenario", "allreduce", nodes=2, env=env))
    took = time.monotonic() - started
    assert code == contract.Outcome.ERROR.exit_code, out
    assert took < 60, took
    line = (tmp_path / "termination-log").read_text()
    assert line.startswith("Error: launch failed: "), line


def test_a_master_that_never_resolves_fails_after_the_wait(tmp_path: Path) -> None:
    env = {
        **_node_env(1, _free_port(), master="kubevision-master.invalid"),
        "KUBEVISION_MASTER_WAIT_SECONDS": "2",
    }
    code, out = _finish(_launcher(tmp_path, "--scenario", "allreduce", nodes=2, env=env))
    assert code == contract.Outcome.ERROR.exit_code, out
    line = (tmp_path / "termination-log").read_text()
    assert line.startswith(
        "Error: launch failed: LaunchError: the master's address kubevision-master.invalid "
        "(PET_MASTER_ADDR) did not resolve within 2 s"
    ), line
    assert "waiting up to 2 s for the master's address kubevision-master.invalid" in out


def test_wait_for_master_returns_once_the_name_resolves() -> None:
    answers = iter([OSError("Name or service not known"), OSError("not yet"), "10.0.0.7"])

    def resolve(name: str) -> object:
        answer = next(answers)
        if isinstance(answer, OSError):
            raise answer
        return answer

    waited = launch.wait_for_master("job-0.job.ns.svc", 5, interval_seconds=0.05, resolve=resolve)
    assert 0.09 <= waited < 2
    assert launch.wait_for_master("localhost", 1) < 1


def test_when_to_launch() -> None:
    cpu = Resources(gpus=0, processes_per_node=1)
    assert launch.plan_launch(cpu, {}) is None  # one process: no launch
    assert launch.plan_launch(Resources(gpus=1), {}) is None
    assert launch.plan_launch(Resources(gpus=4), {"LOCAL_RANK": "0"}) is None  # a worker
    assert launch.plan_launch(Resources(gpus=4), {}) == launch.Launch(nodes=1, nproc_per_node=4)
    assert launch.plan_launch(Resources(gpus=0, processes_per_node=3), {}) == launch.Launch(
        nodes=1, nproc_per_node=3
    )
    two = Resources(gpus=8, nodes=2)
    env = _node_env(1, 29500, master="job-0.job.ns.svc") | {contract.ENV_NPROC_PER_NODE: "8"}
    assert launch.plan_launch(two, env) == launch.Launch(
        nodes=2, nproc_per_node=8, node_rank=1, master_addr="job-0.job.ns.svc", master_port=29500
    )
    with pytest.raises(launch.LaunchError, match="PET_NODE_RANK and PET_MASTER_ADDR not set"):
        launch.plan_launch(two, {})
    with pytest.raises(launch.LaunchError, match="PET_NNODES=3 but the plan has 2"):
        launch.plan_launch(two, env | {contract.ENV_NNODES: "3"})
    with pytest.raises(launch.LaunchError, match=r"PET_NODE_RANK=2 is not in 0\.\.1"):
        launch.plan_launch(two, env | {contract.ENV_NODE_RANK: "2"})


def test_torchrun_command_lines() -> None:
    settings = TrainerSettings(rendezvous_timeout_seconds=300, shutdown_timeout_seconds=90)
    entry = launch.cli_entry(["trainer", "--plan", "p.json", "--termination-log", "t"])
    one_launch = launch.Launch(nodes=1, nproc_per_node=4)
    one = launch.torchrun_args(one_launch, entry, settings)
    assert one == [
        "--nnodes=1",
        "--nproc-per-node=4",
        "--max-restarts=0",
        "--shutdown-timeout=90",
        "--standalone",
        "--rdzv-conf=join_timeout=300",
        "--module",
        "--",
        "kubevision_cli",
        "trainer",
        "--plan",
        "p.json",
        "--termination-log",
        "t",
    ]
    many = launch.Launch(nodes=4, nproc_per_node=8, node_rank=3, master_addr="m", master_port=1)
    assert launch.torchrun_args(many, ["w.py"], settings)[4:] == [
        "--rdzv-backend=static",
        "--node-rank=3",
        "--master-addr=m",
        "--master-port=1",
        "--rdzv-conf=timeout=300",
        "--",
        "w.py",
    ]
    # torchrun's own parser gives the workers their command line untouched, even flags that
    # look like abbreviations of its own.
    argv = ["train", "-f", "m.yaml", "--nproc", "2", "-r", "--standalone"]
    parsed = torchrun.parse_args(launch.torchrun_args(one_launch, launch.cli_entry(argv), settings))  # type: ignore[no-untyped-call]
    assert (parsed.module, parsed.training_script, parsed.training_script_args) == (
        True,
        "kubevision_cli",
        argv,
    )
    assert (parsed.nproc_per_node, parsed.standalone) == ("4", True)


def test_a_worker_keeps_the_first_line_and_a_single_process_writes_its_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "termination-log"
    code = main._terminate(str(log), contract.Outcome.NON_FINITE_LOSS, "loss nan")
    assert (code, log.read_text()) == (4, "NonFiniteLoss: loss nan")  # no launch: as before
    first = tmp_path / "first-failure"
    first.write_text("")
    monkeypatch.setenv(launch.ENV_FIRST_FAILURE, str(first))
    assert main._terminate(str(log), contract.Outcome.INVALID_INPUT, "bad image") == 2
    assert main._terminate(str(log), contract.Outcome.ERROR, "peer closed") == 1
    assert first.read_text() == "InvalidInput: bad image"
    assert log.read_text() == "NonFiniteLoss: loss nan"  # the launcher writes the log
