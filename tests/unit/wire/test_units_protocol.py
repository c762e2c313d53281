"""Units, the wire format and the session state machine, against socketpairs.

The message orders of the real servers are replayed byte for byte here (the real
servers themselves are exercised in test_ipi.py and test_ase.py); a socketpair with a
recv timeout turns any deadlock into a failure.
"""

from __future__ import annotations

import socket
import threading

import numpy as np
import pytest

from ensemble_driver.errors import ProtocolError, ServerLost, UnsupportedTransport
from ensemble_driver.wire import units
from ensemble_driver.wire.protocol import HEADER_LEN, Wire, encode_header, parse_init_text
from ensemble_driver.wire.session import EndReason, Reply, Request, Session

NAT = 3


def test_constants_are_ase_codata2014():
    import ase.units

    assert units.BOHR_ANGSTROM == ase.units.Bohr
    assert units.HARTREE_EV == ase.units.Hartree


def test_cell_transpose_and_units():
    # i-PI sends h with lattice vectors as columns; a triclinic cell tells a transpose apart.
    rows = np.array([[4.0, 0.0, 0.0], [1.0, 5.0, 0.0], [0.5, 0.7, 6.0]])
    h_columns_bohr = rows.T / units.BOHR_ANGSTROM
    np.testing.assert_allclose(units.cell_from_wire(h_columns_bohr.ravel()), rows, rtol=1e-15)


def test_virial_goes_back_transposed_in_hartree():
    virial = np.arange(9.0).reshape(3, 3)
    wire = units.virial_to_wire(virial)
    np.testing.assert_allclose(wire * units.HARTREE_EV, virial.T, rtol=1e-15)


def test_forces_energy_to_wire():
    f = np.array([[1.0, -2.0, 3.0]])
    np.testing.assert_allclose(units.forces_to_wire(f) * units.HARTREE_EV / units.BOHR_ANGSTROM, f)
    assert units.energy_to_wire(units.HARTREE_EV) == pytest.approx(1.0, rel=1e-15)


@pytest.mark.parametrize(
    "text, batch",
    [
        (" ", 1),
        ("\0", 1),
        ("  batch_size:4", 4),  # i-PI 3.3 without <parameters>
        (" a : 1 , , batch_size:8", 8),  # with <parameters>
        (" batch_size : 2 ", 2),
    ],
)
def test_parse_init_text(text, batch):
    assert parse_init_text(text).batch_size == batch


# -- a scripted server over a socketpair ------------------------------------------------


def posdata(h_columns: np.ndarray, positions_bohr: np.ndarray, nat: int | None = None) -> bytes:
    nat = len(positions_bohr) if nat is None else nat
    return (
        encode_header("POSDATA")
        + np.asarray(h_columns, np.float64).tobytes()
        + np.linalg.inv(h_columns).tobytes()
        + np.int32(nat).tobytes()
        + np.asarray(positions_bohr, np.float64).tobytes()
    )


def init(rid: int, text: bytes = b" ") -> bytes:
    return encode_header("INIT") + np.int32(rid).tobytes() + np.int32(len(text)).tobytes() + text


