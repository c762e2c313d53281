"""A tap on one i-PI connection, for killing a real driver at a chosen point of the protocol.

A driver killed at a random time can land in a window where i-PI 3.3 itself loses the
request (docs/failures.md, "i-PI and lost clients"): a test that wants i-PI to survive a
lost driver must kill it at a point of its own choosing. The tap listens on a UNIX socket
of its own, connects to i-PI's, and copies bytes both ways; when the server's ``nth``
POSDATA header comes, it does not pass it on but calls ``kill`` and closes both ends, so
that i-PI sees its client vanish with a request in flight.
"""

from __future__ import annotations

import select
import socket
import threading
from collections.abc import Callable
from pathlib import Path

POSDATA = b"POSDATA     "  # a 12-byte header (PROTOCOL.md)


class KillAtPosdata:
    def __init__(self, ipi_address: str, own_address: str, nth: int, kill: Callable[[], None]):
        self.ipi_path = f"/tmp/ipi_{ipi_address}"
        self.own_path = Path(f"/tmp/ipi_{own_address}")
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(self.own_path))
        self.listener.listen(1)
        self.nth = nth
        self.kill = kill
        self.fired = threading.Event()  # set before the kill
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        driver, _ = self.listener.accept()
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.connect(self.ipi_path)
        seen, tail = 0, b""
        with driver, server:
            while True:
                readable, _, _ = select.select([driver, server], [], [])
                if driver in readable:
                    data = driver.recv(1 << 16)
                    if not data:
                        return
                    server.sendall(data)
                if server in readable:
                    data = server.recv(1 << 16)
                    if not data:
                        return
                    # headers can straddle reads: search the stream with the last 11 bytes kept
                    stream = tail + data
                    start = 0
                    while (found := stream.find(POSDATA, start)) >= 0:
                        seen += 1
                        if seen == self.nth:
                            driver.sendall(stream[len(tail) : found])  # empty if it began in tail
                            self.fired.set()
                            self.kill()
                            return
                        start = found + len(POSDATA)
                    driver.sendall(data)
                    tail = stream[-(len(POSDATA) - 1) :]

    def close(self) -> None:
        self.listener.close()
        self.own_path.unlink(missing_ok=True)
