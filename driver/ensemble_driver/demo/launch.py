"""Run a server and its clients as child processes, and watch all of them.

A client that dies before it connects leaves i-PI waiting forever, and a server that
dies can leave clients blocked: so the group is watched as a whole. When any process
fails, the others are stopped; when the deadline passes, all are killed. Used by
``ensemble-driver demo`` and by the tests.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path


class GroupFailed(RuntimeError):
    """A process of the group exited with an error, or the deadline passed."""

    def __init__(self, message: str, returncodes: Mapping[str, int | None]):
        super().__init__(message)
        self.returncodes = dict(returncodes)


@dataclass
class Managed:
    name: str
    argv: Sequence[str]
    log_path: Path
    popen: subprocess.Popen = field(repr=False)
    ok_status: frozenset[int] = frozenset({0})

    def tail(self, nlines: int = 15) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(f"  {self.name}| {line}" for line in lines[-nlines:])


class ProcessGroup:
    """Start processes with their output in log files; wait for all with a deadline."""

    def __init__(self, logdir: str | Path):
        self.logdir = Path(logdir)
        self.logdir.mkdir(parents=True, exist_ok=True)
        self.members: list[Managed] = []

    def start(
        self,
        name: str,
        argv: Sequence[str],
        *,
        cwd: str | Path | None = None,
        env: Mapping[str, str] | None = None,
        ok_status: frozenset[int] = frozenset({0}),
    ) -> Managed:
        """Start ``argv``; an exit status outside ``ok_status`` counts as a failure
        (deepmd-kit's dp_ipi, for one, exits 1 when i-PI ends the run)."""
        log_path = self.logdir / f"{name}.log"
        with open(log_path, "wb") as log:
            popen = subprocess.Popen(
                list(argv),
                cwd=cwd,
                env=None if env is None else dict(env),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # its own process group: stop() reaches its children
            )
        member = Managed(name, list(argv), log_path, popen, frozenset(ok_status))
        self.members.append(member)
        return member

    def poll(self) -> dict[str, int | None]:
        return {m.name: m.popen.poll() for m in self.members}

    def wait(self, timeout: float, *, interval: float = 0.05) -> dict[str, int]:
        """Wait until every process has exited with an accepted status; return them.

        Raises GroupFailed (after stopping the others) as soon as one exits with another
        status, or when ``timeout`` seconds pass (after killing all).
        """
        deadline = time.monotonic() + timeout
        while True:
            codes = self.poll()
            failed = [m for m in self.members if codes[m.name] is not None and codes[m.name] not in m.ok_status]
            if failed:
                self.stop()
                raise GroupFailed(
                    self._report(f"{failed[0].name} exited with status {codes[failed[0].name]}"), self.poll()
                )
            if all(code is not None for code in codes.values()):
                return {k: int(v) for k, v in codes.items()}
            if time.monotonic() > deadline:
                running = [name for name, code in codes.items() if code is None]
                self.stop()
                raise GroupFailed(self._report(f"still running after {timeout:g} s: {', '.join(running)}"), self.poll())
            time.sleep(interval)

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM every running process group, then SIGKILL what is left after ``grace`` s."""
        for m in self.members:
            if m.popen.poll() is None:
                _signal_group(m.popen, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for m in self.members:
            try:
                m.popen.wait(timeout=max(deadline - time.monotonic(), 0.01))
            except subprocess.TimeoutExpired:
                _signal_group(m.popen, signal.SIGKILL)
                m.popen.wait()

    def _report(self, headline: str) -> str:
        parts = [headline]
        for m in self.members:
            parts.append(f"--- {m.name} (status {m.popen.poll()}), last lines of {m.log_path}:")
            parts.append(m.tail())
        return "\n".join(parts)

    def __enter__(self) -> ProcessGroup:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _signal_group(popen: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(popen.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
