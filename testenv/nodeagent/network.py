"""Pod DNS names and the rendezvous port, on a node that has neither cluster DNS nor Pod IPs.

On a cluster, a Pod whose spec sets ``hostname`` and ``subdomain`` (an Indexed Job's Pods get
the hostname ``<job>-<index>``; the operator sets ``subdomain`` to a headless Service) is known
to the cluster DNS as ``<hostname>.<subdomain>.<namespace>.svc[.cluster.local]``, and every Pod
has an IP of its own, so all the Pods of a torchrun gang can listen on the same port (29500).
Here every Pod runs on this machine's loopback and no resolver knows those names, so the node
agent maps, in the container's process environment only:

- **names**: every whole Pod DNS name in an env value (``PET_MASTER_ADDR`` =
  ``<job>-0.<service>.<namespace>.svc``, or such a name inside a URL) becomes ``127.0.0.1``;
  Service names (``<service>.<namespace>.svc``) are left alone;
- **the rendezvous port**: ``PET_MASTER_PORT`` (``contract.ENV_MASTER_PORT``) becomes a free
  loopback port chosen once per gang, the key being (namespace, ``subdomain``, uid of the
  controlling owner, e.g. the Job): every Pod of one gang gets the same port, on every agent of
  this test process, while two gangs, or two attempts of a gang whose Job was created again
  (new uid), do not collide on one port. A Pod without ``subdomain`` is a gang of its own.

The Pod and Job specs keep the real names and port: the API shows what a cluster would.
"""

from __future__ import annotations

import re
import socket
import threading
from collections.abc import Mapping
from typing import Any

from kubevision_api.contract import ENV_MASTER_PORT
from testenv.nodeagent.podspec import LOOPBACK

_LABEL = r"[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?"
#: ``<hostname>.<subdomain>.<namespace>.svc[.cluster.local][.]`` as a whole word.
POD_DNS_NAME = re.compile(
    rf"(?<![\w.-]){_LABEL}\.{_LABEL}\.{_LABEL}\.svc(?:\.cluster\.local)?\.?(?![\w.-])"
)

GangKey = tuple[str, str, str]


def pod_hostname(pod: Mapping[str, Any]) -> str:
    """The Pod's hostname: ``spec.hostname``, else its name (what the kubelet gives it)."""
    return str(pod["spec"].get("hostname") or pod["metadata"]["name"])


def map_names(value: str) -> str:
    """``value`` with every whole Pod DNS name replaced by the loopback address."""
    return POD_DNS_NAME.sub(LOOPBACK, value)


def gang_key(pod: Mapping[str, Any]) -> GangKey:
    """Which gang ``pod`` belongs to: (namespace, subdomain, controller's uid).

    Without ``subdomain`` the Pod's own uid stands in for the gang, so that two lone Pods that
    both say ``PET_MASTER_PORT=29500`` get different ports.
    """
    meta, spec = pod["metadata"], pod["spec"]
    subdomain = spec.get("subdomain") or ""
    if not subdomain:
        return (meta["namespace"], "", meta["uid"])
    owner = next((r["uid"] for r in meta.get("ownerReferences") or [] if r.get("controller")), "")
    return (meta["namespace"], subdomain, owner)


class GangPorts:
    """Free loopback ports handed out once per (gang, port): the same answer every time for
    one key, never the same port for two keys in this process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ports: dict[tuple[GangKey, int], int] = {}
        # Sockets held open on every handed-out port until its gang's process binds it would
        # block that bind; instead ports are only remembered, so the kernel's ephemeral
        # allocator is the sole source of a collision, and it hands out ports in sequence.
        self._given: set[int] = set()

    def port(self, key: GangKey, port: int) -> int:
        """The host port of ``port`` for gang ``key`` (chosen on first use)."""
        with self._lock:
            found = self._ports.get((key, port))
            if found is None:
                found = self._free_port()
                self._ports[(key, port)] = found
                self._given.add(found)
            return found

    def _free_port(self) -> int:
        for _ in range(100):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.bind((LOOPBACK, 0))
                candidate = int(sock.getsockname()[1])
            if candidate not in self._given:
                return candidate
        raise OSError("no free loopback port left for a gang")


#: Shared by every agent of the test process: a gang may span several Nodes.
GANG_PORTS = GangPorts()


def map_network(
    env: Mapping[str, str], pod: Mapping[str, Any], ports: GangPorts = GANG_PORTS
) -> tuple[dict[str, str], dict[int, int]]:
    """A container's environment with Pod DNS names and the rendezvous port on loopback.

    Returns:
        (the mapped environment, {rendezvous port as the spec says: the gang's host port};
        empty when ``PET_MASTER_PORT`` is unset or not a number).
    """
    mapped = {name: map_names(value) for name, value in env.items()}
    moved: dict[int, int] = {}
    raw = mapped.get(ENV_MASTER_PORT, "").strip()
    if raw.isdigit():
        host_port = ports.port(gang_key(pod), int(raw))
        moved[int(raw)] = host_port
        mapped[ENV_MASTER_PORT] = str(host_port)
    return mapped, moved
