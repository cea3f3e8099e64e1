"""The Node object of a node agent: registration, status heartbeat, the Lease, and waiting
until the node lifecycle controller lifts the not-ready taint."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

from testenv.nodeagent.api import ApiClient, ApiError, NodeAgentError
from testenv.nodeagent.podspec import LOOPBACK
from testenv.nodeagent.status import micro_timestamp, timestamp

LEASE_DURATION_S = 40  # the kubelet's default


class NodeRegistration:
    """The Node ``name`` as its kubelet keeps it, through ``api`` (the node's identity).

    Args:
        api: a client authenticated as ``system:node:<name>``.
        name: the Node's name.
        capacity: capacity (and allocatable), e.g. ``{"cpu": "8", "memory": "32Gi"}``.
        labels, taints: extra Node labels and ``spec.taints``.
        kubelet_version: reported in ``nodeInfo`` (the control plane's version).
    """

    def __init__(
        self,
        api: ApiClient,
        name: str,
        *,
        capacity: Mapping[str, str],
        labels: Mapping[str, str],
        taints: Sequence[Mapping[str, str]],
        kubelet_version: str,
    ) -> None:
        self.api = api
        self.name = name
        self.capacity = dict(capacity)
        self.labels = dict(labels)
        self.taints = [dict(t) for t in taints]
        self.kubelet_version = kubelet_version
        self.registered_at = timestamp()

    def status(self) -> dict[str, Any]:
        """The Node's ``status``: capacity, Ready, addresses and node info."""
        capacity = dict(self.capacity)
        now = timestamp()
        since = self.registered_at  # conditions never change, so neither do their transitions

        def condition(kind: str, status: str, reason: str, message: str) -> dict[str, str]:
            return {
                "type": kind,
                "status": status,
                "reason": reason,
                "message": message,
                "lastHeartbeatTime": now,
                "lastTransitionTime": since,
            }

        return {
            "capacity": capacity,
            "allocatable": dict(capacity),
            "conditions": [
                condition("MemoryPressure", "False", "KubeletHasSufficientMemory", "ok"),
                condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "ok"),
                condition("PIDPressure", "False", "KubeletHasSufficientPID", "ok"),
                condition("Ready", "True", "KubeletReady", "kubevision node agent is posting"),
            ],
            "addresses": [
                {"type": "InternalIP", "address": LOOPBACK},
                {"type": "Hostname", "address": self.name},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 0}},
            "nodeInfo": {
                "machineID": "",
                "systemUUID": "",
                "bootID": "",
                "kernelVersion": os.uname().release,
                "osImage": "kubevision node agent",
                "containerRuntimeVersion": "nodeagent://1",
                "kubeletVersion": self.kubelet_version,
                "kubeProxyVersion": "",
                "operatingSystem": "linux",
                "architecture": "amd64",
            },
        }

    def register(self) -> None:
        """Create the Node, or take over one of the same name left by a killed agent."""
        labels = {
            "kubernetes.io/hostname": self.name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            "kubevision.dev/node-agent": "true",
            **self.labels,
        }
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": self.name, "labels": labels},
            "spec": {"taints": self.taints} if self.taints else {},
            "status": self.status(),
        }
        try:
            # Nodes are the one kind whose status may be given at creation, as kubelets do.
            self.api.call("POST", "/api/v1/nodes", node)
        except ApiError as exc:
            if exc.status != 409:
                raise NodeAgentError(f"cannot register node {self.name}: {exc}") from exc
            # A Node of the same name is left over (an agent killed before stop()): take it over.
            self.api.call(
                "PATCH",
                f"/api/v1/nodes/{self.name}",
                {"metadata": {"labels": labels}, "spec": {"taints": self.taints or None}},
                content_type="application/merge-patch+json",
            )
            self.patch_status()

    def patch_status(self) -> None:
        """Refresh the Node's status (the heartbeat besides the Lease)."""
        self.api.call(
            "PATCH",
            f"/api/v1/nodes/{self.name}/status",
            {"status": self.status()},
            content_type="application/merge-patch+json",
        )

    def wait_schedulable(self, timeout: float) -> None:
        """Return once the Node has no ``node.kubernetes.io/`` taint left."""
        # The TaintNodesByCondition admission plugin gives every new Node the not-ready taint;
        # the node lifecycle controller lifts it once it sees Ready=True. Until then the
        # scheduler would not place anything here, so start() waits for it.
        deadline = time.monotonic() + timeout
        while True:
            node = self.api.call("GET", f"/api/v1/nodes/{self.name}")
            taints = [t["key"] for t in (node.get("spec") or {}).get("taints") or []]
            if not any(k.startswith("node.kubernetes.io/") for k in taints):
                return
            if time.monotonic() > deadline:
                raise NodeAgentError(
                    f"node {self.name} still has taints {taints} after {timeout:.0f} s"
                )
            time.sleep(0.2)

    def renew_lease(self) -> None:
        """Renew the Node's Lease in ``kube-node-lease``, creating it the first time."""
        path = f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{self.name}"
        try:
            self.api.call(
                "PATCH",
                path,
                {"spec": {"renewTime": micro_timestamp(), "holderIdentity": self.name}},
                content_type="application/merge-patch+json",
            )
        except ApiError as exc:
            if exc.status != 404:
                raise
            node = self.api.call("GET", f"/api/v1/nodes/{self.name}")
            lease = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {
                    "name": self.name,
                    "namespace": "kube-node-lease",
                    # As the kubelet does: the Lease goes when the Node goes.
                    "ownerReferences": [
                        {
                            "apiVersion": "v1",
                            "kind": "Node",
                            "name": self.name,
                            "uid": node["metadata"]["uid"],
                        }
                    ],
                },
                "spec": {
                    "holderIdentity": self.name,
                    "leaseDurationSeconds": LEASE_DURATION_S,
                    "renewTime": micro_timestamp(),
                },
            }
            self.api.call(
                "POST", "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases", lease
            )
