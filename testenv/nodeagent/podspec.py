"""What a Pod spec means to the node agent, as pure functions: ``$(VAR)`` expansion, container
paths mapped to host paths, a container's environment and command line, downward-API field
values and resource quantities.

Nothing here calls the API server or starts a process; ``tests/integration/test_node_agent.py``
checks these rules without a cluster.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

#: Every address of a Pod and of the Node: processes run on this machine's loopback.
LOOPBACK = "127.0.0.1"
GPU_RESOURCE = "nvidia.com/gpu"
#: Environment variable holding the JSON map {container path: host path} of a container.
PATHS_ENV = "KUBEVISION_NODE_AGENT_PATHS"
#: Prefix of the variables naming the host port of each container port (number and name).
PORT_ENV_PREFIX = "KUBEVISION_NODE_AGENT_PORT_"


class PrepareError(Exception):
    """A Pod's containers cannot be started yet (missing object, unsupported volume, ...)."""


def expand(value: str, env: Mapping[str, str]) -> str:
    """Expand ``$(VAR)`` references as Kubernetes does for env values, command and args.

    ``$$`` is an escaped ``$``; a reference to an undefined variable, or an unclosed ``$(``, is
    left as written (k8s.io/kubernetes third_party/forked/golang/expansion).
    """
    out: list[str] = []
    i = 0
    while i < len(value):
        char = value[i]
        if char == "$" and i + 1 < len(value):
            following = value[i + 1]
            if following == "$":
                out.append("$")
                i += 2
                continue
            if following == "(":
                close = value.find(")", i + 2)
                if close == -1:
                    out.append(value[i:])
                    break
                name = value[i + 2 : close]
                out.append(env[name] if name and name in env else value[i : close + 1])
                i = close + 1
                continue
        out.append(char)
        i += 1
    return "".join(out)


class PathRewriter:
    """Replaces container paths by host paths inside strings (command, args, env values).

    A path is replaced only where it stands as a whole path: not preceded by a word character,
    ``.`` or ``-`` and not followed by one, so ``/data`` does not touch ``/mnt/data`` or
    ``/data2`` but does rewrite ``/data/x``, ``--out=/data`` and ``file:///data``. The longest
    container path wins where mounts nest.
    """

    def __init__(self, mapping: Mapping[str, str | Path]) -> None:
        self.mapping: dict[str, str] = {
            k.rstrip("/") or "/": str(v) for k, v in mapping.items() if k.startswith("/")
        }
        keys = sorted(self.mapping, key=len, reverse=True)
        self._pattern = (
            re.compile(r"(?<![\w.-])(" + "|".join(re.escape(k) for k in keys) + r")(?![\w.-])")
            if keys
            else None
        )

    def rewrite(self, text: str) -> str:
        """``text`` with every whole occurrence of a container path replaced."""
        if self._pattern is None:
            return text
        return self._pattern.sub(lambda m: self.mapping[m.group(1)], text)

    def host_path(self, container_path: str) -> Path:
        """The host path of ``container_path`` (itself if no mapping covers it)."""
        return Path(self.rewrite(container_path))


def mount_paths(
    container: Mapping[str, Any],
    volumes: Mapping[str, Path],
    termination_file: Path,
    extra: Mapping[str, str | Path] | None = None,
) -> dict[str, str | Path]:
    """{container path: host path} of what ``container`` mounts: each ``volumeMount`` (the
    volume's host folder, or ``subPath`` in it) and ``terminationMessagePath``; ``extra`` (the
    agent's ``path_map``) comes first, so the Pod spec wins where both name a path.

    Raises:
        PrepareError: a ``volumeMount`` names no volume of ``volumes``.
    """
    mapping: dict[str, str | Path] = dict(extra or {})
    for mount in container.get("volumeMounts") or []:
        host = volumes.get(mount["name"])
        if host is None:
            raise PrepareError(f"volumeMount {mount['name']!r}: no such volume")
        sub = mount.get("subPath") or ""
        mapping[mount["mountPath"]] = host / sub if sub else host
    path = container.get("terminationMessagePath") or "/dev/termination-log"
    mapping[path] = termination_file
    return mapping


