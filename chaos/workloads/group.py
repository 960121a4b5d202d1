"""The ``group`` workload: a consumer group processing a topic at least once while nodes, links and
its own members fail.

Producers are the ``log`` workload's, unchanged (one :class:`~millpond.chaos.workloads.log.LogWorkload`
with no pollers runs them, on topic ``chaos-group`` of 6 partitions): ``acks=all``, one attempt
per send, each recorded as ``f="send"``. Besides them, ``members`` (3) consumers
(:class:`~millpond.client.AsyncConsumer`) form group ``chaos-group-g`` with auto-commit off and
process *at least once*: poll, record the records (``f="poll"``: that is the processing), then
commit the next offset of every partition the poll returned (``f="commit"``). Their rebalance
callbacks record what each member owns (``f="own"``, ``f="release"``); the vocabulary is in
:mod:`millpond.chaos.history`.

Members fail too, independently of the nemesis: every ``member_kill_interval_s`` (on average;
from the run's seed) the workload either *crashes* a random member -- cancels its tasks and drops
its client without leaving the group, as SIGKILL would (``f="crash"``); the group notices only when
the member's session times out -- or, with probability ``leave_probability``, closes it cleanly
(it releases its partitions and leaves). After a pause a replacement joins with a new member id
and new process ids.

After the runner healed everything, the members still alive keep consuming until the group's
committed offset of every partition reaches its high watermark (or the deadline), then close
cleanly, and one ``f="final-committed"`` op records the committed offsets and high watermarks.
Meanwhile the log workload's final phase reads every partition back from offset 0
(``f="final-read"``) and collects the replicas' checksums, so the log checkers apply as well.

Options (``--opt k=v``): the producer options of the log workload (``partitions`` 6,
``producers`` 4, ``keys`` 12, ``rate`` 150, ``send_timeout_ms`` 3000, ``replication``), and
``members`` (3), ``member_kill_interval_s`` (8; 0 disables member failures), ``leave_probability``
(0.3), ``session_timeout_ms`` (4000: how long a crashed member keeps its partitions).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from millpond.chaos.workloads.base import FinalState, WorkloadContext
from millpond.chaos.workloads.log import LogWorkload
from millpond.chaos.workloads.wire import error_name
from millpond.client import AsyncConsumer, ConsumerConfig, ConsumerRecord, TopicPartition
from millpond.errors import MillpondError

__all__ = ["GROUP", "TOPIC", "GroupOptions", "GroupWorkload"]

TOPIC = "chaos-group"
GROUP = "chaos-group-g"

#: Process ids (the log workload's producers count up from 0 and its final readers use 2_000_000+):
#: a member's poll/commit processes are drawn from a counter at this base (a process whose commit
#: ended ``info`` is retired and the member continues under the next id); member number ``n``
#: records its membership facts (join, own, release, crash, leave) as process ``MEMBERSHIP + n``;
#: the final-committed reader is one process of its own.
MEMBER_PROCESS_BASE = 3_000_000
MEMBERSHIP_PROCESS_BASE = 4_000_000
FINAL_COMMITTED_PROCESS = 5_000_000
#: Members one run may start (replacements included): a bound on the loop that replaces them.
MEMBERS_STARTED_MAX = 100_000

#: How long one member poll waits for records, and how many it returns at most.
POLL_TIMEOUT_MS = 200
POLL_RECORDS_MAX = 500
#: Deadline of one client RPC (commits, heartbeats, offset queries).
REQUEST_TIMEOUT_MS = 5_000
#: The node's group heartbeat interval (sessions must be at least two intervals).
HEARTBEAT_INTERVAL_MS = 500
#: Pause after a poll that failed, so a member without a coordinator does not spin.
POLL_FAILED_PAUSE_S = 0.1
#: A replacement joins this long (uniform, seconds) after its predecessor crashed or left.
REPLACEMENT_PAUSE_S = (1.0, 3.0)
#: Final phase: how often the committed offsets are compared with the high watermarks, and how
#: much of the deadline is kept for closing the members and reading the final offsets.
CATCH_UP_CHECK_S = 0.5
CLOSE_RESERVE_S = 15.0


@dataclass(frozen=True)
class GroupOptions:
    """The workload's options (see the module docstring); the producer ones go to the log workload."""

    partitions: int = 6
    producers: int = 4
    keys: int = 12
    rate: float = 150.0
    send_timeout_ms: int = 3000
    replication: int = 0  # 0: min(3, nodes)
    members: int = 3
    member_kill_interval_s: float = 8.0
    leave_probability: float = 0.3
    session_timeout_ms: int = 4000

    #: Options handed to the log workload that runs the producers.
    PRODUCER_OPTIONS = ("partitions", "producers", "keys", "rate", "send_timeout_ms", "replication")

    @classmethod
    def parse(cls, options: Mapping[str, str]) -> GroupOptions:
        """Validate ``--opt`` values; ValueError names the bad or unknown one."""
        known = {*cls.PRODUCER_OPTIONS, "members", "member_kill_interval_s", "leave_probability",
                 "session_timeout_ms"}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ValueError(f"unknown group workload options {unknown}; known: {sorted(known)}")
        try:
            parsed = cls(
                partitions=int(options.get("partitions", cls.partitions)),
                producers=int(options.get("producers", cls.producers)),
                keys=int(options.get("keys", cls.keys)),
                rate=float(options.get("rate", cls.rate)),
                send_timeout_ms=int(options.get("send_timeout_ms", cls.send_timeout_ms)),
                replication=int(options.get("replication", cls.replication)),
                members=int(options.get("members", cls.members)),
                member_kill_interval_s=float(options.get("member_kill_interval_s",
                                                         cls.member_kill_interval_s)),
                leave_probability=float(options.get("leave_probability", cls.leave_probability)),
                session_timeout_ms=int(options.get("session_timeout_ms", cls.session_timeout_ms)),
            )
        except ValueError as exc:
            raise ValueError(f"bad group workload option: {exc}") from exc
        if not 1 <= parsed.members <= 64:
            raise ValueError(f"members must be in [1, 64], got {parsed.members}")
        if parsed.member_kill_interval_s < 0 or not 0 <= parsed.leave_probability <= 1:
            raise ValueError("member_kill_interval_s must be >= 0 and leave_probability in [0, 1]")
        if parsed.session_timeout_ms < 2 * HEARTBEAT_INTERVAL_MS:
            raise ValueError(f"session_timeout_ms must be at least two heartbeat intervals "
                             f"({2 * HEARTBEAT_INTERVAL_MS} ms)")
        return parsed

    def producer_options(self) -> dict[str, str]:
        """The log workload's options: these producers, and no pollers (the group reads)."""
        return {**{name: str(getattr(self, name)) for name in self.PRODUCER_OPTIONS}, "pollers": "0"}


