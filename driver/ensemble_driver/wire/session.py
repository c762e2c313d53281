"""The client side of an i-PI connection: a state machine that answers whatever comes next.

Real servers use three message orders, and the session accepts all of them because it
reacts to each header as it arrives and never assumes what comes next:

- i-PI >= 3.2 (``consolidate_messages`` true, the default): ``POSDATA`` and ``GETFORCE``
  back to back; right after ``FORCEREADY`` a ``STATUS`` that i-PI blocks on;
- i-PI 3.1, or ``consolidate_messages=false``: ``POSDATA``, ``STATUS`` (HAVEDATA), ``GETFORCE``;
- ASE's ``SocketIOCalculator``: like 3.1, and it closes the socket instead of sending EXIT.

The structure is evaluated as soon as POSDATA arrives; FORCEREADY goes out in one send.

Beads and steps: no step number travels on the wire. By answering ``NEEDINIT`` after every
evaluation (the default), each POSDATA is preceded by an INIT carrying the request id,
which is the bead index in an i-PI run. The k-th evaluation (from 0) of request id r is
step k of bead r, which is i-PI's own ``Step: k`` label. Without INIT every evaluation is
counted in one series (request id 0).
"""

from __future__ import annotations

import enum
import logging
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ..errors import ProtocolError, ServerLost, ServerSilent, UnsupportedTransport
from ..signals import NoSignals, StopSignals
from . import units
from .protocol import InitParameters, Wire, check_transport, parse_init_text, silence_message

log = logging.getLogger(__name__)

#: How often a session with an ``idle`` hook calls it while the server is silent.
IDLE_POLL_S = 0.02


@dataclass(frozen=True)
class Request:
    """One structure to evaluate, in Angstrom with the lattice vectors as rows."""

    rid: int
    step: int
    cell: np.ndarray  # (3, 3), rows are lattice vectors; all zeros if the server has no cell
    positions: np.ndarray  # (nat, 3)
    init: InitParameters | None = None  # the INIT before it: the force field's <parameters>


@dataclass(frozen=True)
class Reply:
    """What goes back to the server, in eV, eV/Angstrom and eV (DeePMD's virial layout)."""

    energy: float
    forces: np.ndarray  # (nat, 3)
    virial: np.ndarray  # (3, 3)
    extras: bytes = b""


@dataclass(frozen=True)
class BatchRequest:
    """The structures of one batched POSDATA (i-PI's ``<batch_size>``), in Angstrom.

    ``rid`` is the request id of the first structure (the INIT before it); i-PI does not
    say which ids the others carry nor how many of them are padding."""

    rid: int
    cells: np.ndarray  # (batch, 3, 3), rows are lattice vectors
    positions: np.ndarray  # (batch, nat, 3)
    init: InitParameters | None = None


Handler = Callable[[Request], Reply]


class EndReason(enum.Enum):
    EXIT = "the server sent EXIT"
    EOF = "the server closed the connection"


@dataclass
class SessionStats:
    """Counters a caller can read after (or during) a run."""

    evaluations: int = 0
    steps_by_rid: dict[int, int] = field(default_factory=lambda: defaultdict(int))  # single requests
    batches: int = 0
    batch_size: int = 1
    init_text: str | None = None


