"""The group coordinator driven in process: heartbeats decide records, the image applies them.

Clients are modelled as the processes that really hold partitions: a client
holds what its answers gave it until it releases it. The central property is
that no two clients ever hold the same partition, whatever the interleaving.
"""

from __future__ import annotations

import itertools
import json
import random
from collections.abc import Iterable
from dataclasses import dataclass, field

import pytest

from millpond.controller.groups.coordinator import (
    GroupSettings,
    HeartbeatDecision,
    HeartbeatRequest,
    HeartbeatResponse,
    delete_group,
    heartbeat,
    session_expired,
)
from millpond.controller.groups.errors import GroupError
from millpond.controller.groups.errors import GroupErrorReason as R
from millpond.controller.groups.offsets import (
    OffsetCommitEntry,
    OffsetCommitRequest,
    PartitionBounds,
    ResetMode,
    ResetSpec,
    commit_offsets,
    plan_reset_offsets,
)
from millpond.controller.groups.records import (
    GroupMemberUpsert,
    GroupRecord,
    TargetAssignment,
    from_json,
    to_json,
)
from millpond.controller.groups.sessions import Session, SessionTracker, SessionUpdate, expired_members
from millpond.controller.groups.state import GroupsImage, GroupState, GroupStateName, TopicPartition

SETTINGS = GroupSettings(heartbeat_interval_ms=500, session_timeout_ms=3_000, rebalance_timeout_ms=10_000)
GROUP = "g"


class Coordinator:
    """The active controller's part: decide, apply every record at once, keep the sessions."""

    def __init__(self, topics: dict[str, int], settings: GroupSettings = SETTINGS) -> None:
        self.settings = settings
        self.log: list[GroupRecord] = []
        self.image = GroupsImage()
        self.topics = dict(topics)
        self.now = 0
        self.sessions = SessionTracker()
        self._ids = itertools.count(1)
        self.decisions: list[HeartbeatDecision] = []

    def new_member_id(self) -> str:
        return f"member-{next(self._ids)}"

    def apply(self, records: Iterable[GroupRecord]) -> None:
        for record in records:
            result = self.image.apply(record)
            assert result.ok, (record, result.error)
            self.log.append(record)

    def heartbeat(self, request: HeartbeatRequest, *, apply: bool = True) -> HeartbeatDecision:
        decision = heartbeat(self.image, request, self.topics, self.now, new_member_id=self.new_member_id,
                             settings=self.settings)
        self.decisions.append(decision)
        if apply:
            self.apply(decision.records)
            if decision.session is not None:
                self.sessions.observe(decision.session)
        return decision

    def expire(self) -> list[str]:
        gone = []
        for group_id, member_id in self.sessions.expired(self.now):
            self.apply(session_expired(self.image, group_id, member_id))
            self.sessions.forget(group_id, member_id)
            gone.append(member_id)
        return gone

    @property
    def group(self) -> GroupState:
        group = self.image.group(GROUP)
        assert group is not None
        return group

    def check(self) -> None:
        """Server-side invariants: exclusive ownership, epochs in order."""
        group = self.image.group(GROUP)
        if group is None:
            return
        assert len(group.owners()) == sum(len(m.owned) for m in group.members.values()), "shared partition"
        assert group.assignment_epoch <= group.group_epoch
        for member in group.members.values():
            assert member.member_epoch <= group.group_epoch
            assert not member.assigned & member.pending_revocation


@dataclass
class Client:
    """A consumer process: it holds partitions from the answers it got until it releases them."""

    coordinator: Coordinator
    topics: tuple[str, ...] | None = ("t",)
    regex: str | None = None
    instance_id: str | None = None
    member_id: str = ""
    epoch: int = 0
    holding: set[TopicPartition] = field(default_factory=set)
    last: HeartbeatResponse | None = None

    def heartbeat(self, *, release: bool = True, report: bool = True, apply: bool = True,
                  **changes: object) -> HeartbeatResponse:
        joining = self.epoch == 0
        fields: dict[str, object] = {
            "instance_id": self.instance_id,
            "subscribed_topic_names": self.topics if joining else None,
            "subscribed_topic_regex": self.regex if joining else None,
            "owned_partitions": frozenset(self.holding) if report else None,
            **changes,
        }
        request = HeartbeatRequest(GROUP, self.member_id, self.epoch, **fields)  # type: ignore[arg-type]
        response = self.coordinator.heartbeat(request, apply=apply).response
        self.last = response
        if apply:
            self.receive(response, release=release)
        return response

    def receive(self, response: HeartbeatResponse, *, release: bool = True) -> None:
        if response.error is not None:
            if response.error.reason in (R.FENCED_MEMBER_EPOCH, R.UNKNOWN_MEMBER_ID):
                self.holding.clear()
                self.epoch = 0
                if response.error.reason is R.UNKNOWN_MEMBER_ID:
                    self.member_id = ""
            return
        assert response.assignment is not None
        self.member_id, self.epoch = response.member_id, response.member_epoch
        if release:
            self.holding &= response.assignment
        self.holding |= response.assignment

    def leave(self, epoch: int = -1) -> HeartbeatResponse:
        response = self.coordinator.heartbeat(
            HeartbeatRequest(GROUP, self.member_id, epoch, instance_id=self.instance_id)).response
        assert response.error is None, response.error
        self.holding.clear()
        self.epoch = 0
        return response


