"""The fault proxy's Toxiproxy HTTP API: the unmodified ``toxiproxy`` client, raw HTTP, and the CLI.

Toxic behaviour on the wire is in ``test_proxy_toxics.py``; here a proxy's
upstream need not exist (nothing connects through it) unless said otherwise.
"""

from __future__ import annotations

import http.client
import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
from toxiproxy import Toxiproxy
from toxiproxy.exceptions import InvalidToxic, NotFound, ProxyExists

from millpond import limits
from millpond.chaos.proxy import TOXIPROXY_VERSION, ProxyServerThread

DEADLINE_S = 5.0
UPSTREAM = "127.0.0.1:9"  # never dialled in these tests


@pytest.fixture
def server() -> Iterator[ProxyServerThread]:
    with ProxyServerThread(port=0, seed=1) as running:
        yield running


@pytest.fixture
def toxiproxy(server: ProxyServerThread) -> Toxiproxy:
    client = Toxiproxy()
    client.update_api_consumer(*server.address)
    return client


def call(server: ProxyServerThread, method: str, path: str, body: Any = None, raw: bytes | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, Any]:
    """One request on a fresh connection: (status, decoded JSON body or None if empty)."""
    connection = http.client.HTTPConnection(*server.address, timeout=DEADLINE_S)
    try:
        payload = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        connection.request(method, path, body=payload, headers=headers or {})
        response = connection.getresponse()
        data = response.read()
        if data:
            assert response.getheader("Content-Type", "").startswith("application/json")
        return response.status, json.loads(data) if data else None
    finally:
        connection.close()


def create(server: ProxyServerThread, name: str, **fields: Any) -> dict[str, Any]:
    status, answer = call(server, "POST", "/proxies",
                          {"name": name, "upstream": UPSTREAM, "listen": "127.0.0.1:0", **fields})
    assert status == 201, answer
    return answer  # type: ignore[no-any-return]


def port_of(listen: str) -> int:
    return int(listen.rsplit(":", 1)[1])


def refuses_connections(listen: str) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port_of(listen)), timeout=DEADLINE_S).close()
    except ConnectionRefusedError:
        return True
    return False


