"""The group coordinator on the active controller: the asynchronous shell around the pure group logic.

:mod:`millpond.controller.groups` decides (pure functions of the image, a
request, the topic metadata and the time); this shell feeds it, proposes what
it decides to the metadata log, and answers once the records applied:

* **One decision per group at a time.** Every request that changes a group
  (heartbeat, offset commit, delete, reset) and every session expiry holds
  that group's lock from the decision until its records applied: a decision
  reads the group as applied, so two decisions in flight for one group could
  contradict each other (the apply rules would reject the second; the lock
  makes that a non-event rather than an error the client must retry).
  Different groups proceed concurrently.
* **Records in order.** The records of one decision are proposed together
  (one Raft round) in decision order; the metadata log keeps that order, and
  every prefix of them is a valid group (a failover may cut a decision short).
* **Current topic metadata.** Each heartbeat decision gets the image's
  ``{topic: partition count}`` as of that moment, so partitions added to a
  subscribed topic, or a new topic matching a subscription regex, bump the
  group epoch at the next heartbeat of any member.
* **Sessions** live in memory (:class:`~millpond.controller.groups.sessions.SessionTracker`):
  a new active controller starts every member with a full session (the old
  controller's timers are gone, and a member must not pay for the time the
  cluster had no controller). A decision's session update is observed once its
  records applied; :meth:`GroupCoordinator.tick` proposes the removal of every
  member whose session or rebalance timeout ran out.
* **Member ids** come from ``new_member_id`` (default: a random UUID): the
  record carries the id, so nodes applying it agree whatever the source.
* **Errors**: a refused request raises the :mod:`millpond.errors` class of its
  :class:`~millpond.controller.groups.errors.GroupError` reason; a record
  rejected when it applied raises the error the image gave it;
  :class:`~millpond.errors.NotController` propagates from ``propose``.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from millpond.controller.groups import coordinator, offsets
from millpond.controller.groups.coordinator import DEFAULT_SETTINGS, GroupSettings, HeartbeatRequest
from millpond.controller.groups.coordinator import HeartbeatResponse as GroupHeartbeatResponse
from millpond.controller.groups.errors import GroupError, to_millpond_error
from millpond.controller.groups.offsets import (
    OffsetCommitRequest,
    PartitionBounds,
    ResetPlan,
    ResetSpec,
)
from millpond.controller.groups.sessions import SessionTracker
from millpond.controller.groups.state import CommittedOffset, TopicPartition
from millpond.controller.records import MetadataRecord
from millpond.controller.state import ApplyResult, MetadataImage
from millpond.errors import MillpondError

__all__ = ["GroupCoordinator", "GroupCoordinatorStatistics", "PartitionOutcome", "ProposeAll",
           "group_expirations_per_tick_max"]

#: Members removed for an expired session in one tick; the rest wait for the next tick.
group_expirations_per_tick_max = 1024

ProposeAll = Callable[[Sequence[MetadataRecord]], Awaitable[tuple[ApplyResult, ...]]]
"""Propose records together, in order, and resolve with every one's :class:`ApplyResult` once all
applied; raises :class:`~millpond.errors.NotController` if leadership is lost first."""


@dataclass(frozen=True, slots=True)
class PartitionOutcome:
    """One partition's outcome of an offset commit: ``error`` ``None`` means committed."""

    topic: str
    partition: int
    error: MillpondError | None = None


@dataclass(frozen=True, slots=True)
class GroupCoordinatorStatistics:
    """An immutable snapshot of the coordinator's counters."""

    sessions: int
    """Members whose sessions this controller tracks."""
    groups_locked: int
    """Groups with a decision in progress (or waiting for one)."""
    heartbeats_total: int
    heartbeats_refused_total: int
    offset_commits_total: int
    members_expired_total: int


