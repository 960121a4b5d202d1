"""A minimal HTTP/1.1 server on asyncio streams: enough for a JSON API, nothing more.

Why not a framework: the proxy must run wherever millpond runs, with no
dependency beyond the standard library, and its API is a dozen JSON routes.

What it does (RFC 9112, the parts JSON clients such as ``requests``, Go's
``net/http`` and ``curl`` use): persistent connections (HTTP/1.1 keep-alive by
default, HTTP/1.0 with ``Connection: keep-alive``), one request at a time per
connection; bodies by ``Content-Length`` or ``Transfer-Encoding: chunked``;
``Expect: 100-continue``; ``HEAD`` answered without a body. Responses always
carry ``Content-Length`` (none for 204). What it refuses, then closes the
connection: a malformed request line or header (400), a head over
``proxy_request_head_bytes_max`` or more than ``proxy_request_headers_max``
headers (431), a body over ``proxy_request_bytes_max`` (413), both
``Content-Length`` and ``Transfer-Encoding`` (400: request smuggling), another
transfer coding (501), another HTTP version (505).

Timeouts: a connection waits at most ``proxy_api_idle_ms_max`` for the head of
its next request, and at most ``proxy_api_read_ms_max`` for the body of one;
then it is closed. At most ``proxy_api_connections_max`` connections are
served at once; more are closed at once.

The handler returns a :class:`Response`; an exception escaping it is a bug:
the client gets a 500 and the exception goes to ``on_failure``.
"""

from __future__ import annotations

import asyncio
import email.utils
import http
import string
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from millpond import limits
from millpond.chaos.proxy.addresses import listening_socket
from millpond.chaos.proxy.tasks import TaskOwner

__all__ = ["ErrorRenderer", "Handler", "HttpServer", "Request", "Response"]

_TOKEN_CHARS = frozenset(string.ascii_letters + string.digits + "!#$%&'*+-.^_`|~")
_CLOSE_WAIT_S = 1.0


@dataclass(frozen=True, slots=True)
class Request:
    """One request. ``path`` is undecoded (the router splits and decodes it); header names are lower case,
    repeated headers joined by ``", "``."""

    method: str
    path: str
    query: str
    version: str
    headers: Mapping[str, str]
    body: bytes

    @property
    def keep_alive(self) -> bool:
        """Whether the client wants the connection kept open after this request."""
        tokens = {token.strip().lower() for token in self.headers.get("connection", "").split(",")}
        if self.version == "HTTP/1.1":
            return "close" not in tokens
        return "keep-alive" in tokens


@dataclass(frozen=True, slots=True)
class Response:
    """A status, a body, and the body's media type."""

    status: int
    body: bytes = b""
    content_type: str = "application/json"


Handler = Callable[[Request], Awaitable[Response]]
ErrorRenderer = Callable[[int, str], Response]
"""Makes the response for an error found by the server itself (status, message)."""


class _Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class HttpServer:
    """Serves ``handler`` over HTTP/1.1 on one listening socket."""

    def __init__(self, handler: Handler, render_error: ErrorRenderer,
                 on_failure: Callable[[BaseException], None]) -> None:
        self._handler = handler
        self._render_error = render_error
        self._on_failure = on_failure
        self._tasks = TaskOwner("http", on_failure)
        self._server: asyncio.Server | None = None
        self.requests = 0

    async def start(self, host: str, port: int) -> tuple[str, int]:
        """Listen on ``host:port`` (port 0: a free port); return the bound address. Raises OSError."""
        sock = await listening_socket(host, port)
        try:
            self._server = await asyncio.start_server(self._accept, sock=sock,
                                                      limit=limits.proxy_request_head_bytes_max)
        except BaseException:
            sock.close()
            raise
        bound_host, bound_port = sock.getsockname()[:2]
        return bound_host, bound_port

    async def close(self) -> None:
        """Stop listening and close every connection, even in the middle of a request."""
        if self._server is not None:
            self._server.close()
        await self._tasks.close()
        if self._server is not None:
            await self._server.wait_closed()

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._tasks) >= limits.proxy_api_connections_max or self._tasks.closed:
            writer.close()
            return
        self._tasks.spawn(self._serve(reader, writer), name=f"api client {writer.get_extra_info('peername')}")

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    request = await _read_request(reader, writer)
                except _Refused as refused:
                    writer.write(_encode(self._render_error(refused.status, refused.message),
                                         keep_alive=False, head_only=False))
                    await writer.drain()
                    return
                if request is None:
                    return
                response = await self._respond(request)
                keep_alive = request.keep_alive and not self._tasks.closed
                writer.write(_encode(response, keep_alive, head_only=request.method == "HEAD",
                                     http10=request.version == "HTTP/1.0"))
                await writer.drain()
                if not keep_alive:
                    return
        except (OSError, TimeoutError, asyncio.IncompleteReadError):
            return  # the client went away or was too slow: nothing to answer
        finally:
            writer.close()
            try:
                async with asyncio.timeout(_CLOSE_WAIT_S):
                    await writer.wait_closed()
            except (OSError, TimeoutError):
                writer.transport.abort()

    async def _respond(self, request: Request) -> Response:
        self.requests += 1
        try:
            return await self._handler(request)
        except Exception as exc:  # a bug in the handler: answer 500, then fail-stop
            self._on_failure(exc)
            return self._render_error(500, f"internal error: {type(exc).__name__}")


