"""The group coordinator's decisions (KIP-848): pure functions from the image and a request to records.

Run on the active controller only. Nothing here reads a clock, draws
randomness or does I/O: the caller passes the image, the topic metadata
(``{topic name: partition count}`` of every existing topic), ``now_ms``, and a
source of fresh member ids; it proposes the returned records to the metadata
log and answers the client. Every function iterates in sorted order, so equal
inputs give equal outputs.

One RPC, :func:`heartbeat` (ConsumerGroupHeartbeat), carries everything a member does:

* **join** — member epoch 0, member id ``""`` (the coordinator names it) or a
  client-chosen id (KIP-1082: a retried join then finds its own member
  instead of leaking a second one). The first heartbeat must carry a
  subscription (topic names and/or a regex). A known member id joining again
  (after ``FENCED_MEMBER_EPOCH``) declares it owns nothing.
* **heartbeat** — the current member epoch (or the previous one, if the
  member missed the answer that moved it: accepted when its owned list is a
  subset of its assignment), any changed subscription fields (``None``:
  unchanged), and the partitions it owns (``None``: unchanged since the last
  heartbeat).
* **leave** — member epoch -1 (for good: its partitions are freed) or -2
  (a static member, with ``instance_id``, leaving temporarily: it keeps its
  assignment for as long as its session lasts and takes it back when a
  process with the same instance id joins, whatever its member id).

Each successful heartbeat, in order:

1. updates the member (new member, subscription change: the group epoch
   grows — derived when the record applies);
2. resolves every member's subscription against the topics (a regex matches
   whole topic names, never internal ``__`` topics) and bumps the group epoch
   (``GroupEpochBump``) if the subscribed topics or their partition counts
   differ from those the target was computed from;
3. if the group epoch is ahead of the target, computes a new target with
   the group's assignor (the one most members ask for, ties by name, else
   the default) and writes it (``TargetAssignment``); static members away
   drop what the new target does not give them;
4. reconciles the heartbeating member
   (:func:`~millpond.controller.groups.reconciliation.reconcile`: revoke
   first, assign what others released) and answers with its epoch and the
   partitions it may own now.

Other members learn of a new target at their next heartbeat.

Wiring rules for the caller (the active controller):

* Decide, propose and await the records of one group one call at a time (a
  lock per group): a decision reads the group as applied, and records of two
  concurrent decisions may be rejected when they apply (the apply rules keep
  ownership exclusive regardless, and the client retries).
* The records of one decision may be cut after any of them by a controller
  failover; every prefix is a valid group and the next heartbeat continues.
* Feed each decision's :class:`~millpond.controller.groups.sessions.SessionUpdate`
  to the :class:`~millpond.controller.groups.sessions.SessionTracker` once its
  records applied, and propose :func:`session_expired` for what it reports.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import NoReturn, TypeVar

from millpond import limits
from millpond.controller.groups.assignors import ASSIGNORS, DEFAULT_ASSIGNOR, MemberSubscriptionSpec
from millpond.controller.groups.errors import GroupError, GroupErrorReason
from millpond.controller.groups.reconciliation import reconcile
from millpond.controller.groups.records import (
    GroupDelete,
    GroupEpochBump,
    GroupMemberRemove,
    GroupMemberUpsert,
    GroupRecord,
    MemberCurrentAssignment,
    TargetAssignment,
    pack_partitions,
)
from millpond.controller.groups.sessions import SessionUpdate
from millpond.controller.groups.state import (
    JOIN_EPOCH,
    LEAVE_EPOCH,
    STATIC_LEAVE_EPOCH,
    GroupsImage,
    GroupState,
    MemberState,
    TopicPartition,
)
from millpond.controller.topic_config import INTERNAL_PREFIX, cluster_partitions_max, topic_name_chars_max
from millpond.invariant import invariant, unreachable

__all__ = [
    "DEFAULT_SETTINGS",
    "GroupSettings",
    "HeartbeatDecision",
    "HeartbeatRequest",
    "HeartbeatResponse",
    "ResolvedSubscriptions",
    "delete_group",
    "heartbeat",
    "resolve_subscriptions",
    "session_expired",
    "validate_group_id",
]

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class GroupSettings:
    """The coordinator's configuration (milliseconds of a monotonic clock)."""

    heartbeat_interval_ms: int = 5_000
    """How often members heartbeat (told in every answer)."""
    session_timeout_ms: int = 45_000
    """A member's session timeout unless its join asks for another (within the limits)."""
    rebalance_timeout_ms: int = 300_000
    """A member's rebalance timeout unless its join says otherwise."""
    group_members_max: int = limits.group_members_max
    groups_max: int = limits.groups_max
    default_assignor: str = DEFAULT_ASSIGNOR

    def validate(self) -> None:
        """Raise ``ValueError`` naming every setting out of range or contradicting another or a limit."""
        problems: list[str] = []
        if not limits.group_session_timeout_ms_min <= self.session_timeout_ms \
                <= limits.group_session_timeout_ms_max:
            problems.append("session_timeout_ms must be within group_session_timeout_ms_min/max")
        if not 1 <= self.heartbeat_interval_ms <= self.session_timeout_ms // 2:
            problems.append("heartbeat_interval_ms must be in [1, session_timeout_ms / 2] "
                            "(two heartbeats fit in a session)")
        if not 1 <= self.rebalance_timeout_ms <= limits.group_rebalance_timeout_ms_max:
            problems.append("rebalance_timeout_ms must be in [1, group_rebalance_timeout_ms_max]")
        if not 1 <= self.group_members_max <= limits.group_members_max:
            problems.append("group_members_max must be in [1, limits.group_members_max]")
        if not 1 <= self.groups_max <= limits.groups_max:
            problems.append("groups_max must be in [1, limits.groups_max]")
        if self.default_assignor not in ASSIGNORS:
            problems.append(f"default_assignor must be one of {sorted(ASSIGNORS)}")
        if problems:
            raise ValueError("; ".join(problems))


