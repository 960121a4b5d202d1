"""Replica placement: pure, deterministic functions of their inputs.

* :func:`place_partitions` chooses replicas for new partitions, balancing both
  replica counts and preferred leaders (the first replica) across live nodes,
  on top of what the nodes already hold.
* :func:`choose_replacement` picks the node that takes over a dead node's replica.

No randomness and no dict-order dependence: ties break on the lowest node id,
so the same inputs give the same placement on any machine.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from millpond.errors import InvalidRequest, ReplicationFactorTooLarge

__all__ = ["choose_replacement", "place_partitions"]


def place_partitions(
    count: int,
    replication_factor: int,
    live_nodes: Iterable[int],
    replica_counts: Mapping[int, int],
    leader_counts: Mapping[int, int],
) -> list[tuple[int, ...]]:
    """Replica lists (preferred leader first) for ``count`` new partitions.

    Each partition's leader is the live node with the fewest preferred
    leaderships (then fewest replicas, then lowest id); each further replica is
    the live node with the fewest replicas, then the fewest partitions shared
    with the replicas already chosen (so a dead node's followers are spread over
    many nodes rather than one), then the lowest id. ``replica_counts`` and
    ``leader_counts`` are what the nodes hold already (missing nodes count 0).

    Raises :class:`InvalidRequest` if ``count`` or ``replication_factor`` is
    below 1, and :class:`ReplicationFactorTooLarge` if ``replication_factor``
    exceeds the number of live nodes.
    """
    if count < 1:
        raise InvalidRequest(f"partition count must be at least 1, got {count}")
    if replication_factor < 1:
        raise InvalidRequest(f"replication factor must be at least 1, got {replication_factor}")
    nodes = sorted(set(live_nodes))
    if replication_factor > len(nodes):
        raise ReplicationFactorTooLarge(
            f"replication factor {replication_factor} exceeds the {len(nodes)} live node"
            f"{'' if len(nodes) == 1 else 's'}")
    replicas = {node: replica_counts.get(node, 0) for node in nodes}
    leaders = {node: leader_counts.get(node, 0) for node in nodes}
    shared: dict[tuple[int, int], int] = {}
    placed: list[tuple[int, ...]] = []
    for _ in range(count):
        chosen = [min(nodes, key=lambda n: (leaders[n], replicas[n], n))]
        while len(chosen) < replication_factor:
            chosen.append(min(
                (n for n in nodes if n not in chosen),
                key=lambda n: (replicas[n], sum(shared.get(_pair(n, c), 0) for c in chosen), n),
            ))
        leaders[chosen[0]] += 1
        for i, node in enumerate(chosen):
            replicas[node] += 1
            for other in chosen[i + 1:]:
                shared[_pair(node, other)] = shared.get(_pair(node, other), 0) + 1
        placed.append(tuple(chosen))
    return placed


def choose_replacement(
    replicas: Sequence[int],
    gone: int,
    live_nodes: Iterable[int],
    replica_counts: Mapping[int, int],
    leader_counts: Mapping[int, int],
) -> int | None:
    """The live node to take ``gone``'s place in ``replicas``, or ``None`` if every live node has one.

    The candidate with the fewest replicas wins, then (when ``gone`` is the
    preferred leader, whose place the new node takes) the one with the fewest
    preferred leaderships, then the lowest id. ``ValueError`` if ``gone`` is not in ``replicas``.
    """
    if gone not in replicas:
        raise ValueError(f"node {gone} is not among the replicas {list(replicas)}")
    leads = replicas[0] == gone
    candidates = sorted(set(live_nodes) - set(replicas))
    if not candidates:
        return None
    return min(candidates, key=lambda n: (
        replica_counts.get(n, 0), leader_counts.get(n, 0) if leads else 0, n))


def _pair(a: int, b: int) -> tuple[int, int]:
    return (a, b) if a < b else (b, a)
