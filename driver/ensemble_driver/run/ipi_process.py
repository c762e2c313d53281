"""``--start-ipi``: rank 0 runs i-PI as its child, and i-PI never outlives the job.

i-PI runs on its input (or the checkpoint :mod:`checkpoint` chose) in the input's
directory, its output appended to ``ipi.log`` there. It lives in a session of its own (a
launcher's kill of rank 0's process group does not reach it) and is asked, by
``prctl(PR_SET_PDEATHSIG, SIGTERM)``, to be sent SIGTERM when rank 0 dies, however it
dies: i-PI's soft exit then writes its RESTART. It ignores SIGUSR1 (a batch system's
early warning, sent to every process of a job step): rank 0 turns that into one SIGTERM.

Every stop of i-PI is its soft exit (SIGTERM, once: a second one ends i-PI at once);
only when it has not ended ``STOP_WAIT_S`` seconds later is it killed.

Before i-PI starts, a UNIX socket file that no one listens on (left by a killed i-PI,
which would make the new one fail to bind) is removed; one with a listener is another
run's, and refused.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

from ..errors import ConfigError, DriverError
from ..wire.ipi_input import Socket

log = logging.getLogger(__name__)

#: i-PI's log file, in the input's directory (appended to by every start)
LOG_NAME = "ipi.log"
#: how long i-PI may take to end after its soft exit was asked for (RESTART, outputs)
STOP_WAIT_S = 60.0
#: how long i-PI may take to end by itself after it sent EXIT (final outputs, RESTART)
END_WAIT_S = 120.0
#: Linux's prctl option: a signal to this process when its parent dies
PR_SET_PDEATHSIG = 1
#: the exit status of a run stopped restartably: run the same command again to continue
#: (sysexits.h's EX_TEMPFAIL, "try again later")
EXIT_RESTARTABLE = 75
#: the exit status when i-PI itself failed (it could not start, or ended with an error)
EXIT_IPI_FAILED = 6


class IpiFailed(DriverError):
    """i-PI could not start, or ended with an error: its own message, quoted."""

    exit_status = EXIT_IPI_FAILED


class StoppedRestartable(DriverError):
    """The run was stopped (a signal, i-PI's own soft exit) and i-PI wrote its RESTART:
    the same command continues it."""

    exit_status = EXIT_RESTARTABLE


def unix_socket_path(sock: Socket) -> str | None:
    """The file of a UNIX socket forcefield (i-PI: sockets_prefix + address); None for INET."""
    return sock.sockets_prefix + sock.address if sock.mode == "unix" else None


def probe_unix_socket(path: str) -> str:
    """'absent', 'stale' (a socket file no one listens on), 'live', or why neither."""
    if not os.path.lexists(path):
        return "absent"
    if not stat.S_ISSOCK(os.lstat(path).st_mode):
        return "not a socket"
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(2.0)
    try:
        probe.connect(path)
    except ConnectionRefusedError:
        return "stale"
    except OSError as exc:
        return exc.strerror or str(exc)
    finally:
        probe.close()
    return "live"


def clear_socket(sock: Socket) -> None:
    """Before i-PI starts: remove its UNIX socket file when stale; refuse when another
    server listens there (UNIX) or on the port (INET)."""
    path = unix_socket_path(sock)
    if path is not None:
        state = probe_unix_socket(path)
        if state == "stale":
            os.unlink(path)
            log.info("removed the stale socket file %s (no server listens on it: a killed i-PI's)", path)
        elif state == "live":
            raise ConfigError(
                f"--start-ipi: a server already listens on {path} (another i-PI?): stop it, or give this run "
                "another <address>"
            )
        elif state != "absent":
            raise ConfigError(f"--start-ipi: socket file {path} is in the way ({state}): remove it")
        return
    try:
        with socket.create_connection((sock.address, sock.port), timeout=2.0):
            pass
    except OSError:
        return  # nothing listens: i-PI can bind
    raise ConfigError(
        f"--start-ipi: a server already listens on {sock.address}:{sock.port} (another i-PI?): stop it, or give "
        "this run another <port>"
    )


def ipi_error_line(text: str) -> str:
    """i-PI's own account of its failure in its log: the last line of its last
    traceback (the exception and its message), else its last ERROR or non-empty line."""
    lines = [line.rstrip() for line in text.splitlines() if line.strip()]
    last_traceback = max((k for k, line in enumerate(lines) if line.startswith("Traceback (most recent")), default=-1)
    if last_traceback >= 0:
        for line in reversed(lines[last_traceback + 1 :]):
            if not line.startswith((" ", "\t")):
                return line.strip()
    for line in reversed(lines):
        if "error" in line.lower():
            return line.strip()
    return lines[-1].strip() if lines else "(nothing in its log)"


def find_ipi() -> str:
    """The ``i-pi`` command beside this interpreter, else on PATH."""
    candidate = Path(sys.executable).parent / "i-pi"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("i-pi")
    if found is None:
        raise ConfigError("--start-ipi: the command 'i-pi' is not installed here (pip install ipi)")
    return found


#: run in i-PI's process before i-PI (the argv: rank 0's pid, then i-PI's command): asks
#: for SIGTERM when rank 0 dies, ignores SIGUSR1, then becomes i-PI (both survive exec).
#: A wrapper rather than ``preexec_fn``, which is unsafe in rank 0's threaded process.
CHILD_SETUP = """
import ctypes, os, signal, sys
signal.signal(signal.SIGUSR1, signal.SIG_IGN)
try:
    ctypes.CDLL(None).prctl(1, int(signal.SIGTERM), 0, 0, 0)
except (OSError, AttributeError):
    pass
if os.getppid() != int(sys.argv[1]):
    sys.exit(1)
os.execv(sys.argv[2], sys.argv[2:])
"""


class IpiProcess:
    """i-PI started by rank 0, on ``input`` in ``directory``."""

    def __init__(self, input: Path, directory: Path, popen: subprocess.Popen, log_path: Path, log_offset: int):
        self.input = input
        self.directory = directory
        self.popen = popen
        self.log_path = log_path
        self.log_offset = log_offset
        self.stop_sent = False

    @classmethod
    def start(cls, input: Path, directory: Path) -> IpiProcess:
        directory = Path(directory).resolve()
        log_path = directory / LOG_NAME
        command = [find_ipi(), os.path.relpath(Path(input).resolve(), directory)]
        try:
            log_file = open(log_path, "ab")
        except OSError as exc:
            raise ConfigError(f"--start-ipi: cannot open i-PI's log {log_path}: {exc.strerror}") from None
        with log_file:
            offset = log_file.tell()
            log_file.write(f"--- ensemble-driver: {' '.join(command)} in {directory}\n".encode())
            log_file.flush()
            parent = os.getpid()
            try:
                popen = subprocess.Popen(
                    [sys.executable, "-I", "-S", "-c", CHILD_SETUP, str(parent), *command],
                    cwd=directory,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                )
            except OSError as exc:
                raise IpiFailed(f"i-PI could not be started ({' '.join(command)}): {exc.strerror}") from None
        log.info("started i-PI (pid %d) on %s in %s; its output: %s", popen.pid, command[-1], directory, log_path)
        return cls(Path(input), directory, popen, log_path, offset)

    @property
    def returncode(self) -> int | None:
        return self.popen.poll()

    def log_text(self) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self.log_offset)
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def failure(self) -> IpiFailed | None:
        """The error i-PI ended with, if it ended with one (not a soft exit we asked for)."""
        code = self.popen.poll()
        if code is None or code == 0:
            return None
        if self.stop_sent and code in (-signal.SIGTERM, -signal.SIGINT):
            return None  # ended by the stop asked for, before its handlers were in place
        return IpiFailed(f"i-PI ended with status {code}: {ipi_error_line(self.log_text())} (its log: {self.log_path})")

    def check_alive(self) -> None:
        """Raise IpiFailed if i-PI has ended (while the driver waits to connect)."""
        if self.popen.poll() is not None:
            error = self.failure()
            raise (
                error
                if error is not None
                else IpiFailed(f"i-PI ended before the driver connected (see {self.log_path})")
            )

    def stop_soon(self) -> None:
        """Ask for i-PI's soft exit (SIGTERM, only once: a second one ends i-PI at once)."""
        if self.stop_sent or self.popen.poll() is not None:
            return
        self.stop_sent = True
        try:
            self.popen.send_signal(signal.SIGTERM)
        except ProcessLookupError:
            pass

    def wait(self, timeout: float) -> int | None:
        """Wait up to ``timeout`` s for i-PI to end; its status, None if it has not."""
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout: float = STOP_WAIT_S) -> int:
        """End i-PI restartably: its soft exit, then a kill if it takes longer than
        ``timeout``. Returns its status."""
        self.stop_soon()
        code = self.wait(timeout)
        if code is None:
            log.warning("i-PI has not ended %g s after SIGTERM: killed (no RESTART from this stop)", timeout)
            self.popen.kill()
            code = self.popen.wait()
        return code