DEFAULT_SETTINGS = GroupSettings()
DEFAULT_SETTINGS.validate()


@dataclass(frozen=True, slots=True)
class HeartbeatRequest:
    """A ConsumerGroupHeartbeat request (fields as in KIP-848; ``None``: not sent / unchanged)."""

    group_id: str
    member_id: str
    """``""`` to join and let the coordinator name the member."""
    member_epoch: int
    """0 join, -1 leave, -2 static member leaving temporarily, else the member's epoch."""
    instance_id: str | None = None
    """Static membership (``group.instance.id``)."""
    rebalance_timeout_ms: int | None = None
    session_timeout_ms: int | None = None
    subscribed_topic_names: tuple[str, ...] | None = None
    subscribed_topic_regex: str | None = None
    """``""`` clears a regex subscription."""
    server_assignor: str | None = None
    """``""`` clears the member's preference."""
    owned_partitions: frozenset[TopicPartition] | None = None
    """What the member owns now; ``None``: unchanged since its last heartbeat."""

    def __post_init__(self) -> None:
        if self.subscribed_topic_names is not None:
            object.__setattr__(self, "subscribed_topic_names", tuple(self.subscribed_topic_names))
        if self.owned_partitions is not None:
            object.__setattr__(self, "owned_partitions", frozenset(self.owned_partitions))


@dataclass(frozen=True, slots=True)
class HeartbeatResponse:
    """The answer: the member's id and epoch and what it may own now, or an error."""

    member_id: str
    member_epoch: int
    heartbeat_interval_ms: int
    assignment: frozenset[TopicPartition] | None = None
    """Every partition the member may own now (it releases any other it holds); ``None`` on error."""
    error: GroupError | None = None

    def by_topic(self) -> dict[str, tuple[int, ...]]:
        """:attr:`assignment` grouped by topic, as on the wire."""
        return dict(pack_partitions(self.assignment or ()))


@dataclass(frozen=True, slots=True)
class HeartbeatDecision:
    """Records to propose (in order), the answer to send once they applied, and the session effect."""

    records: tuple[GroupRecord, ...]
    response: HeartbeatResponse
    session: SessionUpdate | None = None
    """``None`` when the request was refused (no session is refreshed)."""


@dataclass(frozen=True, slots=True)
class ResolvedSubscriptions:
    """Every member's subscription resolved against the existing topics."""

    topics_by_member: dict[str, frozenset[str]]
    partition_counts: dict[str, int]
    """The union of the members' topics -> partition count."""
    regex_topics: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """Each distinct regex -> the topics it matched, sorted."""


