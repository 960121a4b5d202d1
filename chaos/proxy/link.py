"""One direction of one proxied connection: reader → toxic stages → writer, re-linked live.

Toxiproxy's ``ToxicLink``::

    source ─▶ reader ─▶ ch ─▶ stage(toxic 1) ─▶ ch ─▶ stage(toxic 2) ─▶ ch(sink) ─▶ writer ─▶ dest

Every stage is a task running its toxic's pipe (``behaviour.py``), or a
``noop`` pipe when the toxic's toxicity roll for this link said no. Toxics
change on live links, in order and without losing data:

* :meth:`Link.add` appends a stage before the writer: the last stage's output
  switches to the new stage's input; what was queued for the writer stays
  ahead of it.
* :meth:`Link.update` interrupts the stage (its pipe hands over what it holds)
  and runs the new settings on the same channels and state, rolling the
  toxicity again (as Toxiproxy re-runs the stub).
* :meth:`Link.remove` interrupts the stage, moves its queued input to its
  output, and points the previous stage at that output. Removing a
  ``timeout`` that applied closes the connection instead (Toxiproxy's
  ``Cleanup``).

The writer ends the link at the first :class:`End` (or when writing fails)
and tells its owner, the connection, which closes sockets.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Sequence

from millpond import limits
from millpond.chaos.proxy.behaviour import CLOSES_ON_REMOVAL, PIPES, noop
from millpond.chaos.proxy.channel import Channel, Chunk, End, Stub
from millpond.chaos.proxy.tasks import TaskOwner
from millpond.chaos.proxy.toxics import Toxic

__all__ = ["Link"]


class _Stage:
    """A toxic's place in a link: its settings, its stub, and the task running its pipe."""

    def __init__(self, toxic: Toxic, stub: Stub) -> None:
        self.toxic = toxic
        self.stub = stub
        self.task: asyncio.Task[None] | None = None


class Link:
    """One direction (``upstream``: client → server, ``downstream``: server → client) of a connection.

    Construct it inside the event loop (the stages of ``toxics`` start at once).
    ``on_end(link, end)`` is called once, when the writer stops: at an
    :class:`End` from the chain, or with ``End()`` when writing to the
    destination failed. The owner closes sockets; it sets :attr:`closed` when
    tearing the connection down, after which toxic changes are ignored.
    """

    def __init__(self, stream: str, source: asyncio.StreamReader, dest: asyncio.StreamWriter,
                 toxics: Sequence[Toxic], rng: random.Random, tasks: TaskOwner,
                 on_end: Callable[[Link, End], None]) -> None:
        self.stream = stream
        self.dest = dest
        self.closed = False
        self._source = source
        self._rng = rng
        self._tasks = tasks
        self._on_end = on_end
        self._sink = Channel()
        self._reader = Stub(Channel(), self._sink)  # the reader only uses its output
        self._stages: list[_Stage] = []
        for toxic in toxics:  # stages exist (and take changes) from now on, even before start()
            self._append(toxic)

    def start(self) -> None:
        """Start moving bytes: the reader and the writer."""
        self._tasks.spawn(self._read(), name=f"{self.stream} reader")
        self._tasks.spawn(self._write(), name=f"{self.stream} writer")

    def add(self, toxic: Toxic) -> None:
        """Append ``toxic`` to the chain (it applies to data read from now on)."""
        if not self.closed:
            self._append(toxic)

    async def update(self, toxic: Toxic) -> None:
        """Run the toxic named ``toxic.name`` with new settings; a toxic not in the chain is ignored."""
        stage = self._find(toxic.name)
        if stage is None:
            return
        await self._interrupt(stage)
        if not self.closed:
            stage.toxic = toxic
            self._run(stage)

    async def remove(self, name: str) -> None:
        """Take the toxic ``name`` out of the chain, passing on what it held; unknown names are ignored."""
        stage = self._find(name)
        if stage is None:
            return
        await self._interrupt(stage)
        if self.closed or stage not in self._stages:
            return
        index = self._stages.index(stage)
        stub = stage.stub
        if stub.active and stage.toxic.type in CLOSES_ON_REMOVAL:
            stub.flush(End())
        for item in stub.input.drain():
            stub.output.put(item)
        previous = self._stages[index - 1].stub if index > 0 else self._reader
        previous.output = stub.output
        del self._stages[index]

    def _append(self, toxic: Toxic) -> None:
        channel = Channel()
        stage = _Stage(toxic, Stub(channel, self._sink))
        previous = self._stages[-1].stub if self._stages else self._reader
        replaced, previous.output = previous.output, channel
        replaced.notify()  # a sender waiting for room there re-reads its output
        self._stages.append(stage)
        self._run(stage)

    def _find(self, name: str) -> _Stage | None:
        if self.closed:
            return None
        return next((stage for stage in self._stages if stage.toxic.name == name), None)

    def _run(self, stage: _Stage) -> None:
        toxic = stage.toxic
        stage.stub.active = self._rng.random() < toxic.toxicity
        pipe = PIPES[toxic.type] if stage.stub.active else noop
        stage.task = self._tasks.spawn(pipe(toxic, stage.stub, self._rng),
                                       name=f"{self.stream} toxic {toxic.name}")

    async def _interrupt(self, stage: _Stage) -> None:
        task = stage.task
        if task is not None and not task.done():
            task.cancel()
            await asyncio.wait([task])

    async def _read(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                data = await self._source.read(limits.proxy_read_chunk_bytes)
                if not data:
                    break
                await self._reader.send(Chunk(data, loop.time()))
        except OSError:
            pass  # the source reset: the stream ends as at EOF (Toxiproxy does the same)
        await self._reader.send(End())

    async def _write(self) -> None:
        end = End()  # if writing fails, the destination is gone: end this direction
        while True:
            item = await self._sink.get()
            if isinstance(item, End):
                end = item
                break
            try:
                self.dest.write(item.data)
                await self.dest.drain()
            except OSError:
                break
        self._on_end(self, end)
