"""``ProxyServer``: a Toxiproxy-compatible fault proxy running in the caller's event loop.

::

    server = ProxyServer("127.0.0.1", 0, seed=7)
    host, port = await server.start()          # the API address (port 0: a free one)
    ...                                        # drive it with toxiproxy-python, or server.collection
    await server.close()                       # listeners, connections and tasks: all gone

A bug (an exception escaping any of its tasks) stops the whole server
(fail-stop): :meth:`ProxyServer.wait_closed` then raises it. Operating errors
(a client or upstream gone, a bad request) never do.
"""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass
from types import TracebackType

from millpond import limits
from millpond.chaos.proxy.api import Api, error_response
from millpond.chaos.proxy.collection import ProxyCollection
from millpond.chaos.proxy.http import HttpServer

__all__ = ["ProxyServer", "ServerStatistics", "check_limit_relations"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ServerStatistics:
    """A snapshot of a fault-proxy server: its proxies and what went through them."""

    proxies: int
    proxies_enabled: int
    toxics: int
    connections_open: int
    connections_accepted: int
    connections_refused: int
    upstream_failures: int
    api_requests: int


def check_limit_relations() -> None:
    """Raise ``ValueError`` if the fault proxy's limits in :mod:`millpond.limits` contradict each other."""
    problems = []
    if limits.proxy_read_chunk_bytes > limits.proxy_channel_bytes_max:
        problems.append("proxy_read_chunk_bytes must be <= proxy_channel_bytes_max")
    if min(limits.proxy_proxies_max, limits.proxy_toxics_max, limits.proxy_connections_max,
           limits.proxy_api_connections_max, limits.proxy_read_chunk_bytes) < 1:
        problems.append("proxy counts and chunk sizes must be >= 1")
    if limits.proxy_request_head_bytes_max < 1024:
        problems.append("proxy_request_head_bytes_max must be >= 1024 (a request line and a few headers)")
    if problems:
        raise ValueError("; ".join(problems))


class ProxyServer:
    """Toxiproxy's HTTP API on ``host:port`` and the proxies it creates.

    ``seed`` makes every random choice (toxicity rolls, jitter, slice sizes)
    repeatable; None draws one from the OS.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 8474, seed: int | None = None) -> None:
        check_limit_relations()
        self._host = host
        self._port = port
        self.collection = ProxyCollection(random.Random(seed), self._fail)
        self._http = HttpServer(Api(self.collection).handle, error_response, self._fail)
        self._closed = asyncio.Event()
        self._closing: asyncio.Task[None] | None = None
        self._failure: BaseException | None = None
        self.address: tuple[str, int] | None = None

    async def start(self) -> tuple[str, int]:
        """Listen for API requests; return the bound ``(host, port)``. Raises OSError if it cannot."""
        self.address = await self._http.start(self._host, self._port)
        return self.address

    async def close(self) -> None:
        """Stop the API, then every proxy and connection (idempotent; concurrent calls wait for the first)."""
        if self._closing is None:
            self._closing = asyncio.get_running_loop().create_task(self._close())
        await asyncio.shield(self._closing)

    async def wait_closed(self) -> None:
        """Wait until the server is closed; raise the exception that stopped it, if a bug did."""
        await self._closed.wait()
        if self._failure is not None:
            raise self._failure

    @property
    def failure(self) -> BaseException | None:
        """The exception that stopped the server (a bug), or None."""
        return self._failure

    def statistics(self) -> ServerStatistics:
        proxies = list(self.collection.proxies().values())
        stats = [proxy.statistics() for proxy in proxies]
        return ServerStatistics(
            proxies=len(proxies),
            proxies_enabled=sum(proxy.enabled for proxy in proxies),
            toxics=sum(s.toxics for s in stats),
            connections_open=sum(s.connections_open for s in stats),
            connections_accepted=sum(s.connections_accepted for s in stats),
            connections_refused=sum(s.connections_refused for s in stats),
            upstream_failures=sum(s.upstream_failures for s in stats),
            api_requests=self._http.requests,
        )

    async def __aenter__(self) -> ProxyServer:
        await self.start()
        return self

    async def __aexit__(self, kind: type[BaseException] | None, value: BaseException | None,
                        traceback: TracebackType | None) -> None:
        await self.close()

    async def _close(self) -> None:
        try:
            await self._http.close()
            await self.collection.close()
        finally:
            self._closed.set()

    def _fail(self, exc: BaseException) -> None:
        """A task died of an exception: a bug. Remember the first, and stop everything."""
        if self._failure is None:
            self._failure = exc
            log.error("fault proxy stopped by an unexpected error", exc_info=exc)
        if self._closing is None:
            self._closing = asyncio.get_running_loop().create_task(self._close())
