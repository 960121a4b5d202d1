"""The sans-IO Raft state machine of one group member.

Inputs are method calls: :meth:`Raft.step` (a message from a peer),
:meth:`Raft.tick` (logical time), :meth:`Raft.propose`,
:meth:`Raft.propose_membership`, :meth:`Raft.transfer_leader`,
:meth:`Raft.read_index`, :meth:`Raft.campaign`. Outputs accumulate until the
driver takes them with :meth:`Raft.ready` and acknowledges them with
:meth:`Raft.advance` (the contract is in :mod:`millpond.raft.ready`).

Implemented: leader election with randomized timeouts, pre-vote and
check-quorum (with the leader lease that makes a rejoining node harmless);
batched, pipelined replication with flow control and fast backtracking; the
§5.4.2 commit rule with a no-op on election; leadership transfer; single-server
membership changes with learners; snapshots for followers behind the log's
first index; and read-index barriers.

Nothing here reads a clock, draws entropy, or touches a socket or disk; the
randomness for election timeouts comes from the ``rng`` passed in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from millpond.invariant import invariant
from millpond.raft import quorum
from millpond.raft.config import Config
from millpond.raft.errors import CompactedError, InvalidProposal, NotLeader, ProposalDropped
from millpond.raft.log import RaftLog
from millpond.raft.membership import ChangeKind, ConfChange, Membership
from millpond.raft.messages import (
    CAMPAIGN_TRANSFER,
    NONE,
    Entry,
    EntryKind,
    HardState,
    Message,
    MessageType,
    Snapshot,
)
from millpond.raft.progress import Inflights, Progress, ProgressState
from millpond.raft.ready import ReadState, Ready, Role, SoftState
from millpond.raft.storage import LogStorage

_VOTE_TYPES = (MessageType.VOTE, MessageType.PRE_VOTE)
_FROM_LEADER = (MessageType.APPEND, MessageType.HEARTBEAT, MessageType.SNAPSHOT)


class Rng(Protocol):
    """The randomness the core needs: ``random.Random`` fits."""

    def randrange(self, start: int, stop: int) -> int: ...


@dataclass(frozen=True, slots=True)
class Status:
    """An immutable snapshot of one member's state, for metrics and tests."""

    id: int
    role: Role
    term: int
    vote: int
    lead: int
    commit: int
    applied: int
    first_index: int
    last_index: int
    membership: Membership
    progress: dict[int, tuple[str, int, int]] = field(default_factory=dict)
    """For a leader: member -> (state, match, next)."""


@dataclass
class _ReadRequest:
    """A read-index request waiting for a quorum of heartbeat replies."""

    round: int
    index: int
    context: int
    acks: set[int]


