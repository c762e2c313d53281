"""Which process listens on the server's socket, read from Linux's /proc.

A driver that replaces one that stopped must be sure it serves the very i-PI process its
predecessor served: i-PI's step travels nowhere on the wire, and a restarted i-PI numbers
its requests from the same ids again. A process is named by its pid and its start time
(field 22 of ``/proc/<pid>/stat``, clock ticks since boot), which together are never
reused. The listener is found without connecting: the socket's inode in
``/proc/net/unix`` (a UNIX socket with the ``__SO_ACCEPTCON`` flag, 0x10000) or
``/proc/net/tcp``/``tcp6`` (state 0A, LISTEN, on the port), then the process holding that
inode among ``/proc/<pid>/fd``. A server on another host cannot be named from here.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path

from .transport import Address, InetAddress, UnixAddress

PROC = Path("/proc")
_ACCEPTCON = 0x10000  # include/linux/net.h: __SO_ACCEPTCON, a listening UNIX socket
_TCP_LISTEN = "0A"  # include/net/tcp_states.h: TCP_LISTEN = 10


@dataclass(frozen=True)
class Process:
    """A process on this host, as nothing else can be: its pid and its start time."""

    pid: int
    start: int  # clock ticks after boot (/proc/<pid>/stat, field 22)

    def describe(self) -> str:
        return f"pid {self.pid}"


def process(pid: int) -> Process | None:
    """The process ``pid`` if it runs (a zombie does not count), else None."""
    try:
        stat = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "
    if fields[0] == "Z":
        return None
    return Process(pid, int(fields[19]))  # field 22 overall: 3 before the state


def _unix_inodes(path: str) -> set[str]:
    found = set()
    try:
        lines = (PROC / "net" / "unix").read_text().splitlines()[1:]
    except OSError:
        return found
    for line in lines:
        parts = line.split()
        if len(parts) >= 8 and parts[7] == path and int(parts[3], 16) & _ACCEPTCON:
            found.add(parts[6])
    return found


def _inet_inodes(port: int) -> set[str]:
    found = set()
    for table in ("tcp", "tcp6"):
        try:
            lines = (PROC / "net" / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            if len(parts) >= 10 and parts[3] == _TCP_LISTEN and int(parts[1].rsplit(":", 1)[1], 16) == port:
                found.add(parts[9])
    return found


def _holder(inodes: set[str]) -> Process | None:
    if not inodes:
        return None
    wanted = {f"socket:[{inode}]" for inode in inodes}
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            for fd in os.scandir(entry / "fd"):
                if os.readlink(fd.path) in wanted:
                    return process(int(entry.name))
        except OSError:  # gone, or not ours to read
            continue
    return None


def is_local(host: str) -> bool:
    """Whether ``host`` names this host: a socket can be bound to its address only here."""
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError:
        return False
    for family, kind, proto, _, address in infos:
        try:
            with socket.socket(family, kind, proto) as probe:
                probe.bind((address[0], 0))
            return True
        except OSError:
            continue
    return False


def listener(address: Address) -> Process | None:
    """The process listening on ``address`` on this host; None when none listens here, or
    when the address is on another host (see :func:`is_local`)."""
    if isinstance(address, UnixAddress):
        return _holder(_unix_inodes(address.path))
    assert isinstance(address, InetAddress)
    if not is_local(address.host):
        return None
    return _holder(_inet_inodes(address.port))
