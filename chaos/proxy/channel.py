"""What flows between the stages of a link, and the bounded channel it flows through.

A link (one direction of one proxied connection) is a pipeline, as in
Toxiproxy::

    source socket ─▶ reader ─▶ [channel] ─▶ toxic ─▶ [channel] ─▶ toxic ─▶ [channel] ─▶ writer ─▶ dest socket

Items are :class:`Chunk` (bytes read at a moment) and :class:`End` (the
stream is over: close the destination, with an RST if ``reset``). A
:class:`Channel` is a FIFO bounded in bytes; a :class:`Stub` is one stage's
view of the pipeline: the channel it reads, the channel it writes (which the
link may switch while the stage runs: that is how toxics are added and removed
on live connections), and the stage's state that survives a toxic's update.

Bounds: a sender waits while the channel holds ``proxy_channel_bytes_max``
bytes or more, so a channel holds at most that plus one chunk; an
:class:`End` and a chunk flushed by an interrupted stage never wait (a
stage that is being cancelled must not block, and must not lose data), which
adds at most one chunk per interruption.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass
from typing import Any

from millpond import limits

__all__ = ["Channel", "Chunk", "End", "Item", "Stub"]


@dataclass(frozen=True, slots=True)
class Chunk:
    """Bytes read from the source at ``timestamp`` (event-loop clock, seconds)."""

    data: bytes
    timestamp: float


@dataclass(frozen=True, slots=True)
class End:
    """The stream is over: the writer closes its destination (with an RST if ``reset``)."""

    reset: bool = False


Item = Chunk | End


class Channel:
    """A FIFO of items between two stages, bounded in bytes.

    Single event loop, no locks: every state change wakes every waiter, and
    waiters re-check their condition (there are at most a handful).
    """

    def __init__(self, bytes_max: int = limits.proxy_channel_bytes_max) -> None:
        self._items: deque[Item] = deque()
        self._bytes = 0
        self._bytes_max = bytes_max
        self._waiters: list[asyncio.Future[None]] = []

    def __len__(self) -> int:
        return len(self._items)

    def has_room(self) -> bool:
        """True if a sender may add a chunk without waiting."""
        return self._bytes < self._bytes_max

    def put(self, item: Item) -> None:
        """Append ``item`` now, whatever the bound (callers wait for :meth:`has_room` first)."""
        self._items.append(item)
        if isinstance(item, Chunk):
            self._bytes += len(item.data)
        self.notify()

    def unget(self, item: Item) -> None:
        """Put ``item`` back at the head: a stage interrupted while holding it hands it to its successor."""
        self._items.appendleft(item)
        if isinstance(item, Chunk):
            self._bytes += len(item.data)
        self.notify()

    async def get(self) -> Item:
        """Remove and return the head item, waiting for one. Cancelling the wait loses nothing."""
        while not self._items:
            await self.changed()
        item = self._items.popleft()
        if isinstance(item, Chunk):
            self._bytes -= len(item.data)
        self.notify()
        return item

    def drain(self) -> list[Item]:
        """Remove and return every queued item, in order."""
        items = list(self._items)
        self._items.clear()
        self._bytes = 0
        self.notify()
        return items

    async def changed(self) -> None:
        """Wait until the channel changes (or :meth:`notify` is called)."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        finally:
            if not waiter.done():
                self._waiters.remove(waiter)

    def notify(self) -> None:
        """Wake everyone waiting on this channel so that they re-check their condition."""
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)


class Stub:
    """One stage's place in a link: its input, its (switchable) output, and its state.

    ``state`` belongs to the stage, not to one run of its toxic: a toxic that
    counts (``limit_data``) keeps counting across updates of its attributes.
    ``active`` records whether the toxic applies to this link (its toxicity
    roll), so that removing a ``timeout`` closes only the connections it held.
    """

    def __init__(self, input: Channel, output: Channel) -> None:
        self.input = input
        self.output = output
        self.state: dict[str, Any] = {}
        self.active = False

    async def send(self, item: Item) -> None:
        """Pass ``item`` to the output, waiting for room; an :class:`End` never waits.

        The output is looked up after each wait, so a switch of output by the
        link is followed. If the wait is cancelled (the stage is interrupted),
        the item is put anyway before the cancellation propagates: nothing is lost.
        """
        while True:
            output = self.output
            if isinstance(item, End) or output.has_room():
                output.put(item)
                return
            try:
                await output.changed()
            except asyncio.CancelledError:
                self.output.put(item)
                raise

    def flush(self, item: Item) -> None:
        """Put ``item`` to the output at once: an interrupted stage hands over what it holds."""
        self.output.put(item)
