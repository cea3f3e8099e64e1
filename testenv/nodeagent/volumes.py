"""A Pod's volumes as folders under its own: emptyDir (``medium: Memory`` on ``/dev/shm``),
hostPath, ConfigMap and Secret keys as files, downward API, and projected sources with
ServiceAccount tokens that the worker rotates."""

from __future__ import annotations

import base64
import os
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from testenv.nodeagent.api import ApiError
from testenv.nodeagent.containers import TokenFile
from testenv.nodeagent.podspec import PrepareError, field_value

if TYPE_CHECKING:
    from testenv.nodeagent.agent import NodeAgent
    from testenv.nodeagent.worker import PodWorker


def write_keys(
    folder: Path,
    data: Mapping[str, bytes],
    items: Sequence[Mapping[str, Any]] | None,
    mode: int,
    what: str,
    optional: bool,
) -> None:
    """Write ConfigMap/Secret keys as files (all keys, or the listed ``items``)."""
    folder.mkdir(parents=True, exist_ok=True)
    selected = [(item["key"], item["path"], item.get("mode", mode)) for item in items or []]
    if not items:
        selected = [(key, key, mode) for key in data]
    for key, rel, file_mode in selected:
        if key not in data:
            if optional:
                continue
            raise PrepareError(f"{what}: key {key!r} not found")
        target = folder / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data[key])
        target.chmod(file_mode)


class Volumes:
    """Materialises a Pod's volumes under its folder; returns {volume name: host path}."""

    def __init__(self, agent: NodeAgent) -> None:
        self.agent = agent

    def object_data(
        self, kind: str, namespace: str, name: str, optional: bool
    ) -> dict[str, bytes] | None:
        """A ConfigMap's or Secret's keys as bytes; None if optional and absent."""
        try:
            obj = self.agent._api.call("GET", f"/api/v1/namespaces/{namespace}/{kind}/{name}")
        except ApiError as exc:
            if exc.status == 404 and optional:
                return None
            raise
        data: dict[str, bytes] = {}
        if kind == "secrets":
            for key, value in (obj.get("data") or {}).items():
                data[key] = base64.b64decode(value)
        else:
            for key, value in (obj.get("data") or {}).items():
                data[key] = str(value).encode()
            for key, value in (obj.get("binaryData") or {}).items():
                data[key] = base64.b64decode(value)
        return data

    def prepare(self, worker: PodWorker) -> dict[str, Path]:
        pod = worker.pod
        volumes: dict[str, Path] = {}
        worker.tokens = []
        for volume in pod["spec"].get("volumes") or []:
            name = volume["name"]
            folder = worker.folder / "volumes" / name
            if "emptyDir" in volume:
                if (volume["emptyDir"] or {}).get("medium") == "Memory" and os.access(
                    "/dev/shm", os.W_OK
                ):
                    # A real tmpfs, as the kubelet mounts for medium: Memory.
                    if name not in worker.volumes:
                        memory = Path(tempfile.mkdtemp(prefix="node-agent-", dir="/dev/shm"))
                        worker.memory_dirs.append(memory)
                        folder = memory
                    else:
                        folder = worker.volumes[name]
                folder.mkdir(parents=True, exist_ok=True)
            elif "hostPath" in volume:
                folder = Path(volume["hostPath"]["path"])
            elif "configMap" in volume or "secret" in volume:
                self._key_volume(worker, volume, folder)
            elif "downwardAPI" in volume:
                source = volume["downwardAPI"]
                self._downward(pod, source.get("items") or [], folder, source.get("defaultMode"))
            elif "projected" in volume:
                projected = volume["projected"]
                mode = projected.get("defaultMode", 0o644)
                for source in projected.get("sources") or []:
                    self._projected_source(worker, source, folder, mode)
                folder.mkdir(parents=True, exist_ok=True)
            else:
                kinds = sorted(k for k in volume if k != "name")
                raise PrepareError(f"volume {name!r}: type {kinds} is not supported")
            volumes[name] = folder
        return volumes

    def _key_volume(self, worker: PodWorker, volume: Mapping[str, Any], folder: Path) -> None:
        if "configMap" in volume:
            source, kind, ref = volume["configMap"], "configmaps", volume["configMap"]["name"]
        else:
            source, kind, ref = volume["secret"], "secrets", volume["secret"]["secretName"]
        optional = bool(source.get("optional", False))
        data = self.object_data(kind, worker.namespace, ref, optional)
        what = f"{kind[:-1]} {worker.namespace}/{ref}"
        write_keys(
            folder,
            data or {},
            source.get("items"),
            source.get("defaultMode", 0o644),
            what,
            optional,
        )

    def _projected_source(
        self, worker: PodWorker, source: Mapping[str, Any], folder: Path, mode: int
    ) -> None:
        if "serviceAccountToken" in source:
            token = source["serviceAccountToken"]
            target = folder / token["path"]
            target.parent.mkdir(parents=True, exist_ok=True)
            audience, expiration_s = (
                token.get("audience"),
                int(token.get("expirationSeconds", 3600)),
            )
            target.write_text(self.agent._token(worker.pod, audience, expiration_s))
            target.chmod(0o600)
            worker.tokens.append(
                TokenFile(target, audience, expiration_s, time.monotonic() + 0.8 * expiration_s)
            )
        elif "configMap" in source or "secret" in source:
            kind = "configmaps" if "configMap" in source else "secrets"
            ref = source["configMap" if kind == "configmaps" else "secret"]
            optional = bool(ref.get("optional", False))
            data = self.object_data(kind, worker.namespace, ref["name"], optional)
            what = f"{kind[:-1]} {worker.namespace}/{ref['name']}"
            write_keys(folder, data or {}, ref.get("items"), mode, what, optional)
        elif "downwardAPI" in source:
            self._downward(worker.pod, source["downwardAPI"].get("items") or [], folder, mode)
        else:
            raise PrepareError(f"projected source {sorted(source)} is not supported")

    def _downward(
        self,
        pod: Mapping[str, Any],
        items: Sequence[Mapping[str, Any]],
        folder: Path,
        mode: int | None,
    ) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        for item in items:
            if "fieldRef" not in item:
                raise PrepareError("downwardAPI: only fieldRef items are supported")
            target = folder / item["path"]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(field_value(pod, item["fieldRef"]["fieldPath"]))
            target.chmod(item.get("mode", mode if mode is not None else 0o644))