def assert_disjoint(*clients: Client) -> None:
    for a, b in itertools.combinations(clients, 2):
        assert not a.holding & b.holding, f"{a.member_id} and {b.member_id} both hold {a.holding & b.holding}"


def settle(coordinator: Coordinator, *clients: Client, rounds: int = 6) -> None:
    for _ in range(rounds):
        for client in clients:
            client.heartbeat()
            assert_disjoint(*clients)
            coordinator.check()


def tps(topic: str, *partitions: int) -> frozenset[TopicPartition]:
    return frozenset((topic, p) for p in partitions)


ALL_T = tps("t", *range(6))


# --- joining ---------------------------------------------------------------------------------------


def test_first_join_names_the_member_and_gives_it_everything() -> None:
    coordinator = Coordinator({"t": 6})
    a = Client(coordinator)
    response = a.heartbeat()
    assert response.error is None
    assert response.member_id == "member-1" and response.member_epoch == 1
    assert response.assignment == ALL_T and response.heartbeat_interval_ms == 500
    assert coordinator.image.describe(GROUP).state is GroupStateName.STABLE
    kinds = [type(r).__name__ for r in coordinator.decisions[-1].records]
    assert kinds == ["GroupMemberUpsert", "TargetAssignment", "MemberCurrentAssignment"]
    # A retried heartbeat with nothing new decides nothing.
    assert a.heartbeat().member_epoch == 1 and coordinator.decisions[-1].records == ()


def test_a_client_chosen_member_id_makes_a_retried_join_idempotent() -> None:
    coordinator = Coordinator({"t": 2})
    first = coordinator.heartbeat(HeartbeatRequest(GROUP, "mine", 0, subscribed_topic_names=("t",)))
    again = coordinator.heartbeat(HeartbeatRequest(GROUP, "mine", 0, subscribed_topic_names=("t",)))
    assert first.response.member_id == again.response.member_id == "mine"
    assert again.response.assignment == first.response.assignment and again.records == ()
    assert list(coordinator.group.members) == ["mine"]


def test_second_member_waits_until_the_first_released_its_partitions() -> None:
    coordinator = Coordinator({"t": 6})
    a, b = Client(coordinator), Client(coordinator)
    a.heartbeat()
    response = b.heartbeat()
    assert response.member_epoch == 2 and response.assignment == frozenset(), "b got a's partitions early"
    # a is told to keep three; it still reports owning all six, so b still gets nothing.
    kept = a.heartbeat(release=False).assignment
    assert kept is not None and len(kept) == 3 and a.holding == ALL_T
    assert b.heartbeat().assignment == frozenset()
    a.heartbeat()  # still reports all six, then lets go of the three it lost
    assert a.holding == kept
    assert b.heartbeat().assignment == frozenset(), "a has not reported the release yet"
    a.heartbeat()  # reports owning only what it keeps: released
    assert b.heartbeat().assignment == ALL_T - kept
    assert coordinator.image.describe(GROUP).state is GroupStateName.STABLE
    assert (a.epoch, b.epoch, coordinator.group.group_epoch) == (2, 2, 2)


