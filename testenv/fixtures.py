"""The pytest fixtures of the test environment; ``tests/integration/conftest.py`` imports them.

Fixtures:
    control_plane: session-scoped; a running :class:`~testenv.controlplane.ControlPlane`.
    node_agent: a factory of started :class:`~testenv.nodeagent.NodeAgent` (``node_agent(gpus=1)``)
        whose Nodes are Ready and schedulable; every agent it made is stopped at teardown.
"""

from __future__ import annotations

import atexit
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from testenv.controlplane import ControlPlane, start
from testenv.nodeagent import NodeAgent


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """A running control plane shared by the whole test session; torn down at its end."""
    plane = start(tmp_path_factory.mktemp("control-plane"))
    # Belt and braces next to the fixture teardown: also stop on an interpreter exit that
    # skips fixture finalisation (e.g. an internal pytest error). stop() is idempotent.
    atexit.register(plane.stop)
    try:
        yield plane
    finally:
        plane.stop()
        atexit.unregister(plane.stop)


@pytest.fixture
def node_agent(
    control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., NodeAgent]]:
    """Factory of started node agents: ``node_agent(gpus=1, name=..., path_map=...)``.

    Each call registers a new Node (unique name unless given) that is Ready and schedulable
    when the call returns; every agent is stopped, and its Node deleted, at teardown.
    """
    agents: list[NodeAgent] = []

    def make(**kwargs: Any) -> NodeAgent:
        kwargs.setdefault("name", f"node-{uuid.uuid4().hex[:6]}")
        kwargs.setdefault("workdir", tmp_path_factory.mktemp(kwargs["name"]))
        agent = NodeAgent(control_plane, **kwargs)
        agents.append(agent)
        return agent.start()

    try:
        yield make
    finally:
        for agent in reversed(agents):
            agent.stop()