class Raft:
    """One member of one Raft group. Not thread-safe: one driver owns it."""

    def __init__(self, config: Config, storage: LogStorage, rng: Rng) -> None:
        config.validate()
        self.config = config
        self.id = config.id
        self._rng = rng
        self._bugs = config.bugs
        self.log = RaftLog(storage, config.applied)
        hard_state = storage.initial_state()
        self.term = hard_state.term
        self.vote = hard_state.vote
        self.lead = NONE
        self.role = Role.FOLLOWER
        self.progress: dict[int, Progress] = {}
        self._votes: dict[int, bool] = {}
        self._msgs: list[Message] = []
        self._read_states: list[ReadState] = []
        self._reads: list[_ReadRequest] = []
        self._read_round = 0
        self._ticks = 0
        self._election_elapsed = 0
        self._heartbeat_elapsed = 0
        self._randomized_timeout = 0
        self._transferee = NONE
        self._uncommitted_bytes = 0
        self._prev_hard = HardState(self.term, self.vote, self.log.committed)
        self._prev_soft = SoftState(self.lead, self.role)
        self._pending_ready: Ready | None = None
        self._reset_election_timeout()

    # ================================================================ inputs
    def tick(self) -> None:
        """Advance logical time by one tick."""
        self._ticks += 1
        if self.role == Role.LEADER:
            self._tick_leader()
            return
        self._election_elapsed += 1
        if self._promotable() and self._election_elapsed >= self._randomized_timeout:
            self._election_elapsed = 0
            self._start_campaign(transfer=False)

    def campaign(self) -> None:
        """Start an election now (pre-vote first, if configured), as a timeout would."""
        if self.role != Role.LEADER and self._promotable():
            self._start_campaign(transfer=False)

    def propose(self, payloads: Sequence[bytes], kind: EntryKind = EntryKind.DATA) -> int:
        """Append ``payloads`` as entries of ``kind``; return the index of the last one.

        The entries occupy ``[returned - len(payloads) + 1, returned]``; they are
        committed when a Ready hands them out as committed entries with these
        indexes **and the current term** (a new leader may overwrite them).

        Raises :class:`NotLeader`; :class:`ProposalDropped` during a leadership
        transfer or past ``uncommitted_bytes_max``; :class:`InvalidProposal` for
        an empty or oversized proposal or a ``CONFIG`` kind (use
        :meth:`propose_membership`).
        """
        if kind in (EntryKind.CONFIG, EntryKind.NOOP):
            raise InvalidProposal(f"entries of kind {kind.name} cannot be proposed directly")
        if not payloads:
            raise InvalidProposal("a proposal needs at least one entry")
        if len(payloads) > self.config.propose_entries_max:
            raise InvalidProposal(
                f"a proposal has at most {self.config.propose_entries_max} entries, "
                f"got {len(payloads)}"
            )
        for payload in payloads:
            if len(payload) > self.config.entry_bytes_max:
                raise InvalidProposal(
                    f"entry of {len(payload)} bytes exceeds entry_bytes_max "
                    f"{self.config.entry_bytes_max}"
                )
        self._check_can_propose()
        first = self.log.last_index() + 1
        entries = [
            Entry(self.term, first + offset, kind, payload)
            for offset, payload in enumerate(payloads)
        ]
        size = sum(entry.size() for entry in entries)
        if self._uncommitted_bytes and self._uncommitted_bytes + size > self.config.uncommitted_bytes_max:
            raise ProposalDropped(
                f"{self._uncommitted_bytes} uncommitted bytes; limit "
                f"{self.config.uncommitted_bytes_max}"
            )
        self._append(entries)
        self._broadcast_append()
        return self.log.last_index()

    def propose_membership(self, change: ConfChange) -> int:
        """Append a single-server membership change; return its index.

        Raises :class:`NotLeader`; :class:`ProposalDropped` while another change
        is uncommitted, before the leader committed an entry of its term, or
        during a transfer, or when promoting a learner whose log has not reached
        the commit index; :class:`InvalidProposal` if the change is a no-op,
        leaves no voter, or adds a voter that was not first a learner.
        """
        self._check_can_propose()
        if self.log.term(self.log.committed) != self.term:
            raise ProposalDropped("the leader has not yet committed an entry of its term")
        if self.log.membership_index() > self.log.committed:
            raise ProposalDropped(
                f"membership change at index {self.log.membership_index()} is not committed yet"
            )
        current = self.log.membership()
        new = current.apply(change)
        if change.kind == ChangeKind.ADD_VOTER and change.node not in current.voters:
            # A voter that cannot yet store entries would weaken every quorum it joins.
            if change.node not in current.learners:
                raise InvalidProposal(f"add node {change.node} as a learner before promoting it")
            match = self.progress[change.node].match
            if match < self.log.committed:
                raise ProposalDropped(
                    f"learner {change.node} has not caught up (match {match} < commit "
                    f"{self.log.committed})"
                )
        entry = Entry(self.term, self.log.last_index() + 1, EntryKind.CONFIG, new.encode())
        self._append([entry])
        self._broadcast_append()
        return entry.index

    def transfer_leader(self, to: int) -> None:
        """Hand leadership to voter ``to`` (TimeoutNow once its log is caught up).

        Proposals are dropped while the transfer is pending; it is abandoned
        after an election timeout. Raises :class:`NotLeader`; :class:`InvalidProposal`
        if ``to`` is not another voter.
        """
        if self.role != Role.LEADER:
            raise NotLeader(self.lead)
        if to == self.id or to not in self.log.membership().voters:
            raise InvalidProposal(f"node {to} is not another voter of this group")
        if self._transferee == to:
            return
        self._transferee = to
        self._election_elapsed = 0
        if self.progress[to].match == self.log.last_index():
            self._send(Message(MessageType.TIMEOUT_NOW, to, self.id, self.term))
        else:
            self._send_append(to)

    def read_index(self, context: int) -> None:
        """Request a read barrier; a :class:`ReadState` with ``context`` comes in a later Ready.

        Once the application has applied that ReadState's index, a read reflects
        every write committed before this call. Raises :class:`NotLeader`; and
        :class:`ProposalDropped` before the leader has committed an entry of its
        term or with ``read_requests_max`` requests already waiting.
        """
        if self.role != Role.LEADER:
            raise NotLeader(self.lead)
        if self.log.term(self.log.committed) != self.term:
            raise ProposalDropped("the leader has not yet committed an entry of its term")
        voters = self.log.membership().voters
        if voters == {self.id} or "read-without-quorum" in self._bugs:
            self._read_states.append(ReadState(self.log.committed, context))
            return
        if len(self._reads) >= self.config.read_requests_max:
            raise ProposalDropped(f"{len(self._reads)} read requests are already waiting")
        self._read_round += 1
        self._reads.append(_ReadRequest(self._read_round, self.log.committed, context, {self.id}))
        self._broadcast_heartbeat()

    def report_unreachable(self, to: int) -> None:
        """The transport could not deliver to ``to``: stop streaming to it, probe instead."""
        progress = self.progress.get(to)
        if self.role == Role.LEADER and progress and progress.state == ProgressState.REPLICATE:
            progress.become_probe()

    def report_snapshot(self, to: int, ok: bool) -> None:
        """The transport finished sending a snapshot to ``to`` (successfully or not)."""
        progress = self.progress.get(to)
        if self.role != Role.LEADER or progress is None:
            return
        if progress.state == ProgressState.SNAPSHOT:
            if not ok:
                progress.pending_snapshot = 0
            progress.become_probe()
            progress.probe_sent = ok

    def step(self, m: Message) -> None:
        """Process one message from a peer of this group."""
        invariant(m.to == self.id, "message for another node", to=m.to, me=self.id)
        if m.term > self.term:
            if m.type in _VOTE_TYPES and not self._should_consider_vote(m):
                return
            if m.type == MessageType.PRE_VOTE or (
                m.type == MessageType.PRE_VOTE_RESP and not m.reject
            ):
                pass  # pre-votes never change terms
            elif m.type in _FROM_LEADER:
                self._become_follower(m.term, m.frm)
            else:
                self._become_follower(m.term, NONE)
        elif m.term < self.term:
            self._step_stale(m)
            return

        if m.type in _VOTE_TYPES:
            self._handle_vote_request(m)
        elif self.role == Role.LEADER:
            self._step_leader(m)
        elif self.role in (Role.CANDIDATE, Role.PRE_CANDIDATE):
            self._step_candidate(m)
        else:
            self._step_follower(m)

    # ================================================================ ready
    def has_ready(self) -> bool:
        """True if :meth:`ready` would return a non-empty Ready."""
        return bool(
            self._msgs or self.log.unstable or self.log.unstable_snapshot
            or self._read_states or self._hard_state() != self._prev_hard
            or SoftState(self.lead, self.role) != self._prev_soft
            or self.log.committed > self.log.applied
        )

    def ready(self) -> Ready:
        """Take everything pending for the driver. Call :meth:`advance` with it when done."""
        invariant(self._pending_ready is None, "ready() called before advance()")
        hard = self._hard_state()
        soft = SoftState(self.lead, self.role)
        entries = tuple(self.log.unstable)
        rd = Ready(
            soft_state=soft if soft != self._prev_soft else None,
            hard_state=hard if hard != self._prev_hard else None,
            snapshot=self.log.unstable_snapshot,
            entries=entries,
            committed_entries=tuple(
                self.log.committed_to_apply(self.config.ready_committed_entries_max)
            ),
            messages=tuple(self._msgs),
            read_states=tuple(self._read_states),
            # A snapshot must be durable too: this Ready's reply acknowledges it, and the
            # application installs it into its state machine before advance().
            must_sync=bool(entries) or self.log.unstable_snapshot is not None
            or hard.term != self._prev_hard.term
            or hard.vote != self._prev_hard.vote,
        )
        self._msgs = []
        self._read_states = []
        self._prev_soft = soft
        self._prev_hard = hard
        self._pending_ready = rd
        return rd

    def advance(self, rd: Ready) -> None:
        """The driver has persisted, sent and applied ``rd``."""
        invariant(rd is self._pending_ready, "advance() with a Ready not from the last ready()")
        self._pending_ready = None
        if rd.snapshot is not None:
            self.log.stable_snapshot_to(rd.snapshot.meta.index)
            self.log.applied_to(max(self.log.applied, rd.snapshot.meta.index))
        if rd.entries:
            last = rd.entries[-1]
            self.log.stable_to(last.index, last.term)
        if rd.committed_entries:
            self.log.applied_to(rd.committed_entries[-1].index)
            if self.role == Role.LEADER:
                applied = sum(entry.size() for entry in rd.committed_entries)
                self._uncommitted_bytes = max(0, self._uncommitted_bytes - applied)

    def status(self) -> Status:
        """An immutable snapshot of this member's state."""
        progress = {}
        if self.role == Role.LEADER:
            progress = {
                node: (pr.state.value, pr.match, pr.next) for node, pr in self.progress.items()
            }
        return Status(
            id=self.id, role=self.role, term=self.term, vote=self.vote, lead=self.lead,
            commit=self.log.committed, applied=self.log.applied,
            first_index=self.log.first_index(), last_index=self.log.last_index(),
            membership=self.log.membership(), progress=progress,
        )

    @property
    def membership(self) -> Membership:
        """The membership in effect: the latest one in this member's log."""
        return self.log.membership()

    # ================================================================ roles
    def _become_follower(self, term: int, lead: int) -> None:
        self._reset(term)
        self.lead = lead
        self.role = Role.FOLLOWER

    def _become_pre_candidate(self) -> None:
        invariant(self.role != Role.LEADER, "leader cannot become pre-candidate")
        # Term and vote stay: a pre-vote changes nothing durable.
        self._votes = {}
        self.lead = NONE
        self.role = Role.PRE_CANDIDATE

    def _become_candidate(self) -> None:
        invariant(self.role != Role.LEADER, "leader cannot become candidate")
        self._reset(self.term + 1)
        self.vote = self.id
        self.role = Role.CANDIDATE

    def _become_leader(self) -> None:
        invariant(self.role == Role.CANDIDATE, "only a candidate becomes leader", role=self.role)
        self._reset(self.term)
        self.lead = self.id
        self.role = Role.LEADER
        me = self.progress[self.id]
        me.match = self.log.last_index()
        me.become_replicate()
        me.recent_active = True
        # Raft §5.4.2 / §8: commit something of our own term before anything else.
        self._append([Entry(self.term, self.log.last_index() + 1, EntryKind.NOOP)])

    def _reset(self, term: int) -> None:
        if term != self.term:
            self.term = term
            self.vote = NONE
        self.lead = NONE
        self._election_elapsed = 0
        self._heartbeat_elapsed = 0
        self._reset_election_timeout()
        self._transferee = NONE
        self._votes = {}
        self._reads = []
        self._uncommitted_bytes = 0
        self._rebuild_progress(fresh=True)

    def _rebuild_progress(self, fresh: bool) -> None:
        """Keep one Progress per member; ``fresh`` forgets everything known."""
        membership = self.log.membership()
        last = self.log.last_index()
        if fresh:
            self.progress = {}
        for node in list(self.progress):
            if node not in membership.members():
                del self.progress[node]
        for node in membership.members() | {self.id}:
            if node not in self.progress:
                self.progress[node] = Progress(
                    match=0, next=last + 1,
                    inflights=Inflights(self.config.inflight_msgs_max,
                                        self.config.inflight_bytes_max),
                )
            self.progress[node].is_learner = node in membership.learners

    def _reset_election_timeout(self) -> None:
        base = self.config.election_ticks
        self._randomized_timeout = base + self._rng.randrange(0, base)

    def _promotable(self) -> bool:
        return self.id in self.log.membership().voters and self.log.unstable_snapshot is None

    # ================================================================ elections
    def _start_campaign(self, transfer: bool) -> None:
        """Pre-vote first (unless disabled or transferring), else a real election."""
        if self.config.pre_vote and not transfer:
            self._become_pre_candidate()
            self._request_votes(MessageType.PRE_VOTE, self.term + 1, transfer=False)
        else:
            self._campaign_for_real(transfer)

    def _campaign_for_real(self, transfer: bool) -> None:
        self._become_candidate()
        self._request_votes(MessageType.VOTE, self.term, transfer)

    def _request_votes(self, vote_type: MessageType, term: int, transfer: bool) -> None:
        self._votes[self.id] = True
        if self._tally() == quorum.VoteResult.WON:
            self._on_election_won()
            return
        for voter in sorted(self.log.membership().voters - {self.id}):
            self._send(Message(
                vote_type, voter, self.id, term,
                log_term=self.log.last_term(), index=self.log.last_index(),
                context=CAMPAIGN_TRANSFER if transfer else 0,
            ))

    def _on_election_won(self) -> None:
        if self.role == Role.PRE_CANDIDATE:
            self._campaign_for_real(transfer=False)
        else:
            self._become_leader()
            self._broadcast_append()

    def _tally(self) -> quorum.VoteResult:
        return quorum.vote_result(self.log.membership().voters, self._votes)

    def _should_consider_vote(self, m: Message) -> bool:
        """The leader lease: ignore a higher-term vote request while we hear from a leader.

        With check-quorum, a follower that heard from its leader within the
        election timeout ignores disruptive candidates (for example a node
        rejoining after a partition). A transfer's campaign overrides the lease.
        """
        if m.context == CAMPAIGN_TRANSFER:
            return True
        in_lease = (
            self.config.check_quorum and self.lead != NONE
            and self._election_elapsed < self.config.election_ticks
        )
        return not in_lease

    def _handle_vote_request(self, m: Message) -> None:
        pre = m.type == MessageType.PRE_VOTE
        can_vote = (
            self.vote == m.frm
            or (self.vote == NONE and self.lead == NONE)
            or (pre and m.term > self.term)
        )
        up_to_date = self.log.is_up_to_date(m.index, m.log_term) or "vote-any-log" in self._bugs
        resp_type = MessageType.PRE_VOTE_RESP if pre else MessageType.VOTE_RESP
        if can_vote and up_to_date:
            # A pre-vote reply carries the term the candidate would use, so it is not ignored.
            self._send(Message(resp_type, m.frm, self.id, m.term))
            if not pre:
                self._election_elapsed = 0
                self.vote = m.frm
        else:
            self._send(Message(resp_type, m.frm, self.id, self.term, reject=True))

    def _step_stale(self, m: Message) -> None:
        """A message from an older term."""
        if (self.config.check_quorum or self.config.pre_vote) and m.type in (
            MessageType.HEARTBEAT, MessageType.APPEND
        ):
            # The sender thinks it leads an older term. Tell it ours so it steps down; without
            # this, a node whose term rose while partitioned could never rejoin under
            # check-quorum (peers ignore its vote requests while they have a leader).
            self._send(Message(MessageType.APPEND_RESP, m.frm, self.id, self.term))
        elif m.type == MessageType.PRE_VOTE:
            self._send(Message(MessageType.PRE_VOTE_RESP, m.frm, self.id, self.term, reject=True))

    def _step_candidate(self, m: Message) -> None:
        if m.type in _FROM_LEADER:
            self._become_follower(m.term, m.frm)
            self._step_follower(m)
            return
        expected = (
            MessageType.PRE_VOTE_RESP if self.role == Role.PRE_CANDIDATE else MessageType.VOTE_RESP
        )
        if m.type != expected:
            return
        self._votes.setdefault(m.frm, not m.reject)
        result = self._tally()
        if result == quorum.VoteResult.WON:
            self._on_election_won()
        elif result == quorum.VoteResult.LOST:
            self._become_follower(self.term, NONE)

    # ================================================================ follower
    def _step_follower(self, m: Message) -> None:
        if m.type in _FROM_LEADER:
            self._election_elapsed = 0
            self.lead = m.frm
        if m.type == MessageType.APPEND:
            self._handle_append(m)
        elif m.type == MessageType.HEARTBEAT:
            self.log.commit_to(min(m.commit, self.log.last_index()))
            self._send(Message(MessageType.HEARTBEAT_RESP, m.frm, self.id, self.term,
                               context=m.context))
        elif m.type == MessageType.SNAPSHOT:
            self._handle_snapshot(m)
        elif m.type == MessageType.TIMEOUT_NOW and self._promotable():
            self._start_campaign(transfer=True)

    def _handle_append(self, m: Message) -> None:
        if m.index < self.log.committed:
            self._send(Message(MessageType.APPEND_RESP, m.frm, self.id, self.term,
                               index=self.log.committed))
            return
        last = self.log.maybe_append(m.index, m.log_term, m.commit, m.entries)
        if last is not None:
            self._send(Message(MessageType.APPEND_RESP, m.frm, self.id, self.term, index=last))
            return
        hint_index, hint_term = self.log.find_conflict_by_term(m.index, m.log_term)
        self._send(Message(
            MessageType.APPEND_RESP, m.frm, self.id, self.term, index=m.index, reject=True,
            hint_index=hint_index, hint_term=hint_term,
        ))

    def _handle_snapshot(self, m: Message) -> None:
        invariant(m.snapshot is not None, "snapshot message without a snapshot")
        snapshot: Snapshot = m.snapshot
        meta = snapshot.meta
        if meta.index <= self.log.committed:
            index = self.log.committed
        elif self.log.match_term(meta.index, meta.term):
            # We already hold the snapshot's last entry: just learn it is committed. Reply with
            # that index, not our last: entries after it may differ from the leader's, and an
            # accepted reply tells the leader our log matches its own up to the index.
            self.log.commit_to(meta.index)
            index = meta.index
        else:
            self.log.restore(snapshot)
            index = meta.index
        self._send(Message(MessageType.APPEND_RESP, m.frm, self.id, self.term, index=index))

    # ================================================================ leader
    def _tick_leader(self) -> None:
        self._heartbeat_elapsed += 1
        self._election_elapsed += 1
        if self._election_elapsed >= self.config.election_ticks:
            self._election_elapsed = 0
            if self.config.check_quorum:
                active = {node for node, pr in self.progress.items() if pr.recent_active}
                active.add(self.id)
                for node, pr in self.progress.items():
                    pr.recent_active = node == self.id
                if not quorum.has_quorum(self.log.membership().voters, active):
                    self._become_follower(self.term, NONE)
                    return
            self._transferee = NONE  # a transfer that did not finish in time is abandoned
        if self._heartbeat_elapsed >= self.config.heartbeat_ticks:
            self._heartbeat_elapsed = 0
            self._broadcast_heartbeat()

    def _check_can_propose(self) -> None:
        if self.role != Role.LEADER:
            raise NotLeader(self.lead)
        if self._transferee != NONE:
            raise ProposalDropped(f"leadership is being transferred to {self._transferee}")

    def _append(self, entries: list[Entry]) -> None:
        """Leader appends its own entries, counting itself as a replica at once (safe because
        of Ready rule 1: it persists them before any message about them leaves)."""
        self.log.append(entries)
        self._uncommitted_bytes += sum(entry.size() for entry in entries)
        if any(entry.kind == EntryKind.CONFIG for entry in entries):
            self._rebuild_progress(fresh=False)
        self.progress[self.id].maybe_update(self.log.last_index())
        self._maybe_commit()

    def _maybe_commit(self) -> bool:
        membership = self.log.membership()
        match = {node: pr.match for node, pr in self.progress.items()}
        index = quorum.committed_index(membership.voters, match)
        if index <= self.log.committed:
            return False
        if self.log.term(index) != self.term and "commit-old-term" not in self._bugs:
            return False  # Raft §5.4.2: never commit an older term's entry by counting
        self.log.commit_to(index)
        self._after_commit()
        return True

    def _after_commit(self) -> None:
        self._release_reads()
        membership = self.log.membership()
        if self.id not in membership.voters and self.log.membership_index() <= self.log.committed:
            # Our removal is committed: stop leading; the remaining voters elect a leader.
            self._become_follower(self.term, NONE)

    def _step_leader(self, m: Message) -> None:
        progress = self.progress.get(m.frm)
        if progress is None:
            return
        if m.type == MessageType.APPEND_RESP:
            progress.recent_active = True
            self._handle_append_response(m, progress)
        elif m.type == MessageType.HEARTBEAT_RESP:
            progress.recent_active = True
            progress.probe_sent = False
            if progress.state == ProgressState.REPLICATE and progress.inflights.full():
                progress.inflights.free_first()  # recover if every in-flight append was lost
            if (progress.state == ProgressState.SNAPSHOT
                    and self._ticks - progress.snapshot_sent_tick >= self.config.election_ticks):
                progress.become_probe()  # the snapshot was lost: probe (and resend) again
            if progress.match < self.log.last_index():
                self._send_append(m.frm)
            if m.context:
                self._ack_reads(m.frm, m.context)

    def _handle_append_response(self, m: Message, progress: Progress) -> None:
        if m.reject:
            hint = m.hint_index
            if m.hint_term > 0:
                hint, _ = self.log.find_conflict_by_term(m.hint_index, m.hint_term)
            if progress.maybe_decrease_to(m.index, hint):
                if progress.state == ProgressState.REPLICATE:
                    progress.become_probe()
                self._send_append(m.frm)
            return
        was_paused = progress.is_paused()
        if not progress.maybe_update(m.index):
            return
        if progress.state == ProgressState.PROBE:
            progress.become_replicate()
        elif progress.state == ProgressState.SNAPSHOT and progress.match >= progress.pending_snapshot:
            progress.become_probe()
            progress.become_replicate()
        elif progress.state == ProgressState.REPLICATE:
            progress.inflights.free_to(m.index)
        # A new commit index is not broadcast on its own: it rides on the next append or
        # heartbeat (every heartbeat_ticks). Followers apply a little later, but the leader
        # saves two messages per follower per commit, which dominate the cost at low load.
        if self._maybe_commit() and self.role != Role.LEADER:
            return
        if was_paused:
            self._send_append(m.frm)
        while self._send_append(m.frm, send_empty=False):
            pass
        if m.frm == self._transferee and progress.match == self.log.last_index():
            self._send(Message(MessageType.TIMEOUT_NOW, m.frm, self.id, self.term))

    def _send_append(self, to: int, send_empty: bool = True) -> bool:
        """Send ``to`` the next window of entries (or a snapshot); False if nothing was sent."""
        progress = self.progress[to]
        if progress.is_paused():
            return False
        prev_index = progress.next - 1
        prev_term = self.log.term(prev_index)
        entries: list[Entry] = []
        if prev_term is not None and progress.next <= self.log.last_index():
            hi = min(self.log.last_index() + 1, progress.next + self.config.msg_entries_max)
            try:
                entries = self.log.slice(progress.next, hi, self.config.msg_bytes_max)
            except CompactedError:
                prev_term = None  # compacted while we looked: send a snapshot instead
        if prev_term is None:
            return self._send_snapshot(to, progress)
        if not entries and not send_empty:
            return False
        self._send(Message(
            MessageType.APPEND, to, self.id, self.term, log_term=prev_term, index=prev_index,
            entries=tuple(entries), commit=self.log.committed,
        ))
        size = sum(entry.size() for entry in entries)
        progress.sent_entries(entries[-1].index if entries else prev_index, len(entries), size)
        return True

    def _send_snapshot(self, to: int, progress: Progress) -> bool:
        if not progress.recent_active:
            return False
        snapshot = self.log.snapshot()
        self._send(Message(MessageType.SNAPSHOT, to, self.id, self.term, snapshot=snapshot))
        progress.become_snapshot(snapshot.meta.index, self._ticks)
        return True

    def _broadcast_append(self) -> None:
        for node in sorted(self.progress):
            if node != self.id:
                self._send_append(node)

    def _broadcast_heartbeat(self) -> None:
        context = self._reads[-1].round if self._reads else 0
        for node in sorted(self.progress):
            if node == self.id:
                continue
            progress = self.progress[node]
            self._send(Message(
                MessageType.HEARTBEAT, node, self.id, self.term,
                commit=min(progress.match, self.log.committed), context=context,
            ))

    # ================================================================ reads
    def _ack_reads(self, node: int, round_: int) -> None:
        for request in self._reads:
            if request.round <= round_:
                request.acks.add(node)
        self._release_reads()

    def _release_reads(self) -> None:
        """Release, in order, every read confirmed by a quorum (a later confirmation covers
        earlier requests: the same leadership was confirmed after they were made)."""
        voters = self.log.membership().voters
        confirmed = -1
        for position, request in enumerate(self._reads):
            if quorum.has_quorum(voters, request.acks):
                confirmed = position
        for request in self._reads[: confirmed + 1]:
            self._read_states.append(ReadState(request.index, request.context))
        del self._reads[: confirmed + 1]

    # ================================================================ output
    def _send(self, m: Message) -> None:
        self._msgs.append(m)

    def _hard_state(self) -> HardState:
        vote = NONE if "forget-vote" in self._bugs else self.vote
        return HardState(self.term, vote, self.log.committed)
