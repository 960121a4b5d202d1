"""One named proxy: a listener, the connections it accepted, and the toxics applied to them.

Toxiproxy's ``Proxy`` semantics:

* enabled means listening: disabling closes the listener (new connections are
  refused) and closes every open connection; enabling binds ``listen`` again;
* ``listen`` is replaced by the address actually bound (port 0 picks a free
  port; ``localhost`` becomes ``127.0.0.1``), so re-enabling gets the same port;
* changing ``listen`` or ``upstream`` restarts the proxy and drops its
  connections (unless ``listen`` names the bound address another way, as in
  Toxiproxy 2.12);
* each accepted client gets its own upstream connection; if the upstream
  cannot be reached the client is closed;
* toxic changes apply to the connections already open (see ``link.py``).

Changes (toxics, enabling, addresses) are serialised by one lock per proxy.
"""

from __future__ import annotations

import asyncio
import errno
import random
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from millpond import limits
from millpond.chaos.proxy import errors
from millpond.chaos.proxy.addresses import format_address, listening_socket, parse_address
from millpond.chaos.proxy.connection import Connection
from millpond.chaos.proxy.tasks import TaskOwner
from millpond.chaos.proxy.toxics import STREAMS, Toxic
from millpond.invariant import invariant

__all__ = ["Proxy", "ProxyStatistics"]

@dataclass(frozen=True, slots=True)
class ProxyStatistics:
    """Counters of one proxy since it was created."""

    connections_open: int
    connections_accepted: int
    connections_refused: int
    upstream_failures: int
    toxics: int