# --- the heartbeat ------------------------------------------------------------------------------------


def heartbeat(image: GroupsImage, request: HeartbeatRequest, topics: Mapping[str, int], now_ms: int, *,
              new_member_id: Callable[[], str],
              settings: GroupSettings = DEFAULT_SETTINGS) -> HeartbeatDecision:
    """Decide on one ConsumerGroupHeartbeat (see the module doc for the rules).

    ``topics`` is every existing topic's partition count; ``new_member_id``
    is called (once) only when a joining member needs an id and must not
    repeat an id of the group. Never raises for a bad request: the response
    carries the :class:`GroupError`, with reason

    * ``INVALID_REQUEST`` — a malformed field (empty or oversized group id,
      member id ``""`` outside a join, epoch below -2, -2 without instance id
      or for a dynamic member, a join without subscription, a regex that does
      not compile, a timeout out of range, too many topics);
    * ``UNSUPPORTED_ASSIGNOR`` — unknown ``server_assignor``;
    * ``UNKNOWN_MEMBER_ID`` — the member is not in the group (it was removed:
      rejoin with epoch 0);
    * ``FENCED_MEMBER_EPOCH`` — the epoch is neither the member's nor its
      previous one with a plausible owned list, or the member left
      temporarily: release everything and rejoin with epoch 0;
    * ``UNRELEASED_INSTANCE_ID`` — joining with an instance id that a member
      still present (not left with -2) holds;
    * ``FENCED_INSTANCE_ID`` — the instance id belongs to another member id
      now (this process was replaced);
    * ``GROUP_MAX_SIZE_REACHED`` / ``GROUPS_MAX_REACHED`` — limits.

    Idempotent where the protocol allows: a retried heartbeat with the same
    fields and owned list yields no new records.
    """
    try:
        return _heartbeat(image, request, topics, now_ms, new_member_id, settings)
    except GroupError as error:
        response = HeartbeatResponse(request.member_id, request.member_epoch, settings.heartbeat_interval_ms,
                                     error=error)
        return HeartbeatDecision((), response)


class _Plan:
    """Records decided so far and the group as it will be once they apply."""

    def __init__(self, group: GroupState) -> None:
        self.group = group
        self.records: list[GroupRecord] = []

    def add(self, record: GroupRecord) -> None:
        try:
            self.group = self.group.apply(record)
        except GroupError as exc:
            unreachable("the coordinator decided a record its own group state rejects",
                        record=record, error=str(exc))
        self.records.append(record)


def _heartbeat(image: GroupsImage, request: HeartbeatRequest, topics: Mapping[str, int], now_ms: int,
               new_member_id: Callable[[], str], settings: GroupSettings) -> HeartbeatDecision:
    _validate(request, settings)
    group = image.group(request.group_id)
    if request.member_epoch in (LEAVE_EPOCH, STATIC_LEAVE_EPOCH):
        return _leave(group, request, now_ms, settings)
    if request.member_epoch == JOIN_EPOCH:
        plan, member_id, forget = _join(image, group, request, new_member_id, settings)
        owned: frozenset[TopicPartition] | None = frozenset()  # a joining process owns nothing
    else:
        plan, member_id = _continue(group, request, settings)
        owned, forget = request.owned_partitions, ()
    _refresh_target(plan, topics, settings)
    member = plan.group.members[member_id]
    reconciled = reconcile(member, plan.group.assignment_epoch, plan.group.target_of(member_id), owned,
                           plan.group.owners())
    if reconciled != member:
        plan.add(_current_assignment(plan.group.group_id, reconciled))
    response = HeartbeatResponse(member_id, reconciled.member_epoch, settings.heartbeat_interval_ms,
                                 reconciled.assigned)
    session = SessionUpdate(plan.group.group_id, member_id, now_ms, reconciled.session_timeout_ms,
                            reconciled.rebalance_timeout_ms, bool(reconciled.pending_revocation), forget)
    return HeartbeatDecision(tuple(plan.records), response, session)