@pytest.mark.parametrize("slow_release", [0, 1, 2])
@pytest.mark.parametrize("order", list(itertools.product("ab", repeat=6)))
def test_no_interleaving_lets_two_members_hold_a_partition(order: tuple[str, ...], slow_release: int) -> None:
    coordinator = Coordinator({"t": 5, "u": 2})
    a = Client(coordinator, topics=("t", "u"))
    b = Client(coordinator, topics=("t", "u"))
    a.heartbeat()
    clients = {"a": a, "b": b}
    delays = {"a": slow_release, "b": 0}
    for name in ("b", *order):
        client = clients[name]
        release = delays[name] == 0
        if not release:
            delays[name] -= 1
        client.heartbeat(release=release)
        assert_disjoint(a, b)
        coordinator.check()
    settle(coordinator, a, b)
    assert sorted([len(a.holding), len(b.holding)]) == [3, 4]
    assert a.holding | b.holding == tps("t", *range(5)) | tps("u", 0, 1)
    assert coordinator.image.describe(GROUP).state is GroupStateName.STABLE


def test_a_member_missing_an_answer_may_use_its_previous_epoch() -> None:
    coordinator = Coordinator({"t": 4})
    a, b = Client(coordinator), Client(coordinator)
    a.heartbeat()
    b.heartbeat()
    a.heartbeat()  # revoke two
    a.heartbeat()  # released: a moves to epoch 2
    assert a.epoch == 2
    member = coordinator.group.members[a.member_id]
    assert (member.member_epoch, member.previous_member_epoch) == (2, 1)
    response = coordinator.heartbeat(HeartbeatRequest(GROUP, a.member_id, 1,
                                                      owned_partitions=frozenset(a.holding))).response
    assert response.error is None and response.member_epoch == 2
    # With an owned list that is not a subset of its assignment, the previous epoch is fenced.
    response = coordinator.heartbeat(HeartbeatRequest(GROUP, a.member_id, 1, owned_partitions=ALL_T)).response
    assert response.error is not None and response.error.reason is R.FENCED_MEMBER_EPOCH


def test_a_stale_epoch_is_fenced_and_the_member_rejoins_with_its_id() -> None:
    coordinator = Coordinator({"t": 2})
    a = Client(coordinator)
    a.heartbeat()
    for epoch in (5, 7):
        response = coordinator.heartbeat(HeartbeatRequest(GROUP, a.member_id, epoch)).response
        assert response.error is not None and response.error.reason is R.FENCED_MEMBER_EPOCH
        assert response.assignment is None and coordinator.decisions[-1].records == ()
    a.receive(response)
    assert a.holding == set() and a.epoch == 0
    rejoined = a.heartbeat()
    assert rejoined.error is None and rejoined.member_id == "member-1"
    assert rejoined.assignment == tps("t", 0, 1)


def test_unknown_member_and_invalid_requests_are_refused_without_records() -> None:
    coordinator = Coordinator({"t": 2})
    cases = [
        (HeartbeatRequest(GROUP, "ghost", 3), R.UNKNOWN_MEMBER_ID),
        (HeartbeatRequest("", "", 0, subscribed_topic_names=("t",)), R.INVALID_REQUEST),
        (HeartbeatRequest("x" * 256, "", 0, subscribed_topic_names=("t",)), R.INVALID_REQUEST),
        (HeartbeatRequest(GROUP, "", 4), R.INVALID_REQUEST),
        (HeartbeatRequest(GROUP, "m", -3), R.INVALID_REQUEST),
        (HeartbeatRequest(GROUP, "m", -2), R.INVALID_REQUEST),
        (HeartbeatRequest(GROUP, "", 0), R.INVALID_REQUEST),  # a join must subscribe
        (HeartbeatRequest(GROUP, "", 0, subscribed_topic_regex="t("), R.INVALID_REQUEST),
        (HeartbeatRequest(GROUP, "", 0, subscribed_topic_names=("t",), server_assignor="sticky"),
         R.UNSUPPORTED_ASSIGNOR),
        (HeartbeatRequest(GROUP, "", 0, subscribed_topic_names=("t",), session_timeout_ms=500),
         R.INVALID_REQUEST),
        (HeartbeatRequest(GROUP, "", 0, subscribed_topic_names=("t",), rebalance_timeout_ms=0),
         R.INVALID_REQUEST),
    ]
    for request, reason in cases:
        decision = coordinator.heartbeat(request)
        assert decision.response.error is not None, request
        assert decision.response.error.reason is reason, (request, decision.response.error)
        assert decision.records == () and decision.session is None
    assert coordinator.image.group(GROUP) is None


