"""Every fault by name: ``create_fault("partition-isolate-leader-silent", topic="events")``.

Names (``millpond chaos run --list`` prints them with :func:`describe_faults`):

* ``{kill,pause,restart}-{one,leader,controller,minority,majority,all}`` -- process faults
  (SIGKILL / SIGSTOP / clean SIGTERM; undone at stop), e.g. ``kill-leader``, ``pause-one``;
* ``rolling-restart`` -- each node in turn, the cluster ready in between;
* ``partition-{isolate-one,isolate-leader,halves,majorities-ring,bridge,one-way}-{refuse,silent}``
  -- network partitions; ``refuse`` disables the link proxies, ``silent`` blackholes them;
* ``packet-{latency,bandwidth,slicer,reset-peer}`` -- toxics on random links;
* ``leader-transfer`` and ``membership`` -- admin operations under load (a leadership handoff, a
  replica moved to another node and back).

:func:`expand_fault_names` turns shell-style patterns (``kill-*``, ``partition-*-silent``) into
names, for a ``--faults`` option.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable

from millpond.chaos.harness import CutMode
from millpond.chaos.nemesis.faults import (
    PACKET_KINDS,
    PARTITION_SHAPES,
    TARGETS,
    Fault,
    LeaderTransferFault,
    MembershipFault,
    PacketFault,
    PacketKind,
    PartitionFault,
    PartitionShape,
    ProcessAction,
    ProcessFault,
    RollingRestartFault,
    Target,
)

__all__ = ["FAULTS", "FaultFactory", "create_fault", "describe_faults", "expand_fault_names", "fault_names"]

FaultFactory = Callable[[str | None], Fault]
"""Builds a fault given the workload topic (None: any topic)."""

_TARGET_WORDS: dict[Target, str] = {
    "one": "a random node",
    "leader": "the leader of a random partition",
    "controller": "the active controller",
    "minority": "a random minority of the nodes",
    "majority": "a random majority of the nodes (not all)",
    "all": "every node",
}
_ACTION_WORDS: dict[ProcessAction, tuple[str, str]] = {
    "kill": ("SIGKILL", "start it again at stop"),
    "pause": ("SIGSTOP", "SIGCONT at stop, after at least an election timeout"),
    "restart": ("stop cleanly (SIGTERM)", "start it again at stop"),
}
_SHAPE_WORDS: dict[PartitionShape, str] = {
    "isolate-one": "cut a random node off from all others",
    "isolate-leader": "cut a partition leader off from all others",
    "halves": "split the nodes into a minority and a majority",
    "majorities-ring": "every node hears only its own majority on a ring (asymmetric)",
    "bridge": "two halves joined only through one bridge node",
    "one-way": "cut one random directed link only (asymmetric)",
}
_MODE_WORDS: dict[CutMode, str] = {"refuse": "connections refused", "silent": "packets silently dropped"}
_PACKET_WORDS: dict[PacketKind, str] = {
    "latency": "latency with jitter",
    "bandwidth": "a bandwidth cap",
    "slicer": "writes sliced into small delayed pieces",
    "reset-peer": "connections reset (TCP RST) after a random delay",
}

_Builder = Callable[[str, str, str | None], Fault]
"""Builds a fault from its name, description and topic."""


def _process(action: ProcessAction, target: Target) -> _Builder:
    return lambda name, text, topic: ProcessFault(name, text, action, target, topic)


def _partition(shape: PartitionShape, mode: CutMode) -> _Builder:
    return lambda name, text, topic: PartitionFault(name, text, shape, mode, topic)


def _packet(kind: PacketKind) -> _Builder:
    return lambda name, text, topic: PacketFault(name, text, kind, topic)


def _build() -> dict[str, tuple[str, FaultFactory]]:
    faults: dict[str, tuple[str, FaultFactory]] = {}

    def add(name: str, description: str, builder: _Builder) -> None:
        faults[name] = (description, lambda topic: builder(name, description, topic))

    for action, (verb, undo) in _ACTION_WORDS.items():
        for target in TARGETS:
            add(f"{action}-{target}", f"{verb} {_TARGET_WORDS[target]}; {undo}", _process(action, target))
    add("rolling-restart", "restart every node in turn, waiting for the cluster to be ready in between",
        RollingRestartFault)
    for shape in PARTITION_SHAPES:
        for mode, mode_text in _MODE_WORDS.items():
            add(f"partition-{shape}-{mode}", f"{_SHAPE_WORDS[shape]}; {mode_text}", _partition(shape, mode))
    for kind in PACKET_KINDS:
        add(f"packet-{kind}", f"{_PACKET_WORDS[kind]} on random node-to-node links", _packet(kind))
    add("leader-transfer", "hand a random partition's leadership to another replica", LeaderTransferFault)
    add("membership", "move one replica of a random partition to another node, and back at stop",
        MembershipFault)
    return faults


FAULTS: dict[str, tuple[str, FaultFactory]] = _build()
"""Fault name -> (one-line description, factory)."""


def fault_names() -> list[str]:
    """Every fault name, in registry order."""
    return list(FAULTS)


def describe_faults() -> dict[str, str]:
    """Fault name -> one-line description (for ``--list``)."""
    return {name: description for name, (description, _) in FAULTS.items()}


def create_fault(name: str, topic: str | None = None) -> Fault:
    """A new fault of kind ``name`` aimed at ``topic``'s partitions. Raises ``KeyError`` (naming the
    known faults) for an unknown name."""
    try:
        _, factory = FAULTS[name]
    except KeyError:
        raise KeyError(f"unknown fault {name!r}; known: {', '.join(FAULTS)}") from None
    return factory(topic)


def expand_fault_names(patterns: Iterable[str]) -> list[str]:
    """Names matching any of the shell-style ``patterns`` (``kill-*``), in registry order, each once.
    Raises ``KeyError`` for a pattern that matches nothing."""
    chosen: list[str] = []
    for pattern in patterns:
        matched = [name for name in FAULTS if fnmatch.fnmatchcase(name, pattern)]
        if not matched:
            raise KeyError(f"no fault matches {pattern!r}; known: {', '.join(FAULTS)}")
        chosen.extend(name for name in matched if name not in chosen)
    return chosen
