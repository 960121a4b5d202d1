"""What a workload is, to the runner: set up, drive the cluster while faults happen, read back.

A workload owns its topic(s) and its processes. The runner gives it a
:class:`WorkloadContext` (client addresses, the history recorder, a seeded
random generator, the run's clock) and calls, in order: :meth:`Workload.setup`
(create topics, wait for leaders; no faults yet), :meth:`Workload.run` (until
``stop`` is set; the nemesis is active meanwhile), then, after the runner healed
every fault, :meth:`Workload.final` (read everything back; report the replicas'
state). Each workload names the checker set that judges its history and the
anomaly types it *expects* (``allowed``): those are reported, not failed.

Later workloads (consumer groups, queues, transactions, the exactly-once
pipeline) implement the same protocol and register themselves in
:mod:`millpond.chaos.workloads.registry`.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from millpond.chaos.history import HistoryRecorder


@dataclass
class WorkloadContext:
    """What the runner hands a workload."""

    #: Client-facing address of every node, by node id.
    addresses: Mapping[int, str]
    history: HistoryRecorder
    rng: random.Random
    #: Seconds since the run started (the history's clock).
    now: Callable[[], float]
    #: Free-form options from the command line (``--opt k=v``), validated by the workload.
    options: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class FinalState:
    """What the workload learned after healing, for the checkers beyond the history.

    ``replicas``: ``{"<topic>/<p>": {"<node>": {"commit_index", "upto", "checksum"}}}`` (see
    :mod:`millpond.chaos.checkers.replicas`). ``notes``: facts for the report.
    """

    replicas: dict[str, dict[str, dict[str, Any]]]
    notes: dict[str, Any] = field(default_factory=dict)


class Workload(Protocol):
    """One kind of chaos workload."""

    #: Registry name (``--workload``).
    name: str
    #: One line for ``--list``.
    description: str
    #: Checker set name in :mod:`millpond.chaos.checkers.registry`.
    checker: str
    #: Anomaly types this workload expects by design (reported as allowed, not failures).
    allowed: frozenset[str]
    #: Extra node flags the workload needs (e.g. the negative control's unsafe flag).
    node_args: tuple[str, ...]
    #: The topic and partitions the nemesis may target (``leader`` faults pick among these).
    topic: str
    partitions: int

    async def setup(self, ctx: WorkloadContext) -> None:
        """Create what the run needs; raise if the cluster cannot serve it (a harness error)."""
        ...

    async def run(self, ctx: WorkloadContext, stop: asyncio.Event) -> None:
        """Drive the cluster, recording every operation, until ``stop`` is set; return promptly."""
        ...

    async def final(self, ctx: WorkloadContext, deadline_s: float) -> FinalState:
        """After healing: read everything back (recorded in the history) within ``deadline_s``."""
        ...