def test_the_group_size_limit() -> None:
    coordinator = Coordinator({"t": 1})
    small = GroupSettings(heartbeat_interval_ms=500, session_timeout_ms=3_000, group_members_max=2)
    for expected in (None, None, R.GROUP_MAX_SIZE_REACHED):
        decision = heartbeat(coordinator.image, HeartbeatRequest(GROUP, "", 0, subscribed_topic_names=("t",)),
                             coordinator.topics, 0, new_member_id=coordinator.new_member_id, settings=small)
        coordinator.apply(decision.records)
        assert (decision.response.error.reason if decision.response.error else None) is expected


# --- leaving and expiring ------------------------------------------------------------------------------


def test_leaving_frees_the_partitions_for_the_others() -> None:
    coordinator = Coordinator({"t": 6})
    a, b = Client(coordinator), Client(coordinator)
    a.heartbeat()
    settle(coordinator, a, b)
    epoch = coordinator.group.group_epoch
    response = b.leave()
    assert response.member_epoch == -1 and response.assignment == frozenset()
    assert coordinator.group.group_epoch == epoch + 1 and list(coordinator.group.members) == [a.member_id]
    assert coordinator.image.describe(GROUP).state is GroupStateName.ASSIGNING
    assert a.heartbeat().assignment == ALL_T
    assert (GROUP, b.member_id) not in coordinator.sessions.sessions
    gone = coordinator.heartbeat(HeartbeatRequest(GROUP, b.member_id, -1)).response.error
    assert gone is not None and gone.reason is R.UNKNOWN_MEMBER_ID


def test_a_static_member_leaves_temporarily_and_its_successor_takes_its_partitions_back() -> None:
    coordinator = Coordinator({"t": 6})
    a = Client(coordinator, instance_id="instance-a")
    b = Client(coordinator)
    a.heartbeat()
    settle(coordinator, a, b)
    kept, epoch, a_epoch = frozenset(a.holding), coordinator.group.group_epoch, a.epoch
    assert a.leave(-2).member_epoch == -2
    away = coordinator.group.members[a.member_id]
    assert away.away and away.assigned == kept and coordinator.group.group_epoch == epoch
    # b heartbeats meanwhile: nothing moves, no rebalance.
    settle(coordinator, b)
    assert b.holding == ALL_T - kept and coordinator.group.group_epoch == epoch
    # The old process's id is fenced while away.
    old = coordinator.heartbeat(HeartbeatRequest(GROUP, a.member_id, a_epoch)).response.error
    assert old is not None and old.reason is R.FENCED_MEMBER_EPOCH
    # A new process with the same instance id joins under a new member id and gets the same partitions.
    successor = Client(coordinator, instance_id="instance-a")
    response = successor.heartbeat()
    assert response.error is None and response.member_id != a.member_id
    assert response.assignment == kept and response.member_epoch == epoch
    assert coordinator.group.group_epoch == epoch and set(coordinator.group.members) == {
        successor.member_id, b.member_id}
    # The replaced id now meets FENCED_INSTANCE_ID.
    fenced = coordinator.heartbeat(HeartbeatRequest(GROUP, a.member_id, epoch, instance_id="instance-a"))
    assert fenced.response.error is not None and fenced.response.error.reason is R.FENCED_INSTANCE_ID


def test_an_instance_id_held_by_a_present_member_is_unreleased() -> None:
    coordinator = Coordinator({"t": 2})
    Client(coordinator, instance_id="i").heartbeat()
    response = Client(coordinator, instance_id="i").heartbeat()
    assert response.error is not None and response.error.reason is R.UNRELEASED_INSTANCE_ID
    dynamic = Client(coordinator)
    dynamic.heartbeat()
    temporary = coordinator.heartbeat(HeartbeatRequest(GROUP, dynamic.member_id, -2, instance_id="j"))
    assert temporary.response.error is not None and temporary.response.error.reason is R.FENCED_INSTANCE_ID


def test_session_expiry_removes_the_member_and_its_partitions_move() -> None:
    coordinator = Coordinator({"t": 6})
    a, b = Client(coordinator), Client(coordinator)
    a.heartbeat()
    settle(coordinator, a, b)
    for _ in range(4):  # a keeps heartbeating, b went silent
        coordinator.now += 1_000
        a.heartbeat()
        assert coordinator.expire() == ([b.member_id] if coordinator.now > 3_000 else [])
        if coordinator.now > 3_000:
            b.holding.clear()  # the silent process stopped itself after its session timeout
    assert list(coordinator.group.members) == [a.member_id]
    assert a.heartbeat().assignment == ALL_T
    assert session_expired(coordinator.image, GROUP, b.member_id) == []