class Peer:
    """The server end of a socketpair: send bytes, read exact replies, with a deadline."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.sock.settimeout(10)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def recv(self, n: int) -> bytes:
        out = b""
        while len(out) < n:
            chunk = self.sock.recv(n - len(out))
            if not chunk:
                raise EOFError(f"client closed after {len(out)} of {n} bytes")
            out += chunk
        return out

    def status(self) -> str:
        self.send(encode_header("STATUS"))
        return self.recv(HEADER_LEN).decode().strip()

    def forceready(self, nat: int) -> tuple[float, np.ndarray, np.ndarray, bytes]:
        assert self.recv(HEADER_LEN) == encode_header("FORCEREADY")
        energy = np.frombuffer(self.recv(8), np.float64)[0]
        assert np.frombuffer(self.recv(4), np.int32)[0] == nat
        forces = np.frombuffer(self.recv(24 * nat), np.float64).reshape(nat, 3)
        virial = np.frombuffer(self.recv(72), np.float64).reshape(3, 3)
        extras = self.recv(int(np.frombuffer(self.recv(4), np.int32)[0]))
        return float(energy), forces, virial, extras


class Recorder:
    """A handler that records requests and answers with numbers derived from them."""

    def __init__(self):
        self.requests: list[Request] = []

    def __call__(self, request: Request) -> Reply:
        self.requests.append(request)
        energy = float(request.positions.sum())
        return Reply(energy, -request.positions, np.arange(9.0).reshape(3, 3) + request.step)


def serve_in_thread(client_sock: socket.socket, make_session) -> tuple[threading.Thread, dict]:
    """``make_session(wire).run()`` in a thread on the client end of a socketpair (closed
    when it ends); its result dict gets "reason" and "stats", or "error"."""
    client_sock.settimeout(10)  # a blocked session fails the test instead of hanging
    result: dict = {}

    def target():
        try:
            session = make_session(Wire(client_sock, NAT))
            result["reason"] = session.run()
            result["stats"] = session.stats
        except Exception as exc:  # handed to the test thread
            result["error"] = exc
        finally:
            client_sock.close()

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, result


def ended(thread: threading.Thread, result: dict) -> dict:
    thread.join(timeout=10)
    assert not thread.is_alive(), "session did not end"
    return result


@pytest.fixture
def session_pair():
    """(start, recorder, finish): start() runs a session in a thread and gives the
    server's end; finish() waits for the session's end and gives its result."""
    server_sock, client_sock = socket.socketpair()
    recorder = Recorder()
    running: list = []

    def start(init_every_step: bool = True) -> Peer:
        running.append(
            serve_in_thread(client_sock, lambda wire: Session(wire, recorder, init_every_step=init_every_step))
        )
        return Peer(server_sock)

    def finish() -> dict:
        return ended(*running[0])

    yield start, recorder, finish
    server_sock.close()


H = np.diag([10.0, 11.0, 12.0])  # columns = lattice vectors, Bohr
POS = np.arange(NAT * 3, dtype=np.float64).reshape(NAT, 3)


def test_ipi_consolidated_order(session_pair):
    """i-PI >= 3.2: STATUS/NEEDINIT, INIT, STATUS/READY, POSDATA+GETFORCE in one send,
    then STATUS right after FORCEREADY."""
    start, recorder, finish = session_pair
    peer = start()
    for step in range(2):
        for bead in (1, 0):
            assert peer.status() == "NEEDINIT"
            peer.send(init(bead))
            assert peer.status() == "READY"
            peer.send(posdata(H, POS + bead) + encode_header("GETFORCE"))
            energy, forces, virial, extras = peer.forceready(NAT)
            pos_a = (POS + bead) * units.BOHR_ANGSTROM
            assert energy == pytest.approx(pos_a.sum() / units.HARTREE_EV, rel=1e-14)
            np.testing.assert_allclose(forces, units.forces_to_wire(-pos_a), rtol=1e-14)
            np.testing.assert_allclose(virial, (np.arange(9.0).reshape(3, 3) + step).T / units.HARTREE_EV)
            assert extras == b""
    assert peer.status() == "NEEDINIT"
    peer.send(encode_header("EXIT"))
    result = finish()
    assert "error" not in result, result.get("error")
    assert result["reason"] is EndReason.EXIT
    assert [(r.rid, r.step) for r in recorder.requests] == [(1, 0), (0, 0), (1, 1), (0, 1)]
    np.testing.assert_allclose(recorder.requests[0].cell, H.T * units.BOHR_ANGSTROM)


def test_legacy_order_and_eof_is_clean(session_pair):
    """i-PI 3.1 / consolidate_messages=false: POSDATA, STATUS (HAVEDATA), GETFORCE; then EOF."""
    start, recorder, finish = session_pair
    peer = start()
    assert peer.status() == "NEEDINIT"
    peer.send(init(0))
    assert peer.status() == "READY"
    peer.send(posdata(H, POS))
    assert peer.status() == "HAVEDATA"
    assert peer.status() == "HAVEDATA"  # asked twice: same answer
    peer.send(encode_header("GETFORCE"))
    peer.forceready(NAT)
    peer.sock.close()
    result = finish()
    assert result["reason"] is EndReason.EOF


def test_no_init_each_answers_ready(session_pair):
    start, recorder, finish = session_pair
    peer = start(init_every_step=False)
    assert peer.status() == "NEEDINIT"  # once, to read the INIT text
    peer.send(init(3))
    for _ in range(2):
        assert peer.status() == "READY"
        peer.send(posdata(H, POS))
        assert peer.status() == "HAVEDATA"
        peer.send(encode_header("GETFORCE"))
        peer.forceready(NAT)
    assert peer.status() == "READY"
    peer.send(encode_header("EXIT"))
    finish()
    assert [(r.rid, r.step) for r in recorder.requests] == [(0, 0), (0, 1)]


class BatchRecorder(Recorder):
    """Also takes i-PI's batched transport: energy = sum of positions, as Recorder."""

    def __init__(self):
        super().__init__()
        self.batches = []

    def begin_batches(self, batch_size, init_every_step):
        self.batch_size = batch_size

    def batch(self, request):
        self.batches.append(request)
        return [Reply(float(p.sum()), -p, np.eye(3) * k) for k, p in enumerate(request.positions)]


