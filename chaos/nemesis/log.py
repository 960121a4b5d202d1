"""``nemesis.jsonl``: when each fault started and stopped, on the history's clock.

One JSON line per event (the format of :class:`millpond.chaos.history.NemesisEvent`)::

    {"time": 12.503, "event": "start", "id": 3, "fault": "partition-isolate-leader-silent",
     "targets": [2], "keeps_majority": true, "detail": {"mode": "silent", "links": [[2, 1], ...]}}

``time`` is seconds since the run started from a clock the caller injects -- the same function the
history writer stamps ops with, so fault windows and ops line up. ``id`` pairs a ``start`` with its
``stop``; the ``stop`` line repeats the fault, targets and ``keeps_majority`` of its ``start`` and
carries what healing did in ``detail``. Lines are flushed one by one: a run that crashes leaves
every event it wrote readable (:func:`millpond.chaos.history.load_nemesis`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

from millpond.chaos.history import NemesisEvent, NemesisWriter
from millpond.chaos.nemesis.faults import FaultRecord

__all__ = ["NemesisLog", "run_clock"]


def run_clock() -> Callable[[], float]:
    """A clock of monotonic seconds since this call (for a run without a history writer)."""
    started = time.monotonic()
    return lambda: time.monotonic() - started


class NemesisLog:
    """Append-only writer of ``nemesis.jsonl`` that numbers faults and pairs their start and stop.

    ``clock`` returns seconds since the run started (share the history's). The file must not exist
    yet. Calls never await, so the tasks of one event loop share a log without a lock.
    """

    def __init__(self, path: str | Path, clock: Callable[[], float]) -> None:
        self.path = Path(path)
        self.clock = clock
        self._writer = NemesisWriter(self.path, clock)
        self._next_id = 1
        self._open: dict[int, FaultRecord] = {}

    def start(self, record: FaultRecord) -> int:
        """Write the ``start`` event of a fault that has just taken effect; return its id."""
        fault_id = self._next_id
        self._next_id += 1
        self._writer.record("start", fault_id, record.fault, record.targets, record.keeps_majority,
                            dict(record.detail))
        self._open[fault_id] = record
        return fault_id

    def stop(self, fault_id: int, detail: dict[str, Any] | None = None) -> NemesisEvent:
        """Write the ``stop`` event of fault ``fault_id`` (healed); ``detail`` says what healing did.
        Raises ``KeyError`` for an id that is not started or already stopped."""
        record = self._open.pop(fault_id)
        return self._writer.record("stop", fault_id, record.fault, record.targets, record.keeps_majority,
                                   dict(detail or {}))

    @property
    def open_faults(self) -> dict[int, FaultRecord]:
        """Faults started and not stopped yet, by id."""
        return dict(self._open)

    def close(self) -> None:
        self._writer.close()

    def __enter__(self) -> NemesisLog:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
