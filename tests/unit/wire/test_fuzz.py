"""Fuzzed servers: crafted and random byte streams against a real session.

Every stream must end the session, within a deadline, either cleanly (EXIT, or the end
of the stream between messages) or with a ProtocolError: never a hang, never another
exception, and never an allocation sized by what the server claims (tracemalloc's
peak stays far below what an absurd atom count or INIT length would need).
"""

from __future__ import annotations

import socket
import struct
import threading
import tracemalloc

import numpy as np
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from ensemble_driver.errors import ProtocolError
from ensemble_driver.wire.protocol import Wire, encode_header
from ensemble_driver.wire.session import EndReason, Reply, Session

NAT = 4
PEAK_LIMIT = 1 << 20  # bytes; the template implies ~100 bytes of positions


def handler(request):
    return Reply(1.0, np.zeros((NAT, 3)), np.zeros((3, 3)))


int32 = st.integers(min_value=-(2**31), max_value=2**31 - 1)
floats = st.floats(allow_nan=True, allow_infinity=True, width=64)


@st.composite
def init_message(draw) -> bytes:
    text = draw(st.binary(max_size=40))
    length = draw(st.one_of(st.just(len(text)), int32))
    return encode_header("INIT") + struct.pack("=ii", draw(int32), length) + text


@st.composite
def posdata_message(draw) -> bytes:
    nat = draw(st.one_of(st.just(NAT), int32))
    cell = draw(st.lists(floats, min_size=18, max_size=18))
    npos = draw(st.integers(min_value=0, max_value=3 * NAT))
    positions = draw(st.lists(floats, min_size=npos, max_size=npos))
    return encode_header("POSDATA") + struct.pack(f"=18di{npos}d", *cell, nat, *positions)


messages = st.one_of(
    st.just(encode_header("STATUS")),
    st.just(encode_header("GETFORCE")),
    st.just(encode_header("EXIT")),
    init_message(),
    posdata_message(),
    st.binary(max_size=30),  # garbage, truncated headers
    st.sampled_from([b"STATUS", b"status      ", b"FORCEREADY  ", b"\0" * 12, b"POSDATA     \xff"]),
)


def run_session(stream: bytes, timeout: float = 5.0):
    """Feed ``stream`` to a session and close; return its end (EndReason or exception)."""
    server, client = socket.socketpair()
    client.settimeout(timeout)
    outcome: dict = {}

    def serve():
        try:
            outcome["end"] = Session(Wire(client, NAT), handler).run()
        except Exception as exc:
            outcome["end"] = exc
        finally:
            client.close()

    def feed():
        try:
            server.sendall(stream)
            server.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the client closed first: it stopped reading, which is fine

    threads = [threading.Thread(target=serve, daemon=True), threading.Thread(target=feed, daemon=True)]
    for t in threads:
        t.start()
    threads[0].join(timeout)
    assert not threads[0].is_alive(), f"session still running after {timeout} s on {stream[:200]!r}"
    server.close()
    threads[1].join(timeout)
    return outcome["end"]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(messages, max_size=12))
def test_any_stream_ends_cleanly_or_with_a_protocol_error(parts):
    stream = b"".join(parts)
    tracemalloc.start()
    try:
        end = run_session(stream)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert isinstance(end, (EndReason, ProtocolError)), repr(end)
    assert peak < PEAK_LIMIT, f"peak {peak} bytes on {stream[:200]!r}"
    event(str(end).split(" (")[0][:60] if isinstance(end, ProtocolError) else str(end))


def test_absurd_claims_are_refused_without_allocating():
    """The biggest counts a server can claim: refused at once."""
    for stream in (
        encode_header("INIT") + struct.pack("=ii", 0, 2**31 - 1),
        encode_header("INIT") + struct.pack("=ii", 0, -5),
        encode_header("INIT")
        + struct.pack("=ii", 0, 0)
        + encode_header("POSDATA")
        + b"\0" * 144
        + struct.pack("=i", 2**31 - 1),
    ):
        tracemalloc.start()
        try:
            end = run_session(stream)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert isinstance(end, ProtocolError)
        assert peak < PEAK_LIMIT
