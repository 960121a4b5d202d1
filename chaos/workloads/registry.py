"""Workload name -> factory. Later workloads (consumer groups, queues, transactions) add themselves here."""

from __future__ import annotations

from collections.abc import Callable

from millpond.chaos.workloads.compaction import CompactionWorkload
from millpond.chaos.workloads.group import GroupWorkload
from millpond.chaos.workloads.log import LogWorkload
from millpond.v1 import broker_pb2 as pb

#: Anomalies ``acks=1`` produces by design when a leader dies with acknowledged records that no
#: follower had: the record is gone, and its offset is reused by the next leader.
ACKS1_EXPECTED = frozenset({"lost-write", "unseen", "inconsistent-offsets", "stale-offset",
                            "nonmonotonic-send"})


def _log() -> LogWorkload:
    return LogWorkload()


def _acks1_demo() -> LogWorkload:
    return LogWorkload(
        name="acks1-demo", acks=pb.ACKS_LEADER, allowed=ACKS1_EXPECTED,
        description="the log workload with acks=1: losses under leader failure are expected (allowed)")


def _unsafe_log() -> LogWorkload:
    # Unthrottled producers keep acknowledged-but-unreplicated records in flight nearly all the
    # time, so a leader kill almost always takes some with it.
    return LogWorkload(
        name="log-unsafe", node_args=("--unsafe-ack-before-commit",),
        defaults={"rate": "2000", "producers": "6"},
        description="negative control: log workload on nodes that answer acks=all before commit "
                    "(must be caught as lost-write/unseen under leader kills)")


ChaosWorkload = LogWorkload | GroupWorkload | CompactionWorkload
"""Every registered workload's class (each implements :class:`~millpond.chaos.workloads.base.Workload`
plus ``configure`` and ``options``)."""

WORKLOADS: dict[str, Callable[[], ChaosWorkload]] = {
    "log": _log,
    "acks1-demo": _acks1_demo,
    "log-unsafe": _unsafe_log,
    "group": GroupWorkload,
    "compaction": CompactionWorkload,
}


def create_workload(name: str) -> ChaosWorkload:
    """A new workload called ``name``; KeyError naming the known ones otherwise."""
    try:
        return WORKLOADS[name]()
    except KeyError:
        raise KeyError(f"unknown workload {name!r}; known: {', '.join(WORKLOADS)}") from None


def describe_workloads() -> dict[str, str]:
    return {name: factory().description for name, factory in WORKLOADS.items()}
