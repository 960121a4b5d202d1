"""An asyncio client for the Toxiproxy HTTP API: proxies, their enabled flag, toxics, reset.

The chaos harness and the nemeses drive the fault proxy from the event loop that runs the
workloads, so this client never blocks it and starts no thread (``toxiproxy-python`` uses
``requests``, which blocks). It speaks plain HTTP/1.1 over :func:`asyncio.open_connection`, one
connection per request (``Connection: close``): a request is a few hundred bytes and faults are
rare, so connection reuse is not worth its state, and the client works from any event loop.

It talks to any server of the Toxiproxy API (version 2): the proxy of :mod:`millpond.chaos.proxy`
or a real ``toxiproxy-server``. The calls used::

    GET    /version                      POST   /proxies/{name}            (update: enabled, ...)
    GET    /proxies                      DELETE /proxies/{name}
    POST   /proxies                      POST   /proxies/{name}/toxics
    GET    /proxies/{name}               DELETE /proxies/{name}/toxics/{toxic}
    POST   /reset                        GET    /proxies/{name}/toxics

Proxy and toxic names are percent-encoded in paths (``n1->n2`` becomes ``n1-%3En2``).

Errors: a non-2xx answer raises :class:`ToxiproxyError` (``status``, ``message`` from the JSON
``{"error": ..., "status": ...}`` body, ``method``, ``path``), more precisely
:class:`ToxiproxyNotFound` for 404 and :class:`ToxiproxyConflict` for 409; a server that cannot
be reached, closes early or does not answer within ``request_timeout_s`` raises
:class:`ToxiproxyUnavailable`. A request that timed out may or may not have taken effect.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import quote, urlsplit

__all__ = [
    "Proxy",
    "Stream",
    "Toxic",
    "ToxiproxyClient",
    "ToxiproxyConflict",
    "ToxiproxyError",
    "ToxiproxyNotFound",
    "ToxiproxyUnavailable",
]

#: Seconds one request (connect, send, read the whole answer) may take by default.
REQUEST_TIMEOUT_S = 10.0
#: Largest response body accepted (a listing of thousands of proxies stays far below).
RESPONSE_BYTES_MAX = 8 * 1024 * 1024
#: Longest status or header line accepted.
HEADER_LINE_BYTES_MAX = 8 * 1024
#: Most header lines accepted in one response.
HEADER_LINES_MAX = 100

Stream = Literal["upstream", "downstream"]


class ToxiproxyError(Exception):
    """The Toxiproxy server answered a request with a non-2xx status.

    ``status`` is the HTTP status, ``message`` the server's JSON ``error`` text (or the raw body),
    ``method`` and ``path`` the request.
    """

    def __init__(self, status: int, message: str, method: str, path: str) -> None:
        super().__init__(f"{method} {path} -> {status}: {message}")
        self.status = status
        self.message = message
        self.method = method
        self.path = path


class ToxiproxyNotFound(ToxiproxyError):
    """404: no such proxy or toxic."""


class ToxiproxyConflict(ToxiproxyError):
    """409: a proxy or toxic of that name exists already."""


class ToxiproxyUnavailable(ToxiproxyError):
    """The server could not be reached, closed the connection early, sent something that is not
    HTTP, or did not answer in time (``status`` is 0). The request may or may not have taken effect."""

    def __init__(self, message: str, method: str, path: str) -> None:
        super().__init__(0, message, method, path)


@dataclass(frozen=True, slots=True)
class Toxic:
    """One toxic of a proxy: ``type`` (latency, bandwidth, slicer, timeout, reset_peer, ...), the
    ``stream`` it acts on (``upstream``: client to server; ``downstream``: server to client),
    ``toxicity`` (the probability it applies to a connection) and its type's ``attributes``."""

    name: str
    type: str
    stream: str
    toxicity: float
    attributes: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Toxic:
        return cls(
            name=str(data.get("name", "")),
            type=str(data.get("type", "")),
            stream=str(data.get("stream", "downstream")),
            toxicity=float(data.get("toxicity", 1.0)),
            attributes=dict(data.get("attributes") or {}),
        )


@dataclass(frozen=True, slots=True)
class Proxy:
    """A proxy as the server describes it: ``listen`` is the address it really listens on (the port
    the server picked when created with port 0)."""

    name: str
    listen: str
    upstream: str
    enabled: bool
    toxics: tuple[Toxic, ...] = ()

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Proxy:
        return cls(
            name=str(data.get("name", "")),
            listen=str(data.get("listen", "")),
            upstream=str(data.get("upstream", "")),
            enabled=bool(data.get("enabled", False)),
            toxics=tuple(Toxic.from_json(t) for t in data.get("toxics") or ()),
        )