async def _read_request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> Request | None:
    """The next request, or None if the client closed (or idled out) between requests. Raises _Refused."""
    try:
        async with asyncio.timeout(limits.proxy_api_idle_ms_max / 1000):
            head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if exc.partial.strip():
            raise _Refused(400, "incomplete request head") from exc
        return None
    except asyncio.LimitOverrunError as exc:
        raise _Refused(431, f"request head larger than {limits.proxy_request_head_bytes_max} bytes") from exc
    except TimeoutError:
        return None
    method, target, version, headers = _parse_head(head[:-4].decode("latin-1"))
    async with asyncio.timeout(limits.proxy_api_read_ms_max / 1000):
        body = await _read_body(reader, writer, version, headers)
    parts = urlsplit(target)
    return Request(method, parts.path or "/", parts.query, version, headers, body)


def _parse_head(head: str) -> tuple[str, str, str, dict[str, str]]:
    request_line, *lines = head.split("\r\n")
    parts = request_line.split(" ")
    if len(parts) != 3 or not parts[0] or not set(parts[0]) <= _TOKEN_CHARS or not parts[1]:
        raise _Refused(400, f"malformed request line {request_line[:100]!r}")
    method, target, version = parts
    if version not in ("HTTP/1.1", "HTTP/1.0"):
        raise _Refused(505, f"HTTP version {version[:20]!r} not supported")
    if not (target.startswith("/") or target.startswith(("http://", "https://"))):
        raise _Refused(400, f"malformed request target {target[:100]!r}")
    if len(lines) > limits.proxy_request_headers_max:
        raise _Refused(431, f"more than {limits.proxy_request_headers_max} headers")
    headers: dict[str, str] = {}
    for line in lines:
        name, colon, value = line.partition(":")
        if not colon or not name or not set(name) <= _TOKEN_CHARS:
            raise _Refused(400, f"malformed header line {line[:100]!r}")
        key = name.lower()
        value = value.strip(" \t")
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    return method, target, version, headers


async def _read_body(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, version: str,
                     headers: Mapping[str, str]) -> bytes:
    coding, length = headers.get("transfer-encoding"), headers.get("content-length")
    if coding is not None and length is not None:
        raise _Refused(400, "both Content-Length and Transfer-Encoding")
    if coding is not None:
        if coding.strip().lower() != "chunked":
            raise _Refused(501, f"transfer coding {coding[:40]!r} not implemented")
        await _continue(writer, version, headers)
        return await _read_chunked(reader)
    if length is None:
        return b""
    if not length.isascii() or not length.isdigit():
        raise _Refused(400, f"bad Content-Length {length[:40]!r}")
    size = int(length)
    if size > limits.proxy_request_bytes_max:
        raise _Refused(413, f"request body larger than {limits.proxy_request_bytes_max} bytes")
    if size == 0:
        return b""
    await _continue(writer, version, headers)
    return await reader.readexactly(size)


async def _continue(writer: asyncio.StreamWriter, version: str, headers: Mapping[str, str]) -> None:
    """Answer ``Expect: 100-continue`` before reading a body the client holds back."""
    if version == "HTTP/1.1" and headers.get("expect", "").lower() == "100-continue":
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        await writer.drain()


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    body = bytearray()
    while True:
        line = await _read_line(reader)
        size_text = line[:-2].split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError as exc:
            raise _Refused(400, "malformed chunk size") from exc
        if size < 0 or len(body) + size > limits.proxy_request_bytes_max:
            raise _Refused(413, f"request body larger than {limits.proxy_request_bytes_max} bytes")
        if size == 0:
            break
        body += await reader.readexactly(size)
        if await reader.readexactly(2) != b"\r\n":
            raise _Refused(400, "malformed chunk")
    for _ in range(limits.proxy_request_headers_max + 1):  # trailer fields, ignored
        if await _read_line(reader) == b"\r\n":
            return bytes(body)
    raise _Refused(431, f"more than {limits.proxy_request_headers_max} trailer fields")


async def _read_line(reader: asyncio.StreamReader) -> bytes:
    try:
        return await reader.readuntil(b"\r\n")
    except asyncio.LimitOverrunError as exc:
        raise _Refused(400, "line of a chunked body too long") from exc


def _encode(response: Response, keep_alive: bool, head_only: bool, http10: bool = False) -> bytes:
    try:
        reason = http.HTTPStatus(response.status).phrase
    except ValueError:
        reason = ""
    lines = [f"HTTP/1.1 {response.status} {reason}", f"Date: {email.utils.formatdate(usegmt=True)}"]
    has_body = response.status not in (204, 304) and not 100 <= response.status < 200
    if has_body:
        if response.body:
            lines.append(f"Content-Type: {response.content_type}")
        lines.append(f"Content-Length: {len(response.body)}")
    if not keep_alive:
        lines.append("Connection: close")
    elif http10:
        lines.append("Connection: keep-alive")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head if head_only or not has_body else head + response.body
