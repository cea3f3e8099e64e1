"""A container's environment as the kubelet builds it: the node's base, the ``kubernetes``
Service's variables, ``envFrom``, then ``env`` in order (values, ConfigMap and Secret keys,
downward-API fields and resources)."""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from testenv.nodeagent.api import ApiError
from testenv.nodeagent.containers import Container
from testenv.nodeagent.network import pod_hostname
from testenv.nodeagent.podspec import (
    ENV_NAME,
    LOOPBACK,
    PathRewriter,
    PrepareError,
    container_env,
    field_value,
    parse_quantity,
)
from testenv.nodeagent.volumes import Volumes

if TYPE_CHECKING:
    from testenv.nodeagent.agent import NodeAgent
    from testenv.nodeagent.worker import PodWorker


class EnvBuilder:
    """A container's environment: base, service variables, envFrom, then env in order."""

    def __init__(self, agent: NodeAgent, volumes: Volumes) -> None:
        self.agent = agent
        self.volumes = volumes

    def build(
        self, worker: PodWorker, container: Container, rewriter: PathRewriter
    ) -> dict[str, str]:
        """The environment of one run of ``container``; ``rewriter`` maps the container's
        paths in what the Pod spec sets (:func:`~testenv.nodeagent.podspec.container_env`).

        Raises:
            PrepareError: a ConfigMap, Secret or key it names cannot be read.
        """
        spec, pod = container.spec, worker.pod
        inherited: dict[str, str] = dict(self.agent.base_env)
        inherited["HOSTNAME"] = pod_hostname(pod)
        home = worker.folder / "home"
        home.mkdir(parents=True, exist_ok=True)
        inherited.setdefault("HOME", str(home))
        # The `kubernetes` Service's variables, which every Pod gets (enableServiceLinks or
        # not), pointing at the real API server on loopback.
        port = str(urllib.parse.urlsplit(self.agent.control_plane.server).port)
        inherited["KUBERNETES_SERVICE_HOST"] = LOOPBACK
        inherited["KUBERNETES_SERVICE_PORT"] = port
        inherited["KUBERNETES_SERVICE_PORT_HTTPS"] = port
        env_from: dict[str, str] = {}
        for source in spec.get("envFrom") or []:
            prefix = source.get("prefix", "")
            if "configMapRef" in source:
                ref, kind = source["configMapRef"], "configmaps"
            else:
                ref, kind = source["secretRef"], "secrets"
            data = self._data(worker, kind, ref["name"], bool(ref.get("optional", False)))
            for key, raw in (data or {}).items():
                if ENV_NAME.fullmatch(prefix + key):  # invalid names are skipped, as upstream
                    env_from[prefix + key] = raw.decode(errors="replace")
        return container_env(
            inherited,
            env_from,
            spec.get("env") or [],
            lambda source: self._value_from(worker, container, source),
            rewriter,
        )

    def _data(
        self, worker: PodWorker, kind: str, name: str, optional: bool
    ) -> dict[str, bytes] | None:
        try:
            return self.volumes.object_data(kind, worker.namespace, name, optional)
        except ApiError as exc:
            raise PrepareError(f"{kind[:-1]} {worker.namespace}/{name}: {exc.message}") from exc
        except OSError as exc:
            raise PrepareError(f"{kind[:-1]} {worker.namespace}/{name}: {exc}") from exc

    def _value_from(
        self, worker: PodWorker, container: Container, source: Mapping[str, Any]
    ) -> str | None:
        for key, kind in (("configMapKeyRef", "configmaps"), ("secretKeyRef", "secrets")):
            if key in source:
                ref = source[key]
                optional = bool(ref.get("optional", False))
                data = self._data(worker, kind, ref["name"], optional)
                if data is None or ref["key"] not in data:
                    if optional:
                        return None
                    raise PrepareError(f"{kind[:-1]} {ref['name']}: no key {ref['key']!r}")
                return data[ref["key"]].decode(errors="replace")
        if "fieldRef" in source:
            return field_value(worker.pod, source["fieldRef"]["fieldPath"])
        if "resourceFieldRef" in source:
            ref = source["resourceFieldRef"]
            kind, resource = ref["resource"].split(".", 1)
            resources = (container.spec.get("resources") or {}).get(kind) or {}
            divisor = parse_quantity(ref.get("divisor", "1"))
            raw = resources.get(resource)
            if raw is None:  # no limit: the node's allocatable, as upstream
                raw = {"cpu": self.agent.cpu, "memory": self.agent.memory}.get(resource, "0")
            # Rounded up, as the kubelet does (cpu 500m with divisor 1 gives 1).
            return str(int(-(-parse_quantity(raw) // divisor)))
        raise PrepareError(f"env valueFrom {sorted(source)} is not supported")
