"""Byte-level behaviour of the fault proxy's toxics, through a loopback echo server.

Every test drives the proxy with the unmodified ``toxiproxy`` client (raw HTTP
only where the client has no call: updating a toxic) and talks to it with
plain blocking sockets whose timeouts are the deadlines. Timing assertions are
lower bounds (a toxic must delay at least this much), with generous upper
bounds only where "not delayed" is the point. Most toxics are added to a
connection that is already open (a first round trip proves it is), since
Toxiproxy re-links live connections; some are added before connecting.
"""

from __future__ import annotations

import http.client
import json
import random
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from toxiproxy import Toxiproxy
from toxiproxy.proxy import Proxy

from millpond.chaos.proxy import ProxyServerThread
from millpond.chaos.proxy.behaviour import slices
from millpond.testing.waiting import wait_until

DEADLINE_S = 5.0

Connect = Callable[..., socket.socket]


class EchoServer:
    """A threaded loopback echo server that records what it received and can be closed completely."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self.received = bytearray()
        self.connections = 0
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                self.connections += 1
                self._sockets.append(conn)
                thread = threading.Thread(target=self._echo, args=(conn,), daemon=True)
                self._threads.append(thread)
            thread.start()

    def _echo(self, conn: socket.socket) -> None:
        with conn:
            while True:
                try:
                    data = conn.recv(65536)
                    if not data:
                        return
                    with self._lock:
                        self.received += data
                    conn.sendall(data)
                except OSError:
                    return

    def close(self) -> None:
        try:
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept() (close alone does not)
        except OSError:
            pass
        self._listener.close()
        with self._lock:
            sockets, threads = list(self._sockets), list(self._threads)
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for thread in threads:
            thread.join(DEADLINE_S)


@pytest.fixture
def echo() -> Iterator[EchoServer]:
    server = EchoServer()
    yield server
    server.close()


@pytest.fixture
def server() -> Iterator[ProxyServerThread]:
    with ProxyServerThread(port=0, seed=1) as running:
        yield running


@pytest.fixture
def toxiproxy(server: ProxyServerThread) -> Toxiproxy:
    client = Toxiproxy()
    client.update_api_consumer(*server.address)
    return client


@pytest.fixture
def proxy(toxiproxy: Toxiproxy, echo: EchoServer) -> Proxy:
    return toxiproxy.create(upstream=f"127.0.0.1:{echo.port}", name="echo", listen="127.0.0.1:0")


@pytest.fixture
def connect(proxy: Proxy) -> Iterator[Connect]:
    """``connect()`` opens a client socket to the proxy; all are closed after the test."""
    opened: list[socket.socket] = []

    def open_one(timeout_s: float = DEADLINE_S) -> socket.socket:
        host, port = proxy.listen.rsplit(":", 1)
        sock = socket.create_connection((host, int(port)), timeout=timeout_s)
        opened.append(sock)
        return sock

    yield open_one
    for sock in opened:
        sock.close()


def recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise AssertionError(f"connection closed after {len(data)} of {size} bytes")
        data += chunk
    return bytes(data)


def round_trip_s(sock: socket.socket, payload: bytes = b"ping") -> float:
    started = time.monotonic()
    sock.sendall(payload)
    assert recv_exactly(sock, len(payload)) == payload
    return time.monotonic() - started


def recv_until_closed(sock: socket.socket) -> bytes:
    data = bytearray()
    while chunk := sock.recv(65536):
        data += chunk
    return bytes(data)


def patch_toxic(server: ProxyServerThread, proxy: str, toxic: str,
                body: dict[str, object]) -> dict[str, object]:
    connection = http.client.HTTPConnection(*server.address, timeout=DEADLINE_S)
    try:
        connection.request("PATCH", f"/proxies/{proxy}/toxics/{toxic}", body=json.dumps(body))
        response = connection.getresponse()
        answer = json.loads(response.read())
        assert response.status == 200, answer
        return answer  # type: ignore[no-any-return]
    finally:
        connection.close()


# --- latency ------------------------------------------------------------------------------------


def test_latency_delays_each_direction_by_at_least_its_latency(proxy: Proxy, connect: Connect) -> None:
    sock = connect()
    assert round_trip_s(sock) < 1.0
    proxy.add_toxic(type="latency", attributes={"latency": 300})
    assert round_trip_s(sock) >= 0.300  # added to a live connection
    proxy.add_toxic(type="latency", stream="upstream", attributes={"latency": 100})
    assert round_trip_s(connect()) >= 0.400  # both directions add up
    proxy.destroy_toxic("latency_downstream")
    proxy.destroy_toxic("latency_upstream")
    assert round_trip_s(sock) < 0.300  # removed from a live connection


def test_latency_keeps_throughput_and_order(proxy: Proxy, connect: Connect) -> None:
    proxy.add_toxic(type="latency", attributes={"latency": 100, "jitter": 20})
    sock = connect()
    payload = bytes(range(256)) * 1024  # 256 KiB: many chunks, each delayed, none reordered
    started = time.monotonic()
    sock.sendall(payload)
    assert recv_exactly(sock, len(payload)) == payload
    assert 0.080 <= time.monotonic() - started < 2.0


def test_updating_a_latency_applies_to_open_connections(server: ProxyServerThread, proxy: Proxy,
                                                        connect: Connect) -> None:
    proxy.add_toxic(type="latency", name="slow", attributes={"latency": 0})
    sock = connect()
    assert round_trip_s(sock) < 1.0
    answer = patch_toxic(server, "echo", "slow", {"attributes": {"latency": 200}})
    assert answer["attributes"] == {"latency": 200, "jitter": 0}
    assert round_trip_s(sock) >= 0.200


# --- bandwidth ----------------------------------------------------------------------------------


def test_bandwidth_limits_the_rate(proxy: Proxy, connect: Connect) -> None:
    sock = connect()
    assert round_trip_s(sock) < 1.0
    proxy.add_toxic(type="bandwidth", attributes={"rate": 200})  # 200 KB/s
    payload = bytes(range(250)) * 240  # 60 000 bytes: at least 0.3 s at 200 KB/s
    started = time.monotonic()
    sock.sendall(payload)
    assert recv_exactly(sock, len(payload)) == payload
    assert time.monotonic() - started >= 0.27


# --- slicer -------------------------------------------------------------------------------------


def test_slicer_delivers_the_same_bytes_in_several_pieces(proxy: Proxy, connect: Connect) -> None:
    sock = connect()
    assert round_trip_s(sock) < 1.0
    proxy.add_toxic(type="slicer", attributes={"average_size": 100, "size_variation": 20, "delay": 2000})
    payload = bytes(range(200)) * 10  # 2000 bytes: about 20 pieces, 2 ms apart
    sock.sendall(payload)
    pieces: list[bytes] = []
    while sum(map(len, pieces)) < len(payload):
        piece = sock.recv(65536)
        assert piece, "closed early"
        pieces.append(piece)
    assert b"".join(pieces) == payload
    assert len(pieces) >= 4


@pytest.mark.parametrize(("size", "average", "variation"), [
    (0, 10, 0), (1, 1, 0), (7, 10, 3), (1000, 1, 0), (1000, 100, 20), (32768, 7, 7), (5000, 64, 0)])
def test_slices_cover_every_byte_in_order_with_bounded_pieces(size: int, average: int,
                                                              variation: int) -> None:
    rng = random.Random(size)
    pieces = slices(size, average, variation, rng)
    if size == 0:
        assert pieces == []
        return
    assert [start for start, _ in pieces] == [0] + [end for _, end in pieces[:-1]]
    assert pieces[-1][1] == size
    assert all(0 < end - start <= average + variation for start, end in pieces)


# --- limit_data ---------------------------------------------------------------------------------


def test_limit_data_closes_after_exactly_that_many_bytes(proxy: Proxy, connect: Connect) -> None:
    sock = connect()
    assert round_trip_s(sock) < 1.0
    proxy.add_toxic(type="limit_data", attributes={"bytes": 10})
    sock.sendall(b"0123456789abcdefghij" * 5)
    assert recv_until_closed(sock) == b"0123456789"


def test_limit_data_counts_across_chunks(proxy: Proxy, connect: Connect) -> None:
    proxy.add_toxic(type="limit_data", attributes={"bytes": 6})
    sock = connect()
    assert round_trip_s(sock, b"abcd") < 1.0
    sock.sendall(b"efgh")
    assert recv_until_closed(sock) == b"ef"


# --- reset_peer ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("stream", "live"), [("upstream", True), ("downstream", False)])
def test_reset_peer_resets_the_client(proxy: Proxy, connect: Connect, stream: str, live: bool) -> None:
    if live:
        sock = connect()
        assert round_trip_s(sock) < 1.0
    proxy.add_toxic(type="reset_peer", stream=stream, attributes={"timeout": 100})
    if not live:
        sock = connect()
    started = time.monotonic()
    sock.sendall(b"payload")
    with pytest.raises(ConnectionResetError):
        recv_until_closed(sock)
    assert time.monotonic() - started >= 0.100


# --- timeout ------------------------------------------------------------------------------------


def test_timeout_zero_drops_data_and_holds_until_removed(proxy: Proxy, connect: Connect,
                                                         echo: EchoServer) -> None:
    sock = connect()
    assert round_trip_s(sock, b"hi") < 1.0
    proxy.add_toxic(type="timeout", attributes={"timeout": 0})
    sock.sendall(b"ping")
    wait_until(lambda: bytes(echo.received) == b"hiping", DEADLINE_S, "the echo server to get the ping")
    sock.settimeout(0.3)
    with pytest.raises(TimeoutError):
        sock.recv(100)  # the echo was dropped, and the connection is held open
    sock.settimeout(DEADLINE_S)
    proxy.destroy_toxic("timeout_downstream")
    assert recv_until_closed(sock) == b""  # removing the toxic closes the held connection


def test_timeout_drops_upstream_data_then_closes_after_its_timeout(proxy: Proxy, connect: Connect,
                                                                   echo: EchoServer) -> None:
    proxy.add_toxic(type="timeout", stream="upstream", attributes={"timeout": 200})
    sock = connect()
    started = time.monotonic()
    sock.sendall(b"lost")
    assert recv_until_closed(sock) == b""
    assert time.monotonic() - started >= 0.200
    assert bytes(echo.received) == b""


# --- slow_close ---------------------------------------------------------------------------------


def test_slow_close_delays_the_close(proxy: Proxy, connect: Connect) -> None:
    proxy.add_toxic(type="slow_close", attributes={"delay": 300})
    sock = connect()
    assert round_trip_s(sock) < 1.0
    started = time.monotonic()
    sock.shutdown(socket.SHUT_WR)
    assert recv_until_closed(sock) == b""
    assert time.monotonic() - started >= 0.300


# --- toxicity, enable/disable, live changes -----------------------------------------------------


def test_toxicity_zero_never_applies_and_one_always_does(proxy: Proxy, connect: Connect) -> None:
    proxy.add_toxic(type="latency", name="never", toxicity=0.0, attributes={"latency": 2000})
    for _ in range(5):
        assert round_trip_s(connect()) < 1.0
    proxy.add_toxic(type="latency", name="always", toxicity=1.0, attributes={"latency": 100})
    for _ in range(2):
        assert round_trip_s(connect()) >= 0.100


def test_a_disabled_proxy_refuses_new_connections_and_closes_open_ones(proxy: Proxy,
                                                                       connect: Connect) -> None:
    sock = connect()
    assert round_trip_s(sock) < 1.0
    proxy.disable()
    try:
        assert recv_until_closed(sock) == b""
    except ConnectionResetError:
        pass  # closed either way
    with pytest.raises(ConnectionRefusedError):
        connect()
    proxy.enable()
    assert round_trip_s(connect()) < 1.0  # same address again


def test_toxics_change_under_a_running_transfer_without_losing_or_reordering_bytes(
        server: ProxyServerThread, proxy: Proxy, connect: Connect) -> None:
    proxy.add_toxic(type="bandwidth", name="base", stream="upstream", attributes={"rate": 1000})
    sock = connect()
    payload = bytes(range(251)) * 4096  # ~1 MiB (1 s at 1000 KB/s), a prime period to catch reordering
    received = bytearray()
    errors: list[BaseException] = []

    def read_all() -> None:
        try:
            while len(received) < len(payload):
                chunk = sock.recv(65536)
                if not chunk:
                    return
                received.extend(chunk)
        except BaseException as exc:
            errors.append(exc)

    reader = threading.Thread(target=read_all)
    reader.start()
    writer = threading.Thread(target=sock.sendall, args=(payload,))
    writer.start()
    for round_number in range(3):  # while the bytes flow
        assert len(received) < len(payload)
        proxy.add_toxic(type="latency", attributes={"latency": 5})
        proxy.add_toxic(type="slicer", stream="upstream",
                        attributes={"average_size": 4096, "size_variation": 1000, "delay": 0})
        proxy.add_toxic(type="bandwidth", attributes={"rate": 100_000})
        patch_toxic(server, "echo", "latency_downstream", {"attributes": {"latency": round_number}})
        proxy.destroy_toxic("slicer_upstream")
        proxy.destroy_toxic("latency_downstream")
        proxy.destroy_toxic("bandwidth_downstream")
    writer.join(DEADLINE_S * 2)
    reader.join(DEADLINE_S * 2)
    assert not errors
    assert len(received) == len(payload)
    assert bytes(received) == payload


def test_deleting_the_proxy_closes_its_connections(server: ProxyServerThread, proxy: Proxy,
                                                   connect: Connect) -> None:
    sock = connect()
    assert round_trip_s(sock) < 1.0
    assert server.statistics().connections_open == 1
    proxy.destroy()
    try:
        assert recv_until_closed(sock) == b""
    except ConnectionResetError:
        pass
    assert server.statistics().connections_open == 0