def _validate(request: HeartbeatRequest, settings: GroupSettings) -> None:
    validate_group_id(request.group_id)
    _check_id("member id", request.member_id)
    if request.member_epoch < STATIC_LEAVE_EPOCH:
        _invalid(f"member epoch {request.member_epoch} is not valid (0 join, -1 leave, -2 static leave, "
                 f"or > 0)")
    if not request.member_id and request.member_epoch != JOIN_EPOCH:
        _invalid("member id must be set except when joining (member epoch 0)")
    if request.instance_id is not None:
        _check_id("instance id", request.instance_id)
    if request.member_epoch == STATIC_LEAVE_EPOCH and not request.instance_id:
        _invalid("member epoch -2 (leave temporarily) is for static members: instance id must be set")
    names = request.subscribed_topic_names
    if names is not None:
        if len(names) > limits.group_subscribed_topics_max:
            _invalid(f"{len(names)} subscribed topic names; at most {limits.group_subscribed_topics_max}")
        for name in names:
            if not isinstance(name, str) or not 0 < len(name) <= topic_name_chars_max:
                _invalid(f"subscribed topic name {name!r} is not a topic name")
    regex = request.subscribed_topic_regex
    if regex:
        if len(regex.encode()) > limits.group_subscription_regex_bytes_max:
            _invalid(f"subscription regex is longer than {limits.group_subscription_regex_bytes_max} bytes")
        try:
            re.compile(regex)
        except re.error as exc:
            _invalid(f"subscription regex {regex!r} does not compile: {exc}")
    if request.server_assignor and request.server_assignor not in ASSIGNORS:
        raise GroupError(GroupErrorReason.UNSUPPORTED_ASSIGNOR,
                         f"no server-side assignor is called {request.server_assignor!r}; known: "
                         f"{', '.join(sorted(ASSIGNORS))}")
    if request.rebalance_timeout_ms is not None \
            and not 1 <= request.rebalance_timeout_ms <= limits.group_rebalance_timeout_ms_max:
        _invalid(f"rebalance timeout must be in [1, {limits.group_rebalance_timeout_ms_max}] ms")
    shortest = max(limits.group_session_timeout_ms_min, 2 * settings.heartbeat_interval_ms)
    if request.session_timeout_ms is not None and not (
            shortest <= request.session_timeout_ms <= limits.group_session_timeout_ms_max):
        _invalid(f"session timeout must be in [{shortest}, {limits.group_session_timeout_ms_max}] ms "
                 f"(at least two heartbeat intervals)")
    owned = request.owned_partitions
    if owned is not None:
        if len(owned) > cluster_partitions_max:
            _invalid(f"{len(owned)} owned partitions; at most {cluster_partitions_max}")
        if any(partition < 0 for _, partition in owned):
            _invalid("owned partition numbers must be >= 0")


def validate_group_id(group_id: str) -> None:
    """Raise ``INVALID_REQUEST`` unless ``group_id`` is non-empty and within ``group_id_bytes_max``."""
    if not group_id:
        _invalid("group id must not be empty")
    if len(group_id.encode()) > limits.group_id_bytes_max:
        _invalid(f"group id is longer than {limits.group_id_bytes_max} bytes")


def _check_id(what: str, value: str) -> None:
    if len(value.encode()) > limits.group_member_id_bytes_max:
        _invalid(f"{what} is longer than {limits.group_member_id_bytes_max} bytes")


def _invalid(message: str) -> NoReturn:
    raise GroupError(GroupErrorReason.INVALID_REQUEST, message)


def _unknown_member(group: GroupState | None, request: HeartbeatRequest) -> GroupError:
    if group is not None and request.instance_id:
        holder = group.member_by_instance(request.instance_id)
        if holder is not None and holder.member_id != request.member_id:
            return GroupError(GroupErrorReason.FENCED_INSTANCE_ID, f"instance id {request.instance_id!r} "
                              f"belongs to member {holder.member_id!r} now")
    return GroupError(GroupErrorReason.UNKNOWN_MEMBER_ID,
                      f"member {request.member_id!r} is not in group {request.group_id!r}; rejoin")


def _check_instance(member: MemberState, request: HeartbeatRequest) -> None:
    if request.instance_id is not None and request.instance_id != member.instance_id:
        raise GroupError(GroupErrorReason.FENCED_INSTANCE_ID,
                         f"member {member.member_id!r} has instance id {member.instance_id!r}, not "
                         f"{request.instance_id!r}")


