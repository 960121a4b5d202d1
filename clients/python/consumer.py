"""The asynchronous consumer: partitions assigned by hand, or by a consumer group.

Per assigned partition the consumer keeps a *position* (the offset of the
next record :meth:`AsyncConsumer.poll` returns), a buffer of records already
fetched, and at most one Fetch in flight. ``poll`` returns buffered records
and starts a Fetch for every partition whose buffer ran dry, so the next
records are on their way while the caller works (one fetch of prefetch per
partition, so memory stays bounded by partitions x (``fetch_bytes_max`` + one
batch)). A Fetch that found no data waits at the broker up to
``fetch_wait_ms_max`` (long poll).

A partition without a position, or whose position left the log
(``OFFSET_OUT_OF_RANGE``), is reset by ``auto_offset_reset``. Retriable errors
(``NOT_LEADER``, ``UNAVAILABLE``, timeouts) re-discover the leader and retry
that partition after a backoff, silently; other errors are raised by the next
``poll`` (once) and the partition is fetched again by the poll after that.

Consumer groups
---------------
:meth:`AsyncConsumer.subscribe` joins the group ``ConsumerConfig.group_id``
(KIP-848: the server assigns partitions). A background task owned by the
consumer heartbeats the group coordinator every ``heartbeat_interval_ms``
(the server says how often), reporting the partitions the consumer owns, and
applies each answer incrementally:

* partitions taken away stop being fetched at once (their buffered records
  are dropped, never returned); during the next :meth:`~AsyncConsumer.poll`
  their positions are committed (``enable_auto_commit``), ``on_revoke`` runs,
  and the next heartbeat reports them released: only then may the coordinator
  give them to another member, so no partition is owned by two members;
* partitions given start at the group's committed offset (else
  ``auto_offset_reset``); ``on_assign`` runs during the next ``poll``, before
  any of their records is returned;
* ``FENCED_MEMBER_EPOCH`` / ``UNKNOWN_MEMBER_ID`` (the group removed the
  member, e.g. after its session timed out), or no successful heartbeat for
  ``session_timeout_ms`` (counted from when the last successful heartbeat was
  *sent*, so the consumer gives up no later than the coordinator does): every
  partition is dropped at once without committing (another member may own it
  already), ``on_lost`` runs, and the consumer rejoins with epoch 0;
* :meth:`~AsyncConsumer.close` commits (``enable_auto_commit``), runs
  ``on_revoke``, and leaves the group (epoch -1; -2 for a static member, which
  keeps its partitions for a successor with the same ``group_instance_id``
  until its session times out).

Commit recipes. *At least once*: process the records a ``poll`` returned,
then :meth:`~AsyncConsumer.commit` (or keep ``enable_auto_commit``, which
counts a poll's records as processed when the next ``poll`` starts); a crash
between processing and commit replays those records to the next owner.
*At most once*: :meth:`~AsyncConsumer.commit` right after ``poll``, then
process; a crash during processing skips those records.
"""

from __future__ import annotations

import asyncio
import inspect
import random
import re
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from millpond.client import _limits
from millpond.client._backoff import Backoff
from millpond.client._config import ConsumerConfig, parse_bootstrap
from millpond.client._connection import Connections, call
from millpond.client._fetch import decode_fetch
from millpond.client._group import Membership, Reconciliation, call_coordinator, error_from_reason
from millpond.client._metadata import MetadataCache
from millpond.client._types import ConsumerRecord, OffsetAndMetadata, TopicPartition
from millpond.errors import (
    FencedMemberEpoch,
    MillpondError,
    NotLeader,
    OffsetOutOfRange,
    RequestTimeout,
    ResourceExhausted,
    StaleMemberEpoch,
    Unavailable,
    UnknownMemberId,
    UnknownPartition,
    UnknownTopic,
)
from millpond.v1 import broker_pb2, groups_pb2

__all__ = ["AsyncConsumer", "ConsumerStatistics", "PartitionStatistics", "RebalanceCallback"]

RebalanceCallback = Callable[[list[TopicPartition]], Awaitable[None] | None]
"""Called with the partitions (sorted) given, taken back or lost; a plain function or a coroutine function."""


@dataclass(frozen=True, slots=True)
class PartitionStatistics:
    tp: TopicPartition
    position: int | None
    high_watermark: int
    """As of the last Fetch, -1 before the first."""
    lag: int | None
    """``high_watermark - position`` when both are known."""
    buffered_records: int


@dataclass(frozen=True, slots=True)
class ConsumerStatistics:
    """A snapshot of the consumer's partitions."""

    partitions: tuple[PartitionStatistics, ...]
    fetches: int
    metadata_refreshes: int
    member_id: str = ""
    """The consumer's member id in its group; ``""`` without :meth:`AsyncConsumer.subscribe`."""
    member_epoch: int = -1
    """Its member epoch (0 while joining); -1 without a group."""
    heartbeats: int = 0
    """Heartbeats answered."""


