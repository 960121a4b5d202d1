"""Liveness of a ``log`` run: the cluster kept working when it could, and converged after healing.

A liveness failure is not a broken promise about data (that is safety) but a cluster that stopped
serving, or did not catch up, when it should have. The verdict reports the two separately.

``no-progress-during-fault``
    A nemesis fault window with ``keeps_majority`` lasting more than ``grace`` seconds, with no
    send completing ``ok`` in ``[start + grace, stop]`` (``stop`` = end of the history for a fault
    never healed). ``grace`` covers leader election and client retry backoff. A window
    overlapping a fault that does not keep a majority is not checked (progress is not owed
    there); the nemesis must set ``keeps_majority`` with its concurrent faults in mind.
``final-read-incomplete``
    A partition (named by any send, assign, read or final-read) with no ``final-read`` that
    completed ``ok`` with ``caught_up`` true.
``replicas-not-converged``
    After healing, the replicas of a partition report different commit indexes.
``no-progress``
    Not a single send completed ``ok`` in the whole run.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections import Counter
from collections.abc import Sequence

from millpond.chaos.history import FaultWindow

from .base import Checker, CheckInput, Example, ReplicaReport
from .model import LogModel, log_model
from .replicas import normalize_replicas

__all__ = [
    "LOG_LIVENESS",
    "final_read_incomplete",
    "no_progress",
    "no_progress_during_fault",
    "replicas_not_converged",
]


def no_progress_during_fault(
    model: LogModel, windows: Sequence[FaultWindow], grace_s: float, run_end: float
) -> list[Example]:
    """``no-progress-during-fault``: majority-keeping faults with no ok send after the grace."""
    found: list[Example] = []
    times = model.ok_send_times
    for window in windows:
        stop = window.end(run_end)
        if not window.keeps_majority or stop - window.start <= grace_s:
            continue
        overlapping = [
            other.id
            for other in windows
            if not other.keeps_majority and other.start < stop and other.end(run_end) > window.start
        ]
        if overlapping:
            continue
        begin = window.start + grace_s
        low = bisect_left(times, begin)
        high = bisect_right(times, stop)
        if high > low:
            continue
        found.append(
            {
                "fault_id": window.id,
                "fault": window.fault,
                "targets": list(window.targets),
                "start": window.start,
                "stop": window.stop,
                "checked_from": begin,
                "checked_to": stop,
                "last_ok_send_before": times[low - 1] if low > 0 else None,
                "first_ok_send_after": times[high] if high < len(times) else None,
            }
        )
    return found


def final_read_incomplete(model: LogModel) -> list[Example]:
    """``final-read-incomplete``: partitions without an ok, caught-up final-read."""
    found: list[Example] = []
    for partition in sorted(model.partitions):
        reads = model.final_reads.get(partition, [])
        if any(read.outcome == "ok" and read.caught_up for read in reads):
            continue
        if not reads:
            reason = "no final-read"
        elif all(read.outcome != "ok" for read in reads):
            reason = "final-read never completed ok"
        else:
            reason = "final-read did not catch up to the high watermark"
        found.append(
            {
                "partition": partition,
                "reason": reason,
                "final_reads": [
                    {
                        "ops": [read.invoke] if read.completion is None else [read.invoke, read.completion],
                        "outcome": read.outcome,
                        "high_watermark": read.high_watermark,
                        "caught_up": read.caught_up,
                        "records": read.records,
                    }
                    for read in reads
                ],
            }
        )
    return found


def replicas_not_converged(report: ReplicaReport | None) -> list[Example]:
    """``replicas-not-converged``: partitions whose replicas report different commit indexes.

    Raises :class:`~millpond.chaos.checkers.base.CannotCheck` without a usable report.
    """
    found: list[Example] = []
    for partition, states in sorted(normalize_replicas(report).items()):
        if len({state.commit_index for state in states.values()}) > 1:
            found.append(
                {
                    "partition": partition,
                    "commit_index": {node: state.commit_index for node, state in sorted(states.items())},
                }
            )
    return found


def no_progress(model: LogModel) -> list[Example]:
    """``no-progress``: no send completed ok in the whole run (one example with the tallies)."""
    if model.ok_send_times:
        return []
    outcomes = Counter(send.outcome for send in model.sends)
    return [{"sends": len(model.sends), "outcomes": dict(sorted(outcomes.items()))}]


def _during_fault(inputs: CheckInput) -> list[Example]:
    return no_progress_during_fault(
        inputs.derived(log_model), inputs.windows, inputs.config.progress_grace_s, inputs.end_time
    )


LOG_LIVENESS: tuple[Checker, ...] = (
    Checker(
        "no-progress-during-fault",
        "liveness",
        _during_fault,
        "no ok send while a majority-keeping fault lasted",
    ),
    Checker(
        "final-read-incomplete",
        "liveness",
        lambda inputs: final_read_incomplete(inputs.derived(log_model)),
        "a partition was not read to its end after healing",
    ),
    Checker(
        "replicas-not-converged",
        "liveness",
        lambda inputs: replicas_not_converged(inputs.replicas),
        "replicas report different commit indexes after healing",
    ),
    Checker(
        "no-progress", "liveness", lambda inputs: no_progress(inputs.derived(log_model)), "no ok send at all"
    ),
)
"""The ``log`` workload's liveness checkers, in report order."""