def connect_to_started(ipi: IpiProcess, address, timeout: float, server_timeout: float | None):
    """Connect to the i-PI rank 0 started, retrying for ``timeout`` s while it starts;
    IpiFailed at once if it ends meanwhile (an input it cannot run, a socket it cannot bind)."""
    from ..errors import ConnectError
    from ..wire.transport import connect

    deadline = time.monotonic() + timeout
    while True:
        ipi.check_alive()
        try:
            return connect(address, 0.0, server_timeout=server_timeout)
        except ConnectError as exc:
            if time.monotonic() >= deadline:
                raise ConnectError(f"{exc}; i-PI (pid {ipi.popen.pid}) still runs: see {ipi.log_path}") from None
        time.sleep(0.2)


def restart_step(directory: Path) -> str:
    """Where i-PI's RESTART in ``directory`` stands, for a message."""
    from .checkpoint import RESTART, read_checkpoint

    try:
        chk = read_checkpoint(directory / RESTART)
    except ValueError as exc:
        return f"no usable RESTART ({exc})"
    return f"i-PI's RESTART is at step {chk.step} of {chk.total_steps}"


def ipi_outcome(
    ipi: IpiProcess, error: DriverError | None, signal_received: int | None, stop_rule: bool
) -> DriverError | None:
    """The run's end with i-PI: i-PI ended (by itself when the run ended, else by its soft
    exit), and the error the job ends with: i-PI's own failure when i-PI ended by itself
    with one; a restartable stop (status 75) after a signal, or when i-PI stopped before
    its total steps; else the driver's error, or None for a finished run."""
    from ..errors import ProtocolError
    from ..signals import Stopped
    from .checkpoint import RESTART, read_checkpoint

    if signal_received is None and (error is None or isinstance(error, ProtocolError)):
        # the run ended, or i-PI went away: i-PI ends by itself (outputs, RESTART)
        code = ipi.wait(END_WAIT_S if error is None else 10.0)
        if code is not None and code != 0:
            failure = ipi.failure()
            if failure is not None:
                return failure
    ipi.stop()
    where = restart_step(ipi.directory)
    if signal_received is not None and (error is None or isinstance(error, (Stopped, ProtocolError))):
        name = signal.Signals(signal_received).name
        return StoppedRestartable(f"stopped by {name}; {where}: run the same command to continue")
    if error is not None:
        log.info("i-PI ended by its soft exit: %s; the same command continues the run", where)
        return error
    failure = ipi.failure()
    if failure is not None:
        return failure
    try:
        chk = read_checkpoint(ipi.directory / RESTART)
    except ValueError:
        return None
    if chk.complete or stop_rule:
        log.info("i-PI finished the run: %s", where)
        return None
    return StoppedRestartable(f"i-PI stopped before the end (its soft exit); {where}: run the same command to continue")
