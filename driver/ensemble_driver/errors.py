"""The driver's error classes.

Every error a user can cause (a bad option, a bad file, a server that misbehaves, a
model that fails) is a :class:`DriverError`: the command line prints its message as one
line and exits with its ``exit_status``. Anything else is a bug in the driver.
"""

from __future__ import annotations


class DriverError(Exception):
    """Base class: an error whose message is meant for the user, printed as one line."""

    exit_status = 1


class ConfigError(DriverError):
    """Raised for bad options, configuration files, templates or output paths,
    before any connection is made."""

    exit_status = 2


class ConnectError(DriverError):
    """Raised when the server's socket cannot be reached within ``--connect-timeout``."""

    exit_status = 3


class ProtocolError(DriverError):
    """Raised when the server sends bytes the i-PI protocol does not allow, or a
    structure that does not match the template (atom count, non-finite numbers)."""

    exit_status = 4


class ServerLost(ProtocolError):
    """Raised when the server closes the connection while the driver is answering it
    (a killed server): the reply could not be delivered."""


class ServerSilent(ProtocolError):
    """Raised when the server has sent nothing for ``--server-timeout`` seconds while the
    driver waits for it (a stopped server, a lost host or network)."""


class RankLost(ProtocolError):
    """Raised on rank 0 when another rank has not answered for ``--server-timeout``
    seconds (its host or the network is gone)."""


class UnsupportedTransport(ProtocolError):
    """Raised when the server announces a transport this driver does not implement."""


class ModelError(DriverError):
    """Raised when a model cannot be loaded, does not know an element of the template,
    or returns non-finite numbers."""

    exit_status = 5


class ReportedError(DriverError):
    """A failure every rank knows about, reported by rank 0 alone (``print_here`` is true
    on rank 0 only). On the other ranks ``wait_for_leader`` is true: they leave it to
    rank 0 to end the MPI job with the status (see ``cli.exit_now``)."""

    def __init__(self, message: str, exit_status: int, *, print_here: bool):
        super().__init__(message)
        self.exit_status = exit_status
        self.print_here = print_here
        self.wait_for_leader = not print_here


def one_line(exc: BaseException) -> str:
    """An exception as one line: its type and its message with newlines folded."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def failure_text(exc: BaseException) -> str:
    """What a rank reports of a failure to the rank that prints it: a DriverError's own
    message (meant for the user), anything else (a bug) as its type and message."""
    return str(exc) if isinstance(exc, DriverError) else one_line(exc)