def _ended_while_answering(before_close, handler) -> dict:
    """A session whose server, like i-PI's close(), sends EXIT and shuts the socket while
    the driver still answers: ``before_close(peer)`` runs the exchange up to there."""
    server_sock, client_sock = socket.socketpair()
    running = serve_in_thread(client_sock, lambda wire: Session(wire, handler))
    before_close(Peer(server_sock))
    server_sock.sendall(encode_header("EXIT"))
    server_sock.close()
    handler.closed.set()
    return ended(*running)


class HeldRecorder(Recorder):
    """Answers only once the server has closed (the answer then finds the socket closed)."""

    def __init__(self):
        super().__init__()
        self.closed = threading.Event()

    def __call__(self, request: Request) -> Reply:
        assert self.closed.wait(10)
        return super().__call__(request)


def test_exit_behind_a_closed_socket_is_a_clean_end():
    """i-PI's close() (its soft exit, the end of a run) sends EXIT to every client and shuts
    the socket whatever the client was doing: a driver whose answer to GETFORCE finds the
    socket closed reads the EXIT waiting behind it and ends cleanly, as if it had read it
    first (two jobs on one socket met this at i-PI's soft exit); without an EXIT waiting
    it is the server lost."""

    def up_to_getforce(peer):
        assert peer.status() == "NEEDINIT"
        peer.send(init(0))
        assert peer.status() == "READY"
        peer.send(posdata(H, POS) + encode_header("GETFORCE"))

    result = _ended_while_answering(up_to_getforce, HeldRecorder())
    assert "error" not in result, result.get("error")
    assert result["reason"] is EndReason.EXIT

    # the same without the EXIT: the server is lost
    server_sock, client_sock = socket.socketpair()
    client_sock.settimeout(10)
    peer = Peer(server_sock)
    peer.send(encode_header("STATUS"))
    server_sock.close()
    with pytest.raises(ServerLost, match="closed the connection while the driver sent its status"):
        Session(Wire(client_sock, NAT), Recorder()).run()
    client_sock.close()


def test_batched_transport_wire_layout():
    """i-PI 3.3's batched messages (ipi/interfaces/sockets.py dispatch_send_batch and
    _recv_forces_bulk_batch), three structures per message."""
    server_sock, client_sock = socket.socketpair()
    recorder = BatchRecorder()
    thread, result = serve_in_thread(client_sock, lambda wire: Session(wire, recorder))
    peer = Peer(server_sock)
    batch = 3
    assert peer.status() == "NEEDINIT"
    peer.send(init(2, b"  batch_size:3"))
    assert peer.status() == "READY"
    cells = [H * (1 + 0.1 * k) for k in range(batch)]
    positions = [POS + k for k in range(batch)]
    peer.send(
        encode_header("POSDATA")
        + np.int32(NAT).tobytes()
        + b"".join(c.tobytes() + np.linalg.inv(c).tobytes() for c in cells)
        + b"".join(p.tobytes() for p in positions)
        + encode_header("GETFORCE")
    )
    assert peer.recv(HEADER_LEN) == encode_header("FORCEREADY")
    energies = np.frombuffer(peer.recv(8 * batch), np.float64)
    assert np.frombuffer(peer.recv(4), np.int32)[0] == NAT
    forces = np.frombuffer(peer.recv(24 * NAT * batch), np.float64).reshape(batch, NAT, 3)
    virials = np.frombuffer(peer.recv(72 * batch), np.float64).reshape(batch, 3, 3)
    extras = [peer.recv(int(np.frombuffer(peer.recv(4), np.int32)[0])) for _ in range(batch)]
    pos_a = [p * units.BOHR_ANGSTROM for p in positions]
    np.testing.assert_allclose(energies, [p.sum() / units.HARTREE_EV for p in pos_a], rtol=1e-14)
    np.testing.assert_allclose(forces, units.forces_to_wire(-np.array(pos_a)), rtol=1e-14)
    np.testing.assert_allclose(virials[2], np.eye(3) * 2 / units.HARTREE_EV)
    assert extras == [b""] * batch
    request = recorder.batches[0]
    assert request.rid == 2 and request.positions.shape == (batch, NAT, 3)
    np.testing.assert_allclose(request.cells[1], cells[1].T * units.BOHR_ANGSTROM)
    assert peer.status() == "NEEDINIT"
    peer.send(encode_header("EXIT"))
    thread.join(10)
    assert result.get("reason") is EndReason.EXIT, result