def container_env(
    inherited: Mapping[str, str],
    env_from: Mapping[str, str],
    env: Sequence[Mapping[str, Any]],
    value_from: Callable[[Mapping[str, Any]], str | None],
    rewriter: PathRewriter,
) -> dict[str, str]:
    """A container's environment, in Kubernetes' order: ``inherited`` (the node's base and the
    variables the kubelet adds), ``env_from`` (``envFrom``, resolved), then ``env`` in order,
    each entry a literal ``value`` (``$(VAR)`` expanded from what precedes it) or a
    ``valueFrom`` source that ``value_from`` resolves (None: optional and absent, left out).

    Only what the Pod spec says is mapped by ``rewriter``: ``envFrom`` and ``env`` values, a
    literal before its expansion. The inherited environment is the host's own and is never
    mapped: a ``PATH``, ``VIRTUAL_ENV`` or ``HOME`` that lies under a mounted path (a virtual
    environment in ``/tmp``, where Pods mount an emptyDir) must keep pointing at the host.
    """
    result = dict(inherited)
    result.update({name: rewriter.rewrite(value) for name, value in env_from.items()})
    for var in env:
        if "valueFrom" in var:
            value = value_from(var["valueFrom"])
            if value is not None:
                result[var["name"]] = rewriter.rewrite(value)
        else:
            result[var["name"]] = expand(rewriter.rewrite(var.get("value", "")), result)
    return result


def command_line(
    container: Mapping[str, Any], env: Mapping[str, str], rewriter: PathRewriter
) -> list[str]:
    """``command`` + ``args`` with the container's paths mapped, then ``$(VAR)`` expanded from
    ``env`` (so a reference to an inherited variable is not mapped either).

    There is no image, so no ENTRYPOINT/CMD to fall back on: ``command`` replaces the
    entrypoint as in Kubernetes, and ``args`` alone are taken as the whole command line.

    Raises:
        PrepareError: the container has neither ``command`` nor ``args``.
    """
    words = [*(container.get("command") or []), *(container.get("args") or [])]
    if not words:
        raise PrepareError(f"container {container['name']!r} has neither command nor args")
    return [expand(rewriter.rewrite(word), env) for word in words]


def field_value(pod: Mapping[str, Any], field_path: str) -> str:
    """A downward-API ``fieldRef`` value; labels/annotations as ``k="v"`` lines when whole."""
    meta, spec = pod["metadata"], pod["spec"]
    simple = {
        "metadata.name": meta["name"],
        "metadata.namespace": meta["namespace"],
        "metadata.uid": meta["uid"],
        "spec.nodeName": spec.get("nodeName", ""),
        "spec.serviceAccountName": spec.get("serviceAccountName", ""),
        "status.podIP": LOOPBACK,
        "status.podIPs": LOOPBACK,
        "status.hostIP": LOOPBACK,
        "status.hostIPs": LOOPBACK,
    }
    if field_path in simple:
        return str(simple[field_path])
    match = re.fullmatch(r"metadata\.(labels|annotations)(?:\['(.+)'\])?", field_path)
    if match:
        values: dict[str, str] = meta.get(match.group(1)) or {}
        if match.group(2) is not None:
            return values.get(match.group(2), "")
        return "\n".join(f"{k}={json.dumps(v)}" for k, v in sorted(values.items()))
    raise PrepareError(f"fieldRef {field_path!r} is not supported")


ENV_NAME = re.compile(r"[-._a-zA-Z][-._a-zA-Z0-9]*")


_BINARY_SUFFIXES = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}


_DECIMAL_SUFFIXES = {
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "": Decimal(1),
    "k": Decimal(10**3),
    "M": Decimal(10**6),
    "G": Decimal(10**9),
    "T": Decimal(10**12),
    "P": Decimal(10**15),
    "E": Decimal(10**18),
}


def parse_quantity(text: str | int | float) -> Decimal:
    """A Kubernetes resource quantity (``64Mi``, ``1.5G``, ``500m``, ``1e3``) as a number."""
    raw = str(text).strip()
    match = re.fullmatch(r"([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)([a-zA-Z]*)", raw)
    if match is None:
        raise ValueError(f"not a quantity: {text!r}")
    number, suffix = Decimal(match.group(1)), match.group(2)
    if suffix in _BINARY_SUFFIXES:
        return number * _BINARY_SUFFIXES[suffix]
    if suffix in _DECIMAL_SUFFIXES:
        return number * _DECIMAL_SUFFIXES[suffix]
    raise ValueError(f"unknown quantity suffix in {text!r}")