class _KeyedLocks:
    """One ``asyncio.Lock`` per key, created on demand and dropped when nobody holds or awaits it."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    def __len__(self) -> int:
        return len(self._locks)

    @contextlib.asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (None, 0))
        if lock is None:
            lock = asyncio.Lock()
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)


def _new_member_id() -> str:
    return uuid.uuid4().hex


class GroupCoordinator:
    """Consumer groups on the active controller (owned by its :class:`ActiveController`).

    ``image`` is the node's metadata image (read-only here); ``propose_all``
    proposes records in order and awaits them; ``now_ms`` is a monotonic clock
    (sessions), ``wall_ms`` the wall clock in ms since the Unix epoch (commit
    timestamps, shown to users), ``new_member_id`` names joining members
    (default: random UUIDs). Not thread-safe: use on the node's event loop.
    """

    def __init__(self, image: MetadataImage, propose_all: ProposeAll, now_ms: Callable[[], int],
                 wall_ms: Callable[[], int], settings: GroupSettings = DEFAULT_SETTINGS,
                 new_member_id: Callable[[], str] | None = None) -> None:
        settings.validate()
        self._image = image
        self._propose_all = propose_all
        self._now_ms = now_ms
        self._wall_ms = wall_ms
        self._settings = settings
        self._new_member_id = new_member_id or _new_member_id
        self._sessions = SessionTracker.fresh(image.groups, now_ms())
        self._locks = _KeyedLocks()
        self._heartbeats = self._refused = self._commits = self._expired = 0

    @property
    def settings(self) -> GroupSettings:
        """The coordinator's settings (heartbeat interval, default timeouts, limits, assignor)."""
        return self._settings

    # --- membership -----------------------------------------------------------------------

    async def heartbeat(self, request: HeartbeatRequest) -> GroupHeartbeatResponse:
        """Decide on a ConsumerGroupHeartbeat, propose its records, answer once they applied.

        The answer is the member's id and epoch and every partition it may own
        now (see :func:`~millpond.controller.groups.coordinator.heartbeat`).
        Raises :class:`~millpond.errors.InvalidRequest` (a malformed request: the
        message says which field), :class:`~millpond.errors.UnsupportedAssignor`,
        :class:`~millpond.errors.UnknownMemberId`, :class:`~millpond.errors.FencedMemberEpoch`,
        :class:`~millpond.errors.UnreleasedInstanceId`, :class:`~millpond.errors.FencedInstanceId`,
        :class:`~millpond.errors.GroupMaxSizeReached`, :class:`~millpond.errors.GroupsMaxReached`;
        the error of a record rejected when it applied; :class:`~millpond.errors.NotController`
        (the decision may have been partly recorded: the member's next heartbeat continues from it).
        """
        self._heartbeats += 1
        async with self._locks.hold(request.group_id):
            topics = self._image.topic_partition_counts()
            decision = coordinator.heartbeat(self._image.groups, request, topics, self._now_ms(),
                                             new_member_id=self._new_member_id, settings=self._settings)
            if decision.response.error is not None:
                self._refused += 1
                raise to_millpond_error(decision.response.error)
            await self._propose_checked(decision.records)
            if decision.session is not None:
                self._sessions.observe(decision.session)
            return decision.response

    async def tick(self) -> tuple[ApplyResult, ...]:
        """Remove the members whose session or rebalance timeout ran out; return the results.

        Tracks exactly the image's members first (members a previous controller
        added get a fresh session). At most :data:`group_expirations_per_tick_max`
        removals per call; groups are handled concurrently, members of one group in
        turn, each re-checked under the group's lock (a heartbeat may have saved it
        meanwhile). Raises :class:`~millpond.errors.NotController`.
        """
        now = self._now_ms()
        self._sessions.sync(self._image.groups, now)
        by_group: dict[str, list[str]] = {}
        for group_id, member_id in self._sessions.expired(now)[:group_expirations_per_tick_max]:
            by_group.setdefault(group_id, []).append(member_id)
        batches = await asyncio.gather(*(self._expire(group_id, members)
                                         for group_id, members in sorted(by_group.items())))
        return tuple(result for batch in batches for result in batch)

    async def _expire(self, group_id: str, member_ids: Iterable[str]) -> list[ApplyResult]:
        results: list[ApplyResult] = []
        async with self._locks.hold(group_id):
            for member_id in member_ids:
                if (group_id, member_id) not in self._sessions.expired(self._now_ms()):
                    continue  # heartbeated while we waited for the lock
                records = coordinator.session_expired(self._image.groups, group_id, member_id)
                results.extend(await self._propose_all(records))
                self._sessions.forget(group_id, member_id)
                self._expired += 1
        return results

    # --- offsets ---------------------------------------------------------------------------

    async def commit_offsets(self, request: OffsetCommitRequest) -> tuple[PartitionOutcome, ...]:
        """Commit offsets for a member (or, with member id ``""`` and epoch -1, an administrator).

        Returns every partition's outcome in request order; accepted partitions
        are committed even if others fail. Errors per partition (request-level
        refusals give every partition the same one):
        :class:`~millpond.errors.InvalidRequest`, :class:`~millpond.errors.UnknownMemberId`,
        :class:`~millpond.errors.StaleMemberEpoch`, :class:`~millpond.errors.FencedMemberEpoch`,
        :class:`~millpond.errors.GroupNotEmpty`, :class:`~millpond.errors.GroupsMaxReached`,
        :class:`~millpond.errors.UnknownPartition`, :class:`~millpond.errors.OffsetMetadataTooLarge`,
        :class:`~millpond.errors.PartitionNotAssigned`. Raises :class:`~millpond.errors.NotController`
        (the offsets may or may not have been committed). Idempotent.
        """
        self._commits += 1
        async with self._locks.hold(request.group_id):
            topics = self._image.topic_partition_counts()
            decision = offsets.commit_offsets(self._image.groups, request, topics, self._wall_ms(),
                                              self._settings)
            applied = await self._propose_all(decision.records)
        rejected = {(r.record.topic, r.record.partition): r.error  # type: ignore[union-attr]
                    for r in applied if r.error is not None}
        return tuple(
            PartitionOutcome(result.topic, result.partition,
                             to_millpond_error(result.error) if result.error is not None
                             else rejected.get((result.topic, result.partition)))
            for result in decision.results)

    def fetch_offsets(self, group_id: str, partitions: Iterable[TopicPartition] | None = None, *,
                      member_id: str = "", member_epoch: int = -1
                      ) -> dict[TopicPartition, CommittedOffset | None]:
        """The group's committed offsets as this controller applied them (every commit it acknowledged).

        See :func:`~millpond.controller.groups.offsets.fetch_offsets`. Raises
        :class:`~millpond.errors.InvalidRequest`, and with ``member_id``
        :class:`~millpond.errors.UnknownMemberId` / :class:`~millpond.errors.StaleMemberEpoch` /
        :class:`~millpond.errors.FencedMemberEpoch`.
        """
        try:
            return offsets.fetch_offsets(self._image.groups, group_id, partitions, member_id=member_id,
                                         member_epoch=member_epoch)
        except GroupError as error:
            raise to_millpond_error(error) from None

    # --- administration ---------------------------------------------------------------------

    async def delete_group(self, group_id: str) -> None:
        """Delete an empty group and its committed offsets.

        Raises :class:`~millpond.errors.InvalidRequest` (bad id),
        :class:`~millpond.errors.GroupIdNotFound`, :class:`~millpond.errors.GroupNotEmpty`
        (members, static ones away included, must leave or expire first),
        :class:`~millpond.errors.NotController` (it may or may not have been deleted).
        """
        async with self._locks.hold(group_id):
            try:
                coordinator.validate_group_id(group_id)
                records = coordinator.delete_group(self._image.groups, group_id)
            except GroupError as error:
                raise to_millpond_error(error) from None
            await self._propose_checked(records)

    async def reset_offsets(self, group_id: str, spec: ResetSpec,
                            bounds: Mapping[TopicPartition, PartitionBounds],
                            by_timestamp: Mapping[TopicPartition, int | None] | None, *,
                            dry_run: bool) -> ResetPlan:
        """Plan (and unless ``dry_run``, commit) moving the group's offsets of the partitions in ``bounds``.

        ``bounds`` are each partition's log start and high watermark as its
        leader reported them; ``by_timestamp`` the offset-for-timestamp lookups
        of a TO_DATETIME reset. Raises :class:`~millpond.errors.GroupNotEmpty`
        while the group has members (also when one joins before the commits
        apply), :class:`~millpond.errors.GroupsMaxReached`,
        :class:`~millpond.errors.InvalidRequest`, :class:`~millpond.errors.NotController`
        (the reset may or may not have been committed).
        """
        async with self._locks.hold(group_id):
            try:
                plan = offsets.plan_reset_offsets(self._image.groups, group_id, spec, bounds, by_timestamp,
                                                  self._wall_ms(), self._settings)
            except GroupError as error:
                raise to_millpond_error(error) from None
            if not dry_run:
                await self._propose_checked(plan.records)
        return plan

    def statistics(self) -> GroupCoordinatorStatistics:
        """Counters and sizes of the in-memory state."""
        return GroupCoordinatorStatistics(
            sessions=len(self._sessions), groups_locked=len(self._locks), heartbeats_total=self._heartbeats,
            heartbeats_refused_total=self._refused, offset_commits_total=self._commits,
            members_expired_total=self._expired)

    async def _propose_checked(self, records: Sequence[MetadataRecord]) -> None:
        """Propose ``records`` in order and raise the error of the first one rejected when it applied."""
        for result in await self._propose_all(records):
            if result.error is not None:
                raise result.error
