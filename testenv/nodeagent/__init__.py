"""A node agent for the integration tests: a kubelet that runs a Pod's containers as local
processes, on the control plane of ``testenv.controlplane``. See docs/node-agent.md.

Modules, one job each: ``agent`` (the Node's lifecycle and the Pod watch), ``node`` (the Node
object and its Lease), ``worker`` (one Pod from start to end), ``containers`` (one container's
runs), ``volumes`` and ``environment`` (what a container sees), ``network`` (Pod DNS names and a
gang's rendezvous port on loopback), ``podspec`` and ``status`` (pure
rules of the Pod spec and of Pod status), ``processes`` (process trees), ``api`` (the REST
client).
"""

from testenv.nodeagent.agent import NodeAgent, PortMap
from testenv.nodeagent.api import ApiError, NodeAgentError
from testenv.nodeagent.podspec import (
    GPU_RESOURCE,
    LOOPBACK,
    PATHS_ENV,
    PORT_ENV_PREFIX,
    PathRewriter,
    expand,
    parse_quantity,
)
from testenv.nodeagent.status import termination_message

__all__ = [
    "GPU_RESOURCE",
    "LOOPBACK",
    "PATHS_ENV",
    "PORT_ENV_PREFIX",
    "ApiError",
    "NodeAgent",
    "NodeAgentError",
    "PathRewriter",
    "PortMap",
    "expand",
    "parse_quantity",
    "termination_message",
]
