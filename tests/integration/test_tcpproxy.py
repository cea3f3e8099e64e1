"""The fault-injection proxy forwards, then blackholes open connections silently while new
ones go through (what the operator's fault tests rely on)."""

from __future__ import annotations

import socket
import threading

import pytest

from testenv.tcpproxy import tcp_proxy


def _echo_server() -> tuple[socket.socket, int]:
    server = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return

            def echo(conn: socket.socket = conn) -> None:
                with conn:
                    while data := conn.recv(1024):
                        conn.sendall(data)

            threading.Thread(target=echo, daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    return server, server.getsockname()[1]


def test_blackhole_silences_open_connections_only() -> None:
    server, port = _echo_server()
    with server, tcp_proxy(("127.0.0.1", port)) as proxy:
        old = socket.create_connection(("127.0.0.1", proxy.port), timeout=2)
        old.sendall(b"ping")
        assert old.recv(16) == b"ping"
        assert proxy.blackhole() == 1
        old.sendall(b"lost")
        with pytest.raises(TimeoutError):
            old.settimeout(0.5)
            old.recv(16)
        new = socket.create_connection(("127.0.0.1", proxy.port), timeout=2)
        new.sendall(b"pong")
        assert new.recv(16) == b"pong"
        old.close()
        new.close()
