"""Sockets of the tests' own."""

from __future__ import annotations


def free_port() -> int:
    """A TCP port no one listens on now, for a test's own INET server."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
