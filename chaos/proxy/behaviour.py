"""What each toxic does to the items flowing through its stage (Toxiproxy's ``Pipe`` functions).

A pipe reads its stub's input and writes its stub's output until the stream
ends; it returns once it has passed on (or made) an :class:`End`. A link
interrupts a pipe by cancelling its task (to update, remove or add toxics on
a live connection); every pipe hands over what it holds before the
cancellation propagates, so an interruption loses no data (Toxiproxy's
"don't drop any data on the floor"):

* ``latency``, ``bandwidth``, ``slicer``: the held bytes go on at once;
* ``slow_close``, ``reset_peer``: the held item goes back to the input, so
  the next run (after an update) starts over, and after a removal it passes;
* ``timeout``: drops data by design; :data:`CLOSES_ON_REMOVAL` says that
  removing it closes the connections it held (Toxiproxy's ``Cleanup``).

Time is the event loop's clock; randomness (jitter, slice sizes) comes from
the ``rng`` the caller passes in, so a seeded proxy repeats its choices.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

from millpond.chaos.proxy.channel import Chunk, End, Item, Stub
from millpond.chaos.proxy.toxics import Toxic

__all__ = ["CLOSES_ON_REMOVAL", "PIPES", "Pipe", "noop", "slices"]

Pipe = Callable[[Toxic, Stub, random.Random], Coroutine[Any, Any, None]]

#: Toxic types whose removal closes the connections they applied to.
CLOSES_ON_REMOVAL = frozenset({"timeout"})


async def noop(toxic: Toxic, stub: Stub, rng: random.Random) -> None:
    """Pass everything on (also what runs when a toxic's toxicity roll says "not this connection")."""
    while True:
        item = await stub.input.get()
        await stub.send(item)
        if isinstance(item, End):
            return


async def latency(toxic: Toxic, stub: Stub, rng: random.Random) -> None:
    """Deliver each chunk ``latency`` ± ``jitter`` ms after it was read (not after the previous one,
    so throughput is kept); the order of chunks is kept."""
    loop = asyncio.get_running_loop()
    base_ms, jitter_ms = toxic.attributes["latency"], toxic.attributes["jitter"]
    while True:
        item = await stub.input.get()
        if isinstance(item, End):
            await stub.send(item)
            return
        delay_ms = base_ms + (rng.randrange(-jitter_ms, jitter_ms) if jitter_ms > 0 else 0)
        wait_s = delay_ms / 1000 - (loop.time() - item.timestamp)
        if wait_s > 0:
            await _pause(stub, wait_s, holding=item)
            item = Chunk(item.data, item.timestamp + wait_s)  # a later latency toxic adds to this one
        await stub.send(item)


async def bandwidth(toxic: Toxic, stub: Stub, rng: random.Random) -> None:
    """At most ``rate`` KB/s (1 KB = 1000 bytes, as in Toxiproxy): a chunk larger than 100 ms worth
    goes out in 100 ms pieces; idle time earns no burst. ``rate`` 0 means unlimited."""
    loop = asyncio.get_running_loop()
    rate = toxic.attributes["rate"]  # bytes per millisecond
    debt_s = 0.0  # sending time owed by the bytes passed so far
    while True:
        item = await stub.input.get()
        if isinstance(item, End):
            await stub.send(item)
            return
        if rate <= 0:
            await stub.send(item)
            continue
        data, stamp = item.data, item.timestamp
        debt_s += len(data) / (rate * 1000)
        piece = rate * 100
        while len(data) > piece:
            await _pause(stub, 0.1, holding=Chunk(data, stamp))
            await _send_keeping(stub, Chunk(data[:piece], stamp), rest=Chunk(data[piece:], stamp))
            data = data[piece:]
            debt_s -= 0.1
        started = loop.time()
        if debt_s > 0:
            await _pause(stub, debt_s, holding=Chunk(data, stamp))
        debt_s -= loop.time() - started  # sleeps overshoot: the next chunk makes up for it
        await stub.send(Chunk(data, stamp))


async def slow_close(toxic: Toxic, stub: Stub, rng: random.Random) -> None:
    """Pass data; hold the end of the stream ``delay`` ms before passing it on."""
    delay_s = toxic.attributes["delay"] / 1000
    while True:
        item = await stub.input.get()
        if isinstance(item, End):
            try:
                await asyncio.sleep(delay_s)
            except asyncio.CancelledError:
                stub.input.unget(item)
                raise
            await stub.send(item)
            return
        await stub.send(item)


async def timeout(toxic: Toxic, stub: Stub, rng: random.Random) -> None:
    """Drop all data (the sender is not slowed down) and hold the connection open; after ``timeout``
    ms (if not 0) close it. The end of the source is swallowed too: the connection stays held."""
    timeout_ms = toxic.attributes["timeout"]
    if timeout_ms == 0:
        await _drop_forever(stub)
        return
    try:
        async with asyncio.timeout(timeout_ms / 1000):
            await _drop_forever(stub)
    except TimeoutError:
        await stub.send(End())


async def reset_peer(toxic: Toxic, stub: Stub, rng: random.Random) -> None:
    """On the first data (or the end of the source), drop it, wait ``timeout`` ms, then reset the
    connection (SO_LINGER 0: both peers get an RST, ECONNRESET), as Toxiproxy's ``reset_peer``."""
    item = await stub.input.get()
    try:
        await asyncio.sleep(toxic.attributes["timeout"] / 1000)
    except asyncio.CancelledError:
        stub.input.unget(item)
        raise
    await stub.send(End(reset=True))


async def slicer(toxic: Toxic, stub: Stub, rng: random.Random) -> None:
    """Split each chunk into pieces of about ``average_size`` ± ``size_variation`` bytes, each sent
    separately, ``delay`` µs apart."""
    average, variation = toxic.attributes["average_size"], toxic.attributes["size_variation"]
    delay_s = toxic.attributes["delay"] / 1_000_000
    while True:
        item = await stub.input.get()
        if isinstance(item, End):
            await stub.send(item)
            return
        data, stamp = item.data, item.timestamp
        for start, end in slices(len(data), average, variation, rng):
            rest = Chunk(data[end:], stamp) if end < len(data) else None
            await _send_keeping(stub, Chunk(data[start:end], stamp), rest=rest)
            if delay_s > 0:
                await _pause(stub, delay_s, holding=rest)


async def limit_data(toxic: Toxic, stub: Stub, rng: random.Random) -> None:
    """Pass exactly ``bytes`` bytes in total (counted across updates of the toxic), then close."""
    limit = toxic.attributes["bytes"]
    while True:
        item = await stub.input.get()
        if isinstance(item, End):
            await stub.send(item)
            return
        passed: int = stub.state.get("bytes_passed", 0)
        data = item.data[:max(limit - passed, 0)]
        if data:
            stub.state["bytes_passed"] = passed + len(data)
            await stub.send(Chunk(data, item.timestamp))
        if limit - stub.state.get("bytes_passed", 0) <= 0:
            await stub.send(End())
            return


PIPES: Mapping[str, Pipe] = {
    "latency": latency,
    "bandwidth": bandwidth,
    "slow_close": slow_close,
    "timeout": timeout,
    "reset_peer": reset_peer,
    "slicer": slicer,
    "limit_data": limit_data,
    "noop": noop,
}


def slices(size: int, average: int, variation: int, rng: random.Random) -> list[tuple[int, int]]:
    """``(start, end)`` bounds cutting ``size`` bytes into pieces of about ``average`` ± ``variation``.

    Toxiproxy's halving: a span longer than ``average + variation`` is cut
    near its middle (± ``variation``) and both halves are cut again; so there
    is no tendency to a small piece at the start or the end. Every piece is
    non-empty; ``average`` must be >= 1.
    """
    if size == 0:
        return []
    pieces: list[tuple[int, int]] = []
    spans = [(0, size)]
    while spans:
        start, end = spans.pop()
        if (end - start) - average <= variation:
            pieces.append((start, end))
            continue
        offset = rng.randrange(-variation, variation) if variation > 0 else 0
        middle = min(max(start + (end - start) // 2 + offset, start + 1), end - 1)
        spans.append((middle, end))  # popped after the left half: pieces come out in order
        spans.append((start, middle))
    return pieces


async def _drop_forever(stub: Stub) -> None:
    ended = False
    while not ended:
        ended = isinstance(await stub.input.get(), End)
    await asyncio.Event().wait()  # the source ended: hold the connection until closed or interrupted


async def _pause(stub: Stub, seconds: float, holding: Item | None) -> None:
    """Sleep ``seconds``; if interrupted, pass ``holding`` on first."""
    try:
        await asyncio.sleep(seconds)
    except asyncio.CancelledError:
        if holding is not None:
            stub.flush(holding)
        raise


async def _send_keeping(stub: Stub, item: Item, rest: Item | None) -> None:
    """Send ``item``; if interrupted while waiting for room, pass ``rest`` on after it."""
    try:
        await stub.send(item)
    except asyncio.CancelledError:  # send() has put ``item`` already
        if rest is not None:
            stub.flush(rest)
        raise
