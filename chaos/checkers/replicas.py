"""Replica state after healing: do all replicas of a partition hold the same committed log?

The harness collects, for every partition ``"<topic>/<p>"`` and every node hosting a replica,
``{"commit_index": int, "upto": int, "checksum": str}``: the replica's commit index and a
checksum of its committed records below offset ``upto``. The harness picks one ``upto`` per
partition (at most the lowest commit index of its replicas) so that the checksums are comparable.

``replica-divergence`` (safety): replicas of a partition report different checksums up to the
same ``upto`` -- they committed different records, which Raft's log matching forbids.
Replicas that disagree only on ``commit_index`` are a liveness matter (they have not converged
yet), checked by :mod:`millpond.chaos.checkers.liveness`.
"""

from __future__ import annotations

from dataclasses import dataclass

from .base import CannotCheck, Checker, CheckInput, Example, ReplicaReport

__all__ = ["REPLICA_SAFETY", "ReplicaState", "normalize_replicas", "replica_divergence"]


@dataclass(frozen=True, slots=True)
class ReplicaState:
    """One replica's report."""

    commit_index: int
    upto: int
    checksum: str


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def normalize_replicas(report: ReplicaReport | None) -> dict[str, dict[str, ReplicaState]]:
    """Validate a replica report into ``{partition: {node: ReplicaState}}``.

    Raises :class:`CannotCheck` when there is no report (None), an entry lacks a field or has
    the wrong type, or the replicas of one partition were checksummed up to different offsets
    (their checksums cannot be compared). ``{}`` is a valid report with nothing to compare.
    """
    if report is None:
        raise CannotCheck("no replica report was collected")
    normalized: dict[str, dict[str, ReplicaState]] = {}
    for partition, replicas in report.items():
        states: dict[str, ReplicaState] = {}
        for node, entry in replicas.items():
            try:
                commit_index, upto, checksum = entry["commit_index"], entry["upto"], entry["checksum"]
            except (KeyError, TypeError):
                raise CannotCheck(f"replica {partition} on node {node}: malformed entry {entry!r}") from None
            if not (_is_int(commit_index) and _is_int(upto) and isinstance(checksum, str)):
                raise CannotCheck(f"replica {partition} on node {node}: malformed entry {entry!r}")
            states[str(node)] = ReplicaState(commit_index, upto, checksum)
        uptos = {state.upto for state in states.values()}
        if len(uptos) > 1:
            raise CannotCheck(
                f"replicas of {partition} were checksummed up to different offsets {sorted(uptos)}"
            )
        normalized[str(partition)] = states
    return normalized


def replica_divergence(report: ReplicaReport | None) -> list[Example]:
    """``replica-divergence``: partitions whose replicas' checksums up to ``upto`` differ."""
    found: list[Example] = []
    for partition, states in sorted(normalize_replicas(report).items()):
        if len({state.checksum for state in states.values()}) > 1:
            found.append(
                {
                    "partition": partition,
                    "upto": next(iter(states.values())).upto,
                    "checksums": {node: state.checksum for node, state in sorted(states.items())},
                    "commit_index": {node: state.commit_index for node, state in sorted(states.items())},
                }
            )
    return found


def _divergence(inputs: CheckInput) -> list[Example]:
    return replica_divergence(inputs.replicas)


REPLICA_SAFETY: tuple[Checker, ...] = (
    Checker("replica-divergence", "safety", _divergence, "replicas committed different records"),
)
