"""Test tools for the controller: a one-node metadata log, a clock that tests advance, a cluster driver.

The log is not a mock: ``propose`` applies the record to a real
:class:`MetadataImage` at the next index, as a single-node Raft group would
once the entry commits. The clock is an input: time passes only when a test
says so.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from typing import Any

from millpond.controller import (
    ActiveController,
    ApplyResult,
    ControllerSettings,
    HeartbeatResult,
    LeaderReport,
    MetadataImage,
)
from millpond.errors import NotController

FAST = ControllerSettings(
    heartbeat_interval_ms=100,
    session_timeout_ms=1_000,
    replica_lag_ms_max=500,
    replacement_delay_ms=5_000,
    leader_balance_interval_ms=1_000,
    leader_transfers_per_interval_max=2,
)


def async_test(test: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Run an ``async def`` test in a fresh event loop (no plugin needed)."""

    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> None:
        asyncio.run(test(*args, **kwargs))

    return run


@dataclass
class Clock:
    """Monotonic milliseconds that move only when told to."""

    now: int = 0

    def __call__(self) -> int:
        return self.now

    def advance(self, ms: int) -> None:
        self.now += ms


@dataclass
class SingleNodeLog:
    """The metadata log of a one-node Raft group: each proposal commits and applies at once."""

    image: MetadataImage = field(default_factory=MetadataImage)
    entries: list[bytes] = field(default_factory=list)
    leader: bool = True

    async def propose(self, data: bytes) -> ApplyResult:
        await asyncio.sleep(0)  # a real proposal waits for the commit; let others run meanwhile
        if not self.leader:
            raise NotController("this node lost the metadata log's leadership")
        self.entries.append(data)
        return self.image.apply(self.image.applied_index + 1, data)

    def replay(self) -> MetadataImage:
        """A fresh image that applied every entry (what a follower of the log holds)."""
        image = MetadataImage()
        for index, data in enumerate(self.entries, start=1):
            image.apply(index, data)
        return image


class Cluster:
    """An active controller over a single-node log, and helpers to act as its nodes."""

    def __init__(self, settings: ControllerSettings = FAST, log: SingleNodeLog | None = None,
                 clock: Clock | None = None) -> None:
        self.log = log or SingleNodeLog()
        self.clock = clock or Clock()
        self.settings = settings
        self.controller = ActiveController(self.log.image, self.log.propose, self.clock, settings)
        self.epochs: dict[int, int] = {}

    @property
    def image(self) -> MetadataImage:
        return self.log.image

    def failover(self) -> ActiveController:
        """A new active controller on the same log (fresh in-memory state and timers)."""
        self.controller = ActiveController(self.log.image, self.log.propose, self.clock, self.settings)
        return self.controller

    async def start_nodes(self, node_ids: Iterable[int]) -> None:
        """Register each node and heartbeat it once, caught up: all are live."""
        for node_id in node_ids:
            self.epochs[node_id] = await self.controller.register_node(node_id, f"127.0.0.1:{9090 + node_id}",
                                                                       incarnation=1000 + node_id)
        for node_id in node_ids:
            result = await self.heartbeat(node_id)
            assert result.alive

    async def heartbeat(self, node_id: int, reports: Iterable[LeaderReport] = (),
                        applied: int | None = None) -> HeartbeatResult:
        """A heartbeat from ``node_id`` with its current epoch; caught up unless ``applied`` is given."""
        return await self.controller.heartbeat(
            node_id, self.epochs[node_id], self.image.applied_index if applied is None else applied,
            list(reports))

    async def heartbeat_all(self, node_ids: Iterable[int]) -> None:
        for node_id in node_ids:
            await self.heartbeat(node_id)