class GroupWorkload:
    """See the module docstring."""

    name = "group"
    description = ("consumer group, commit after processing (at least once), members crashed and "
                   "replaced, plus the log workload's producers and read-back")
    checker = "group"
    allowed: frozenset[str] = frozenset()
    node_args: tuple[str, ...] = ("--group-heartbeat-interval-ms", str(HEARTBEAT_INTERVAL_MS))
    topic = TOPIC

    def __init__(self) -> None:
        self.options = GroupOptions()
        self.partitions = self.options.partitions
        self._log = LogWorkload(name="group")
        self._log.topic = TOPIC
        self._members: list[_Member] = []
        self._members_started = 0
        self._next_process = MEMBER_PROCESS_BASE
        self._rng = random.Random(0)
        self._bootstrap: list[str] = []
        self._tally = {"crashed": 0, "left": 0}

    def configure(self, options: Mapping[str, str], nodes: int) -> None:
        """Apply ``--opt`` values (ValueError names a bad one)."""
        self.options = GroupOptions.parse(options)
        self.partitions = self.options.partitions
        self._log.configure(self.options.producer_options(), nodes)

    # --- setup ---------------------------------------------------------------------------------
    async def setup(self, ctx: WorkloadContext) -> None:
        """Create the topic and wait for its leaders (the log workload's setup). The member failure
        schedule gets its own generator, seeded here from the run's, so the producers' draws do not
        shift it."""
        self._rng = random.Random(ctx.rng.getrandbits(64))
        self._bootstrap = [ctx.addresses[node] for node in sorted(ctx.addresses)]
        await self._log.setup(ctx)

    # --- the faulty period -----------------------------------------------------------------------
    async def run(self, ctx: WorkloadContext, stop: asyncio.Event) -> None:
        """Producers, members and member failures until ``stop``; the members stay in the group
        (heartbeating, not polling) until :meth:`final`."""
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self._log.run(ctx, stop))
            while len(self._members) < self.options.members:
                self._members.append(self._join(ctx))
            for member in self._members:
                member.consume_in(tasks, stop)
            if self.options.member_kill_interval_s > 0:
                tasks.create_task(self._member_failures(ctx, stop, tasks))

    def _join(self, ctx: WorkloadContext) -> _Member:
        """A new member (a new consumer, member id and process ids), subscribed."""
        if self._members_started >= MEMBERS_STARTED_MAX:
            raise RuntimeError(f"{MEMBERS_STARTED_MAX} members started: the replacement loop runs away")
        number = self._members_started
        self._members_started += 1
        member = _Member(self, ctx, number, random.Random(self._rng.getrandbits(64)))
        member.join()
        return member

    def next_process(self) -> int:
        """A fresh poll/commit process id."""
        process = self._next_process
        self._next_process += 1
        if self._next_process >= MEMBERSHIP_PROCESS_BASE:
            raise RuntimeError("member process ids exhausted")
        return process

    async def _member_failures(self, ctx: WorkloadContext, stop: asyncio.Event,
                               tasks: asyncio.TaskGroup) -> None:
        """Now and then crash (or cleanly close) a random member, then start its replacement."""
        rng = self._rng
        interval_s = self.options.member_kill_interval_s
        while not stop.is_set():
            await _pause(stop, rng.uniform(0.5, 1.5) * interval_s)
            if stop.is_set():
                return
            slot = rng.randrange(len(self._members))
            victim = self._members[slot]
            if rng.random() < self.options.leave_probability:
                await victim.leave()
                self._tally["left"] += 1
            else:
                await victim.crash()
                self._tally["crashed"] += 1
            # The replacement joins even if the run is ending: the final phase needs the members.
            await _pause(stop, rng.uniform(*REPLACEMENT_PAUSE_S))
            replacement = self._join(ctx)
            self._members[slot] = replacement
            replacement.consume_in(tasks, stop)

    # --- after healing -------------------------------------------------------------------------------
    async def final(self, ctx: WorkloadContext, deadline_s: float) -> FinalState:
        """The members consume until the committed offsets reach the high watermarks, close, and the
        final committed offsets are recorded; meanwhile the log workload reads every partition back
        and collects the replicas' state."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + deadline_s
        async with asyncio.TaskGroup() as tasks:
            read_back = tasks.create_task(self._log.final(ctx, deadline_s))
            caught_up = tasks.create_task(self._drain(ctx, deadline))
        notes: dict[str, Any] = {
            "members_started": self._members_started, "members_crashed": self._tally["crashed"],
            "members_left": self._tally["left"], "caught_up": caught_up.result(),
        }
        return FinalState(replicas=read_back.result().replicas, notes=notes)

    async def _drain(self, ctx: WorkloadContext, deadline: float) -> bool:
        """Members consume until every committed offset reaches its high watermark (or the deadline
        minus :data:`CLOSE_RESERVE_S`), then close; then the final-committed op. Returns whether
        they caught up."""
        loop = asyncio.get_running_loop()
        config = ConsumerConfig(group_id=GROUP, request_timeout_ms=REQUEST_TIMEOUT_MS)
        partitions = [TopicPartition(TOPIC, p) for p in range(self.partitions)]
        async with AsyncConsumer(self._bootstrap, config) as observer:  # never subscribes: reads only
            done = asyncio.Event()
            async with asyncio.TaskGroup() as tasks:
                for member in self._members:
                    member.consume_in(tasks, done)
                caught_up = False
                while not caught_up and loop.time() < deadline - CLOSE_RESERVE_S:
                    with contextlib.suppress(MillpondError):
                        committed, marks = await _committed_and_marks(observer, partitions)
                        caught_up = all((committed[tp] or 0) >= marks[tp] for tp in partitions)
                    if not caught_up:
                        await asyncio.sleep(CATCH_UP_CHECK_S)
                done.set()
            await asyncio.gather(*(member.leave() for member in self._members))
            await self._final_committed(ctx, observer, partitions, deadline)
        return caught_up

    async def _final_committed(self, ctx: WorkloadContext, observer: AsyncConsumer,
                               partitions: list[TopicPartition], deadline: float) -> None:
        """Record the group's committed offsets and the high watermarks (retried until ok or the
        deadline; at least once)."""
        loop = asyncio.get_running_loop()
        while True:
            op = ctx.history.invoke(FINAL_COMMITTED_PROCESS, "final-committed",
                                    {"partitions": [tp.partition for tp in partitions]})
            try:
                committed, marks = await _committed_and_marks(observer, partitions)
            except MillpondError as exc:
                ctx.history.complete(op, "fail", None, error_name(exc))
                if loop.time() >= deadline:
                    return
                await asyncio.sleep(CATCH_UP_CHECK_S)
                continue
            ctx.history.complete(op, "ok", {
                "committed": {str(tp.partition): committed[tp] for tp in partitions},
                "high_watermarks": {str(tp.partition): marks[tp] for tp in partitions},
            })
            return


class _Member:
    """One group member: its consumer, its poll-process-commit loop, and its history processes.

    Rebalance callbacks run inside ``poll`` (``on_assign``, ``on_revoke``) or in the consumer's
    heartbeat task (``on_lost``), so they are recorded by the member's own membership process, as
    instantaneous facts, never by the process whose poll is outstanding.
    """

    def __init__(self, workload: GroupWorkload, ctx: WorkloadContext, number: int,
                 rng: random.Random) -> None:
        self._workload = workload
        self._ctx = ctx
        self.membership_process = MEMBERSHIP_PROCESS_BASE + number
        self.process = workload.next_process()
        config = ConsumerConfig(group_id=GROUP, enable_auto_commit=False, auto_offset_reset="earliest",
                                session_timeout_ms=workload.options.session_timeout_ms,
                                request_timeout_ms=REQUEST_TIMEOUT_MS)
        self.consumer = AsyncConsumer(workload._bootstrap, config, rng=rng)
        self.owned: set[int] = set()
        self.epoch_seen = 0
        """The highest member epoch observed: the epoch at which a lost member last owned anything
        (the consumer itself is back at epoch 0 when ``on_lost`` runs)."""
        self.gone = False
        self._task: asyncio.Task[None] | None = None

    @property
    def member_id(self) -> str:
        return self.consumer.member_id

    def join(self) -> None:
        """Subscribe (starts the consumer's heartbeats) and record the join."""
        self.consumer.subscribe([TOPIC], on_assign=self._assigned, on_revoke=self._revoked,
                                on_lost=self._lost)
        self._fact("join", {"member": self.member_id, "process": self.process})

    def consume_in(self, tasks: asyncio.TaskGroup, stop: asyncio.Event) -> None:
        """Run the poll loop as a task of ``tasks`` until ``stop`` (nothing if the member is gone)."""
        if not self.gone:
            self._task = tasks.create_task(self._consume(stop), name=f"member-{self.membership_process}")

    # --- history -----------------------------------------------------------------------------
    def _fact(self, f: str, value: dict[str, Any]) -> None:
        """An instantaneous membership fact: invoke and ok at once, by the membership process."""
        history = self._ctx.history
        history.complete(history.invoke(self.membership_process, f, value), "ok", value)

    def _observe_epoch(self) -> int:
        epoch = self.consumer.member_epoch
        if epoch > 0:
            self.epoch_seen = max(self.epoch_seen, epoch)
        return epoch

    def _assigned(self, partitions: list[TopicPartition]) -> None:
        numbers = sorted(tp.partition for tp in partitions if tp.topic == TOPIC)
        epoch = self._observe_epoch()
        self.owned.update(numbers)
        self._fact("own", {"member": self.member_id, "partitions": numbers, "epoch": epoch})

    def _released(self, partitions: list[TopicPartition], epoch: int, lost: bool) -> None:
        numbers = sorted(tp.partition for tp in partitions if tp.topic == TOPIC)
        self.owned.difference_update(numbers)
        self._fact("release", {"member": self.member_id, "partitions": numbers, "epoch": epoch,
                               "lost": lost})

    def _revoked(self, partitions: list[TopicPartition]) -> None:
        # The coordinator keeps a member's epoch until it released what it must give back.
        epoch = self._observe_epoch()
        self._released(partitions, epoch, lost=False)

    def _lost(self, partitions: list[TopicPartition]) -> None:
        # The consumer is back at epoch 0 already: the last epoch seen is when it still owned them.
        self._released(partitions, self.epoch_seen, lost=True)

    # --- the loop -----------------------------------------------------------------------------------
    async def _consume(self, stop: asyncio.Event) -> None:
        """Poll, record (process), commit what the poll returned; until ``stop`` or :meth:`leave`."""
        history = self._ctx.history
        while not stop.is_set() and not self.gone:
            op = history.invoke(self.process, "poll", {})
            try:
                records = await self.consumer.poll(timeout_ms=POLL_TIMEOUT_MS, max_records=POLL_RECORDS_MAX)
            except MillpondError as exc:
                history.complete(op, "fail", None, error_name(exc))
                await _pause(stop, POLL_FAILED_PAUSE_S)
                continue
            epoch = self._observe_epoch()
            history.complete(op, "ok", {"records": [_record(r) for r in records], "member": self.member_id,
                                        "epoch": epoch})
            if records:
                await self._commit(records)

    async def _commit(self, records: list[ConsumerRecord]) -> None:
        """Commit the offset after the last record of each partition the poll returned.

        Every error is ``info``: the consumer retries timed-out attempts inside one ``commit``, so
        even a refusal (a fenced or stale epoch, a partition no longer assigned) may follow an
        attempt that landed; and partitions of one request are accepted or refused one by one.
        """
        offsets: dict[int, int] = {}
        for record in records:
            offsets[record.partition] = max(offsets.get(record.partition, 0), record.offset + 1)
        history = self._ctx.history
        value = {"member": self.member_id, "offsets": {str(p): o for p, o in sorted(offsets.items())},
                 "epoch": self._observe_epoch()}
        op = history.invoke(self.process, "commit", value)
        try:
            await self.consumer.commit({(TOPIC, p): o for p, o in offsets.items()})
        except MillpondError as exc:
            history.complete(op, "info", value, error_name(exc))
            self.process = self._workload.next_process()  # it may have committed: retire the process
            return
        history.complete(op, "ok", value)

    # --- endings ------------------------------------------------------------------------------------
    async def _stop_loop(self, cancel: bool) -> None:
        self.gone = True
        task, self._task = self._task, None
        if task is not None:
            if cancel:
                task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def crash(self) -> None:
        """As if the process got SIGKILL: its ops in flight never complete, nothing is committed,
        released or said to the group, which removes the member when its session times out."""
        if self.gone:
            return
        member, epoch = self.member_id, self._observe_epoch()  # the dropped consumer forgets both
        await self._stop_loop(cancel=True)
        await _drop_without_leaving(self.consumer)
        self._fact("crash", {"member": member, "partitions": sorted(self.owned),
                             "epoch": epoch if epoch > 0 else self.epoch_seen})
        self.owned.clear()

    async def leave(self) -> None:
        """Finish the current poll and commit, then close: ``on_revoke`` releases everything and the
        member leaves the group."""
        if self.gone:
            return
        await self._stop_loop(cancel=False)
        with contextlib.suppress(MillpondError):
            await self.consumer.close()
        self._fact("leave", {"member": self.member_id, "partitions": sorted(self.owned)})


def _record(record: ConsumerRecord) -> list[Any]:
    """A record in the log vocabulary: ``[partition, offset, key, value]``."""
    key = record.key.decode() if record.key is not None else None
    value = record.value.decode() if record.value is not None else ""
    return [record.partition, record.offset, key, value]


async def _drop_without_leaving(consumer: AsyncConsumer) -> None:
    """Stop ``consumer`` the way a killed process stops: no commit, no callback, no leave request.

    :meth:`AsyncConsumer.close` leaves the group (that is what a clean shutdown must do), so this
    reaches into two private attributes on purpose: it cancels the heartbeat task, then forgets the
    membership so that ``close`` only cancels fetches and closes connections.
    """
    if not (hasattr(consumer, "_heartbeat_task") and hasattr(consumer, "_group")):
        raise RuntimeError("AsyncConsumer's internals changed: update _drop_without_leaving")
    heartbeat = consumer._heartbeat_task
    consumer._heartbeat_task = None
    if heartbeat is not None:
        heartbeat.cancel()
        await asyncio.gather(heartbeat, return_exceptions=True)
    consumer._group = None
    await consumer.close()


async def _committed_and_marks(
    observer: AsyncConsumer, partitions: list[TopicPartition]
) -> tuple[dict[TopicPartition, int | None], dict[TopicPartition, int]]:
    """The group's committed offsets (the active controller's, None where nothing is committed) and
    each partition's high watermark, in that order. Raises what the consumer raises."""
    found = await observer.committed(partitions)
    committed = {tp: (entry.offset if entry is not None else None) for tp, entry in found.items()}
    marks = {tp: await observer.offset_for(tp, "latest") for tp in partitions}
    return committed, marks


async def _pause(stop: asyncio.Event, seconds: float) -> None:
    """Wait ``seconds`` or until ``stop`` is set, whichever comes first."""
    if seconds <= 0:
        return
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