def test_batched_transport_needs_a_handler_that_takes_it(session_pair):
    start, recorder, finish = session_pair
    peer = start()
    assert peer.status() == "NEEDINIT"
    peer.send(init(0, b"  batch_size:4"))
    result = finish()
    assert isinstance(result["error"], UnsupportedTransport)
    assert "cannot take i-PI's batched transport" in str(result["error"])


@pytest.mark.parametrize(
    "stream, message",
    [
        (encode_header("HELLO"), "unknown message header"),
        (encode_header("POSDATA")[:5], "middle of a message header"),
        (init(0) + posdata(H, POS, nat=NAT + 1), f"sent {NAT + 1} atoms in POSDATA but the template has {NAT}"),
        (init(0) + posdata(H, POS, nat=-7), "sent -7 atoms"),
        (init(0) + posdata(H, POS)[:-5], "middle of a POSDATA message"),
        (encode_header("INIT") + np.int32(0).tobytes() + np.int32(1 << 30).tobytes(), "INIT message announces"),
        (init(0, b" batch_size:100000"), "batch_size:100000"),
        (init(0) + encode_header("GETFORCE"), "before sending a structure"),
        (init(0) + posdata(H, POS * np.nan), "non-finite cell or positions"),
    ],
)
def test_bad_streams_fail_clearly(session_pair, stream, message):
    start, recorder, finish = session_pair
    peer = start()
    assert peer.status() == "NEEDINIT"
    peer.send(stream)
    peer.sock.shutdown(socket.SHUT_WR)
    result = finish()
    assert isinstance(result.get("error"), ProtocolError), result
    assert message in str(result["error"])


@pytest.mark.parametrize("consolidated", [True, False])
def test_signal_during_evaluation_still_answers(consolidated):
    """A stop requested while a structure is evaluated: the server still gets the whole
    answer (i-PI waits forever for an abandoned request), then the session stops."""
    import signal

    from ensemble_driver.signals import Stopped, StopSignals

    signals = StopSignals()  # not installed: the handler is called by hand below

    def evaluate(request):
        signals._handler(signal.SIGTERM, None)  # arrives while computing
        return Reply(1.0, np.zeros((NAT, 3)), np.zeros((3, 3)))

    server_sock, client_sock = socket.socketpair()
    thread, result = serve_in_thread(client_sock, lambda wire: Session(wire, evaluate, signals=signals))
    peer = Peer(server_sock)
    assert peer.status() == "NEEDINIT"
    peer.send(init(0))
    assert peer.status() == "READY"
    if consolidated:
        peer.send(posdata(H, POS) + encode_header("GETFORCE"))
    else:
        peer.send(posdata(H, POS))
        assert peer.status() == "HAVEDATA"
        peer.send(encode_header("GETFORCE"))
    energy, _, _, _ = peer.forceready(NAT)
    assert energy == pytest.approx(1.0 / units.HARTREE_EV)
    thread.join(10)
    assert isinstance(result.get("error"), Stopped) and result["error"].exit_status == 143
    assert server_sock.recv(12) == b""  # and nothing else was sent
    server_sock.close()
