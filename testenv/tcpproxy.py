"""A TCP proxy on 127.0.0.1 for fault injection between a client and a server: it forwards
bytes both ways until told to :meth:`TcpProxy.blackhole` the open connections, which it then
keeps open but silent (what an idle-timeout load balancer or a NAT that lost its state does:
no RST, no FIN, nothing). Connections made afterwards are forwarded again, as through a
load balancer that accepts new flows, unless :meth:`TcpProxy.partition` silences them too
(a network partition: every request, on an old connection or a new one, hangs)."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

_CHUNK = 65536


@dataclass
class _Flow:
    client: socket.socket
    upstream: socket.socket
    silent: threading.Event = field(default_factory=threading.Event)

    def close(self) -> None:
        for sock in (self.client, self.upstream):
            with contextlib.suppress(OSError):
                sock.close()


class TcpProxy:
    """Forwards ``127.0.0.1:<port>`` to ``target``.

    Args:
        target: (host, port) of the server.
    """

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._flows: list[_Flow] = []
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._partitioned = threading.Event()
        self.accepted = 0
        threading.Thread(target=self._accept, name="tcpproxy-accept", daemon=True).start()

    @property
    def address(self) -> str:
        """``127.0.0.1:<port>``."""
        return f"127.0.0.1:{self.port}"

    def blackhole(self) -> int:
        """Stop forwarding on every open connection, silently; returns how many there were."""
        with self._lock:
            for flow in self._flows:
                flow.silent.set()
            return len(self._flows)

    def partition(self, on: bool = True) -> None:
        """Silence the connections accepted from now on as well (``on``), or forward them
        again (connections silenced meanwhile stay silent)."""
        if on:
            self._partitioned.set()
        else:
            self._partitioned.clear()

    def open_flows(self) -> int:
        """Connections open now (silent ones included)."""
        with self._lock:
            return len(self._flows)

    def stop(self) -> None:
        """Close the listener and every connection."""
        self._stopped.set()
        with contextlib.suppress(OSError):
            self._listener.close()
        with self._lock:
            flows, self._flows = self._flows, []
        for flow in flows:
            flow.close()

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            flow = _Flow(client, upstream)
            if self._partitioned.is_set():
                flow.silent.set()
            with self._lock:
                self._flows.append(flow)
                self.accepted += 1
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(flow, source, sink), daemon=True).start()

    def _pump(self, flow: _Flow, source: socket.socket, sink: socket.socket) -> None:
        try:
            while True:
                data = source.recv(_CHUNK)
                if not data:
                    break
                if flow.silent.is_set():
                    continue  # swallowed: the peer waits for an answer that never comes
                sink.sendall(data)
        except OSError:
            pass
        if flow.silent.is_set():
            return  # a silent flow is never closed by the proxy: no FIN reaches either side
        with self._lock:
            if flow in self._flows:
                self._flows.remove(flow)
        flow.close()


@contextlib.contextmanager
def tcp_proxy(target: tuple[str, int]) -> Iterator[TcpProxy]:
    """A :class:`TcpProxy` for the duration of the block."""
    proxy = TcpProxy(target)
    try:
        yield proxy
    finally:
        proxy.stop()