class ToxiproxyClient:
    """A client of one Toxiproxy server at ``url`` (``http://host:port``).

    Holds no connection and no loop-bound state: use it from any event loop, any number of
    concurrent tasks. Every method raises :class:`ToxiproxyUnavailable` when the server cannot be
    reached in ``request_timeout_s``, and :class:`ToxiproxyError` for a refusal (see each method).
    """

    def __init__(self, url: str, request_timeout_s: float = REQUEST_TIMEOUT_S) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname or parts.port is None:
            raise ValueError(f"toxiproxy url must be http://HOST:PORT, got {url!r}")
        if request_timeout_s <= 0:
            raise ValueError("request_timeout_s must be > 0")
        self.url = f"http://{parts.netloc}"
        self.host = parts.hostname
        self.port = parts.port
        self.request_timeout_s = request_timeout_s

    def __repr__(self) -> str:
        return f"ToxiproxyClient({self.url!r})"

    # --- server -----------------------------------------------------------------------------
    async def version(self) -> str:
        """The server's version string (a liveness probe)."""
        _, body = await self._request("GET", "/version")
        text = body.decode("utf-8", errors="replace").strip()
        with contextlib.suppress(ValueError):
            decoded = json.loads(text)
            if isinstance(decoded, dict):
                return str(decoded.get("version", text))
            if isinstance(decoded, str):
                return decoded
        return text

    async def reset(self) -> None:
        """Enable every proxy and remove every toxic (``POST /reset``). Idempotent."""
        await self._request("POST", "/reset")

    # --- proxies ------------------------------------------------------------------------------
    async def proxies(self) -> dict[str, Proxy]:
        """Every proxy by name."""
        data = await self._json("GET", "/proxies")
        if not isinstance(data, dict):
            raise ToxiproxyUnavailable(f"expected an object, got {type(data).__name__}", "GET", "/proxies")
        return {name: Proxy.from_json(value) for name, value in data.items()}

    async def create_proxy(self, name: str, listen: str, upstream: str, enabled: bool = True) -> Proxy:
        """Create a proxy listening on ``listen`` (``host:0`` lets the server pick a port) that forwards
        to ``upstream``; return it with its real listen address. Raises :class:`ToxiproxyConflict`
        if the name or address is taken, :class:`ToxiproxyError` (400) for a bad field."""
        body = {"name": name, "listen": listen, "upstream": upstream, "enabled": enabled}
        return Proxy.from_json(await self._json("POST", "/proxies", body))

    async def get_proxy(self, name: str) -> Proxy:
        """One proxy. Raises :class:`ToxiproxyNotFound`."""
        return Proxy.from_json(await self._json("GET", _proxy_path(name)))

    async def update_proxy(
        self,
        name: str,
        *,
        enabled: bool | None = None,
        listen: str | None = None,
        upstream: str | None = None,
    ) -> Proxy:
        """Change the given fields of a proxy (``POST /proxies/{name}``, which every API version
        accepts). Disabling refuses new connections and closes existing ones; enabling listens
        again on the same address. Raises :class:`ToxiproxyNotFound`."""
        body: dict[str, Any] = {}
        if enabled is not None:
            body["enabled"] = enabled
        if listen is not None:
            body["listen"] = listen
        if upstream is not None:
            body["upstream"] = upstream
        return Proxy.from_json(await self._json("POST", _proxy_path(name), body))

    async def enable(self, name: str) -> Proxy:
        """``update_proxy(name, enabled=True)``."""
        return await self.update_proxy(name, enabled=True)

    async def disable(self, name: str) -> Proxy:
        """``update_proxy(name, enabled=False)``: refuse new connections, close existing ones."""
        return await self.update_proxy(name, enabled=False)

    async def delete_proxy(self, name: str) -> None:
        """Delete a proxy (closing its connections). Raises :class:`ToxiproxyNotFound`."""
        await self._request("DELETE", _proxy_path(name))

    # --- toxics --------------------------------------------------------------------------------
    async def toxics(self, proxy: str) -> list[Toxic]:
        """The toxics of ``proxy``. Raises :class:`ToxiproxyNotFound`."""
        data = await self._json("GET", _proxy_path(proxy) + "/toxics")
        if not isinstance(data, list):
            raise ToxiproxyUnavailable(f"expected a list, got {type(data).__name__}", "GET", "toxics")
        return [Toxic.from_json(item) for item in data]

    async def add_toxic(
        self,
        proxy: str,
        *,
        type: str,
        name: str | None = None,
        stream: Stream = "downstream",
        toxicity: float = 1.0,
        attributes: Mapping[str, Any] | None = None,
    ) -> Toxic:
        """Add a toxic to ``proxy``; it acts on existing and new connections at once.

        ``name`` defaults (on the server) to ``{type}_{stream}``. Raises :class:`ToxiproxyNotFound`
        for an unknown proxy, :class:`ToxiproxyConflict` if the proxy has a toxic of that name,
        :class:`ToxiproxyError` (400) for an unknown type or bad attributes.
        """
        if not 0.0 <= toxicity <= 1.0:
            raise ValueError(f"toxicity must be in [0, 1], got {toxicity}")
        body: dict[str, Any] = {"type": type, "stream": stream, "toxicity": toxicity,
                                "attributes": dict(attributes or {})}
        if name is not None:
            body["name"] = name
        return Toxic.from_json(await self._json("POST", _proxy_path(proxy) + "/toxics", body))

    async def remove_toxic(self, proxy: str, toxic: str) -> None:
        """Remove a toxic. Raises :class:`ToxiproxyNotFound` for an unknown proxy or toxic."""
        await self._request("DELETE", f"{_proxy_path(proxy)}/toxics/{quote(toxic, safe='')}")

    # --- plumbing ----------------------------------------------------------------------------------
    async def _json(self, method: str, path: str, body: Any = None) -> Any:
        _, raw = await self._request(method, path, body)
        try:
            return json.loads(raw) if raw.strip() else None
        except ValueError as exc:
            raise ToxiproxyUnavailable(f"answer is not JSON: {raw[:200]!r}", method, path) from exc

    async def _request(self, method: str, path: str, body: Any = None) -> tuple[int, bytes]:
        """Send one request and return (status, body) for a 2xx answer; raise otherwise."""
        try:
            async with asyncio.timeout(self.request_timeout_s):
                status, raw = await self._exchange(method, path, body)
        except TimeoutError as exc:
            raise ToxiproxyUnavailable(f"no answer from {self.url} within {self.request_timeout_s} s",
                                       method, path) from exc
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
            raise ToxiproxyUnavailable(f"{self.url}: {type(exc).__name__}: {exc}", method, path) from exc
        if 200 <= status < 300:
            return status, raw
        message = _error_message(raw)
        error_type = {404: ToxiproxyNotFound, 409: ToxiproxyConflict}.get(status, ToxiproxyError)
        raise error_type(status, message, method, path)

    async def _exchange(self, method: str, path: str, body: Any) -> tuple[int, bytes]:
        payload = b"" if body is None else json.dumps(body).encode()
        head = [
            f"{method} {path} HTTP/1.1",
            f"Host: {self.host}:{self.port}",
            "User-Agent: millpond-chaos",
            "Accept: application/json",
            "Connection: close",
            f"Content-Length: {len(payload)}",
        ]
        if body is not None:
            head.append("Content-Type: application/json")
        reader, writer = await asyncio.open_connection(self.host, self.port, limit=HEADER_LINE_BYTES_MAX)
        try:
            writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + payload)
            await writer.drain()
            return await _read_response(reader)
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


