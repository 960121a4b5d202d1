"""The metadata log's state machine on every node (Raft group 0 → MetadataImage)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from millpond.controller import ApplyResult, MetadataImage
from millpond.raft import Entry, EntryKind, Snapshot, SoftState


class MetadataMachine:
    """Applies committed metadata entries to the node's :class:`MetadataImage`.

    ``on_change`` is called after every applied record that changed partitions
    (and after a snapshot restore, with ``None``) so the node can reconcile
    the partition replicas it hosts.
    """

    def __init__(self, on_change: Callable[[ApplyResult | None], None]) -> None:
        self.image = MetadataImage()
        self._on_change = on_change
        self._waiters: list[asyncio.Future[None]] = []

    def apply(self, entry: Entry) -> object:
        if entry.kind != EntryKind.CONTROL:
            self.image.mark_applied(entry.index)
            return None
        result = self.image.apply(entry.index, entry.data)
        if result.ok:
            self._on_change(result)
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._waiters.clear()
        return result

    async def wait_until(self, condition: Callable[[MetadataImage], bool], timeout_s: float) -> bool:
        """Wait until ``condition(image)`` holds after some applied record; False on timeout."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        while not condition(self.image):
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                return False
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(waiter, remaining)
        return True

    def restore(self, snapshot: Snapshot) -> None:
        self.image = MetadataImage.restore(snapshot.data) if snapshot.data else MetadataImage()
        self._on_change(None)

    def on_soft_state(self, soft: SoftState, term: int) -> None:
        """Controller start/stop is driven by the node's controller loop, which polls."""