class Session:
    """Serve one connection until the server ends it.

    ``handler`` is called once per POSDATA with a :class:`Request` and returns a
    :class:`Reply`. With i-PI's batched transport, ``handler.begin_batches(batch_size,
    init_every_step)`` is called at the first INIT that announces it (it may refuse) and
    ``handler.batch(BatchRequest)`` once per batched POSDATA, returning one Reply per
    structure. ``after_reply``, if given, is called once each reply has been sent
    (work that must not delay the server). ``init_every_step`` makes the client answer
    NEEDINIT after every evaluation so that every structure is labelled with its request id.
    ``signals`` may stop the session while it waits for the server, or after a reply.
    ``numbering(rid, h, positions)``, if given, numbers each evaluation of a request id
    from the structure as it came off the wire (a counter shared by several connections,
    or a journal that knows what was sent before this process, see ensemble.journal); by
    default the session counts them itself. ``idle``,
    if given, is called every IDLE_POLL_S while the session waits for the server between
    requests (it may raise to end the session: another connection ended the run).
    """

    def __init__(
        self,
        wire: Wire,
        handler: Handler,
        *,
        init_every_step: bool = True,
        after_reply: Callable[[], None] | None = None,
        signals: StopSignals | None = None,
        numbering: Callable[[int, np.ndarray, np.ndarray], int] | None = None,
        idle: Callable[[], None] | None = None,
        server_timeout: float | None = None,
    ):
        self.wire = wire
        self.server_timeout = server_timeout
        self.numbering = numbering
        self.idle = idle
        self.signals = signals if signals is not None else NoSignals()
        self.handler = handler
        self.after_reply = after_reply
        self.init_every_step = init_every_step
        self.stats = SessionStats()
        # NEEDINIT at first, whatever the option: the INIT text announces the transport.
        self._status = "NEEDINIT"
        self._rid = 0
        self._init: InitParameters | None = None
        self._reply: Reply | list[Reply] | None = None

    def run(self) -> EndReason:
        wire = self.wire
        while True:
            if self._status == "HAVEDATA":
                # a request is in hand: the server will ask for it, so it is answered
                # whatever signal comes (i-PI waits forever for an abandoned request)
                header = wire.read_header()
            else:
                with self.signals.interruptible():  # between requests: safe to stop here
                    if self.idle is not None:
                        self._wait_idle()
                    header = wire.read_header()
            if header is None:
                log.info("server closed the connection after %d evaluations", self.stats.evaluations)
                return EndReason.EOF
            if header in ("STATUS", "GETFORCE"):
                if not self._answer(header):
                    return EndReason.EXIT
            elif header == "POSDATA":
                self._on_posdata()
            elif header == "INIT":
                self._on_init()
            elif header == "EXIT":
                log.info("server sent EXIT after %d evaluations", self.stats.evaluations)
                return EndReason.EXIT

    def _answer(self, header: str) -> bool:
        """Answer STATUS or GETFORCE; False if the server ended the run instead: i-PI's
        close() sends EXIT to every client and shuts its socket, whatever the client was
        doing (ipi/interfaces/sockets.py, InterfaceSocket.close), so an answer that finds
        the connection closed may have an EXIT waiting behind it."""
        try:
            if header == "STATUS":
                self.wire.send_status(self._status)
            else:
                self._on_getforce()
        except ServerLost:
            if not self.wire.exit_pending():
                raise
            log.info(
                "server sent EXIT and closed while the driver answered, after %d evaluations", self.stats.evaluations
            )
            return False
        return True

    def _wait_idle(self) -> None:
        """Wait for the server's next message, calling ``idle`` every IDLE_POLL_S; the
        silence is bounded by ``server_timeout`` here (the socket's timeout bounds the
        reads themselves, see transport.connect)."""
        started = time.monotonic()
        while not self.wire.readable(IDLE_POLL_S):
            self.idle()  # type: ignore[misc]
            if self.server_timeout and time.monotonic() - started > self.server_timeout:
                raise ServerSilent(silence_message(self.server_timeout))

    def _on_init(self) -> None:
        msg = self.wire.read_init()
        if self.stats.init_text is None:
            self.stats.init_text = msg.text
            log.debug("INIT text: %r", msg.text)
        params = parse_init_text(msg.text)
        check_transport(params)
        self._init = params
        if params.batch_size != self.stats.batch_size:
            if self.stats.batch_size > 1 or not hasattr(self.handler, "batch"):
                raise UnsupportedTransport(
                    f"the server announced batch_size:{params.batch_size} after batch_size:{self.stats.batch_size}"
                    if self.stats.batch_size > 1
                    else "this handler cannot take i-PI's batched transport"
                )
            self.handler.begin_batches(params.batch_size, self.init_every_step)  # type: ignore[attr-defined]
            self.stats.batch_size = params.batch_size
            log.info("i-PI's batched transport: %d structures per message", params.batch_size)
        if msg.rid < 0:
            raise ProtocolError(f"INIT carries a negative request id ({msg.rid})")
        if self.init_every_step:
            self._rid = msg.rid
        if self._status == "NEEDINIT":
            self._status = "READY"

    def _on_posdata(self) -> None:
        if self._status == "HAVEDATA":
            raise ProtocolError("the server sent POSDATA again before asking for the forces (GETFORCE)")
        if self.stats.batch_size > 1:
            self._on_posdata_batch()
            return
        h, positions = self.wire.read_posdata()
        if not (np.isfinite(h).all() and np.isfinite(positions).all()):
            raise ProtocolError(
                f"the server sent a non-finite cell or positions (request id {self._rid}, "
                f"step {self.stats.steps_by_rid[self._rid]})"
            )
        rid = self._rid
        step = self.stats.steps_by_rid[rid] if self.numbering is None else self.numbering(rid, h, positions)
        log.debug("structure received: step %d of request id %d", step, rid)
        request = Request(
            rid=rid,
            step=step,
            cell=units.cell_from_wire(h),
            positions=units.positions_from_wire(positions),
            init=self._init,
        )
        self._reply = self.handler(request)
        self.stats.steps_by_rid[rid] += 1  # this connection's evaluations of rid
        self.stats.evaluations += 1
        self._status = "HAVEDATA"

    def _on_posdata_batch(self) -> None:
        batch = self.stats.batch_size
        h, positions = self.wire.read_posdata_batch(batch)
        if not (np.isfinite(h).all() and np.isfinite(positions).all()):
            raise ProtocolError(
                f"the server sent a non-finite cell or positions (batch starting at request id {self._rid})"
            )
        log.debug("batch of %d structures received, starting at request id %d", batch, self._rid)
        replies = self.handler.batch(  # type: ignore[attr-defined]
            BatchRequest(self._rid, units.cell_from_wire(h), units.positions_from_wire(positions), self._init)
        )
        if len(replies) != batch:
            raise ValueError(f"{len(replies)} replies for a batch of {batch}")
        self._reply = replies
        self.stats.batches += 1
        self.stats.evaluations += batch
        self._status = "HAVEDATA"

    def _on_getforce(self) -> None:
        reply = self._reply
        if self._status != "HAVEDATA" or reply is None:
            raise ProtocolError("the server asked for forces (GETFORCE) before sending a structure (POSDATA)")
        if isinstance(reply, list):
            self.wire.send_forceready_batch(
                units.energy_to_wire([r.energy for r in reply]),
                units.forces_to_wire(np.stack([r.forces for r in reply])),
                units.virial_to_wire(np.stack([r.virial for r in reply])),
                [r.extras for r in reply],
            )
        else:
            self.wire.send_forceready(
                float(units.energy_to_wire(reply.energy)),
                units.forces_to_wire(reply.forces),
                units.virial_to_wire(reply.virial),
                reply.extras,
            )
        self._reply = None
        self._status = "NEEDINIT" if self.init_every_step else "READY"
        if self.after_reply is not None:
            self.after_reply()
        self.signals.check()  # a signal received while computing stops the run here
