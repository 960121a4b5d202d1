"""Which checkers judge which workload: the one extension point of the checkers.

A workload name maps to a tuple of :class:`~millpond.chaos.checkers.base.Checker` s. To add a
workload (consumer groups, queues, transactions), write a module with its checkers -- each a
function from :class:`~millpond.chaos.checkers.base.CheckInput` to examples, usually over a model
it derives once with ``inputs.derived(build)`` -- and add one line to :data:`WORKLOADS` (or call
:func:`register_workload`). Reuse other workloads' checkers by concatenating their tuples; the
log checkers never need to change. For example, a consumer-group workload might be::

    WORKLOADS["consumer-group"] = LOG_SAFETY + REPLICA_SAFETY + GROUP_SAFETY + LOG_LIVENESS

with ``GROUP_SAFETY`` holding ``overlapping-ownership`` and committed-offset regression checkers.
"""

from __future__ import annotations

from collections.abc import Iterable

from .base import Checker
from .compaction import COMPACTION_CHECKERS
from .group import GROUP_LIVENESS, GROUP_SAFETY, LOG_SAFETY_FOR_GROUPS
from .liveness import LOG_LIVENESS
from .log import LOG_SAFETY
from .replicas import REPLICA_SAFETY

__all__ = ["WORKLOADS", "checkers_for", "error_types", "register_workload"]

WORKLOADS: dict[str, tuple[Checker, ...]] = {
    "log": LOG_SAFETY + REPLICA_SAFETY + LOG_LIVENESS,
    # Compacted topics: the log checkers that hold when superseded records go, and compaction's.
    "compaction": COMPACTION_CHECKERS,
    # Consumer groups (at least once): the log checkers that hold for group readers, the group's own.
    "group": LOG_SAFETY_FOR_GROUPS + REPLICA_SAFETY + GROUP_SAFETY + LOG_LIVENESS + GROUP_LIVENESS,
}
"""Workload name -> its checkers, in report order."""


def register_workload(name: str, checkers: Iterable[Checker], replace: bool = False) -> None:
    """Make ``name`` checkable by ``checkers``.

    Raises ValueError if ``name`` is taken (unless ``replace``) or two checkers report one error
    type (their examples would be merged silently).
    """
    checkers = tuple(checkers)
    if name in WORKLOADS and not replace:
        raise ValueError(f"workload {name!r} is already registered")
    types = [checker.error_type for checker in checkers]
    repeated = sorted({error_type for error_type in types if types.count(error_type) > 1})
    if repeated:
        raise ValueError(f"workload {name!r}: error types reported by more than one checker: {repeated}")
    WORKLOADS[name] = checkers


def checkers_for(name: str) -> tuple[Checker, ...]:
    """The checkers of workload ``name``; raises ValueError naming the known workloads."""
    try:
        return WORKLOADS[name]
    except KeyError:
        raise ValueError(f"no checkers for workload {name!r}; known: {sorted(WORKLOADS)}") from None


def error_types(name: str) -> list[str]:
    """Every error type workload ``name`` can report, in report order."""
    return [checker.error_type for checker in checkers_for(name)]
