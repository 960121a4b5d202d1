"""One Raft group hosted by this node: its core, its store, its state machine, and waiters.

A :class:`Replica` is driven by the :class:`~millpond.node.raft_host.RaftHost`,
which owns the Ready loop. Request handlers use it to propose entries and to
wait until an entry is persisted on this node (``acks=1``) or committed and
applied (``acks=all``).

Waiting contract: a waiter names an (index, term). It succeeds when the entry
at that index with that term is persisted/applied; it fails with
:class:`~millpond.errors.NotLeader` when another entry takes that index (a new
leader overwrote it: the proposal is lost), and with
:class:`~millpond.errors.Unavailable` when the replica stops. A waiter that the
caller abandons (deadline) leaves the entry where it is: it may still commit.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Protocol

from millpond import errors
from millpond.invariant import unreachable
from millpond.raft import Entry, EntryKind, Raft, Ready, Snapshot, SoftState
from millpond.raft.errors import InvalidProposal, ProposalDropped
from millpond.raft.errors import NotLeader as RaftNotLeader
from millpond.raft.lmdb_store import GroupLog


class StateMachine(Protocol):
    """What a group's committed entries feed. Must be a deterministic function of the log."""

    def apply(self, entry: Entry) -> object:
        """Apply one committed entry; the result goes to whoever proposed it."""
        ...

    def restore(self, snapshot: Snapshot) -> None:
        """Replace all state by a snapshot's (a follower far behind the leader)."""
        ...

    def on_soft_state(self, soft: SoftState, term: int) -> None:
        """Leadership or role changed (for example: a new leader computes its next offset)."""
        ...


class _NoMachine:
    """Placeholder until the host attaches the real state machine; applying to it is a bug."""

    def apply(self, entry: Entry) -> object:
        unreachable("replica has no state machine", index=entry.index)

    def restore(self, snapshot: Snapshot) -> None:
        unreachable("replica has no state machine", index=snapshot.meta.index)

    def on_soft_state(self, soft: SoftState, term: int) -> None:
        unreachable("replica has no state machine", term=term)


class _Waiters:
    """Futures keyed by log index, each expecting a term."""

    def __init__(self) -> None:
        self._by_index: dict[int, list[tuple[int, asyncio.Future[object]]]] = {}

    def add(self, index: int, term: int) -> asyncio.Future[object]:
        future: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        self._by_index.setdefault(index, []).append((term, future))
        return future

    def settle(self, entry: Entry, result: object, lead: int) -> None:
        waiting = self._by_index.pop(entry.index, None)
        if not waiting:
            return
        for term, future in waiting:
            if future.done():
                continue
            if term == entry.term:
                future.set_result(result)
            else:
                future.set_exception(errors.NotLeader(
                    f"entry {entry.index} of term {term} was replaced by a newer leader's", lead))

    def fail_all(self, error: errors.MillpondError) -> None:
        for waiting in self._by_index.values():
            for _, future in waiting:
                if not future.done():
                    future.set_exception(error)
        self._by_index.clear()

    def __bool__(self) -> bool:
        return bool(self._by_index)


class Replica:
    """A hosted group. Not thread-safe: only the node's event loop touches it."""

    def __init__(self, group: int, raft: Raft, log: GroupLog, on_work: Callable[[], None]) -> None:
        self.group = group
        self.raft = raft
        self.log = log
        self._on_work = on_work
        self.machine: StateMachine = _NoMachine()
        self._persisted = _Waiters()
        self._applied = _Waiters()
        self.stopped = False

    # -- used by request handlers ---------------------------------------------------
    def propose(self, payloads: Sequence[bytes], kind: EntryKind = EntryKind.DATA) -> tuple[int, int]:
        """Append ``payloads`` if this replica leads; return (last index, term).

        Raises :class:`errors.NotLeader` (with the leader's id, address filled in
        by the caller), :class:`errors.Unavailable` when the leader cannot take it
        now, :class:`errors.InvalidRequest` for an entry that can never be taken.
        """
        if self.stopped:
            raise errors.Unavailable(f"group {self.group} is stopping")
        try:
            last = self.raft.propose(payloads, kind)
        except RaftNotLeader as exc:
            raise errors.NotLeader(f"this node does not lead group {self.group}", exc.leader) from exc
        except ProposalDropped as exc:
            raise errors.Unavailable(str(exc)) from exc
        except InvalidProposal as exc:
            raise errors.InvalidRequest(str(exc)) from exc
        self._on_work()
        return last, self.raft.term

    def wait_persisted(self, index: int, term: int) -> asyncio.Future[object]:
        """A future resolved once the entry (index, term) is durable on this node."""
        return self._persisted.add(index, term)

    def wait_applied(self, index: int, term: int) -> asyncio.Future[object]:
        """A future resolved with the state machine's result once (index, term) is applied."""
        if index <= self.raft.log.applied:
            future: asyncio.Future[object] = asyncio.get_running_loop().create_future()
            future.set_exception(errors.Unavailable(f"entry {index} was applied before the wait began"))
            return future
        return self._applied.add(index, term)

    # -- used by the Ready loop -------------------------------------------------------
    def persisted(self, rd: Ready) -> None:
        """The host made ``rd``'s entries durable."""
        if self._persisted:
            lead = self.raft.lead
            for entry in rd.entries:
                self._persisted.settle(entry, entry.index, lead)

    def apply(self, rd: Ready) -> None:
        """Apply ``rd``'s snapshot and committed entries, settle waiters, report role changes."""
        if rd.snapshot is not None:
            self.machine.restore(rd.snapshot)
        lead = self.raft.lead
        for entry in rd.committed_entries:
            result = self.machine.apply(entry)
            if self._applied:
                self._applied.settle(entry, result, lead)
        if rd.soft_state is not None:
            self.machine.on_soft_state(rd.soft_state, self.raft.term)

    def stop(self) -> None:
        """Fail every waiter; later proposals are refused."""
        self.stopped = True
        error = errors.Unavailable(f"group {self.group} stopped on this node")
        self._persisted.fail_all(error)
        self._applied.fail_all(error)
