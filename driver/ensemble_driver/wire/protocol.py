"""The i-PI wire format: bytes <-> arrays, with exact-length reads and no physics.

Every message starts with a 12-byte ASCII header (upper case, right-padded with spaces).
Integers are int32 and reals float64 in native byte order. What the server sends:

============  =====================================================================
``STATUS``    nothing; the client answers ``READY``, ``NEEDINIT`` or ``HAVEDATA``
``INIT``      int32 request id, int32 length, that many bytes of text
``POSDATA``   float64[9] cell h (vectors as columns), float64[9] inverse, int32 nat,
              float64[3*nat] positions (Bohr)
``GETFORCE``  nothing; the client answers ``FORCEREADY`` + float64 energy, int32 nat,
              float64[3*nat] forces, float64[9] virial, int32 length, extras bytes
``EXIT``      nothing; the run is over
============  =====================================================================

With i-PI's batched transport (``<batch_size>N``, i-PI >= 3.3, announced as
``batch_size:N`` in the INIT text) POSDATA carries int32 nat, N x (h[9], inverse[9]),
float64[N, 3*nat]; FORCEREADY carries float64[N] energies, int32 nat, float64[N, 3*nat]
forces, float64[N, 9] virials, then N x (int32 length, extras). i-PI pads a batch to N
by repeating its last structure and drops the padded results
(``ipi/interfaces/sockets.py``: ``dispatch_send_batch``, ``_recv_forces_bulk_batch``).

(i-PI 3.3.1 ``ipi/interfaces/sockets.py``, ASE 3.29 ``ase/calculators/socketio.py``.)

The server is not trusted: a count read from the wire is checked before anything is
allocated from it, so no message can make the driver allocate more than the template
implies (atoms) or than :data:`MAX_INIT_BYTES` (INIT text).
"""

from __future__ import annotations

import re
import select
import socket
from dataclasses import dataclass

import numpy as np

from ..errors import ProtocolError, ServerLost, ServerSilent, UnsupportedTransport

HEADER_LEN = 12
#: Longest INIT text accepted. i-PI sends " key : value , " per <parameters> entry:
#: tens of bytes in practice.
MAX_INIT_BYTES = 1 << 16
SERVER_HEADERS = frozenset({"STATUS", "INIT", "POSDATA", "GETFORCE", "EXIT"})
CLIENT_STATUS = frozenset({"READY", "NEEDINIT", "HAVEDATA"})

_CELL_BYTES = 2 * 9 * 8  # h and its inverse
_BATCH_RE = re.compile(r"batch_size\s*:\s*(-?\d+)")


def encode_header(word: str) -> bytes:
    """The 12-byte header for ``word``."""
    if len(word) > HEADER_LEN:
        raise ValueError(f"header {word!r} is longer than {HEADER_LEN} bytes")
    return word.upper().ljust(HEADER_LEN).encode("ascii")


_STATUS_BYTES = {w: encode_header(w) for w in CLIENT_STATUS}
_FORCEREADY = encode_header("FORCEREADY")


@dataclass(frozen=True)
class InitMessage:
    """An INIT message: the request id (the bead index in a plain i-PI run) and the text."""

    rid: int
    text: str


@dataclass(frozen=True)
class InitParameters:
    """What the driver reads out of the INIT text: the batch size, and the force field's
    ``<parameters>`` as text (key -> value)."""

    batch_size: int
    values: tuple[tuple[str, str], ...] = ()

    def get(self, key: str) -> str | None:
        return dict(self.values).get(key)


def parse_init_text(text: str) -> InitParameters:
    """Read the INIT text. i-PI (3.3, ``ForceField.queue`` in ipi/engine/forcefields.py)
    sends ``" "`` followed by ``"key : value , "`` for each ``<parameters>`` entry and, when
    it batches requests, ``"batch_size:N"``; a value is i-PI's ``str()`` of what it read
    (``{fparam: 0.5 1.0}`` gives ``"0.5 1.0"``)."""
    match = _BATCH_RE.search(text)
    values = []
    for part in text.split(","):
        key, colon, value = part.partition(":")
        if colon and key.strip() and key.strip() != "batch_size":
            values.append((key.strip(), value.strip()))
    return InitParameters(batch_size=int(match.group(1)) if match else 1, values=tuple(values))


#: Largest batch accepted: i-PI batches the beads of a ring polymer (a few to a few hundred).
MAX_BATCH = 4096


