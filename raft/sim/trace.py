"""The simulator's trace: one line per event, prefixed by the virtual time.

Tracing is off unless a sink is given. Callers test :attr:`Trace.enabled`
before formatting a line, so a run without a trace pays nothing for it. Lines
contain only values derived from the seed, so a seed's trace is byte-identical
from run to run.
"""

from __future__ import annotations

from collections.abc import Callable

from millpond.raft.messages import Message


class Trace:
    """Formats events and hands them to ``sink`` (for example ``print`` or ``list.append``)."""

    def __init__(self, sink: Callable[[str], None] | None = None) -> None:
        self._sink = sink
        self.enabled = sink is not None

    def emit(self, time_ms: int, text: str) -> None:
        """Write ``text`` stamped with ``time_ms`` (no-op when tracing is off)."""
        if self._sink is not None:
            self._sink(f"{time_ms:>7}ms {text}")


def describe(message: Message) -> str:
    """A compact, deterministic rendering of a Raft message for the trace."""
    parts = [f"{message.type.name} {message.frm}->{message.to} term={message.term}"]
    if message.index or message.log_term:
        parts.append(f"index={message.index} log_term={message.log_term}")
    if message.entries:
        parts.append(f"entries={message.entries[0].index}..{message.entries[-1].index}")
    if message.commit:
        parts.append(f"commit={message.commit}")
    if message.reject:
        parts.append(f"reject hint={message.hint_index}/{message.hint_term}")
    if message.snapshot is not None:
        meta = message.snapshot.meta
        parts.append(f"snapshot={meta.index}/{meta.term}")
    if message.context:
        parts.append(f"context={message.context}")
    return " ".join(parts)
