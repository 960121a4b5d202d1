"""The simulated network: latency, loss, duplication, reordering and partitions.

Every message is delivered after a random latency, so messages overtake one
another; some take a long detour (reordering well past a heartbeat). A
partition is a set of cut *directed* links, so it can be symmetric (both
directions cut) or asymmetric (a node hears but is not heard). A link is
checked when a message is sent and again when it arrives: a message in flight
when a partition starts is lost, as on a real connection that breaks.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from millpond.raft.messages import Message
from millpond.raft.sim.faults import FaultModel
from millpond.raft.sim.scheduler import Scheduler
from millpond.raft.sim.trace import Trace, describe


@dataclass
class NetworkStatistics:
    """Counters of what happened to messages."""

    sent: int = 0
    delivered: int = 0
    dropped: int = 0
    cut: int = 0
    duplicated: int = 0
    delayed: int = 0


class Network:
    """Carries messages between nodes through the scheduler, faulting them per ``faults``."""

    def __init__(
        self,
        scheduler: Scheduler,
        rng: random.Random,
        faults: FaultModel,
        deliver: Callable[[Message], None],
        trace: Trace,
    ) -> None:
        self.faults = faults
        self.statistics = NetworkStatistics()
        self._scheduler = scheduler
        self._rng = rng
        self._deliver = deliver
        self._trace = trace
        self._cut: frozenset[tuple[int, int]] = frozenset()

    def link_up(self, frm: int, to: int) -> bool:
        """True unless the directed link ``frm -> to`` is cut."""
        return (frm, to) not in self._cut

    def partition(self, cut: Iterable[tuple[int, int]]) -> None:
        """Cut exactly these directed links (replacing any earlier partition)."""
        self._cut = frozenset(cut)

    def heal(self) -> None:
        """Reconnect every link."""
        self._cut = frozenset()

    def partitioned(self) -> bool:
        """True while some link is cut."""
        return bool(self._cut)

    def send(self, message: Message) -> bool:
        """Put ``message`` on the wire; False if it was lost at once (link cut or dropped)."""
        faults, statistics = self.faults, self.statistics
        random = self._rng.random
        statistics.sent += 1
        if (message.frm, message.to) in self._cut:
            statistics.cut += 1
            if self._trace.enabled:
                self._trace.emit(self._scheduler.now, f"cut {describe(message)}")
            return False
        if faults.drop_probability and random() < faults.drop_probability:
            statistics.dropped += 1
            if self._trace.enabled:
                self._trace.emit(self._scheduler.now, f"drop {describe(message)}")
            return True
        copies = 1
        if faults.duplicate_probability and random() < faults.duplicate_probability:
            statistics.duplicated += 1
            copies = 2
        for _ in range(copies):
            latency = 1 + int(random() * faults.delay_ms_max)
            if faults.reorder_probability and random() < faults.reorder_probability:
                statistics.delayed += 1
                latency += 1 + int(random() * faults.reorder_delay_ms_max)
            self._scheduler.after(latency, self._arrive, message)
        return True

    def _arrive(self, message: Message) -> None:
        if (message.frm, message.to) in self._cut:
            self.statistics.cut += 1
            if self._trace.enabled:
                self._trace.emit(self._scheduler.now, f"cut in flight {describe(message)}")
            return
        self.statistics.delivered += 1
        self._deliver(message)
