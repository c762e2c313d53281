"""Where the server is and how to reach it: UNIX or INET stream sockets, with retries.

The server creates the socket and may take seconds to start, so :func:`connect` retries
until a deadline, then fails with one line naming the socket path or host:port.
"""

from __future__ import annotations

import logging
import socket
import time
from dataclasses import dataclass

from ..errors import ConfigError, ConnectError

log = logging.getLogger(__name__)

#: sun_path holds 108 bytes on Linux, including the terminating NUL.
MAX_UNIX_PATH_BYTES = 107


@dataclass(frozen=True)
class UnixAddress:
    path: str

    def describe(self) -> str:
        return f"UNIX socket {self.path}"


@dataclass(frozen=True)
class InetAddress:
    host: str
    port: int

    def describe(self) -> str:
        return f"INET socket {self.host}:{self.port}"


Address = UnixAddress | InetAddress


def make_address(unix: bool, address: str, port: int | None, sockets_prefix: str) -> Address:
    """Build and check the server address from the command-line options.

    UNIX: the socket file is ``sockets_prefix + address`` (i-PI's and ASE's convention,
    prefix ``/tmp/ipi_`` by default). INET: ``address`` is the host name.
    """
    if not address:
        raise ConfigError("--address must not be empty")
    if unix:
        path = sockets_prefix + address
        nbytes = len(path.encode())
        if nbytes > MAX_UNIX_PATH_BYTES:
            raise ConfigError(
                f"UNIX socket path {path!r} is {nbytes} bytes long; the operating system "
                f"allows at most {MAX_UNIX_PATH_BYTES}: use a shorter --address or --sockets-prefix"
            )
        return UnixAddress(path)
    if port is None:
        raise ConfigError(
            "--port is required for an INET socket (defaults differ between servers: "
            "i-PI's XML 65535, ASE 31415); or use --unix"
        )
    if not 0 < port < 65536:
        raise ConfigError(f"--port {port} is not a TCP port (1-65535)")
    if ":" in address:  # an IPv6 literal: i-PI 3.3 binds AF_INET only (interfaces/sockets.py)
        raise ConfigError(
            f"--address {address}: IPv6 is not supported (i-PI listens on IPv4 only); give an IPv4 address "
            "or a host name that resolves to one, e.g. 127.0.0.1 for this machine"
        )
    return InetAddress(address, port)


def _open(address: Address) -> socket.socket:
    if isinstance(address, UnixAddress):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        target: object = address.path
    else:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        target = (address.host, address.port)
    try:
        sock.connect(target)
    except BaseException:
        sock.close()
        raise
    return sock


def bound_silence(sock: socket.socket, server_timeout: float | None) -> None:
    """Bound how long a read may wait for the server (``--server-timeout``; None or 0:
    forever). On INET also TCP keepalive, so that a peer whose host or link is gone is
    noticed while the connection is idle, and TCP_USER_TIMEOUT, so that data sent to it
    and never acknowledged fails the connection after the same time (Linux, tcp(7))."""
    if not server_timeout:
        sock.settimeout(None)
        return
    sock.settimeout(server_timeout)
    if sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    # probes after a third of the timeout, then every tenth, 3 unanswered: dead
    options = (
        ("TCP_KEEPIDLE", max(1, int(server_timeout / 3))),
        ("TCP_KEEPINTVL", max(1, int(server_timeout / 10))),
        ("TCP_KEEPCNT", 3),
        ("TCP_USER_TIMEOUT", int(server_timeout * 1000)),
    )
    for name, value in options:
        if hasattr(socket, name):  # Linux has all four; others some
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, name), value)


def connect(
    address: Address, timeout: float, retry_interval: float = 0.2, server_timeout: float | None = None
) -> socket.socket:
    """Connect to the server, retrying until ``timeout`` seconds have passed.

    Returns a socket whose reads wait at most ``server_timeout`` (see bound_silence).
    Raises ConnectError with the last reason on failure.
    """
    deadline = time.monotonic() + max(timeout, 0.0)
    attempts = 0
    while True:
        attempts += 1
        try:
            sock = _open(address)
        except socket.gaierror as exc:
            raise ConnectError(f"cannot resolve host {address.host!r}: {exc}") from None  # type: ignore[union-attr]
        except OSError as exc:
            reason = exc.strerror or str(exc)
            if time.monotonic() >= deadline:
                hint = ""
                if isinstance(address, UnixAddress) and isinstance(exc, ConnectionRefusedError):
                    hint = (
                        f" ({address.path} exists but no process listens on it: a stale socket file of a server "
                        "that was killed; remove it before starting the server again)"
                    )
                elif isinstance(address, UnixAddress):
                    hint = " (is the server running with mode='unix' and this address and prefix?)"
                raise ConnectError(
                    f"could not connect to {address.describe()} within {timeout:g} s "
                    f"({attempts} attempts; last error: {reason}){hint}"
                ) from None
            log.debug("connect to %s failed (%s); retrying", address.describe(), reason)
            time.sleep(min(retry_interval, max(deadline - time.monotonic(), 0.0)))
            continue
        log.info("connected to %s", address.describe())
        bound_silence(sock, server_timeout)
        return sock