def _leave(group: GroupState | None, request: HeartbeatRequest, now_ms: int,
           settings: GroupSettings) -> HeartbeatDecision:
    member = group.members.get(request.member_id) if group is not None else None
    if group is None or member is None:
        raise _unknown_member(group, request)
    _check_instance(member, request)
    interval = settings.heartbeat_interval_ms
    if request.member_epoch == LEAVE_EPOCH:
        response = HeartbeatResponse(member.member_id, LEAVE_EPOCH, interval, frozenset())
        return HeartbeatDecision((GroupMemberRemove(group.group_id, member.member_id),), response,
                                 SessionUpdate(group.group_id, "", now_ms, forget=(member.member_id,)))
    if not member.instance_id:
        _invalid(f"member {member.member_id!r} is not static: it cannot leave temporarily")
    records: tuple[GroupRecord, ...] = ()
    if not member.away:
        away = replace(member, member_epoch=STATIC_LEAVE_EPOCH, previous_member_epoch=member.member_epoch,
                       pending_revocation=frozenset())
        records = (_current_assignment(group.group_id, away),)
    response = HeartbeatResponse(member.member_id, STATIC_LEAVE_EPOCH, interval, frozenset())
    # Its session keeps running from now: it must rejoin before it ends.
    session = SessionUpdate(group.group_id, member.member_id, now_ms, member.session_timeout_ms,
                            member.rebalance_timeout_ms)
    return HeartbeatDecision(records, response, session)


def _join(image: GroupsImage, group: GroupState | None, request: HeartbeatRequest,
          new_member_id: Callable[[], str], settings: GroupSettings) -> tuple[_Plan, str, tuple[str, ...]]:
    if group is None:
        if image.group_count() >= settings.groups_max:
            raise GroupError(GroupErrorReason.GROUPS_MAX_REACHED,
                             f"the cluster has {settings.groups_max} consumer groups, the most it may have")
        group = GroupState(request.group_id)
    if request.subscribed_topic_names is None and request.subscribed_topic_regex is None:
        _invalid("a joining member must subscribe: set subscribed topic names or a regex")
    plan = _Plan(group)
    instance_id = request.instance_id or ""
    existing = group.members.get(request.member_id) if request.member_id else None
    holder = group.member_by_instance(instance_id) if instance_id else None
    if existing is not None:
        # A known member joins again (after FENCED_MEMBER_EPOCH, or a retried join): it owns nothing now.
        _check_instance(existing, request)
        upsert = _upsert(group.group_id, existing.member_id, existing, request, settings)
        if _changes(upsert, existing):
            plan.add(upsert)
        return plan, existing.member_id, ()
    if holder is not None:
        if not holder.away:
            raise GroupError(GroupErrorReason.UNRELEASED_INSTANCE_ID,
                             f"instance id {instance_id!r} is held by member {holder.member_id!r}, which has "
                             f"not left")
        member_id = request.member_id or _fresh_member_id(group, new_member_id)
        upsert = _upsert(group.group_id, member_id, holder, request, settings)
        plan.add(replace(upsert, replaces_member_id=holder.member_id))
        return plan, member_id, (holder.member_id,)
    if len(group.members) >= settings.group_members_max:
        raise GroupError(GroupErrorReason.GROUP_MAX_SIZE_REACHED,
                         f"group {group.group_id!r} has {len(group.members)} members, the most it may have")
    member_id = request.member_id or _fresh_member_id(group, new_member_id)
    plan.add(_upsert(group.group_id, member_id, None, request, settings))
    return plan, member_id, ()


def _fresh_member_id(group: GroupState, new_member_id: Callable[[], str]) -> str:
    member_id = new_member_id()
    invariant(isinstance(member_id, str) and 0 < len(member_id.encode()) <= limits.group_member_id_bytes_max
              and member_id not in group.members,
              "the member id source gave an empty, oversized or used id", member_id=member_id)
    return member_id