def test_an_away_static_member_expires_after_its_session() -> None:
    coordinator = Coordinator({"t": 2})
    a = Client(coordinator, instance_id="i")
    a.heartbeat()
    a.leave(-2)
    coordinator.now = 3_000
    assert coordinator.expire() == []
    coordinator.now = 3_001
    assert coordinator.expire() == [a.member_id]
    assert coordinator.image.describe(GROUP).state is GroupStateName.EMPTY


def test_a_member_that_does_not_release_within_its_rebalance_timeout_expires() -> None:
    coordinator = Coordinator({"t": 4})
    a, b = Client(coordinator), Client(coordinator)
    a.heartbeat()
    b.heartbeat()
    while coordinator.now <= 10_000:
        a.heartbeat(release=False)  # alive, but never lets go
        b.heartbeat()
        assert not a.holding & b.holding
        coordinator.now += 1_000
        expired = coordinator.expire()
    assert expired == [a.member_id]
    assert b.heartbeat().assignment == tps("t", 0, 1, 2, 3)


def test_a_new_controller_gives_every_member_a_fresh_session() -> None:
    coordinator = Coordinator({"t": 2})
    a = Client(coordinator)
    a.heartbeat()
    fresh = SessionTracker.fresh(coordinator.image, 10_000)
    assert fresh.expired(13_000) == [] and fresh.expired(13_001) == [(GROUP, a.member_id)]


# --- subscriptions and topic metadata ----------------------------------------------------------------------


def test_adding_partitions_bumps_the_group_epoch_and_assigns_them() -> None:
    coordinator = Coordinator({"t": 4})
    a, b = Client(coordinator), Client(coordinator)
    a.heartbeat()
    settle(coordinator, a, b)
    epoch = coordinator.group.group_epoch
    coordinator.topics["t"] = 6
    a.heartbeat()
    assert coordinator.group.group_epoch == epoch + 1
    assert type(coordinator.decisions[-1].records[0]).__name__ == "GroupEpochBump"
    settle(coordinator, a, b)
    assert a.holding | b.holding == ALL_T and len(a.holding) == len(b.holding) == 3


def test_a_regex_subscription_picks_up_new_topics_but_not_internal_ones() -> None:
    coordinator = Coordinator({"orders-eu": 1, "payments": 1, "__orders-internal": 1})
    a = Client(coordinator, topics=None, regex="(__)?orders-.*")
    assert a.heartbeat().assignment == tps("orders-eu", 0)
    coordinator.topics["orders-us"] = 2
    assert a.heartbeat().assignment == tps("orders-eu", 0) | tps("orders-us", 0, 1)
    assert coordinator.group.regex_topics == {"(__)?orders-.*": ("orders-eu", "orders-us")}
    del coordinator.topics["orders-eu"]
    a.heartbeat()
    assert a.holding == tps("orders-us", 0, 1)


def test_changing_the_subscription_revokes_first() -> None:
    coordinator = Coordinator({"t": 2, "u": 2})
    a = Client(coordinator, topics=("t",))
    a.heartbeat()
    epoch = coordinator.group.group_epoch
    response = a.heartbeat(release=False, subscribed_topic_names=("u",))
    assert coordinator.group.group_epoch == epoch + 1
    assert response.assignment == frozenset() and response.member_epoch == epoch
    assert coordinator.group.members[a.member_id].pending_revocation == tps("t", 0, 1)
    assert a.heartbeat().assignment == frozenset()  # it still reported t: nothing moves; it releases now
    assert a.heartbeat().assignment == tps("u", 0, 1)


def test_the_group_uses_the_assignor_most_members_ask_for() -> None:
    coordinator = Coordinator({"t": 4})
    a = Client(coordinator)
    a.heartbeat(server_assignor="range")
    b = Client(coordinator)
    b.heartbeat(server_assignor="range")
    settle(coordinator, a, b)
    assert coordinator.group.assignor == "range"
    assert sorted([sorted(a.holding), sorted(b.holding)]) == [[("t", 0), ("t", 1)], [("t", 2), ("t", 3)]]


def test_every_prefix_of_a_decision_leaves_a_group_the_next_heartbeat_completes() -> None:
    for cut in range(4):
        coordinator = Coordinator({"t": 4})
        a, b = Client(coordinator), Client(coordinator)
        a.heartbeat()
        decision = coordinator.heartbeat(HeartbeatRequest(GROUP, "b-id", 0, subscribed_topic_names=("t",)),
                                         apply=False)
        assert len(decision.records) == 3
        coordinator.apply(decision.records[:cut])  # the controller failed over after `cut` records
        coordinator.check()
        b.member_id = "b-id"
        settle(coordinator, a, b)
        assert sorted([len(a.holding), len(b.holding)]) == [2, 2], cut


