"""Server-side assignors: complete, exclusive, balanced, sticky, deterministic; range semantics."""

from __future__ import annotations

import random
from collections.abc import Mapping, Set

import pytest

from millpond.controller.groups.assignors import (
    ASSIGNORS,
    DEFAULT_ASSIGNOR,
    MemberSubscriptionSpec,
    RangeAssignor,
    TopicPartition,
    UniformAssignor,
    assignor_named,
)
from millpond.controller.groups.errors import GroupError, GroupErrorReason

Assignment = Mapping[str, Set[TopicPartition]]


def specs(subscriptions: Mapping[str, Set[str]]) -> dict[str, MemberSubscriptionSpec]:
    return {member: MemberSubscriptionSpec(frozenset(topics)) for member, topics in subscriptions.items()}


def same(members: list[str], topics: Set[str]) -> dict[str, MemberSubscriptionSpec]:
    return specs({member: topics for member in members})


def check_valid(result: Assignment, members: Mapping[str, MemberSubscriptionSpec],
                topics: Mapping[str, int]) -> None:
    """Every member listed; every partition of a subscribed topic owned once, by a subscriber."""
    assert result.keys() == members.keys()
    seen: list[TopicPartition] = [tp for partitions in result.values() for tp in partitions]
    assert len(seen) == len(set(seen)), "a partition is assigned twice"
    for member, partitions in result.items():
        for topic, partition in partitions:
            assert topic in members[member].topics and 0 <= partition < topics[topic]
    wanted = {(t, p) for t, count in topics.items() for p in range(count)
              if any(t in spec.topics for spec in members.values())}
    assert set(seen) == wanted


def check_same_subscription_balance(result: Assignment,
                                    members: Mapping[str, MemberSubscriptionSpec]) -> None:
    by_subscription: dict[frozenset[str], list[int]] = {}
    for member, spec in members.items():
        by_subscription.setdefault(spec.topics, []).append(len(result[member]))
    for counts in by_subscription.values():
        assert max(counts) - min(counts) <= 1, counts


def moved(before: Assignment, after: Assignment) -> int:
    """Partitions whose owner changed (among those owned before and after)."""
    owner_before = {tp: m for m, tps in before.items() for tp in tps}
    owner_after = {tp: m for m, tps in after.items() for tp in tps}
    return sum(1 for tp, m in owner_after.items() if tp in owner_before and owner_before[tp] != m)


# --- uniform ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("members", [1, 2, 3, 5, 8])
@pytest.mark.parametrize("partitions", [1, 4, 7, 12, 30])
def test_uniform_balances_a_homogeneous_group(members: int, partitions: int) -> None:
    member_specs = same([f"m{i}" for i in range(members)], {"t"})
    result = UniformAssignor().assign(member_specs, {"t": partitions}, {})
    check_valid(result, member_specs, {"t": partitions})
    counts = sorted(len(p) for p in result.values())
    assert counts[-1] - counts[0] <= 1


def test_uniform_gives_extra_members_nothing() -> None:
    member_specs = same([f"m{i}" for i in range(5)], {"t"})
    result = UniformAssignor().assign(member_specs, {"t": 3}, {})
    check_valid(result, member_specs, {"t": 3})
    assert sorted(len(p) for p in result.values()) == [0, 0, 1, 1, 1]


def test_uniform_join_moves_only_what_the_newcomer_gets() -> None:
    topics = {"a": 7, "b": 5}
    old = same(["m1", "m2", "m3"], {"a", "b"})
    before = UniformAssignor().assign(old, topics, {})
    grown = same(["m1", "m2", "m3", "m4"], {"a", "b"})
    after = UniformAssignor().assign(grown, topics, before)
    check_valid(after, grown, topics)
    assert len(after["m4"]) == 3  # 12 partitions over 4 members
    assert moved(before, after) == len(after["m4"])
    for member in ("m1", "m2", "m3"):
        assert after[member] <= before[member], "an existing member gained a partition"


def test_uniform_leave_moves_only_the_leavers_partitions() -> None:
    topics = {"a": 10}
    members = same(["m1", "m2", "m3", "m4"], {"a"})
    before = UniformAssignor().assign(members, topics, {})
    rest = same(["m1", "m2", "m4"], {"a"})
    after = UniformAssignor().assign(rest, topics, {m: before[m] for m in rest})
    check_valid(after, rest, topics)
    for member in rest:
        assert before[member] <= after[member], "a surviving member lost a partition"
    counts = sorted(len(p) for p in after.values())
    assert counts[-1] - counts[0] <= 1


def test_uniform_keeps_a_balanced_current_assignment_as_it_is() -> None:
    current = {"m1": {("t", 0), ("t", 3)}, "m2": {("t", 1), ("t", 2)}}
    result = UniformAssignor().assign(same(["m1", "m2"], {"t"}), {"t": 4}, current)
    assert result == {m: frozenset(tps) for m, tps in current.items()}


def test_uniform_drops_invalid_current_ownerships() -> None:
    current = {
        "m1": {("t", 0), ("t", 9), ("gone", 0), ("u", 0)},  # 9 and "gone" do not exist; u unsubscribed
        "m2": {("t", 0), ("t", 1)},  # t/0 claimed by m1 too: m1 (first by id) keeps it
    }
    member_specs = specs({"m1": {"t"}, "m2": {"t", "u"}})
    result = UniformAssignor().assign(member_specs, {"t": 2, "u": 1}, current)
    check_valid(result, member_specs, {"t": 2, "u": 1})
    assert result == {"m1": frozenset({("t", 0)}), "m2": frozenset({("t", 1), ("u", 0)})}