def _continue(group: GroupState | None, request: HeartbeatRequest,
              settings: GroupSettings) -> tuple[_Plan, str]:
    member = group.members.get(request.member_id) if group is not None else None
    if group is None or member is None:
        raise _unknown_member(group, request)
    _check_instance(member, request)
    if member.away:
        raise GroupError(GroupErrorReason.FENCED_MEMBER_EPOCH,
                         f"member {member.member_id!r} left the group temporarily; rejoin with epoch 0")
    owned = request.owned_partitions
    current = request.member_epoch == member.member_epoch
    missed_answer = (request.member_epoch == member.previous_member_epoch and owned is not None
                     and owned <= member.assigned)
    if not (current or missed_answer):
        raise GroupError(GroupErrorReason.FENCED_MEMBER_EPOCH,
                         f"member {member.member_id!r} is at epoch {member.member_epoch}, not "
                         f"{request.member_epoch}; release every partition and rejoin with epoch 0")
    plan = _Plan(group)
    upsert = _upsert(group.group_id, member.member_id, member, request, settings)
    if _changes(upsert, member):
        plan.add(upsert)
    return plan, member.member_id


def _upsert(group_id: str, member_id: str, base: MemberState | None, request: HeartbeatRequest,
            settings: GroupSettings) -> GroupMemberUpsert:
    """The member ``base`` (``None``: a new one) with the request's fields applied, as an upsert."""

    record = GroupMemberUpsert(
        group_id=group_id, member_id=member_id,
        instance_id=request.instance_id or (base.instance_id if base is not None else ""),
        subscribed_topic_names=_pick(request.subscribed_topic_names,
                                    base.subscribed_topic_names if base else None, ()),
        subscribed_topic_regex=_pick(request.subscribed_topic_regex,
                                    base.subscribed_topic_regex if base else None, ""),
        server_assignor=_pick(request.server_assignor, base.server_assignor if base else None, ""),
        rebalance_timeout_ms=_pick(request.rebalance_timeout_ms, base.rebalance_timeout_ms if base else None,
                                  settings.rebalance_timeout_ms),
        session_timeout_ms=_pick(request.session_timeout_ms, base.session_timeout_ms if base else None,
                                settings.session_timeout_ms),
    )
    return record


def _changes(record: GroupMemberUpsert, base: MemberState) -> bool:
    """Whether ``record`` changes anything of member ``base`` (else it is not written)."""
    return (record.subscribed_topic_names, record.subscribed_topic_regex, record.server_assignor,
            record.rebalance_timeout_ms, record.session_timeout_ms) != (
        base.subscribed_topic_names, base.subscribed_topic_regex, base.server_assignor,
        base.rebalance_timeout_ms, base.session_timeout_ms)


def _pick(value: _T | None, old: _T | None, default: _T) -> _T:
    """``value`` if sent, else ``old`` if there is one, else ``default``."""
    if value is not None:
        return value
    return old if old is not None else default


def _current_assignment(group_id: str, member: MemberState) -> MemberCurrentAssignment:
    return MemberCurrentAssignment(group_id, member.member_id, member.member_epoch,
                                   member.previous_member_epoch, pack_partitions(member.assigned),
                                   pack_partitions(member.pending_revocation))


# --- the target assignment ---------------------------------------------------------------------------


def resolve_subscriptions(members: Iterable[MemberState], topics: Mapping[str, int]) -> ResolvedSubscriptions:
    """Each member's subscribed topics that exist: named ones, and those its regex matches in full.

    A regex never matches an internal topic (``__`` prefix); name it to
    subscribe to one. Topics named but missing are left out until they exist.
    """
    members = sorted(members, key=lambda m: m.member_id)
    names = frozenset(topics)
    regexes = sorted({m.subscribed_topic_regex for m in members if m.subscribed_topic_regex})
    regex_topics = {regex: _regex_matches(regex, names) for regex in regexes}
    by_member: dict[str, frozenset[str]] = {}
    for member in members:
        chosen = {name for name in member.subscribed_topic_names if name in topics}
        chosen.update(regex_topics.get(member.subscribed_topic_regex, ()))
        by_member[member.member_id] = frozenset(chosen)
    union = sorted(frozenset().union(*by_member.values()))
    return ResolvedSubscriptions(by_member, {name: topics[name] for name in union}, regex_topics)