# --- deleting ---------------------------------------------------------------------------------------


def test_delete_group_refuses_a_group_with_members() -> None:
    coordinator = Coordinator({"t": 1})
    with pytest.raises(GroupError) as caught:
        delete_group(coordinator.image, GROUP)
    assert caught.value.reason is R.GROUP_ID_NOT_FOUND
    a = Client(coordinator)
    a.heartbeat()
    with pytest.raises(GroupError) as caught:
        delete_group(coordinator.image, GROUP)
    assert caught.value.reason is R.GROUP_NOT_EMPTY and caught.value.retriable
    a.leave()
    coordinator.apply(delete_group(coordinator.image, GROUP))
    assert coordinator.image.describe(GROUP).state is GroupStateName.DEAD


# --- the property test ----------------------------------------------------------------------------------


@dataclass
class Process:
    """A consumer process in the random workload: positions of what it holds, timers, quirks."""

    client: Client
    last_success_ms: int = 0
    positions: dict[TopicPartition, int] = field(default_factory=dict)
    slow: int = 0
    """Heartbeats left before it releases revoked partitions (a slow revocation callback)."""
    partitioned: bool = False
    """Cut off from the controller: it sends nothing (and stops itself after its session timeout)."""
    reported: frozenset[TopicPartition] | None = None


