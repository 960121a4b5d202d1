"""One proxied TCP connection: a client, its upstream, and the two links between them.

Closing follows Toxiproxy (no half-close): when a link's writer reaches the
end of its stream it closes its destination socket completely; the other
link's reader then sees the end of that socket, its own end travels through
its toxics (a ``slow_close`` holds it, a ``latency`` lets earlier data pass
first) and its writer closes the other socket. The connection is over when
both links ended, or at once when a toxic resets it (SO_LINGER 0 on both
sockets, so both peers get an RST) or its proxy closes it.

A socket whose peer never reads could keep a graceful close waiting for
buffered bytes forever: after ``proxy_close_ms_max`` it is aborted.
"""

from __future__ import annotations

import asyncio
import random
import socket
import struct
from collections.abc import Callable, Sequence

from millpond import limits
from millpond.chaos.proxy.channel import End
from millpond.chaos.proxy.link import Link
from millpond.chaos.proxy.tasks import TaskOwner
from millpond.chaos.proxy.toxics import Toxic

__all__ = ["Connection"]

Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class Connection:
    """A client connection and its upstream, piped both ways through the proxy's toxics.

    Create it and register it with its proxy without an ``await`` in between
    (the proxy's toxic changes reach every registered connection, and the
    toxics given here are the ones in force when it was created), then await
    :meth:`run`.
    """

    def __init__(self, label: str, client: Streams, upstream: Streams, toxics: Sequence[Toxic],
                 rng: random.Random, on_failure: Callable[[BaseException], None]) -> None:
        self.label = label
        self._client_writer = client[1]
        self._upstream_writer = upstream[1]
        self._tasks = TaskOwner(label, on_failure)
        self._finished = asyncio.Event()
        self._ended: set[str] = set()
        self.links = {
            "upstream": Link("upstream", client[0], upstream[1],
                             [toxic for toxic in toxics if toxic.stream == "upstream"], rng, self._tasks,
                             self._link_ended),
            "downstream": Link("downstream", upstream[0], client[1],
                               [toxic for toxic in toxics if toxic.stream == "downstream"], rng, self._tasks,
                               self._link_ended),
        }

    async def run(self) -> None:
        """Pipe both directions until the connection is over, then release everything it holds."""
        for link in self.links.values():
            link.start()
        try:
            await self._finished.wait()
        finally:
            await self._shutdown()

    def close(self) -> None:
        """End the connection now (its proxy was disabled or deleted): both sockets are closed."""
        self._finished.set()

    def _link_ended(self, link: Link, end: End) -> None:
        if end.reset:
            self._reset()
            return
        if not link.dest.is_closing():
            link.dest.close()  # FIN once buffered bytes are out; the other link's reader sees EOF
            self._tasks.spawn(self._abort_if_stuck(link.dest), name=f"{link.stream} close watchdog")
        self._ended.add(link.stream)
        if len(self._ended) == len(self.links):
            self._finished.set()

    def _reset(self) -> None:
        for writer in (self._client_writer, self._upstream_writer):
            sock = writer.get_extra_info("socket")
            if sock is not None:
                try:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                except OSError:
                    pass  # already closed
            writer.transport.abort()
        self._finished.set()

    async def _abort_if_stuck(self, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(limits.proxy_close_ms_max / 1000):
                await writer.wait_closed()
        except TimeoutError:
            writer.transport.abort()
        except OSError:
            pass  # closed with an error: closed all the same

    async def _shutdown(self) -> None:
        for link in self.links.values():
            link.closed = True
        await self._tasks.close()
        writers = (self._client_writer, self._upstream_writer)
        for writer in writers:
            if not writer.is_closing():
                writer.close()
        try:
            async with asyncio.timeout(limits.proxy_close_ms_max / 1000):
                await asyncio.gather(*(writer.wait_closed() for writer in writers), return_exceptions=True)
        except TimeoutError:
            for writer in writers:
                writer.transport.abort()