class _Partition:
    """State of one assigned partition."""

    __slots__ = (
        "attempts", "backoff_until_s", "epoch", "error", "fetch_offset", "fetching", "high_watermark",
        "position", "read_index", "records", "tp",
    )

    def __init__(self, tp: TopicPartition) -> None:
        self.tp = tp
        self.position: int | None = None
        self.fetch_offset: int | None = None
        """Where the next Fetch starts: the end of the buffered data."""
        self.records: list[ConsumerRecord] = []
        self.read_index = 0
        """Records before this index were returned already."""
        self.fetching: asyncio.Task[None] | None = None
        self.epoch = 0
        """Bumped by every seek: a Fetch started before it is discarded."""
        self.high_watermark = -1
        self.error: MillpondError | None = None
        self.backoff_until_s = 0.0
        self.attempts = 0

    @property
    def buffered(self) -> int:
        return len(self.records) - self.read_index

    def move_to(self, offset: int, *, cancel_fetch: bool = True) -> None:
        """Set the position, dropping buffered records; cancel a Fetch in flight unless asked not to."""
        self.position = self.fetch_offset = offset
        self.records = []
        self.read_index = 0
        self.epoch += 1
        self.error = None
        self.attempts = 0
        self.backoff_until_s = 0.0
        if cancel_fetch and self.fetching is not None:
            self.fetching.cancel()