class Workload:
    """Random joins, leaves, crashes, partitions, heartbeats, commits, topic growth and failovers."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        # Clients here enforce their session timeout on themselves, not their rebalance timeout; the
        # server's rebalance timeout (tested on its own above) is out of the way.
        self.coordinator = Coordinator({"t0": 3, "t1": 2}, GroupSettings(
            heartbeat_interval_ms=500, session_timeout_ms=3_000, rebalance_timeout_ms=1_800_000))
        self.processes: list[Process] = []
        self.dead: list[tuple[str, int, dict[TopicPartition, int]]] = []
        self.committed: dict[TopicPartition, int] = {}
        self.instances = ["i1", "i2", "i3"]
        self.steps = 0

    # --- actions ---

    def join(self) -> None:
        in_use = {p.client.instance_id for p in self.processes}
        free = [i for i in self.instances if i not in in_use]
        instance = self.rng.choice(free) if free and self.rng.random() < 0.5 else None
        if self.rng.random() < 0.3:
            client = Client(self.coordinator, topics=None, regex="t[0-9]+", instance_id=instance)
        else:
            topics = tuple(self.rng.sample(sorted(self.coordinator.topics), 1 + self.rng.randrange(2)))
            client = Client(self.coordinator, topics=topics, instance_id=instance)
        self.processes.append(Process(client, self.coordinator.now))
        self.beat(self.processes[-1])

    def beat(self, process: Process, *, prompt: bool = False) -> None:
        rng, client, coordinator = self.rng, process.client, self.coordinator
        if process.partitioned:
            return
        holding = frozenset(client.holding)
        report = prompt or client.epoch == 0 or process.reported != holding or rng.random() < 0.7
        release = prompt or process.slow == 0
        fate = 1.0 if prompt else rng.random()
        if fate < 0.05:
            # The controller fails over after a prefix of the records; the answer is lost.
            response = client.heartbeat(report=report, apply=False)
            decision = coordinator.decisions[-1]
            coordinator.apply(decision.records[:rng.randrange(len(decision.records) + 1)])
            coordinator.sessions = SessionTracker.fresh(coordinator.image, coordinator.now)
            return
        if fate < 0.12:
            # The records apply, the answer is lost.
            response = client.heartbeat(report=report, apply=False)
            decision = coordinator.decisions[-1]
            coordinator.apply(decision.records)
            if decision.session is not None:
                coordinator.sessions.observe(decision.session)
            process.reported = holding if report else process.reported
            return
        before = set(client.holding)
        response = client.heartbeat(report=report, release=release)
        if response.error is None:
            process.reported = holding if report else process.reported
            process.last_success_ms = coordinator.now
            if client.holding - (response.assignment or frozenset()):
                process.slow -= 1  # it kept revoked partitions for one more heartbeat
            elif process.slow == 0 and rng.random() < 0.3:
                process.slow = rng.randint(1, 2)  # its next revocation will be slow
            for tp in client.holding - before:
                found = coordinator.image.committed_offset(GROUP, tp)
                process.positions[tp] = found.offset if found is not None else 0
            for tp in before - client.holding:
                process.positions.pop(tp, None)
        elif response.error.reason is R.FENCED_INSTANCE_ID:
            self.kill(process)
        elif response.error.reason in (R.FENCED_MEMBER_EPOCH, R.UNKNOWN_MEMBER_ID):
            process.positions.clear()
            process.reported = None
        else:
            assert response.error.reason is R.UNRELEASED_INSTANCE_ID, response.error

    def commit(self, process: Process) -> None:
        client = process.client
        if process.partitioned or not client.holding:
            return
        tp = self.rng.choice(sorted(client.holding))
        position = process.positions[tp] + self.rng.randrange(6)
        decision = commit_offsets(self.coordinator.image, OffsetCommitRequest(
            GROUP, client.member_id, client.epoch, (OffsetCommitEntry(tp[0], tp[1], position),)),
            self.coordinator.topics, self.coordinator.now)
        self.coordinator.apply(decision.records)
        if decision.results[0].error is None:
            process.positions[tp] = position
        else:
            assert decision.results[0].error.reason is R.STALE_MEMBER_EPOCH, decision.results[0].error

    def zombie_commit(self) -> None:
        """A dead process's last positions: must be refused once the group has moved on without it."""
        if not self.dead:
            return
        member_id, epoch, positions = self.rng.choice(self.dead)
        group = self.coordinator.image.group(GROUP)
        member = group.members.get(member_id) if group is not None else None
        if not positions or (member is not None and member.member_epoch == epoch):
            return  # not yet noticed dead: indistinguishable from a live member, and not a zombie yet
        entries = tuple(OffsetCommitEntry(t, p, o) for (t, p), o in sorted(positions.items()))
        request = OffsetCommitRequest(GROUP, member_id, epoch, entries)
        coordinator = self.coordinator
        decision = commit_offsets(coordinator.image, request, coordinator.topics, coordinator.now)
        assert decision.records == () and all(r.error is not None for r in decision.results)

    def kill(self, process: Process) -> None:
        self.processes.remove(process)
        self.dead.append((process.client.member_id, process.client.epoch, dict(process.positions)))
        process.client.holding.clear()

    def leave(self, process: Process) -> None:
        client = process.client
        if process.partitioned or client.epoch == 0 or not client.member_id:
            return
        epoch = -2 if client.instance_id and self.rng.random() < 0.6 else -1
        client.leave(epoch)
        self.kill(process)

    def advance(self, ms: int) -> None:
        coordinator = self.coordinator
        coordinator.now += ms
        for process in self.processes:
            silent_ms = coordinator.now - process.last_success_ms
            if process.client.member_id and silent_ms >= coordinator.settings.session_timeout_ms:
                process.client.holding.clear()  # its session ran out: it stops consuming by itself
                process.positions.clear()
                process.client.epoch = 0
                process.reported = None
        coordinator.expire()

    def reset_if_empty(self) -> None:
        group = self.coordinator.image.group(GROUP)
        if group is None or group.members:
            return
        topics = self.coordinator.topics
        bounds = {(t, p): PartitionBounds(0, 1_000) for t, n in topics.items() for p in range(n)}
        plan = plan_reset_offsets(self.coordinator.image, GROUP, ResetSpec(ResetMode.TO_EARLIEST), bounds,
                                  None, self.coordinator.now)
        self.coordinator.apply(plan.records)
        for change in plan.changes:
            self.committed[(change.topic, change.partition)] = change.offset

    def step(self) -> None:
        rng = self.rng
        self.steps += 1
        roll = rng.random()
        live = [p for p in self.processes]
        if roll < 0.08 or not live:
            if len(self.processes) < 6:
                self.join()
        elif roll < 0.55:
            self.beat(rng.choice(live))
        elif roll < 0.70:
            self.commit(rng.choice(live))
        elif roll < 0.73:
            self.leave(rng.choice(live))
        elif roll < 0.75:
            self.kill(rng.choice(live))  # a crash: nothing is sent
        elif roll < 0.78:
            process = rng.choice(live)
            process.partitioned = not process.partitioned
        elif roll < 0.88:
            self.advance(rng.choice([50, 200, 800, 2_000, 3_500]))
        elif roll < 0.90:
            topic = rng.choice(sorted(self.coordinator.topics))
            self.coordinator.topics[topic] = min(8, self.coordinator.topics[topic] + rng.randint(1, 2))
        elif roll < 0.91:
            self.coordinator.topics[f"t{len(self.coordinator.topics)}"] = rng.randint(1, 3)
        elif roll < 0.95:
            self.zombie_commit()
        else:
            self.reset_if_empty()

    # --- checks ---

    def check(self) -> None:
        coordinator = self.coordinator
        coordinator.check()
        clients = [p.client for p in self.processes]
        assert_disjoint(*clients)
        group = coordinator.image.group(GROUP)
        for client in clients:
            if client.holding:
                assert group is not None and client.member_id in group.members, "holding without membership"
                assert client.holding <= group.members[client.member_id].owned, "holding what it does not own"
        for tp, offset in coordinator.image.committed_offsets(GROUP).items():
            assert offset.offset >= self.committed.get(tp, 0), f"{tp} went back without a reset"
            self.committed[tp] = offset.offset

    def quiesce(self) -> None:
        for process in self.processes:
            process.partitioned = False
            process.slow = 0
        for _ in range(40):
            self.advance(200)
            for process in list(self.processes):
                if process in self.processes:
                    self.beat(process, prompt=True)
            self.check()