def check_transport(init: InitParameters) -> None:
    """Refuse batch sizes that are not sane."""
    if not 1 <= init.batch_size <= MAX_BATCH:
        raise UnsupportedTransport(
            f"the server announced batch_size:{init.batch_size} in its INIT message (accepted: 1 to {MAX_BATCH})"
        )


def silence_message(seconds: float) -> str:
    return (
        f"the server sent nothing for {seconds:g} s (--server-timeout {seconds:g}): it is stopped, or its host "
        "or the network is gone"
    )


class _EndOfStream(Exception):
    def __init__(self, received: int):
        super().__init__(received)
        self.received = received


class Wire:
    """Reads and writes i-PI messages on one connected stream socket.

    ``natoms`` is the atom count the template implies: a POSDATA with any other count is
    refused before its positions are read.
    """

    def __init__(self, sock: socket.socket, natoms: int):
        if natoms <= 0:
            raise ValueError("natoms must be positive")
        self.sock = sock
        self.natoms = natoms
        self._header = bytearray(HEADER_LEN)
        self._cell_buf = bytearray(_CELL_BYTES + 4)

    # -- reading -------------------------------------------------------------------
    def _recv_exact(self, view: memoryview) -> None:
        """Fill ``view`` completely; raise _EndOfStream if the peer closes first."""
        size = len(view)
        got = 0
        while got < size:
            try:
                n = self.sock.recv_into(view[got:], size - got)
            except (ConnectionResetError, ConnectionAbortedError):  # a reset, or the socket destroyed
                n = 0
            except TimeoutError:  # the socket's timeout: --server-timeout (see transport.connect)
                raise ServerSilent(silence_message(self.sock.gettimeout())) from None
            if n == 0:
                raise _EndOfStream(got)
            got += n

    def _recv_part(self, view: memoryview, what: str) -> None:
        try:
            self._recv_exact(view)
        except _EndOfStream as eos:
            raise ProtocolError(
                f"the server closed the connection in the middle of {what} "
                f"(received {eos.received} of {len(view)} bytes)"
            ) from None

    def readable(self, timeout: float) -> bool:
        """True when bytes (or the end of the stream) can be read now, else after
        waiting up to ``timeout`` seconds for them."""
        return bool(select.select([self.sock], [], [], timeout)[0])

    def read_header(self) -> str | None:
        """The next header word, or None when the server closed the connection cleanly
        (between messages)."""
        view = memoryview(self._header)
        try:
            self._recv_exact(view)
        except _EndOfStream as eos:
            if eos.received == 0:
                return None
            raise ProtocolError(
                f"the server closed the connection in the middle of a message header "
                f"(received {eos.received} of {HEADER_LEN} bytes: {bytes(view[: eos.received])!r})"
            ) from None
        raw = bytes(self._header)
        try:
            word = raw.decode("ascii").rstrip(" \0")
        except UnicodeDecodeError:
            word = ""
        if word not in SERVER_HEADERS:
            raise ProtocolError(
                f"unknown message header {raw!r} from the server (expected one of "
                f"{', '.join(sorted(SERVER_HEADERS))}); is it an i-PI protocol server?"
            )
        return word

    def _read_int32(self, what: str) -> int:
        buf = bytearray(4)
        self._recv_part(memoryview(buf), what)
        return int(np.frombuffer(buf, dtype=np.int32)[0])

    def read_init(self) -> InitMessage:
        """The body of an INIT message (after its header)."""
        rid = self._read_int32("an INIT message")
        length = self._read_int32("an INIT message")
        if length < 0 or length > MAX_INIT_BYTES:
            raise ProtocolError(f"INIT message announces {length} bytes of text (accepted: 0 to {MAX_INIT_BYTES})")
        text = bytearray(length)
        self._recv_part(memoryview(text), "an INIT message")
        return InitMessage(rid=rid, text=text.decode("utf-8", errors="replace"))

    def read_posdata(self) -> tuple[np.ndarray, np.ndarray]:
        """The body of a POSDATA message: (h as a 3x3 array exactly as sent, i.e. vectors
        as columns, in Bohr; positions as a (nat, 3) array in Bohr).

        The inverse cell is read and ignored (i-PI sends inv(h), ASE inv(h).T).
        """
        view = memoryview(self._cell_buf)
        self._recv_part(view, "a POSDATA message")
        nat = int(np.frombuffer(self._cell_buf, dtype=np.int32, count=1, offset=_CELL_BYTES)[0])
        if nat != self.natoms:
            raise ProtocolError(
                f"the server sent {nat} atoms in POSDATA but the template has "
                f"{self.natoms}; check --template (and that the server uses neither "
                "an <activelist> nor the 'shm' or batched transports)"
            )
        h = np.frombuffer(self._cell_buf, dtype=np.float64, count=9).reshape(3, 3).copy()
        positions = np.empty((nat, 3), dtype=np.float64)
        self._recv_part(memoryview(positions).cast("B"), "a POSDATA message")
        return h, positions

    def read_posdata_batch(self, batch: int) -> tuple[np.ndarray, np.ndarray]:
        """The body of a batched POSDATA: (h of each structure, (batch, 3, 3) as sent, i.e.
        vectors as columns, Bohr; positions (batch, nat, 3), Bohr)."""
        nat = self._read_int32("a batched POSDATA message")
        if nat != self.natoms:
            raise ProtocolError(
                f"the server sent {nat} atoms in a batched POSDATA but the template has {self.natoms}; check --template"
            )
        cells = np.empty((batch, 2, 3, 3), dtype=np.float64)
        self._recv_part(memoryview(cells).cast("B"), "a batched POSDATA message")
        positions = np.empty((batch, nat, 3), dtype=np.float64)
        self._recv_part(memoryview(positions).cast("B"), "a batched POSDATA message")
        return np.ascontiguousarray(cells[:, 0]), positions

    def exit_pending(self) -> bool:
        """After an answer found the connection closed: whether the server's next message,
        already received, is EXIT (it ended the run, then closed)."""
        try:
            return self.readable(0.0) and self.read_header() == "EXIT"
        except (ProtocolError, OSError):
            return False

    # -- writing -------------------------------------------------------------------
    def _send(self, data: bytes, what: str) -> None:
        try:
            self.sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError) as exc:
            raise ServerLost(
                f"the server closed the connection while the driver sent {what} ({exc.strerror})"
            ) from None

    def send_status(self, word: str) -> None:
        """Answer STATUS with READY, NEEDINIT or HAVEDATA."""
        self._send(_STATUS_BYTES[word], f"its status ({word})")

    def send_forceready(self, energy: float, forces: np.ndarray, virial: np.ndarray, extras: bytes = b"") -> None:
        """Send FORCEREADY and its payload in ONE ``sendall`` (energy in Hartree, forces
        (nat, 3) in Hartree/Bohr, virial 3x3 in Hartree, already in i-PI's layout)."""
        forces = np.ascontiguousarray(forces, dtype=np.float64)
        virial = np.ascontiguousarray(virial, dtype=np.float64)
        if forces.shape != (self.natoms, 3) or virial.shape != (3, 3):
            raise ValueError(f"forces {forces.shape} / virial {virial.shape} do not fit {self.natoms} atoms")
        self._send(
            b"".join(
                (
                    _FORCEREADY,
                    np.float64(energy).tobytes(),
                    np.int32(self.natoms).tobytes(),
                    forces.tobytes(),
                    virial.tobytes(),
                    np.int32(len(extras)).tobytes(),
                    extras,
                )
            ),
            "the forces (FORCEREADY)",
        )

    def send_forceready_batch(
        self, energies: np.ndarray, forces: np.ndarray, virials: np.ndarray, extras: list[bytes]
    ) -> None:
        """The batched FORCEREADY, in one ``sendall``: energies (batch,) in Hartree, forces
        (batch, nat, 3) in Hartree/Bohr, virials (batch, 3, 3) in Hartree, i-PI's layout."""
        energies = np.ascontiguousarray(energies, dtype=np.float64)
        forces = np.ascontiguousarray(forces, dtype=np.float64)
        virials = np.ascontiguousarray(virials, dtype=np.float64)
        batch = len(energies)
        if forces.shape != (batch, self.natoms, 3) or virials.shape != (batch, 3, 3) or len(extras) != batch:
            raise ValueError(f"batched reply shapes {forces.shape} {virials.shape} do not fit {batch} x {self.natoms}")
        parts = [_FORCEREADY, energies.tobytes(), np.int32(self.natoms).tobytes(), forces.tobytes(), virials.tobytes()]
        for e in extras:
            parts += [np.int32(len(e)).tobytes(), e]
        self._send(b"".join(parts), "the forces (batched FORCEREADY)")