class Proxy:
    """A named TCP proxy from ``listen`` to ``upstream``; starts disabled (call :meth:`enable`)."""

    def __init__(self, name: str, listen: str, upstream: str, rng: random.Random,
                 on_failure: Callable[[BaseException], None]) -> None:
        self.name = name
        self.listen = listen
        self.upstream = upstream
        self.enabled = False
        self._rng = rng
        self._on_failure = on_failure
        self._toxics: dict[str, Toxic] = {}
        self._server: asyncio.Server | None = None
        self._generation = 0  # grows at every start and stop: a late accept of an old listener is dropped
        self._connections: dict[Connection, asyncio.Task[Any]] = {}
        self._connecting: set[asyncio.Task[Any]] = set()
        self._tasks = TaskOwner(f"proxy {name}", on_failure)
        self._lock = asyncio.Lock()
        self._accepted = 0
        self._refused = 0
        self._upstream_failures = 0

    # --- state -------------------------------------------------------------------------------

    def toxics(self) -> list[Toxic]:
        """The toxics, upstream ones first, each stream in the order they were added (as Toxiproxy lists)."""
        return sorted(self._toxics.values(), key=lambda toxic: STREAMS.index(toxic.stream))

    def toxic(self, name: str) -> Toxic:
        """The toxic ``name``; raises :class:`~millpond.chaos.proxy.errors.ApiError` 404 if absent."""
        toxic = self._toxics.get(name)
        if toxic is None:
            raise errors.toxic_not_found()
        return toxic

    def to_json(self) -> dict[str, Any]:
        """Toxiproxy's JSON form of a proxy, with its toxics."""
        return {"name": self.name, "listen": self.listen, "upstream": self.upstream,
                "enabled": self.enabled, "toxics": [toxic.to_json() for toxic in self.toxics()]}

    def statistics(self) -> ProxyStatistics:
        return ProxyStatistics(len(self._connections), self._accepted, self._refused,
                               self._upstream_failures, len(self._toxics))

    async def same_addresses(self, listen: str, upstream: str) -> bool:
        """True if ``listen`` and ``upstream`` describe this proxy as it is (``listen`` may name the
        bound address by another host name)."""
        return upstream == self.upstream and await self._same_listen(listen)

    # --- changes -----------------------------------------------------------------------------

    async def enable(self) -> None:
        """Listen (idempotent). Raises ApiError 409 if the address is in use, 400 if it is unusable."""
        async with self._lock:
            await self._start()

    async def disable(self) -> None:
        """Stop listening and close every connection (idempotent)."""
        async with self._lock:
            await self._stop()

    async def update(self, listen: str, upstream: str, enabled: bool) -> None:
        """Toxiproxy's proxy update: new addresses restart the proxy; then enable or disable it.

        Raises ApiError (409/400) if it must listen and cannot; it is then left disabled.
        """
        async with self._lock:
            if upstream != self.upstream or not await self._same_listen(listen):
                await self._stop()
                self.listen, self.upstream = listen, upstream
            if enabled:
                await self._start()
            else:
                await self._stop()

    async def add_toxic(self, toxic: Toxic) -> None:
        """Add ``toxic``, also to open connections. Raises ApiError 409 if the name is taken or the
        proxy holds ``proxy_toxics_max`` toxics."""
        async with self._lock:
            if toxic.name in self._toxics:
                raise errors.toxic_already_exists()
            if len(self._toxics) >= limits.proxy_toxics_max:
                raise errors.too_many("toxics on one proxy", limits.proxy_toxics_max)
            self._toxics[toxic.name] = toxic
            for connection in list(self._connections):
                connection.links[toxic.stream].add(toxic)

    async def update_toxic(self, name: str, toxicity: float | None, attributes: Mapping[str, Any]) -> Toxic:
        """Merge ``attributes`` (and ``toxicity`` unless None) into the toxic ``name``; open connections
        run the new settings at once. Raises ApiError 404 (no such toxic) or 400 (bad values)."""
        async with self._lock:
            toxic = self.toxic(name).updated(toxicity, attributes)
            self._toxics[name] = toxic
            await asyncio.gather(*(connection.links[toxic.stream].update(toxic)
                                   for connection in list(self._connections)))
            return toxic

    async def remove_toxic(self, name: str) -> None:
        """Remove the toxic ``name`` from the proxy and its open connections. Raises ApiError 404."""
        async with self._lock:
            await self._remove_toxic(self.toxic(name))

    async def reset_toxics(self) -> None:
        """Remove every toxic."""
        async with self._lock:
            for toxic in self.toxics():
                await self._remove_toxic(toxic)

    async def close(self) -> None:
        """Stop listening, close every connection, and end every task of this proxy."""
        async with self._lock:
            await self._stop()
        await self._tasks.close()

    # --- internals ---------------------------------------------------------------------------

    async def _remove_toxic(self, toxic: Toxic) -> None:
        del self._toxics[toxic.name]
        await asyncio.gather(*(connection.links[toxic.stream].remove(toxic.name)
                               for connection in list(self._connections)))

    async def _same_listen(self, listen: str) -> bool:
        if listen == self.listen:
            return True
        try:
            host, port = parse_address(listen)
            bound_host, bound_port = parse_address(self.listen)
            if port != bound_port or port == 0 or not host:
                return False
            infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (ValueError, OSError):
            return False
        return any(info[4][0] == bound_host for info in infos)

    async def _start(self) -> None:
        if self.enabled:
            return
        sock = await _bind(self.listen)
        try:
            self._server = await asyncio.start_server(self._accept, sock=sock)
        except BaseException:
            sock.close()
            raise
        host, port = sock.getsockname()[:2]
        self.listen = format_address(host, port)
        self.enabled = True
        self._generation += 1

    async def _stop(self) -> None:
        if not self.enabled:
            return
        self.enabled = False
        self._generation += 1
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for connection in self._connections:
            connection.close()
        for task in self._connecting:
            task.cancel()
        pending = [*self._connections.values(), *self._connecting]
        if pending:
            await asyncio.wait(pending)
        if server is not None:
            await server.wait_closed()

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.enabled or len(self._connections) + len(self._connecting) >= limits.proxy_connections_max:
            self._refused += 1
            writer.close()
            return
        self._accepted += 1
        task = self._tasks.spawn(self._serve(reader, writer, self._generation),
                                 name=f"client {writer.get_extra_info('peername')}")
        self._connecting.add(task)

    async def _serve(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter,
                     generation: int) -> None:
        task = asyncio.current_task()
        invariant(task is not None, "a proxied client is served outside a task", proxy=self.name)
        assert task is not None  # for the type checker; the invariant above holds under -O too
        try:
            upstream = await self._dial_upstream()
        except BaseException:
            client_writer.close()
            raise
        finally:
            self._connecting.discard(task)
        if upstream is None or generation != self._generation:
            client_writer.close()
            if upstream is not None:
                upstream[1].close()
            return
        peer = client_writer.get_extra_info("peername")
        connection = Connection(f"proxy {self.name} client {peer}", (client_reader, client_writer), upstream,
                                self.toxics(), self._rng, self._on_failure)
        self._connections[connection] = task
        try:
            await connection.run()
        finally:
            del self._connections[connection]

    async def _dial_upstream(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        try:
            host, port = parse_address(self.upstream)
            async with asyncio.timeout(limits.proxy_upstream_connect_ms_max / 1000):
                return await asyncio.open_connection(host or "127.0.0.1", port)
        except (OSError, TimeoutError, ValueError):
            self._upstream_failures += 1
            return None


async def _bind(listen: str) -> socket.socket:
    """A listening socket on ``listen``; raises ApiError 409 (address in use) or 400 (anything else)."""
    try:
        host, port = parse_address(listen)
    except ValueError as exc:
        raise errors.listen_failed(listen, str(exc), in_use=False) from exc
    try:
        return await listening_socket(host, port)
    except socket.gaierror as exc:
        raise errors.listen_failed(listen, f"lookup {host}: {exc.strerror or exc}", in_use=False) from exc
    except OSError as exc:
        detail = f"bind: {(exc.strerror or str(exc)).lower()}"
        raise errors.listen_failed(listen, detail, in_use=exc.errno == errno.EADDRINUSE) from exc