@pytest.mark.parametrize("seed", range(30))
def test_random_workload_never_shares_a_partition_and_converges(seed: int) -> None:
    workload = Workload(seed)
    try:
        for _ in range(400):
            workload.step()
            workload.check()
        workload.quiesce()
    except AssertionError as exc:
        raise AssertionError(f"seed={seed} step={workload.steps}: {exc}") from exc
    group = workload.coordinator.image.group(GROUP)
    if group is not None and group.members:
        assert group.state is GroupStateName.STABLE, f"seed={seed}"
        for process in workload.processes:
            assert process.client.holding == group.target_of(process.client.member_id), f"seed={seed}"
        wanted = {(t, p) for t in group.partition_counts for p in range(workload.coordinator.topics[t])}
        assert set(group.owners()) == wanted, f"seed={seed}: an subscribed partition is not consumed"


def test_the_applied_records_round_trip_and_replay_to_the_same_image() -> None:
    workload = Workload(3)
    for _ in range(300):
        workload.step()
    log = workload.coordinator.log
    assert any(isinstance(r, TargetAssignment) for r in log)
    assert any(isinstance(r, GroupMemberUpsert) for r in log)
    replay = GroupsImage()
    for record in log:
        decoded = from_json(json.loads(json.dumps(to_json(record))))
        assert decoded == record
        assert replay.apply(decoded).ok
    assert replay.snapshot_body() == workload.coordinator.image.snapshot_body()


# --- sessions ----------------------------------------------------------------------------------------


def test_session_timers_revocation_timer_and_sync() -> None:
    tracker = SessionTracker()
    tracker.observe(SessionUpdate("g", "a", 0, 1_000, 5_000, revoking=True))
    tracker.observe(SessionUpdate("g", "a", 900, 1_000, 5_000, revoking=True))  # the timer keeps its start
    assert tracker.sessions[("g", "a")] == Session(900, 1_000, 5_000, revoking_since_ms=0)
    tracker.observe(SessionUpdate("g", "a", 1_800, 1_000, 5_000, revoking=False))
    assert tracker.sessions[("g", "a")].revoking_since_ms is None
    tracker.observe(SessionUpdate("g", "b", 1_800, 1_000, 500, revoking=True))
    assert tracker.expired(2_300) == [] and tracker.expired(2_301) == [("g", "b")]
    assert expired_members({("g", "z"): Session(0, 10, 10), ("a", "y"): Session(0, 10, 10)}, 11) == [
        ("a", "y"), ("g", "z")]
    tracker.observe(SessionUpdate("g", "", 1_900, forget=("a",)))
    assert set(tracker.sessions) == {("g", "b")}
    # sync keeps exactly the image's members: b is not in it, c is (with a fresh session).
    coordinator = Coordinator({"t": 1})
    coordinator.heartbeat(HeartbeatRequest(GROUP, "c", 0, subscribed_topic_names=("t",)))
    tracker.sync(coordinator.image, 5_000)
    assert set(tracker.sessions) == {(GROUP, "c")} and len(tracker) == 1
    assert tracker.sessions[(GROUP, "c")].last_heartbeat_ms == 5_000
