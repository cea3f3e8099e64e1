"""``scripts/dev-cluster``: a control plane that outlives the command (``up``), found again by
the PIDs it recorded (``status``, ``down``), and ``build`` alone."""

from __future__ import annotations

import argparse
import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from testenv.controlplane.build import ensure_binaries
from testenv.controlplane.launch import start
from testenv.controlplane.processes import ControlPlaneError, log, pid_matches, stop_pids


def dev_state_dir() -> Path:
    """State directory of ``dev-cluster``: ``${XDG_RUNTIME_DIR:-/tmp}/kubevision-dev-cluster``."""
    return Path(os.environ.get("XDG_RUNTIME_DIR") or "/tmp") / "kubevision-dev-cluster"


def _read_pids(state_dir: Path) -> tuple[dict[str, int], dict[str, str], str]:
    try:
        recorded = json.loads((state_dir / "pids.json").read_text())
    except (OSError, ValueError):
        return {}, {}, ""
    return recorded["pids"], recorded["binaries"], recorded["server"]


def _running(state_dir: Path) -> bool:
    pids, binaries, _ = _read_pids(state_dir)
    return bool(pids) and all(pid_matches(pid, binaries[name]) for name, pid in pids.items())


def main(argv: Sequence[str] | None = None) -> int:
    """Command line of ``scripts/dev-cluster``: build, up, down, status."""
    parser = argparse.ArgumentParser(
        prog="dev-cluster", description="Local Kubernetes control plane for kubevision."
    )
    parser.add_argument(
        "command",
        choices=["up", "down", "status", "build"],
        help="up: build if needed, start in the background and print `export KUBECONFIG=...`; "
        "down: stop and delete its data; status: say whether it runs; build: only build",
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        help="default: ${XDG_RUNTIME_DIR:-/tmp}/kubevision-dev-cluster",
    )
    args = parser.parse_args(argv)
    state_dir: Path = args.state_dir or dev_state_dir()
    kubeconfig = state_dir / "kubeconfig"

    if args.command == "build":
        print(ensure_binaries())
        return 0
    if args.command == "status":
        if _running(state_dir):
            log(f"running at {_read_pids(state_dir)[2]}")
            print(f"export KUBECONFIG={kubeconfig}")
            return 0
        log("not running")
        return 1
    if args.command == "down":
        pids, binaries, _ = _read_pids(state_dir)
        stop_pids(pids, binaries)
        shutil.rmtree(state_dir, ignore_errors=True)
        log(f"stopped; removed {state_dir}")
        return 0
    # up
    if _running(state_dir):
        log("already running")
    else:
        # Leftovers of a half-dead cluster (one component crashed) are stopped, not reused.
        pids, binaries, _ = _read_pids(state_dir)
        stop_pids(pids, binaries)
        try:
            start(state_dir, detach=True)
        except ControlPlaneError as exc:
            log(str(exc))
            return 1
    print(f"export KUBECONFIG={kubeconfig}")
    return 0