def _proxy_path(name: str) -> str:
    return "/proxies/" + quote(name, safe="")


def _error_message(raw: bytes) -> str:
    text = raw.decode("utf-8", errors="replace").strip()
    with contextlib.suppress(ValueError):
        decoded = json.loads(text)
        if isinstance(decoded, dict) and "error" in decoded:
            return str(decoded["error"])
    return text[:500] or "(empty body)"


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """Parse one HTTP/1.x response (Content-Length, chunked, or read-to-close body)."""
    status_line = (await reader.readline()).decode("latin-1").strip()
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise ValueError(f"not an HTTP response: {status_line[:100]!r}")
    status = int(parts[1])
    headers: dict[str, str] = {}
    for _ in range(HEADER_LINES_MAX):
        line = (await reader.readline()).decode("latin-1")
        if not line:
            raise ValueError("connection closed inside the headers")
        if line in ("\r\n", "\n"):
            break
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    else:
        raise ValueError(f"more than {HEADER_LINES_MAX} header lines")
    if status in (204, 304) or 100 <= status < 200:
        return status, b""
    if "chunked" in headers.get("transfer-encoding", "").lower():
        return status, await _read_chunked(reader)
    if "content-length" in headers:
        length = int(headers["content-length"])
        if not 0 <= length <= RESPONSE_BYTES_MAX:
            raise ValueError(f"response body of {length} bytes exceeds {RESPONSE_BYTES_MAX}")
        return status, await reader.readexactly(length)
    body = await reader.read(RESPONSE_BYTES_MAX + 1)
    while body and len(body) <= RESPONSE_BYTES_MAX:
        more = await reader.read(RESPONSE_BYTES_MAX + 1 - len(body))
        if not more:
            break
        body += more
    if len(body) > RESPONSE_BYTES_MAX:
        raise ValueError(f"response body exceeds {RESPONSE_BYTES_MAX} bytes")
    return status, body


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    body = bytearray()
    while True:
        size_line = (await reader.readline()).decode("latin-1").strip()
        size = int(size_line.split(";", 1)[0], 16)
        if size == 0:
            for _ in range(HEADER_LINES_MAX):  # trailers, then the empty line
                if (await reader.readline()) in (b"\r\n", b"\n", b""):
                    return bytes(body)
            raise ValueError("too many trailer lines")
        if len(body) + size > RESPONSE_BYTES_MAX:
            raise ValueError(f"response body exceeds {RESPONSE_BYTES_MAX} bytes")
        body += await reader.readexactly(size)
        await reader.readexactly(2)  # CRLF after each chunk
