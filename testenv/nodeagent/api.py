"""A small REST client of the API server for the node agent: JSON over HTTPS with a client
certificate, three patch content types, and a watch stream another thread can interrupt."""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import ssl
import threading
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

WATCH_TIMEOUT_S = 10  # server-side watch timeout; bounds how long a dead stream goes unnoticed


class NodeAgentError(RuntimeError):
    """The node agent could not register its Node or lost track of its processes."""


class ApiError(Exception):
    """An API call answered with an HTTP error status."""

    def __init__(self, status: int, method: str, path: str, body: bytes) -> None:
        self.status = status
        try:
            decoded = json.loads(body)
            message = decoded.get("message", "") if isinstance(decoded, dict) else ""
        except ValueError:
            message = body[:200].decode(errors="replace")
        self.message = str(message)
        super().__init__(f"{method} {path}: HTTP {status}: {self.message}")


class ApiClient:
    """JSON over HTTPS to the API server with one identity.

    Plain ``http.client`` rather than the ``kubernetes`` package: the agent needs a handful of
    calls, three patch content types and a watch stream it can interrupt from another thread.
    One connection per call keeps threads independent (loopback TLS costs a millisecond).
    """

    def __init__(self, server: str, ca_cert: Path, cert: Path, key: Path) -> None:
        parts = urllib.parse.urlsplit(server)
        if parts.hostname is None or parts.port is None:
            raise NodeAgentError(f"unexpected API server URL {server!r}")
        self._host, self._port = parts.hostname, parts.port
        self._context = ssl.create_default_context(cafile=str(ca_cert))
        self._context.load_cert_chain(str(cert), str(key))
        self._watch_lock = threading.Lock()
        self._watch_conn: http.client.HTTPSConnection | None = None

    def _connect(self, timeout: float) -> http.client.HTTPSConnection:
        return http.client.HTTPSConnection(
            self._host, self._port, context=self._context, timeout=timeout
        )

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        content_type: str = "application/json",
        timeout: float = 30.0,
    ) -> Any:
        """One request; returns the decoded JSON body, raises :class:`ApiError` on >= 400."""
        conn = self._connect(timeout)
        try:
            data = None if body is None else json.dumps(body).encode()
            headers = {"Accept": "application/json", "User-Agent": "kubevision-node-agent"}
            if data is not None:
                headers["Content-Type"] = content_type
            conn.request(method, path, body=data, headers=headers)
            response = conn.getresponse()
            raw = response.read()
        finally:
            conn.close()
        if response.status >= 400:
            raise ApiError(response.status, method, path, raw)
        return json.loads(raw) if raw else None

    def watch(self, path: str) -> Iterator[dict[str, Any]]:
        """Events of a watch request (``path`` holds ``watch=1`` and ``timeoutSeconds``)."""
        # The read timeout exceeds the server's timeoutSeconds: a silent stream is dead.
        conn = self._connect(WATCH_TIMEOUT_S + 10.0)
        with self._watch_lock:
            self._watch_conn = conn
        try:
            conn.request("GET", path, headers={"Accept": "application/json"})
            response = conn.getresponse()
            if response.status != 200:
                raise ApiError(response.status, "GET", path, response.read())
            while True:
                line = response.readline()
                if not line:
                    return
                event: dict[str, Any] = json.loads(line)
                yield event
        finally:
            with self._watch_lock:
                self._watch_conn = None
            conn.close()

    def interrupt_watch(self) -> None:
        """Unblock a thread reading a watch stream (used by ``stop()``)."""
        with self._watch_lock:
            conn = self._watch_conn
        if conn is not None and conn.sock is not None:
            with contextlib.suppress(OSError):
                conn.sock.shutdown(socket.SHUT_RDWR)