def raw_exchange(sock: socket.socket, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send ``request`` and read one response (status, lower-case headers, body by Content-Length)."""
    sock.sendall(request)
    buffer = b""
    while b"\r\n\r\n" not in buffer:
        chunk = sock.recv(4096)
        assert chunk, f"closed before a response: {buffer!r}"
        buffer += chunk
    head, _, rest = buffer.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
    size = int(headers.get("content-length", "0"))
    while len(rest) < size:
        chunk = sock.recv(4096)
        assert chunk, "closed in the middle of a body"
        rest += chunk
    return int(status_line.split(" ")[1]), headers, rest[:size]


# --- the unmodified toxiproxy-python client -----------------------------------------------------


def test_client_creates_lists_gets_and_destroys_proxies(toxiproxy: Toxiproxy) -> None:
    assert toxiproxy.running()
    assert toxiproxy.proxies() == {}
    first = toxiproxy.create(upstream=UPSTREAM, name="first")
    second = toxiproxy.create(upstream=UPSTREAM, name="second", listen="127.0.0.1:0", enabled=False)
    assert first.enabled is True and second.enabled is False
    assert port_of(first.listen) > 0  # the client asks for port 0: the answer carries the real port
    assert sorted(toxiproxy.proxies()) == ["first", "second"]
    got = toxiproxy.get_proxy("first")
    assert got is not None and (got.name, got.upstream, got.listen) == ("first", UPSTREAM, first.listen)
    assert toxiproxy.get_proxy("missing") is None
    with pytest.raises(ProxyExists):
        toxiproxy.create(upstream=UPSTREAM, name="first")
    assert toxiproxy.destroy(first) is True
    assert sorted(toxiproxy.proxies()) == ["second"]
    assert refuses_connections(first.listen)
    toxiproxy.destroy_all()
    assert toxiproxy.proxies() == {}


def test_client_disables_and_enables_a_proxy(toxiproxy: Toxiproxy) -> None:
    proxy = toxiproxy.create(upstream=UPSTREAM, name="flaky")
    with proxy.down():
        assert toxiproxy.get_proxy("flaky").enabled is False
        assert refuses_connections(proxy.listen)
    assert toxiproxy.get_proxy("flaky").enabled is True
    assert toxiproxy.get_proxy("flaky").listen == proxy.listen  # the same port again


def test_client_adds_lists_and_destroys_toxics(toxiproxy: Toxiproxy) -> None:
    proxy = toxiproxy.create(upstream=UPSTREAM, name="db")
    proxy.add_toxic(type="latency", attributes={"latency": 100, "jitter": 10})
    proxy.add_toxic(type="bandwidth", stream="upstream", toxicity=0.5, attributes={"rate": 64})
    proxy.add_toxic(type="timeout", name="hang")
    toxics = proxy.toxics()
    assert sorted(toxics) == ["bandwidth_upstream", "hang", "latency_downstream"]
    latency = toxics["latency_downstream"]
    assert (latency.type, latency.stream, latency.toxicity) == ("latency", "downstream", 1.0)
    assert latency.attributes == {"latency": 100, "jitter": 10}
    assert toxics["bandwidth_upstream"].toxicity == 0.5
    assert toxics["hang"].attributes == {"timeout": 0}
    assert proxy.get_toxic("hang").type == "timeout"
    with pytest.raises(ProxyExists):  # the client raises ProxyExists for every 409
        proxy.add_toxic(type="latency")
    with pytest.raises(InvalidToxic):
        proxy.add_toxic(type="corrupt_everything")
    with pytest.raises(InvalidToxic):
        proxy.add_toxic(type="latency", name="bad", attributes={"latency": "slow"})
    assert proxy.destroy_toxic("hang") is True
    with pytest.raises(NotFound):
        proxy.destroy_toxic("hang")
    assert sorted(proxy.toxics()) == ["bandwidth_upstream", "latency_downstream"]


def test_client_reset_enables_every_proxy_and_removes_every_toxic(toxiproxy: Toxiproxy) -> None:
    one = toxiproxy.create(upstream=UPSTREAM, name="one")
    two = toxiproxy.create(upstream=UPSTREAM, name="two")
    one.add_toxic(type="latency", attributes={"latency": 10})
    two.disable()
    assert toxiproxy.reset() is True
    assert one.toxics() == {}
    assert all(proxy.enabled for proxy in toxiproxy.proxies().values())
    assert not refuses_connections(toxiproxy.get_proxy("two").listen)


def test_client_populate_creates_keeps_and_replaces(toxiproxy: Toxiproxy, server: ProxyServerThread) -> None:
    kept = toxiproxy.create(upstream=UPSTREAM, name="kept")
    changed = toxiproxy.create(upstream=UPSTREAM, name="changed")
    created = toxiproxy.populate([
        {"name": "kept", "upstream": UPSTREAM, "listen": kept.listen},
        {"name": "changed", "upstream": "127.0.0.1:10", "listen": changed.listen},
        {"name": "new", "upstream": UPSTREAM, "listen": "127.0.0.1:0"},
    ])
    assert sorted(proxy.name for proxy in created) == ["changed", "new"]
    assert toxiproxy.get_proxy("changed").upstream == "127.0.0.1:10"
    assert sorted(toxiproxy.proxies()) == ["changed", "kept", "new"]


def test_client_version(toxiproxy: Toxiproxy) -> None:
    assert json.loads(toxiproxy.version()) == {"version": TOXIPROXY_VERSION}


# --- raw HTTP -----------------------------------------------------------------------------------


def test_listen_on_port_zero_answers_the_bound_address(server: ProxyServerThread) -> None:
    answer = create(server, "zero")
    assert answer == {"name": "zero", "listen": answer["listen"], "upstream": UPSTREAM, "enabled": True,
                      "toxics": []}
    assert answer["listen"].startswith("127.0.0.1:") and port_of(answer["listen"]) > 0
    assert not refuses_connections(answer["listen"])
    status, default = call(server, "POST", "/proxies", {"name": "no-listen", "upstream": UPSTREAM})
    assert status == 201 and default["listen"].startswith("127.0.0.1:") and port_of(default["listen"]) > 0
    assert call(server, "GET", "/proxies/zero") == (200, answer)


def test_patch_and_post_update_a_proxy(server: ProxyServerThread) -> None:
    first = create(server, "moving")
    status, disabled = call(server, "PATCH", "/proxies/moving", {"enabled": False})
    assert status == 200 and disabled["enabled"] is False and disabled["listen"] == first["listen"]
    assert refuses_connections(first["listen"])
    status, enabled = call(server, "POST", "/proxies/moving", {"enabled": True, "upstream": "127.0.0.1:10"})
    assert status == 200 and enabled["enabled"] is True and enabled["upstream"] == "127.0.0.1:10"
    status, moved = call(server, "PATCH", "/proxies/moving", {"listen": "127.0.0.1:0"})
    assert status == 200 and moved["enabled"] is True and moved["listen"] != first["listen"]
    assert refuses_connections(first["listen"])
    assert not refuses_connections(moved["listen"])
    status, same = call(server, "PATCH", "/proxies/moving", {"listen": moved["listen"].replace("127.0.0.1",
                                                                                                "localhost")})
    assert status == 200 and same["listen"] == moved["listen"]  # the same address by another name


def test_patch_merges_toxic_attributes_and_toxicity(server: ProxyServerThread) -> None:
    create(server, "p")
    status, toxic = call(server, "POST", "/proxies/p/toxics",
                         {"type": "latency", "attributes": {"latency": 100, "jitter": 5}})
    assert status == 200
    assert toxic == {"name": "latency_downstream", "type": "latency", "stream": "downstream", "toxicity": 1.0,
                     "attributes": {"latency": 100, "jitter": 5}}
    status, toxic = call(server, "PATCH", "/proxies/p/toxics/latency_downstream",
                         {"attributes": {"jitter": 7}, "toxicity": 0.25})
    assert status == 200
    assert (toxic["attributes"], toxic["toxicity"]) == ({"latency": 100, "jitter": 7}, 0.25)
    status, toxic = call(server, "POST", "/proxies/p/toxics/latency_downstream",
                         {"attributes": {"latency": 3}})
    assert status == 200 and toxic["attributes"] == {"latency": 3, "jitter": 7} and toxic["toxicity"] == 0.25
    assert call(server, "GET", "/proxies/p/toxics/latency_downstream") == (200, toxic)
    assert call(server, "GET", "/proxies/p/toxics") == (200, [toxic])
    assert call(server, "GET", "/proxies/p")[1]["toxics"] == [toxic]


@pytest.mark.parametrize(("method", "path", "body", "status", "words"), [
    ("POST", "/proxies", b"{not json", 400, "bad request body"),
    ("POST", "/proxies", b"", 400, "bad request body"),
    ("POST", "/proxies", b"[1, 2]", 400, "must be a JSON object"),
    ("POST", "/proxies", b'{"upstream": "127.0.0.1:9"}', 400, "missing required field: name"),
    ("POST", "/proxies", b'{"name": "x"}', 400, "missing required field: upstream"),
    ("POST", "/proxies", b'{"name": 7, "upstream": "127.0.0.1:9"}', 400, "name must be a string"),
    ("POST", "/proxies", b'{"name": "x", "upstream": "nowhere"}', 400, "missing port"),
    ("POST", "/proxies", b'{"name": "x", "upstream": "127.0.0.1:9", "listen": "1.2.3.4.5:0"}', 400, "listen"),
    ("POST", "/proxies", b'{"name": "x", "upstream": "127.0.0.1:9", "enabled": "yes"}', 400, "enabled"),
    ("POST", "/proxies", b'{"name": "a/b", "upstream": "127.0.0.1:9"}', 400, "'/'"),
    ("POST", "/proxies/p/toxics", b'{"type": "latency", "stream": "sideways"}', 400, "stream was invalid"),
    ("POST", "/proxies/p/toxics", b'{"type": "nope"}', 400, "invalid toxic type"),
    ("POST", "/proxies/p/toxics", b'{"type": "latency", "attributes": {"latency": -1}}', 400, "latency"),
    ("POST", "/proxies/p/toxics", b'{"type": "latency", "attributes": {"latency": 1.5}}', 400, "integer"),
    ("POST", "/proxies/p/toxics", b'{"type": "latency", "attributes": {"latncy": 1}}', 400, "unknown attr"),
    ("POST", "/proxies/p/toxics", b'{"type": "latency", "toxicity": 2}', 400, "toxicity"),
    ("POST", "/proxies/p/toxics", b'{"type": "slicer", "attributes": {"average_size": 0}}', 400, "slicer"),
    ("POST", "/proxies/p/toxics", b'{"type": "latency", "attributes": [1]}', 400, "attributes"),
    ("PATCH", "/proxies/p", b'{"listen": "nope"}', 400, "missing port"),
    ("GET", "/proxies/missing", None, 404, "proxy not found"),
    ("DELETE", "/proxies/missing", None, 404, "proxy not found"),
    ("PATCH", "/proxies/missing", b"{}", 404, "proxy not found"),
    ("GET", "/proxies/missing/toxics", None, 404, "proxy not found"),
    ("POST", "/proxies/missing/toxics", b'{"type": "latency"}', 404, "proxy not found"),
    ("GET", "/proxies/p/toxics/missing", None, 404, "toxic not found"),
    ("PATCH", "/proxies/p/toxics/missing", b"{}", 404, "toxic not found"),
    ("DELETE", "/proxies/p/toxics/missing", None, 404, "toxic not found"),
    ("GET", "/nowhere", None, 404, "not found"),
    ("GET", "/proxies/p/toxics/t/more", None, 404, "not found"),
    ("PUT", "/proxies", b"{}", 405, "not allowed"),
    ("GET", "/reset", None, 405, "not allowed"),
])
def test_refusals_are_json_errors(server: ProxyServerThread, method: str, path: str, body: bytes | None,
                                  status: int, words: str) -> None:
    create(server, "p")
    got_status, answer = call(server, method, path, raw=body)
    assert got_status == status
    assert answer["status"] == status and words in answer["error"], answer
    assert set(answer) == {"error", "status"}


def test_conflicts_answer_409(server: ProxyServerThread) -> None:
    first = create(server, "p")
    assert call(server, "POST", "/proxies", {"name": "p", "upstream": UPSTREAM}) == (
        409, {"error": "proxy already exists", "status": 409})
    assert call(server, "POST", "/proxies/p/toxics", {"type": "latency"})[0] == 200
    assert call(server, "POST", "/proxies/p/toxics", {"type": "latency", "attributes": {"latency": 1}}) == (
        409, {"error": "toxic already exists", "status": 409})
    status, answer = call(server, "POST", "/proxies",
                          {"name": "q", "upstream": UPSTREAM, "listen": first["listen"]})
    assert status == 409 and "address already in use" in answer["error"]
    assert "q" not in call(server, "GET", "/proxies")[1]


def test_limits_on_proxies_and_toxics_answer_409(server: ProxyServerThread,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(limits, "proxy_proxies_max", 2)
    monkeypatch.setattr(limits, "proxy_toxics_max", 1)
    create(server, "a")
    create(server, "b")
    status, answer = call(server, "POST", "/proxies", {"name": "c", "upstream": UPSTREAM})
    assert status == 409 and "too many proxies" in answer["error"]
    assert call(server, "POST", "/proxies/a/toxics", {"type": "latency"})[0] == 200
    status, answer = call(server, "POST", "/proxies/a/toxics", {"type": "bandwidth"})
    assert status == 409 and "too many toxics" in answer["error"]


def test_populate_creates_keeps_replaces_and_reports_failures(server: ProxyServerThread) -> None:
    kept = create(server, "kept")
    create(server, "moved")
    call(server, "POST", "/proxies/moved/toxics", {"type": "latency"})
    status, answer = call(server, "POST", "/populate", [
        {"name": "kept", "upstream": UPSTREAM, "listen": kept["listen"]},
        {"name": "moved", "upstream": "127.0.0.1:10"},
        {"name": "off", "upstream": UPSTREAM, "enabled": False},
    ])
    assert status == 201
    assert [(p["name"], p["upstream"], p["enabled"]) for p in answer["proxies"]] == [
        ("kept", UPSTREAM, True), ("moved", "127.0.0.1:10", True), ("off", UPSTREAM, False)]
    assert answer["proxies"][0] == kept
    assert answer["proxies"][1]["toxics"] == []  # a replaced proxy starts without toxics
    status, answer = call(server, "POST", "/populate", [{"name": "x", "upstream": UPSTREAM}, {"name": "y"}])
    assert (status, answer["error"]) == (400, "missing required field: upstream at proxy 2")
    assert "x" not in call(server, "GET", "/proxies")[1]  # nothing is created when one is invalid
    status, answer = call(server, "POST", "/populate", [
        {"name": "fine", "upstream": UPSTREAM},
        {"name": "clash", "upstream": UPSTREAM, "listen": kept["listen"]},
    ])
    assert status == 409 and "address already in use" in answer["error"]
    assert [proxy["name"] for proxy in answer["proxies"]] == ["fine"]
    assert call(server, "POST", "/populate", {"name": "x"})[0] == 400


def test_reset_delete_and_version(server: ProxyServerThread) -> None:
    create(server, "p")
    call(server, "POST", "/proxies/p/toxics", {"type": "latency"})
    call(server, "PATCH", "/proxies/p", {"enabled": False})
    assert call(server, "POST", "/reset") == (204, None)
    proxy = call(server, "GET", "/proxies/p")[1]
    assert proxy["enabled"] is True and proxy["toxics"] == []
    assert call(server, "DELETE", "/proxies/p/toxics/latency_downstream")[0] == 404
    assert call(server, "DELETE", "/proxies/p") == (204, None)
    assert call(server, "GET", "/proxies/p")[0] == 404
    assert call(server, "GET", "/version") == (200, {"version": TOXIPROXY_VERSION})


def test_a_browser_is_refused(server: ProxyServerThread) -> None:
    status, answer = call(server, "GET", "/proxies", headers={"User-Agent": "Mozilla/5.0 (X11)"})
    assert (status, answer) == (403, {"error": "User agent not allowed", "status": 403})


def test_names_are_percent_decoded(server: ProxyServerThread) -> None:
    create(server, "with space")
    assert call(server, "GET", "/proxies/with%20space")[1]["name"] == "with space"


# --- HTTP/1.1 details ---------------------------------------------------------------------------


def test_keep_alive_chunked_bodies_and_http_1_0(server: ProxyServerThread) -> None:
    with socket.create_connection(server.address, timeout=DEADLINE_S) as sock:
        body = json.dumps({"name": "chunky", "upstream": UPSTREAM}).encode()
        chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
        status, headers, answer = raw_exchange(
            sock, b"POST /proxies HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked)
        assert status == 201 and json.loads(answer)["name"] == "chunky"
        status, headers, answer = raw_exchange(sock, b"GET /proxies/chunky HTTP/1.1\r\nHost: x\r\n\r\n")
        assert status == 200 and "connection" not in headers  # still the same connection
        status, headers, answer = raw_exchange(sock, b"DELETE /proxies/chunky HTTP/1.1\r\nHost: x\r\n\r\n")
        assert status == 204 and answer == b""
        status, headers, _ = raw_exchange(sock, b"GET /version HTTP/1.1\r\nConnection: close\r\n\r\n")
        assert status == 200 and headers["connection"] == "close"
        assert sock.recv(100) == b""
    with socket.create_connection(server.address, timeout=DEADLINE_S) as sock:
        status, headers, _ = raw_exchange(sock, b"GET /version HTTP/1.0\r\n\r\n")
        assert status == 200 and sock.recv(100) == b""  # HTTP/1.0 closes unless asked to keep alive


def test_expect_100_continue(server: ProxyServerThread) -> None:
    body = json.dumps({"name": "patient", "upstream": UPSTREAM}).encode()
    with socket.create_connection(server.address, timeout=DEADLINE_S) as sock:
        sock.sendall(b"POST /proxies HTTP/1.1\r\nExpect: 100-continue\r\n"
                     b"Content-Length: %d\r\n\r\n" % len(body))
        assert sock.recv(100).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        status, _, answer = raw_exchange(sock, body)
        assert status == 201 and json.loads(answer)["name"] == "patient"


@pytest.mark.parametrize(("request_bytes", "status"), [
    (b"NONSENSE\r\n\r\n", 400),
    (b"GET /version HTTP/2.0\r\n\r\n", 505),
    (b"GET /version HTTP/1.1\r\nbad header\r\n\r\n", 400),
    (b"POST /proxies HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
    (b"POST /proxies HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
    (b"POST /proxies HTTP/1.1\r\nContent-Length: " + str(limits.proxy_request_bytes_max + 1).encode()
     + b"\r\n\r\n", 413),
    (b"GET /version HTTP/1.1\r\nX-Big: " + b"a" * limits.proxy_request_head_bytes_max + b"\r\n\r\n", 431),
])
def test_malformed_requests_are_refused_and_closed(server: ProxyServerThread, request_bytes: bytes,
                                                   status: int) -> None:
    with socket.create_connection(server.address, timeout=DEADLINE_S) as sock:
        got_status, headers, answer = raw_exchange(sock, request_bytes)
        assert got_status == status and json.loads(answer)["status"] == status
        assert headers["connection"] == "close"
        try:
            assert sock.recv(100) == b""
        except ConnectionResetError:
            pass  # closed with unread request bytes: Linux sends an RST


# --- the CLI ------------------------------------------------------------------------------------


def test_cli_prints_its_address_serves_and_stops_on_sigterm() -> None:
    process = subprocess.Popen([sys.executable, "-m", "millpond", "chaos", "proxy", "--port", "0"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ})
    try:
        assert process.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(process.stdout, selectors.EVENT_READ)
            assert selector.select(timeout=30.0), "no line from millpond chaos proxy within 30 s"
        line = process.stdout.readline().decode()
        prefix = "toxiproxy API listening on http://127.0.0.1:"
        assert line.startswith(prefix) and line.endswith("\n"), line
        port = int(line[len(prefix):])
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=DEADLINE_S)
        connection.request("POST", "/proxies", body=json.dumps({"name": "cli", "upstream": UPSTREAM}))
        assert connection.getresponse().status == 201
        connection.close()
        process.send_signal(signal.SIGTERM)
        started = time.monotonic()
        assert process.wait(timeout=15.0) == 0
        assert time.monotonic() - started < 15.0
        assert process.stdout.read() == b""  # exactly one line
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()