@functools.lru_cache(maxsize=64)  # one entry per distinct regex while the topics stay the same
def _regex_matches(regex: str, names: frozenset[str]) -> tuple[str, ...]:
    try:
        pattern = re.compile(regex)
    except re.error:
        return ()  # validated when written; a regex this Python cannot read matches nothing
    return tuple(sorted(n for n in names if not n.startswith(INTERNAL_PREFIX) and pattern.fullmatch(n)))


def _group_assignor(group: GroupState, settings: GroupSettings) -> str:
    votes: dict[str, int] = {}
    for member in group.members.values():
        if member.server_assignor:
            votes[member.server_assignor] = votes.get(member.server_assignor, 0) + 1
    if not votes:
        return settings.default_assignor
    return min(votes, key=lambda name: (-votes[name], name))


def _refresh_target(plan: _Plan, topics: Mapping[str, int], settings: GroupSettings) -> None:
    group = plan.group
    resolved = resolve_subscriptions(group.members.values(), topics)
    assignor = _group_assignor(group, settings)
    inputs_moved = (resolved.partition_counts != dict(group.partition_counts)
                    or resolved.regex_topics != dict(group.regex_topics) or assignor != group.assignor)
    if group.group_epoch == group.assignment_epoch and inputs_moved:
        plan.add(GroupEpochBump(group.group_id, group.group_epoch + 1))
    group = plan.group
    if group.group_epoch == group.assignment_epoch:
        return
    specs = {m: MemberSubscriptionSpec(resolved.topics_by_member[m]) for m in sorted(group.members)}
    target = ASSIGNORS[assignor].assign(specs, resolved.partition_counts, group.target)
    _check_target(target, specs, resolved.partition_counts)
    plan.add(TargetAssignment(
        group.group_id, group.group_epoch, assignor, tuple(sorted(resolved.partition_counts.items())),
        tuple(sorted(resolved.regex_topics.items())),
        tuple((member_id, pack_partitions(target[member_id])) for member_id in sorted(target))))
    for member_id in sorted(plan.group.members):
        member = plan.group.members[member_id]
        if member.away and not member.assigned <= target[member_id]:
            # Away, it consumes nothing: what its new target does not keep is free at once.
            kept = replace(member, assigned=member.assigned & target[member_id])
            plan.add(_current_assignment(group.group_id, kept))


def _check_target(target: Mapping[str, frozenset[TopicPartition]],
                  specs: Mapping[str, MemberSubscriptionSpec], counts: Mapping[str, int]) -> None:
    invariant(target.keys() == specs.keys(), "the assignor left out or invented members")
    seen: set[TopicPartition] = set()
    for member_id in sorted(target):
        for tp in target[member_id]:
            topic, partition = tp
            invariant(topic in specs[member_id].topics and 0 <= partition < counts.get(topic, 0)
                      and tp not in seen, "the assignor gave an unsubscribed, missing or taken partition",
                      member_id=member_id, partition=tp)
            seen.add(tp)


# --- other decisions ------------------------------------------------------------------------------------


def session_expired(image: GroupsImage, group_id: str, member_id: str) -> list[GroupRecord]:
    """Records removing a member whose session (or rebalance timeout) ran out; empty if it is gone already.

    Its partitions are free for their next owners as soon as the record
    applies; the group's other members get a new target at their next heartbeat.
    """
    group = image.group(group_id)
    if group is None or member_id not in group.members:
        return []
    return [GroupMemberRemove(group_id, member_id)]


def delete_group(image: GroupsImage, group_id: str) -> list[GroupRecord]:
    """The record deleting group ``group_id`` and its committed offsets.

    Raises :class:`GroupError`: ``GROUP_ID_NOT_FOUND`` if it does not exist,
    ``GROUP_NOT_EMPTY`` if it has members (static members away included: they
    hold their assignment until their session ends). The record is rejected
    the same way if a member joins before it applies.
    """
    group = image.group(group_id)
    if group is None:
        raise GroupError(GroupErrorReason.GROUP_ID_NOT_FOUND, f"group {group_id!r} does not exist")
    if group.members:
        raise GroupError(GroupErrorReason.GROUP_NOT_EMPTY,
                         f"group {group_id!r} has {len(group.members)} member(s); it can be deleted once "
                         f"they left or expired")
    return [GroupDelete(group_id)]
