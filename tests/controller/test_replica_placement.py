"""Replica placement: balanced replicas and preferred leaders, spread followers, deterministic, bounded by
live nodes; replacement choice for a dead node's replica."""

from __future__ import annotations

from collections import Counter

import pytest

from millpond.controller.placement import choose_replacement, place_partitions
from millpond.errors import InvalidRequest, ReplicationFactorTooLarge


def _counts(placement: list[tuple[int, ...]]) -> tuple[Counter[int], Counter[int]]:
    replicas: Counter[int] = Counter(n for reps in placement for n in reps)
    leaders: Counter[int] = Counter(reps[0] for reps in placement)
    return replicas, leaders


def test_three_nodes_six_partitions_rf3_every_node_leads_two() -> None:
    placement = place_partitions(6, 3, [1, 2, 3], {}, {})
    replicas, leaders = _counts(placement)
    assert leaders == {1: 2, 2: 2, 3: 2}
    assert replicas == {1: 6, 2: 6, 3: 6}
    assert all(sorted(reps) == [1, 2, 3] for reps in placement)


def test_placement_is_deterministic_and_ignores_input_order() -> None:
    first = place_partitions(24, 2, [5, 3, 1, 4, 2], {1: 3, 4: 1}, {1: 1})
    again = place_partitions(24, 2, (n for n in [2, 4, 1, 3, 5, 5]), {4: 1, 1: 3}, {1: 1})
    assert first == again


def test_balance_from_an_empty_cluster() -> None:
    # Preferred leaders never differ by more than one; replica counts by at most two.
    for nodes in range(1, 8):
        for factor in range(1, min(nodes, 5) + 1):
            for count in range(1, 31):
                placement = place_partitions(count, factor, range(1, nodes + 1), {}, {})
                replicas, leaders = _counts(placement)
                every = range(1, nodes + 1)
                assert all(len(set(reps)) == factor for reps in placement)
                assert max(leaders[n] for n in every) - min(leaders[n] for n in every) <= 1
                assert max(replicas[n] for n in every) - min(replicas[n] for n in every) <= 2


def test_existing_load_is_taken_into_account() -> None:
    placement = place_partitions(4, 1, [1, 2, 3], {1: 10, 2: 2, 3: 0}, {1: 10, 2: 2, 3: 0})
    assert placement == [(3,), (3,), (2,), (3,)]


def test_followers_are_spread_over_many_nodes() -> None:
    # With 4 nodes and rf 2, each node's followers are not all on one other node: losing
    # a node moves its leaderships to several survivors.
    placement = place_partitions(8, 2, [1, 2, 3, 4], {}, {})
    for node in (1, 2, 3, 4):
        partners = {n for reps in placement if node in reps for n in reps if n != node}
        assert len(partners) >= 2, (node, placement)


def test_replication_factor_above_live_nodes_is_refused() -> None:
    with pytest.raises(ReplicationFactorTooLarge, match="replication factor 4 exceeds the 3 live nodes"):
        place_partitions(1, 4, [1, 2, 3], {}, {})
    with pytest.raises(ReplicationFactorTooLarge, match=r"exceeds the 1 live node$"):
        place_partitions(1, 2, [7], {}, {})


def test_bad_counts_are_refused() -> None:
    with pytest.raises(InvalidRequest, match="partition count must be at least 1, got 0"):
        place_partitions(0, 1, [1], {}, {})
    with pytest.raises(InvalidRequest, match="replication factor must be at least 1, got 0"):
        place_partitions(1, 0, [1], {}, {})


def test_choose_replacement_prefers_the_least_loaded_node_outside_the_replicas() -> None:
    counts = {1: 5, 2: 5, 3: 5, 4: 7, 5: 2, 6: 2}
    assert choose_replacement((1, 2, 3), 3, [1, 2, 4, 5, 6], counts, {5: 3, 6: 1}) == 5
    # Replacing the preferred leader: among equally loaded, fewer preferred leaderships win.
    assert choose_replacement((3, 1, 2), 3, [1, 2, 4, 5, 6], counts, {5: 3, 6: 1}) == 6
    assert choose_replacement((1, 2, 3), 3, [1, 2], counts, {}) is None
    with pytest.raises(ValueError, match="not among the replicas"):
        choose_replacement((1, 2), 3, [4], counts, {})