class AsyncConsumer:
    """Reads records from partitions assigned by hand (:meth:`assign`) or by a consumer group
    (:meth:`subscribe`). Use on one event loop; ``async with`` closes it.

    ``bootstrap`` is ``"host:port[,host:port...]"`` or a list of addresses.
    Construction does no I/O.
    """

    def __init__(
        self,
        bootstrap: str | Sequence[str],
        config: ConsumerConfig | None = None,
        *,
        rng: random.Random | None = None,
    ) -> None:
        self._config = config or ConsumerConfig()
        self._connections = Connections()
        self._metadata = MetadataCache(
            parse_bootstrap(bootstrap if isinstance(bootstrap, str) else tuple(bootstrap)),
            self._connections,
            request_timeout_ms=self._config.request_timeout_ms,
        )
        self._backoff = Backoff(self._config.retry_backoff_ms, self._config.retry_backoff_ms_max)
        self._rng = rng or random.Random()
        self._partitions: dict[TopicPartition, _Partition] = {}
        self._wakeup = asyncio.Event()
        self._next_first = 0
        self._fetches = 0
        self._closed = False
        # Consumer groups (subscribe): the membership, its heartbeat task, and what poll must do.
        self._group: Membership | None = None
        self._heartbeat_task: asyncio.Task[None] | None = None
        self._leaving = False
        """Set by close: the heartbeat task finishes its round and stops."""
        self._heartbeat_now = asyncio.Event()
        self._epoch_moved = asyncio.Event()
        self._revoking: dict[TopicPartition, int | None] = {}
        """Taken back, no longer fetched: the position to commit before reporting them released."""
        self._unannounced: list[TopicPartition] = []
        """Started, ``on_assign`` not called yet."""
        self._announced: set[TopicPartition] = set()
        self._on_assign: RebalanceCallback | None = None
        self._on_revoke: RebalanceCallback | None = None
        self._on_lost: RebalanceCallback | None = None
        self._group_error: MillpondError | None = None
        """A membership error nothing will cure (raised by every poll)."""
        self._callback_error: BaseException | None = None
        self._next_auto_commit_s = 0.0
        self._committed: dict[TopicPartition, int] = {}
        """Offsets this consumer last committed (auto-commit skips partitions that did not move)."""

    async def __aenter__(self) -> AsyncConsumer:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # --- assignment and positions ---------------------------------------------------
    def assign(self, partitions: Iterable[tuple[str, int]]) -> None:
        """Read exactly these partitions from now on (replacing the previous assignment).

        Partitions kept keep their positions; new ones start per
        ``auto_offset_reset`` unless :meth:`seek` is called. No I/O: an unknown
        topic or partition is reported by :meth:`poll`. Raises ``TypeError`` /
        ``ValueError`` for a malformed ``(topic, partition)``, ``RuntimeError``
        after :meth:`close` or after :meth:`subscribe` (a group assigns the partitions).
        """
        self._check_open()
        if self._group is not None:
            raise RuntimeError("this consumer subscribed to a group, which assigns its partitions: "
                               "assign() and subscribe() exclude each other")
        wanted: dict[TopicPartition, None] = {}
        for item in partitions:
            topic, partition = item
            if not isinstance(topic, str) or not topic:
                raise TypeError(f"a topic is a non-empty str, got {topic!r}")
            if isinstance(partition, bool) or not isinstance(partition, int) or partition < 0:
                raise ValueError(f"a partition is an int >= 0, got {partition!r}")
            wanted[TopicPartition(topic, partition)] = None
        for tp in [tp for tp in self._partitions if tp not in wanted]:
            state = self._partitions.pop(tp)
            if state.fetching is not None:
                state.fetching.cancel()
        for tp in wanted:
            self._partitions.setdefault(tp, _Partition(tp))

    def assignment(self) -> list[TopicPartition]:
        """The assigned partitions, in assignment order (with a group: those being consumed now)."""
        return list(self._partitions)

    # --- consumer groups ----------------------------------------------------------------
    def subscribe(
        self,
        topics: Iterable[str] | None = None,
        *,
        pattern: str | None = None,
        on_assign: RebalanceCallback | None = None,
        on_revoke: RebalanceCallback | None = None,
        on_lost: RebalanceCallback | None = None,
    ) -> None:
        """Join the group ``ConsumerConfig.group_id``, subscribed to ``topics`` and/or the topics whose
        whole name matches ``pattern`` (a Python regular expression; also topics created later).

        Starts the consumer's heartbeat task (call it from the event loop the
        consumer runs on); partitions arrive through :meth:`poll`, which also
        runs the callbacks: ``on_assign(partitions)`` before records of newly
        given partitions are returned, ``on_revoke(partitions)`` when partitions
        are taken back (after their positions were auto-committed, before they
        are released: the place to :meth:`commit` without auto-commit), and
        ``on_lost(partitions)`` — from the heartbeat task, at once — when the
        group fenced or forgot this member (do not commit those: another member
        may own them). Calling it again replaces the subscription and callbacks.
        See the module doc for the protocol. No I/O here: membership errors are
        raised by :meth:`poll`.

        Raises ``ValueError`` without ``group_id``, without topics and pattern,
        or for a pattern that does not compile; ``TypeError`` if ``topics`` is a
        str; ``RuntimeError`` after :meth:`assign`, after :meth:`close`, or
        outside a running event loop.
        """
        self._check_open()
        group_id = self._config.group_id
        if group_id is None:
            raise ValueError("subscribe needs ConsumerConfig(group_id=...)")
        if isinstance(topics, str):
            raise TypeError("topics is a collection of topic names, not one str")
        names = None if topics is None else list(topics)
        if not names and not pattern:
            raise ValueError("subscribe needs topics or a pattern")
        for name in names or ():
            if not isinstance(name, str) or not name:
                raise ValueError(f"a topic is a non-empty str, got {name!r}")
        if pattern:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"pattern {pattern!r} does not compile: {exc}") from None
        if self._group is None and self._partitions:
            raise RuntimeError("this consumer has partitions assigned by hand: assign() and subscribe() "
                               "exclude each other")
        loop = asyncio.get_running_loop()
        if self._group is None:
            config = self._config
            self._group = Membership(group_id, uuid.uuid4().hex, config.group_instance_id,
                                     config.session_timeout_ms, config.rebalance_timeout_ms,
                                     config.server_assignor)
            self._next_auto_commit_s = loop.time() + config.auto_commit_interval_ms / 1000
            self._heartbeat_task = loop.create_task(self._heartbeat_loop(self._group),
                                                    name=f"millpond-heartbeat-{group_id}")
        self._group.subscribe(names, pattern or None)
        self._on_assign, self._on_revoke, self._on_lost = on_assign, on_revoke, on_lost
        self._heartbeat_now.set()

    @property
    def member_id(self) -> str:
        """This consumer's member id in its group (chosen at :meth:`subscribe`); ``""`` without a group."""
        return self._group.member_id if self._group is not None else ""

    @property
    def member_epoch(self) -> int:
        """The member epoch of the last heartbeat answer (0 while joining); -1 without a group."""
        return self._group.epoch if self._group is not None else -1

    async def commit(
        self, offsets: Mapping[tuple[str, int], int | OffsetAndMetadata] | None = None
    ) -> None:
        """Commit offsets for the group ``ConsumerConfig.group_id`` and wait until they are recorded.

        ``offsets`` (the next offset to consume per partition, optionally with
        metadata); ``None``: the current positions (what :meth:`poll` returned)
        of every partition this consumer owns. A member commits only partitions
        it owns, at its current member epoch (retried once a heartbeat brought
        a newer epoch); a consumer that did not :meth:`subscribe` commits as an
        administrator, which the group allows only while it has no member.
        Commit after processing for at-least-once delivery, before for
        at-most-once (see the module doc).

        Raises ``ValueError`` without ``group_id`` or for a bad offset;
        :class:`~millpond.errors.PartitionNotAssigned` (not owned, e.g. taken
        back meanwhile), :class:`~millpond.errors.UnknownMemberId` /
        :class:`~millpond.errors.FencedMemberEpoch` (this member was removed:
        the offsets were not committed), :class:`~millpond.errors.StaleMemberEpoch`
        (the epoch did not catch up within ``request_timeout_ms``),
        :class:`~millpond.errors.GroupNotEmpty` (an administrative commit),
        :class:`~millpond.errors.UnknownPartition`, :class:`~millpond.errors.OffsetMetadataTooLarge`,
        :class:`~millpond.errors.RequestTimeout` (it may or may not have been committed; commits are
        idempotent, so retrying is safe), :class:`~millpond.errors.Unavailable`; ``RuntimeError``
        after :meth:`close`.
        """
        self._check_open()
        if self._config.group_id is None:
            raise ValueError("commit needs ConsumerConfig(group_id=...)")
        if offsets is None:
            entries = {tp: OffsetAndMetadata(position) for tp, position in self._positions().items()}
        else:
            entries = {}
            for key, value in offsets.items():
                tp = TopicPartition(*key)
                entry = value if isinstance(value, OffsetAndMetadata) else OffsetAndMetadata(value)
                if isinstance(entry.offset, bool) or not isinstance(entry.offset, int) or entry.offset < 0:
                    raise ValueError(f"an offset is an int >= 0, got {entry.offset!r} for "
                                     f"{tp.topic}/{tp.partition}")
                entries[tp] = entry
        await self._commit(entries)

    async def committed(
        self, partitions: Iterable[tuple[str, int]]
    ) -> dict[TopicPartition, OffsetAndMetadata | None]:
        """The group's committed offsets of ``partitions`` (``None`` where nothing is committed), as the
        active controller recorded them (every acknowledged commit included).

        Raises ``ValueError`` without ``group_id``; :class:`~millpond.errors.InvalidRequest`,
        :class:`~millpond.errors.Unavailable`, :class:`~millpond.errors.RequestTimeout`;
        ``RuntimeError`` after :meth:`close`.
        """
        self._check_open()
        if self._config.group_id is None:
            raise ValueError("committed needs ConsumerConfig(group_id=...)")
        return await self._fetch_committed([TopicPartition(*tp) for tp in partitions], member=False)

    def _positions(self) -> dict[TopicPartition, int]:
        """Positions of the partitions this consumer owns (being consumed, or taken back and not yet
        released), where known."""
        positions = {tp: state.position for tp, state in self._partitions.items()
                     if state.position is not None}
        positions.update({tp: position for tp, position in self._revoking.items() if position is not None})
        return positions

    async def _commit(self, entries: Mapping[TopicPartition, OffsetAndMetadata]) -> None:
        if not entries:
            return
        group_id = self._config.group_id
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._config.request_timeout_ms / 1000
        partitions = [groups_pb2.OffsetCommitPartition(topic=tp.topic, partition=tp.partition,
                                                       offset=e.offset, leader_epoch=e.leader_epoch,
                                                       metadata=e.metadata)
                      for tp, e in sorted(entries.items())]
        while True:
            group = self._group
            member_id, epoch = (group.member_id, group.epoch) if group is not None else ("", -1)
            self._epoch_moved.clear()
            request = groups_pb2.OffsetCommitRequest(group_id=group_id, member_id=member_id,
                                                     member_epoch=epoch, partitions=partitions)
            response = await call_coordinator(
                self._metadata, self._connections, "OffsetCommit", request,
                timeout_s=max(0.001, deadline - loop.time()), backoff=self._backoff, rng=self._rng,
                idempotent=True)
            failed = [(r, error_from_reason(r.error_reason, r.error_message))
                      for r in response.results if r.error_reason]
            for result in response.results:
                if not result.error_reason:
                    tp = TopicPartition(result.topic, result.partition)
                    self._committed[tp] = entries[tp].offset
            if not failed:
                return
            error = failed[0][1]
            remaining = deadline - loop.time()
            if not isinstance(error, StaleMemberEpoch) or group is None or remaining <= 0:
                raise error
            # Our epoch is behind the coordinator's: wait for the heartbeat answer that moves it, retry.
            partitions = [p for p in partitions if any(r.topic == p.topic and r.partition == p.partition
                                                       for r, _ in failed)]
            self._heartbeat_now.set()
            try:
                await asyncio.wait_for(self._epoch_moved.wait(), remaining)
            except TimeoutError:
                raise error from None

    async def _commit_quietly(self, positions: Mapping[TopicPartition, int]) -> None:
        """Auto-commit: commit the positions that moved since the last commit; errors are dropped (the
        next auto-commit, revocation or close tries again; a lost member must not commit)."""
        moved = {tp: OffsetAndMetadata(p) for tp, p in positions.items() if self._committed.get(tp) != p}
        try:
            await self._commit(moved)
        except MillpondError:
            pass

    async def _fetch_committed(
        self, partitions: Sequence[TopicPartition], *, member: bool, timeout_s: float | None = None
    ) -> dict[TopicPartition, OffsetAndMetadata | None]:
        group = self._group if member else None
        request = groups_pb2.OffsetFetchRequest(
            group_id=self._config.group_id,
            partitions=[groups_pb2.TopicPartitions(topic=tp.topic, partitions=[tp.partition])
                        for tp in partitions],
            member_id=group.member_id if group is not None else "",
            member_epoch=group.epoch if group is not None else -1)
        limit_s = self._config.request_timeout_ms / 1000
        response = await call_coordinator(
            self._metadata, self._connections, "OffsetFetch", request,
            timeout_s=limit_s if timeout_s is None else min(limit_s, timeout_s), backoff=self._backoff,
            rng=self._rng, idempotent=True)
        found: dict[TopicPartition, OffsetAndMetadata | None] = dict.fromkeys(partitions)
        for offset in response.offsets:
            if offset.offset >= 0:
                found[TopicPartition(offset.topic, offset.partition)] = OffsetAndMetadata(
                    offset.offset, offset.metadata, offset.leader_epoch, offset.commit_timestamp_ms)
        return found

    async def _heartbeat_loop(self, group: Membership) -> None:
        """Heartbeat the group coordinator until cancelled (by :meth:`close`) or a fatal error."""
        loop = asyncio.get_running_loop()
        session_s = group.session_timeout_ms / 1000
        last_ok_sent_s: float | None = None
        attempt = 0
        delay_s = 0.0
        wake_early = True
        while True:
            wait_s = delay_s
            if last_ok_sent_s is not None:
                wait_s = min(wait_s, last_ok_sent_s + session_s - loop.time())
            await self._pause(wait_s, wake_early)
            if self._leaving:
                return  # close() takes over: a round in flight was finished, never cut short
            if last_ok_sent_s is not None and loop.time() - last_ok_sent_s >= session_s:
                # The coordinator has removed us by now (or is about to): others may own our partitions.
                await self._lose_partitions()
                last_ok_sent_s = None
            self._heartbeat_now.clear()
            request = group.heartbeat_request()
            sent_s = loop.time()
            budget_s = min(self._config.request_timeout_ms / 1000, session_s)
            if last_ok_sent_s is not None:  # never wait past the session: then the partitions must go
                budget_s = min(budget_s, max(0.001, last_ok_sent_s + session_s - sent_s))
            try:
                response = await call_coordinator(
                    self._metadata, self._connections, "ConsumerGroupHeartbeat", request, timeout_s=budget_s,
                    backoff=self._backoff, rng=self._rng, idempotent=True)
            except (UnknownMemberId, FencedMemberEpoch):
                await self._lose_partitions()
                last_ok_sent_s = None
                delay_s, wake_early = _limits.rejoin_backoff_ms / 1000, False
                continue
            except MillpondError as exc:
                if not exc.retriable:
                    # Nothing the consumer can do will cure it (a bad subscription, a replaced static
                    # member): stop, drop the partitions, and let every poll raise it.
                    await self._lose_partitions()
                    self._group_error = exc
                    self._wakeup.set()
                    return
                delay_s, wake_early = self._backoff.delay_ms(attempt, self._rng, exc) / 1000, False
                attempt += 1
                continue
            attempt = 0
            last_ok_sent_s = sent_s
            moved = response.member_epoch != request.member_epoch
            reconciliation = group.on_answer(response, request)
            if moved:
                self._epoch_moved.set()
            await self._reconcile(group, reconciliation)
            delay_s, wake_early = group.heartbeat_interval_ms / 1000, True

    async def _pause(self, seconds: float, wake_early: bool) -> None:
        """Wait ``seconds``; ``_heartbeat_now`` ends the wait early if ``wake_early``; leaving always does."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while not self._leaving:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            try:
                await asyncio.wait_for(self._heartbeat_now.wait(), remaining)
            except TimeoutError:
                return
            if wake_early or self._leaving:
                return
            self._heartbeat_now.clear()  # backing off after an error: the next round reports anyway

    async def _reconcile(self, group: Membership, reconciliation: Reconciliation) -> None:
        """Stop fetching what was taken back (poll commits and releases it); start what was given."""
        for tp in reconciliation.revoke:
            state = self._partitions.pop(tp, None)
            if state is not None and state.fetching is not None:
                state.fetching.cancel()
            self._revoking[tp] = state.position if state is not None else None
            if tp in self._unannounced:  # given and taken back between two polls: never announce it
                self._unannounced.remove(tp)
        if reconciliation.revoke:
            self._wakeup.set()
        if not group.starting:
            return
        starting = sorted(group.starting)
        try:  # bounded: the next heartbeat must not wait long
            committed = await self._fetch_committed(starting, member=True,
                                                    timeout_s=group.session_timeout_ms / 2000)
        except MillpondError:
            return  # tried again after the next heartbeat answer
        for tp in sorted(group.started(starting)):
            state = _Partition(tp)
            offset = committed.get(tp)
            if offset is not None:
                state.move_to(offset.offset)
                self._committed[tp] = offset.offset
            self._partitions[tp] = state
            self._unannounced.append(tp)
        self._wakeup.set()

    async def _lose_partitions(self) -> None:
        """Drop every partition at once, without committing, and call ``on_lost`` (heartbeat task)."""
        group = self._group
        if group is None:
            return
        lost = group.lose_all()
        for tp in lost | set(self._partitions):
            state = self._partitions.pop(tp, None)
            if state is not None and state.fetching is not None:
                state.fetching.cancel()
        self._revoking.clear()
        self._unannounced.clear()
        announced = sorted(self._announced & lost)
        self._announced.clear()
        self._wakeup.set()
        if announced and self._on_lost is not None:
            try:
                await _call_back(self._on_lost, announced)
            except Exception as exc:  # raised by the next poll, not lost in this task
                self._callback_error = exc

    async def _group_duties(self, loop: asyncio.AbstractEventLoop) -> None:
        """In :meth:`poll`: raise membership errors, finish revocations, announce new partitions, and
        auto-commit. Callback exceptions propagate (a revocation completes first)."""
        if self._group_error is not None:
            raise self._group_error
        if self._callback_error is not None:
            error, self._callback_error = self._callback_error, None
            raise error
        group = self._group
        if group is None:
            return
        task = self._heartbeat_task
        if task is not None and task.done() and not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]  # a bug in the heartbeat task: do not hide it
        if self._revoking:
            revoked = dict(self._revoking)
            try:
                if self._config.enable_auto_commit:
                    await self._commit_quietly({tp: p for tp, p in revoked.items() if p is not None})
                announced = sorted(tp for tp in revoked if tp in self._announced)
                if announced and self._on_revoke is not None:
                    await _call_back(self._on_revoke, announced)
            finally:
                for tp in revoked:
                    self._revoking.pop(tp, None)
                    self._announced.discard(tp)
                group.released(revoked)
                self._heartbeat_now.set()  # report them released now, not at the next interval
        if self._unannounced:
            given, self._unannounced = sorted(self._unannounced), []
            self._announced.update(given)
            if self._on_assign is not None:
                await _call_back(self._on_assign, given)
        if self._config.enable_auto_commit and loop.time() >= self._next_auto_commit_s:
            self._next_auto_commit_s = loop.time() + self._config.auto_commit_interval_ms / 1000
            await self._commit_quietly(self._positions())

    def seek(self, tp: tuple[str, int], offset: int) -> None:
        """Make ``offset`` the next offset :meth:`poll` returns for ``tp`` (buffered records are dropped).

        No I/O: an offset outside the log is handled by ``auto_offset_reset``
        at the next fetch. Raises ``ValueError`` if ``tp`` is not assigned or
        ``offset`` is negative.
        """
        if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
            raise ValueError(f"an offset is an int >= 0, got {offset!r}")
        self._state(tp).move_to(offset)

    async def seek_to_beginning(self, partitions: Iterable[tuple[str, int]] | None = None) -> None:
        """Seek the partitions (default: all assigned) to the log start; raises as :meth:`offset_for`."""
        for tp in self._targets(partitions):
            self.seek(tp, await self.offset_for(tp, "earliest"))

    async def seek_to_end(self, partitions: Iterable[tuple[str, int]] | None = None) -> None:
        """Seek each partition (default: all assigned) to its high watermark. Raises as :meth:`offset_for`."""
        for tp in self._targets(partitions):
            self.seek(tp, await self.offset_for(tp, "latest"))

    async def seek_to_timestamp(self, tp: tuple[str, int], timestamp_ms: int) -> int:
        """Seek ``tp`` to its first record with timestamp >= ``timestamp_ms`` and return that offset.

        The high watermark if there is none. Raises as :meth:`offset_for`.
        """
        offset = await self.offset_for(tp, timestamp_ms)
        self.seek(tp, offset)
        return offset

    async def position(self, tp: tuple[str, int]) -> int:
        """The offset of the next record :meth:`poll` returns for ``tp``.

        A partition without a position gets one per ``auto_offset_reset``
        first. Raises ``ValueError`` if ``tp`` is not assigned,
        :class:`~millpond.errors.OffsetOutOfRange` if it has no position and the
        policy is ``"none"``, and what :meth:`offset_for` raises.
        """
        state = self._state(tp)
        if state.position is not None:
            return state.position
        offset = await self._reset_offset(state.tp, None)
        state.move_to(offset)
        return offset

    async def offset_for(self, tp: tuple[str, int], spec: str | int) -> int:
        """Ask the partition's leader for an offset: ``"earliest"`` (log start), ``"latest"`` (high
        watermark), or an int timestamp (first offset whose record timestamp is >= it; the high
        watermark if none).

        Retries retriable errors (re-discovering the leader) until
        ``request_timeout_ms`` passed, then raises the last one
        (:class:`~millpond.errors.Unavailable`, :class:`~millpond.errors.NotLeader`,
        :class:`~millpond.errors.RequestTimeout`). Raises
        :class:`~millpond.errors.UnknownTopic` / :class:`~millpond.errors.UnknownPartition`
        if the cluster does not know the partition, ``ValueError`` for a bad ``spec``.
        Does not need ``tp`` to be assigned.
        """
        topic, partition = tp
        request = broker_pb2.ListOffsetsRequest(topic=topic, partition=partition)
        if spec == "earliest":
            request.earliest = True
        elif spec == "latest":
            request.latest = True
        elif isinstance(spec, int) and not isinstance(spec, bool) and spec >= 0:
            request.timestamp_ms = spec
        else:
            raise ValueError(f"spec must be 'earliest', 'latest' or a timestamp in ms >= 0, got {spec!r}")
        key = TopicPartition(topic, partition)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._config.request_timeout_ms / 1000
        attempt = 0
        while True:
            address = await self._leader(key)  # raises UnknownTopic / UnknownPartition per fresh metadata
            try:
                response = await call(
                    self._connections.broker(address).ListOffsets, request,
                    max(0.001, min(self._config.request_timeout_ms / 1000, deadline - loop.time())),
                )
                return int(response.offset)
            except MillpondError as exc:
                # A leader that does not know the topic yet lags behind the metadata: refresh, retry.
                lagging = isinstance(exc, UnknownTopic | UnknownPartition)
                if not (exc.retriable or lagging) or loop.time() >= deadline:
                    raise
                if lagging:
                    self._metadata.invalidate(key)
                self._note_failure(key, exc)
                await asyncio.sleep(min(self._backoff.delay_ms(attempt, self._rng, exc) / 1000,
                                        max(0.0, deadline - loop.time())))
                attempt += 1

    # --- polling --------------------------------------------------------------------------
    async def poll(
        self, timeout_ms: int = 0, max_records: int = _limits.poll_records_max_default
    ) -> list[ConsumerRecord]:
        """Return up to ``max_records`` records, waiting up to ``timeout_ms`` for the first.

        Records of one partition come in offset order; an empty list means none
        arrived in time. Raises (once per occurrence; the next poll retries the
        partition): :class:`~millpond.errors.OffsetOutOfRange` when a position
        left the log and ``auto_offset_reset`` is ``"none"`` (or a partition has
        no position under ``"none"``); :class:`~millpond.errors.UnknownTopic` /
        :class:`~millpond.errors.UnknownPartition` for an assignment the cluster
        does not know; :class:`~millpond.errors.InvalidRecordBatch` for fetched
        data that does not decode; any other non-retriable error a broker
        answered. Retriable errors are retried silently. ``RuntimeError``
        after :meth:`close`; ``ValueError`` for a negative timeout or
        ``max_records`` < 1.

        With a group (:meth:`subscribe`), ``poll`` also finishes revocations
        (auto-commit, ``on_revoke``), announces new partitions (``on_assign``),
        auto-commits every ``auto_commit_interval_ms``, and raises what a
        callback raised and membership errors nothing cures, on every call from
        then on: :class:`~millpond.errors.InvalidRequest` (e.g. a subscription the
        server refuses), :class:`~millpond.errors.UnsupportedAssignor`,
        :class:`~millpond.errors.FencedInstanceId` (another process took this
        ``group_instance_id``). Transient membership errors are retried by the
        heartbeat task.
        """
        self._check_open()
        if timeout_ms < 0 or max_records < 1:
            raise ValueError("poll needs timeout_ms >= 0 and max_records >= 1")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_ms / 1000
        while True:
            await self._group_duties(loop)
            self._raise_pending_error()
            records = self._take(max_records)
            self._start_fetches(loop)
            remaining = deadline - loop.time()
            if records or remaining <= 0:
                return records
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), remaining)
            except TimeoutError:
                pass

    def _raise_pending_error(self) -> None:
        for state in self._partitions.values():
            if state.error is not None:
                error, state.error = state.error, None
                raise error

    def _take(self, max_records: int) -> list[ConsumerRecord]:
        taken: list[ConsumerRecord] = []
        states = list(self._partitions.values())
        if not states:
            return taken
        first = self._next_first % len(states)
        self._next_first += 1
        for state in states[first:] + states[:first]:
            if not state.buffered:
                continue
            start = state.read_index
            chunk = state.records[start : start + max_records - len(taken)]
            taken.extend(chunk)
            state.read_index += len(chunk)
            state.position = chunk[-1].offset + 1
            if not state.buffered:
                state.records = []
                state.read_index = 0
                state.position = state.fetch_offset
            if len(taken) >= max_records:
                break
        return taken

    def _start_fetches(self, loop: asyncio.AbstractEventLoop) -> None:
        now = loop.time()
        for state in self._partitions.values():
            if (state.fetching is None and state.error is None and not state.buffered
                    and now >= state.backoff_until_s):
                state.fetching = loop.create_task(self._fetch(state, state.epoch))

    async def _fetch(self, state: _Partition, epoch: int) -> None:
        task = asyncio.current_task()
        try:
            await self._fetch_once(state, epoch)
        except MillpondError as exc:
            if state.epoch == epoch:
                if exc.retriable:
                    self._retry_later(state, exc)
                else:
                    state.error = exc
        finally:
            if state.fetching is task:
                state.fetching = None
            self._wakeup.set()

    async def _fetch_once(self, state: _Partition, epoch: int) -> None:
        tp = state.tp
        address = await self._leader(tp)  # an unknown topic or partition is reported before anything else
        if state.fetch_offset is None:
            offset = await self._reset_offset(tp, None)
            if state.epoch == epoch:
                state.move_to(offset, cancel_fetch=False)  # the next poll fetches from there
            return
        offset = state.fetch_offset
        request = broker_pb2.FetchRequest(
            topic=tp.topic, partition=tp.partition, offset=offset,
            max_bytes=self._config.fetch_bytes_max, max_wait_ms=self._config.fetch_wait_ms_max,
        )
        self._fetches += 1
        try:
            response = await call(
                self._connections.broker(address).Fetch, request,
                (self._config.fetch_wait_ms_max + self._config.request_timeout_ms) / 1000,
            )
        except OffsetOutOfRange as exc:
            new_offset = await self._reset_offset(tp, exc)
            if state.epoch == epoch:
                state.move_to(new_offset, cancel_fetch=False)
            return
        except (UnknownTopic, UnknownPartition) as exc:
            # The leader may not know a partition that metadata already shows: refresh, retry.
            self._metadata.invalidate(tp)
            if state.epoch == epoch:
                self._retry_later(state, exc)
            return
        if state.epoch != epoch:
            return
        state.high_watermark = response.high_watermark
        records, next_offset = decode_fetch(tp.topic, tp.partition, response.batches, offset)
        state.attempts = 0
        state.fetch_offset = next_offset
        if records:
            state.records = records
            state.read_index = 0
        elif state.position == offset:
            state.position = next_offset

    async def _reset_offset(self, tp: TopicPartition, error: OffsetOutOfRange | None) -> int:
        policy = self._config.auto_offset_reset
        if policy == "none":
            if error is not None:
                raise error
            raise OffsetOutOfRange(
                f"{tp.topic}/{tp.partition} has no position and auto_offset_reset is 'none': seek first"
            )
        if error is not None:
            hint = error.log_start_offset if policy == "earliest" else error.high_watermark
            if hint >= 0:
                return hint
        return await self.offset_for(tp, policy)

    async def _leader(self, tp: TopicPartition) -> str:
        address = self._metadata.leader_address(tp)
        if address is not None:
            return address
        await self._metadata.refresh()
        count = self._metadata.partition_count(tp.topic)
        if count is None:
            raise UnknownTopic(f"unknown topic {tp.topic!r}")
        if tp.partition >= count:
            raise UnknownPartition(f"topic {tp.topic!r} has {count} partitions, no partition {tp.partition}")
        address = self._metadata.leader_address(tp)
        if address is None:
            raise Unavailable(f"partition {tp.topic}/{tp.partition} has no leader")
        return address

    def _note_failure(self, tp: TopicPartition, error: MillpondError) -> None:
        if isinstance(error, NotLeader):
            self._metadata.note_not_leader(tp, error)
        elif isinstance(error, Unavailable | RequestTimeout):
            self._metadata.invalidate(tp)

    def _retry_later(self, state: _Partition, error: MillpondError) -> None:
        if not isinstance(error, ResourceExhausted):
            self._note_failure(state.tp, error)
        loop = asyncio.get_running_loop()
        delay_s = self._backoff.delay_ms(state.attempts, self._rng, error) / 1000
        state.attempts += 1
        state.backoff_until_s = loop.time() + delay_s
        loop.call_at(state.backoff_until_s, self._wakeup.set)

    # --- helpers, close, statistics --------------------------------------------------------
    def _state(self, tp: tuple[str, int]) -> _Partition:
        state = self._partitions.get(TopicPartition(*tp))
        if state is None:
            raise ValueError(f"{tp[0]}/{tp[1]} is not assigned")
        return state

    def _targets(self, partitions: Iterable[tuple[str, int]] | None) -> list[TopicPartition]:
        if partitions is None:
            return list(self._partitions)
        return [self._state(tp).tp for tp in partitions]

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("the consumer is closed")

    async def close(self) -> None:
        """Stop fetching and close every connection. Idempotent; a later poll raises ``RuntimeError``.

        With a group: stops heartbeating, commits the positions (``enable_auto_commit``),
        calls ``on_revoke`` with every partition it owns, and leaves the group (member
        epoch -1; -2 for a static member), each step bounded by ``request_timeout_ms``
        and best effort: a consumer that cannot reach the cluster is removed after its
        session timeout instead. Re-raises what ``on_revoke`` raised, after closing.
        """
        if self._closed:
            return
        self._closed = True
        callback_error: BaseException | None = None
        if self._group is not None:
            callback_error = await self._leave_group(self._group)
        tasks = [state.fetching for state in self._partitions.values() if state.fetching is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._metadata.close()
        await self._connections.close()
        if callback_error is not None:
            raise callback_error

    async def _leave_group(self, group: Membership) -> BaseException | None:
        # Let a heartbeat in flight finish: cut short, the coordinator may have moved our epoch without
        # our knowing, and the final commit would be refused as stale.
        task, self._heartbeat_task = self._heartbeat_task, None
        self._leaving = True
        self._heartbeat_now.set()
        if task is not None:
            await asyncio.wait({task}, timeout=self._config.request_timeout_ms / 1000)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        if group.epoch <= 0 and not group.owned:
            return None  # never joined (or already out): nothing to hand back
        error: BaseException | None = None
        if self._config.enable_auto_commit:
            await self._commit_quietly(self._positions())
        owned = sorted(self._announced)
        if owned and self._on_revoke is not None:
            try:
                await _call_back(self._on_revoke, owned)
            except Exception as exc:
                error = exc
        try:
            await call_coordinator(
                self._metadata, self._connections, "ConsumerGroupHeartbeat",
                group.heartbeat_request(leave=True),
                timeout_s=self._config.request_timeout_ms / 1000, backoff=self._backoff, rng=self._rng,
                idempotent=True)
        except MillpondError:
            pass  # the session timeout removes us instead
        group.lose_all()
        return error

    def statistics(self) -> ConsumerStatistics:
        """A snapshot of positions, high watermarks, lag and buffers."""
        partitions = tuple(
            PartitionStatistics(
                tp=state.tp,
                position=state.position,
                high_watermark=state.high_watermark,
                lag=(state.high_watermark - state.position
                     if state.position is not None and state.high_watermark >= 0 else None),
                buffered_records=state.buffered,
            )
            for state in self._partitions.values()
        )
        group = self._group
        if group is None:
            return ConsumerStatistics(partitions, self._fetches, self._metadata.refreshes)
        return ConsumerStatistics(partitions, self._fetches, self._metadata.refreshes, group.member_id,
                                  group.epoch, group.heartbeats)


async def _call_back(callback: RebalanceCallback, partitions: list[TopicPartition]) -> None:
    """Run a rebalance callback, awaiting it if it is a coroutine function (or returns an awaitable)."""
    result = callback(partitions)
    if inspect.isawaitable(result):
        await result