def test_uniform_balances_members_with_different_subscriptions() -> None:
    member_specs = specs({"a": {"t1"}, "b": {"t1", "t2"}, "c": {"t2"}, "d": {"t2"}})
    topics = {"t1": 4, "t2": 8}
    result = UniformAssignor().assign(member_specs, topics, {})
    check_valid(result, member_specs, topics)
    check_same_subscription_balance(result, member_specs)
    counts = sorted(len(p) for p in result.values())
    assert counts == [3, 3, 3, 3]


def test_uniform_is_deterministic_whatever_the_input_order() -> None:
    rng = random.Random(7)
    subscriptions = {f"m{i}": {"a", "b"} if i % 3 else {"b", "c"} for i in range(9)}
    topics = {"a": 11, "b": 6, "c": 9}
    current = {"m1": {("a", 0), ("a", 1), ("b", 5)}, "m4": {("c", 2)}, "m5": {("b", 0)}}
    expected = UniformAssignor().assign(specs(subscriptions), topics, current)
    for _ in range(20):
        shuffled_members = list(subscriptions.items())
        rng.shuffle(shuffled_members)
        shuffled_topics = list(topics.items())
        rng.shuffle(shuffled_topics)
        shuffled_current = {m: set(rng.sample(sorted(tps), len(tps))) for m, tps in reversed(current.items())}
        got = UniformAssignor().assign(specs(dict(shuffled_members)), dict(shuffled_topics), shuffled_current)
        assert got == expected


@pytest.mark.parametrize("seed", range(40))
def test_uniform_random_groups_stay_valid_balanced_and_sticky(seed: int) -> None:
    rng = random.Random(seed)
    topic_names = [f"t{i}" for i in range(rng.randint(1, 4))]
    topics = {t: rng.randint(1, 12) for t in topic_names}
    subscriptions = {f"m{i}": set(rng.sample(topic_names, rng.randint(1, len(topic_names))))
                     for i in range(rng.randint(1, 8))}
    member_specs = specs(subscriptions)
    first = UniformAssignor().assign(member_specs, topics, {})
    check_valid(first, member_specs, topics)
    check_same_subscription_balance(first, member_specs)
    # Assigning again from its own output changes nothing (stable fixed point).
    assert UniformAssignor().assign(member_specs, topics, first) == first
    # A member leaves: the others keep everything they had.
    leaver = rng.choice(sorted(subscriptions))
    rest = {m: s for m, s in member_specs.items() if m != leaver}
    if rest:
        after = UniformAssignor().assign(rest, topics, {m: first[m] for m in rest})
        check_valid(after, rest, topics)
        check_same_subscription_balance(after, rest)


# --- range -------------------------------------------------------------------------------------------


def test_range_gives_contiguous_ranges_by_member_id_first_ones_larger() -> None:
    result = RangeAssignor().assign(same(["c", "a", "b"], {"t"}), {"t": 7}, {})
    assert result == {
        "a": frozenset({("t", 0), ("t", 1), ("t", 2)}),
        "b": frozenset({("t", 3), ("t", 4)}),
        "c": frozenset({("t", 5), ("t", 6)}),
    }


def test_range_co_partitions_equally_sized_topics() -> None:
    result = RangeAssignor().assign(same(["m1", "m2"], {"x", "y"}), {"x": 4, "y": 4}, {})
    for member in result:
        assert {p for t, p in result[member] if t == "x"} == {p for t, p in result[member] if t == "y"}


def test_range_splits_each_topic_among_its_subscribers_only() -> None:
    member_specs = specs({"a": {"x"}, "b": {"x", "y"}, "c": {"y"}})
    result = RangeAssignor().assign(member_specs, {"x": 3, "y": 2}, {})
    check_valid(result, member_specs, {"x": 3, "y": 2})
    assert result == {
        "a": frozenset({("x", 0), ("x", 1)}),
        "b": frozenset({("x", 2), ("y", 0)}),
        "c": frozenset({("y", 1)}),
    }


def test_range_gives_extra_members_nothing() -> None:
    result = RangeAssignor().assign(same(["a", "b", "c"], {"t"}), {"t": 2}, {})
    assert [len(result[m]) for m in ("a", "b", "c")] == [1, 1, 0]


# --- registry ------------------------------------------------------------------------------------------


def test_registry_names_uniform_default_and_range() -> None:
    assert DEFAULT_ASSIGNOR == "uniform"
    assert set(ASSIGNORS) == {"uniform", "range"}
    assert assignor_named("range").name == "range"
    with pytest.raises(GroupError) as caught:
        assignor_named("sticky")
    assert caught.value.reason is GroupErrorReason.UNSUPPORTED_ASSIGNOR


def test_topics_nobody_subscribes_to_are_not_assigned() -> None:
    for assignor in ASSIGNORS.values():
        result = assignor.assign(same(["m"], {"a"}), {"a": 1, "b": 3}, {})
        assert result == {"m": frozenset({("a", 0)})}
