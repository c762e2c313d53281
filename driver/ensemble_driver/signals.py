"""SIGTERM and SIGINT: stop at a safe point, never in the middle of a reply.

A batch system's time limit (SIGTERM, SIGKILL a little later) or a Ctrl-C must not leave
half a FORCEREADY on the wire nor half a row in a file. The handler therefore raises
only where nothing is half done: while the driver is blocked waiting for the server (or
for a connection, or loading models). Anywhere else it only records the signal; the
session then finishes the request in hand, sends the whole reply, and stops at the next
safe point. Rows are always whole: each is one ``write`` (see :mod:`outputs.model_devi`).

Under ``mpiexec`` every rank receives the signal. Followers keep serving the leader until
it stops them (see :func:`ensemble.workers.follower_loop`), so the leader writes what it can and
prints the one line that says why.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from .errors import DriverError

HANDLED = (signal.SIGTERM, signal.SIGINT)

#: How long a rank other than 0 that received SIGTERM/SIGINT keeps serving rank 0, waiting
#: for its STOP, before it stops on its own.
FOLLOWER_SIGNAL_GRACE_S = 30.0


class Stopped(DriverError):
    """Raised when the driver was asked to stop by SIGTERM or SIGINT."""

    def __init__(self, signum: int):
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum
        self.exit_status = 128 + signum


class StopSignals:
    """Installs handlers for SIGTERM and SIGINT; use :meth:`interruptible` around waits."""

    def __init__(self) -> None:
        self.received: int | None = None
        self.received_at: float | None = None  # time.monotonic() of the first signal
        self._raise_now = False
        self._previous: dict[int, object] = {}
        self._installed = False
        #: called with the signal's number as it arrives (rank 0 with --start-ipi: i-PI's soft exit)
        self.on_signal: Callable[[int], None] | None = None

    def install(self) -> StopSignals:
        for sig in HANDLED:
            self._previous[sig] = signal.signal(sig, self._handler)
        self._installed = True
        return self

    def handle(self, sig: int) -> None:
        """Stop on ``sig`` too (SIGUSR1, a batch system's warning, with --start-ipi)."""
        if self._installed and sig not in self._previous:
            self._previous[sig] = signal.signal(sig, self._handler)

    def restore(self) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)  # type: ignore[arg-type]
        self._previous.clear()
        self._installed = False

    def _handler(self, signum: int, frame: object) -> None:
        if self.received is None:
            self.received_at = time.monotonic()
        self.received = signum
        if self.on_signal is not None:
            self.on_signal(signum)
        if self._raise_now:
            self._raise_now = False
            raise Stopped(signum)

    def grace_over(self) -> bool:
        """A signal came more than FOLLOWER_SIGNAL_GRACE_S ago."""
        return self.received_at is not None and time.monotonic() - self.received_at > FOLLOWER_SIGNAL_GRACE_S

    def check(self) -> None:
        """Raise Stopped if a signal has been received."""
        if self.received is not None:
            raise Stopped(self.received)

    @contextmanager
    def interruptible(self) -> Iterator[None]:
        """Within this block a signal raises Stopped at once (the flag is set before the
        check, so a signal that arrives in between is not lost)."""
        self._raise_now = True
        try:
            self.check()
            yield
        finally:
            self._raise_now = False


class NoSignals(StopSignals):
    """For code run inside another program (tests): no handlers, never stops."""

    def install(self) -> NoSignals:
        return self
