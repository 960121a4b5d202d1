"""Unit tests of the Raft core's small modules: quorum math, progress and flow control, the
log, membership records and changes, configuration validation; and the purity rule (the
core imports nothing that does I/O, reads a clock or draws randomness).

Behaviour of the whole state machine is tested by the data-driven scenarios
(``test_scenarios.py``); a few regressions that no scenario can reach sit at the end.
"""

from __future__ import annotations

import ast
import random
from pathlib import Path

import pytest

from millpond import limits
from millpond.invariant import InvariantViolation
from millpond.raft import quorum
from millpond.raft.config import Config
from millpond.raft.core import Raft
from millpond.raft.errors import CompactedError, InvalidProposal
from millpond.raft.log import RaftLog
from millpond.raft.membership import ChangeKind, ConfChange, Membership
from millpond.raft.messages import (
    Entry,
    EntryKind,
    HardState,
    Message,
    MessageType,
    Snapshot,
    SnapshotMeta,
)
from millpond.raft.progress import Inflights, Progress, ProgressState
from millpond.raft.storage import MemoryStorage

RAFT_DIR = Path(__file__).resolve().parents[2] / "raft"


# ============================================================================ quorum
@pytest.mark.parametrize(
    ("voters", "match", "expected"),
    [
        ({1}, {1: 7}, 7),
        ({1, 2, 3}, {1: 5, 2: 4, 3: 3}, 4),
        ({1, 2, 3}, {1: 5}, 0),  # missing voters count as 0
        ({1, 2, 3}, {1: 5, 2: 5}, 5),
        ({1, 2, 3, 4}, {1: 9, 2: 8, 3: 2, 4: 1}, 2),  # even size: 3 of 4 needed
        ({1, 2, 3, 4, 5}, {1: 9, 2: 9, 3: 6, 4: 1, 5: 1}, 6),
        ({1, 2}, {1: 3, 2: 3, 9: 100}, 3),  # non-voters (learners) never count
        (set(), {1: 3}, 0),
    ],
)
def test_committed_index_is_the_largest_index_held_by_a_majority(
    voters: set[int], match: dict[int, int], expected: int
) -> None:
    assert quorum.committed_index(voters, match) == expected


@pytest.mark.parametrize(
    ("voters", "votes", "expected"),
    [
        ({1}, {1: True}, quorum.VoteResult.WON),
        ({1, 2, 3}, {1: True}, quorum.VoteResult.PENDING),
        ({1, 2, 3}, {1: True, 2: True}, quorum.VoteResult.WON),
        ({1, 2, 3}, {1: True, 2: False}, quorum.VoteResult.PENDING),
        ({1, 2, 3}, {1: True, 2: False, 3: False}, quorum.VoteResult.LOST),
        ({1, 2, 3, 4}, {1: True, 2: True}, quorum.VoteResult.PENDING),
        ({1, 2, 3, 4}, {1: True, 2: False, 3: False}, quorum.VoteResult.LOST),
        ({1, 2, 3}, {1: True, 7: True, 8: True}, quorum.VoteResult.PENDING),  # non-voters
    ],
)
def test_vote_result(voters: set[int], votes: dict[int, bool], expected: quorum.VoteResult) -> None:
    assert quorum.vote_result(voters, votes) == expected


def test_has_quorum_counts_only_voters() -> None:
    assert quorum.has_quorum({1, 2, 3}, {1, 2})
    assert not quorum.has_quorum({1, 2, 3}, {1, 4, 5})
    assert not quorum.has_quorum({1, 2, 3, 4}, {1, 2})
    assert quorum.has_quorum({1}, {1})


# ============================================================================ progress
def _progress(match: int = 0, next_: int = 1, msgs: int = 3, size: int = 1000) -> Progress:
    return Progress(match=match, next=next_, inflights=Inflights(msgs, size))


def test_inflights_fill_by_count_and_by_bytes_and_free_in_order() -> None:
    window = Inflights(msgs_max=3, bytes_max=100)
    window.add(5, 10)
    window.add(7, 10)
    assert not window.full()
    window.add(9, 10)
    assert window.full() and window.count() == 3
    window.free_to(7)
    assert window.count() == 1 and not window.full()
    window.add(12, 90)
    assert window.full()  # 100 bytes in flight
    window.free_first()
    assert window.count() == 1 and not window.full()
    window.free_to(6)  # below every in-flight message: nothing to free
    assert window.count() == 1
    window.reset()
    assert window.count() == 0 and not window.full()


def test_probe_sends_one_append_then_waits() -> None:
    pr = _progress(match=3, next_=4)
    assert pr.state == ProgressState.PROBE and not pr.is_paused()
    pr.sent_entries(last_index=6, count=3, size=30)
    assert pr.is_paused() and pr.next == 4  # probing does not move next
    assert pr.maybe_update(6)
    assert not pr.is_paused() and pr.match == 6 and pr.next == 7


def test_replicate_streams_optimistically_within_the_window() -> None:
    pr = _progress(match=3, next_=4, msgs=2)
    pr.become_replicate()
    pr.sent_entries(last_index=6, count=3, size=30)
    assert pr.next == 7 and not pr.is_paused()
    pr.sent_entries(last_index=6, count=0, size=0)  # an empty append takes no slot
    assert pr.inflights.count() == 1
    pr.sent_entries(last_index=9, count=3, size=30)
    assert pr.next == 10 and pr.is_paused()
    assert pr.maybe_update(6)
    pr.inflights.free_to(6)
    assert not pr.is_paused()


def test_maybe_update_ignores_stale_acknowledgements() -> None:
    pr = _progress(match=5, next_=9)
    assert not pr.maybe_update(4)
    assert pr.match == 5 and pr.next == 9
    assert not pr.maybe_update(5)


def test_rejection_in_replicate_falls_back_to_match() -> None:
    pr = _progress(match=5, next_=20)
    pr.become_replicate()
    pr.next = 20
    assert not pr.maybe_decrease_to(rejected=4, match_hint=0)  # stale: at or below match
    assert pr.maybe_decrease_to(rejected=12, match_hint=0)
    assert pr.next == 6


def test_rejection_in_probe_uses_the_hint_but_never_goes_below_match() -> None:
    pr = _progress(match=2, next_=11)
    pr.sent_entries(last_index=10, count=0, size=0)
    assert not pr.maybe_decrease_to(rejected=7, match_hint=3)  # not the probe we sent
    assert pr.maybe_decrease_to(rejected=10, match_hint=4)
    assert pr.next == 5 and not pr.is_paused()
    pr.next = 5
    assert pr.maybe_decrease_to(rejected=4, match_hint=0)
    assert pr.next == 3  # match + 1


def test_snapshot_state_pauses_until_probe() -> None:
    pr = _progress(match=2, next_=3)
    pr.become_snapshot(snapshot_index=50, tick=7)
    assert pr.is_paused() and pr.pending_snapshot == 50 and pr.snapshot_sent_tick == 7
    pr.become_probe()
    assert pr.state == ProgressState.PROBE and pr.next == 51 and pr.pending_snapshot == 0
    pr.become_replicate()
    assert pr.next == 3  # from match again


# ============================================================================ log
def _entries(*terms: int, start: int = 1, kind: EntryKind = EntryKind.DATA) -> list[Entry]:
    return [Entry(term, start + i, kind, b"x") for i, term in enumerate(terms)]


def _log(*terms: int, commit: int = 0, snapshot: int = 0, snapshot_term: int = 0) -> RaftLog:
    """A log whose stored entries have ``terms`` (after an optional snapshot)."""
    storage = MemoryStorage(Membership.of([1, 2, 3]))
    if snapshot:
        storage.save(None, [], Snapshot(SnapshotMeta(snapshot, snapshot_term, Membership.of([1, 2, 3]))))
    storage.save(HardState(max(terms, default=0), 0, commit), _entries(*terms, start=snapshot + 1), None)
    storage.sync()
    return RaftLog(storage, applied=0)


def test_log_positions_span_storage_and_unstable_tail() -> None:
    log = _log(1, 1, 2)
    assert (log.first_index(), log.last_index(), log.last_term()) == (1, 3, 2)
    log.append(_entries(3, 3, start=4))
    assert log.last_index() == 5 and log.term(5) == 3 and log.term(3) == 2
    assert log.term(6) is None
    assert [e.index for e in log.unstable] == [4, 5]


def test_log_append_truncates_a_conflicting_suffix() -> None:
    log = _log(1, 1, 1, 1)
    log.append(_entries(2, start=3))
    assert log.last_index() == 3 and log.term(3) == 2 and log.unstable_offset == 3
    log.append(_entries(3, 3, start=4))
    log.append(_entries(4, start=4))  # truncates inside the unstable tail
    assert [(e.term, e.index) for e in log.unstable] == [(2, 3), (4, 4)]


def test_log_append_refuses_to_truncate_committed_entries_or_leave_a_gap() -> None:
    log = _log(1, 1, 1, commit=2)
    with pytest.raises(InvariantViolation):
        log.append(_entries(2, start=2))
    with pytest.raises(InvariantViolation):
        log.append(_entries(2, start=5))


def test_maybe_append_checks_the_previous_entry_and_caps_commit() -> None:
    log = _log(1, 1, 1)
    assert log.maybe_append(3, 2, commit=3, entries=_entries(2, start=4)) is None
    assert log.maybe_append(2, 1, commit=9, entries=_entries(2, 2, start=3)) == 4
    assert log.term(3) == 2 and log.last_index() == 4
    assert log.committed == 4  # min(leader commit, last new entry)
    # A duplicate of entries already held changes nothing and truncates nothing.
    assert log.maybe_append(1, 1, commit=4, entries=_entries(1, start=2)) == 2
    assert log.last_index() == 4


def test_slice_respects_the_byte_limit_across_storage_and_unstable() -> None:
    log = _log(1, 1, 1)
    log.append(_entries(2, 2, start=4))
    size = Entry(1, 1, EntryKind.DATA, b"x").size()
    assert [e.index for e in log.slice(1, 6, 1 << 20)] == [1, 2, 3, 4, 5]
    assert [e.index for e in log.slice(2, 6, 2 * size)] == [2, 3]
    assert [e.index for e in log.slice(3, 6, 2 * size)] == [3, 4]
    assert [e.index for e in log.slice(4, 6, 1)] == [4]  # always at least one entry
    assert log.slice(3, 3, 100) == []


def test_slice_below_the_snapshot_raises_compacted() -> None:
    log = _log(2, 2, snapshot=5, snapshot_term=1)
    assert log.first_index() == 6 and log.term(5) == 1 and log.term(4) is None
    with pytest.raises(CompactedError):
        log.slice(5, 7, 100)


def test_find_conflict_by_term() -> None:
    # index: 1 2 3 4 5 6
    # term:  1 1 2 2 4 4
    log = _log(1, 1, 2, 2, 4, 4)
    assert log.find_conflict_by_term(6, 4) == (6, 4)
    assert log.find_conflict_by_term(6, 3) == (4, 2)
    assert log.find_conflict_by_term(6, 1) == (2, 1)
    assert log.find_conflict_by_term(9, 5) == (6, 4)  # beyond the log: from its end
    assert log.find_conflict_by_term(6, 0) == (0, 0)


def test_find_conflict_by_term_stops_at_the_snapshot() -> None:
    log = _log(3, 3, snapshot=4, snapshot_term=2)
    assert log.find_conflict_by_term(6, 2) == (4, 2)
    index, term = log.find_conflict_by_term(6, 1)
    assert term == 0 and index < log.first_index()


def test_is_up_to_date_compares_last_term_then_last_index() -> None:
    log = _log(1, 2, 2)
    assert log.is_up_to_date(1, 3)
    assert log.is_up_to_date(3, 2)
    assert log.is_up_to_date(4, 2)
    assert not log.is_up_to_date(2, 2)
    assert not log.is_up_to_date(9, 1)


def test_memberships_take_effect_on_append_and_revert_on_truncation() -> None:
    log = _log(1)
    wider = Membership.of([1, 2, 3, 4])
    log.append([Entry(1, 2, EntryKind.CONFIG, wider.encode())])
    assert log.membership() == wider and log.membership_index() == 2
    log.append([Entry(2, 2, EntryKind.DATA, b"y")])
    assert log.membership() == Membership.of([1, 2, 3]) and log.membership_index() == 0


def test_memberships_are_read_back_from_storage() -> None:
    storage = MemoryStorage(Membership.of([1]))
    storage.save(None, [Entry(1, 1, EntryKind.CONFIG, Membership.of([1, 2]).encode())], None)
    assert RaftLog(storage, applied=0).membership() == Membership.of([1, 2])


def test_stable_to_ignores_a_tail_replaced_since_the_ready() -> None:
    log = _log(1)
    log.append(_entries(1, 1, start=2))
    log.stable_to(3, 5)  # term mismatch: the tail changed
    assert log.unstable_offset == 2 and len(log.unstable) == 2
    log.stable_to(2, 1)
    assert log.unstable_offset == 3 and [e.index for e in log.unstable] == [3]


def test_restore_replaces_the_log_with_the_snapshot() -> None:
    log = _log(1, 1)
    members = Membership.of([1, 2, 3], (4,))
    log.restore(Snapshot(SnapshotMeta(10, 3, members)))
    assert (log.first_index(), log.last_index(), log.committed) == (11, 10, 10)
    assert log.term(10) == 3 and log.term(2) is None and log.membership() == members
    log.stable_snapshot_to(10)
    assert log.unstable_snapshot is None


def test_committed_to_apply_is_bounded_and_resumes_after_applied() -> None:
    log = _log(1, 1, 1, 1, commit=4)
    assert [e.index for e in log.committed_to_apply(3)] == [1, 2, 3]
    log.applied_to(3)
    assert [e.index for e in log.committed_to_apply(3)] == [4]
    log.applied_to(4)
    assert log.committed_to_apply(3) == []
    with pytest.raises(InvariantViolation):
        log.applied_to(5)


def test_commit_never_moves_backwards_or_beyond_the_log() -> None:
    log = _log(1, 1, 1, commit=2)
    log.commit_to(1)
    assert log.committed == 2
    with pytest.raises(InvariantViolation):
        log.commit_to(4)


# ============================================================================ membership
@pytest.mark.parametrize(
    "membership",
    [
        Membership.of([1]),
        Membership.of([3, 1, 2]),
        Membership.of([1, 2, 3], (4, 5)),
        Membership.of([2**63], (7,)),
        Membership(),
    ],
)
def test_membership_encode_decode_round_trip(membership: Membership) -> None:
    assert Membership.decode(membership.encode()) == membership


def test_membership_encoding_is_canonical() -> None:
    assert Membership.of([3, 1, 2]).encode() == Membership.of([1, 2, 3]).encode()


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x00",
        Membership.of([1, 2]).encode()[:-1],
        Membership.of([1, 2]).encode() + b"\x00",
        b"\x00\x02" + b"\x00" * 8 + (1).to_bytes(8, "big") + (1).to_bytes(8, "big"),  # voter twice
        b"\x00\x01\x00\x01" + (1).to_bytes(8, "big") * 2,  # voter and learner
    ],
)
def test_membership_decode_rejects_malformed_records(data: bytes) -> None:
    with pytest.raises(ValueError):
        Membership.decode(data)


def test_membership_apply_each_kind() -> None:
    base = Membership.of([1, 2, 3])
    assert base.apply(ConfChange(ChangeKind.ADD_LEARNER, 4)) == Membership.of([1, 2, 3], (4,))
    promoted = Membership.of([1, 2, 3], (4,)).apply(ConfChange(ChangeKind.ADD_VOTER, 4))
    assert promoted == Membership.of([1, 2, 3, 4])
    assert base.apply(ConfChange(ChangeKind.ADD_LEARNER, 3)) == Membership.of([1, 2], (3,))
    assert base.apply(ConfChange(ChangeKind.REMOVE, 2)) == Membership.of([1, 3])
    assert Membership.of([1], (2,)).apply(ConfChange(ChangeKind.REMOVE, 2)) == Membership.of([1])
    assert base.apply(ConfChange(ChangeKind.ADD_VOTER, 4)).quorum() == 3
    assert base.quorum() == 2
    assert base.members() == {1, 2, 3}


@pytest.mark.parametrize(
    ("membership", "change"),
    [
        (Membership.of([1, 2]), ConfChange(ChangeKind.ADD_VOTER, 2)),
        (Membership.of([1], (2,)), ConfChange(ChangeKind.ADD_LEARNER, 2)),
        (Membership.of([1, 2]), ConfChange(ChangeKind.REMOVE, 3)),
        (Membership.of([1]), ConfChange(ChangeKind.REMOVE, 1)),  # no voter left
        (Membership.of([1], (2,)), ConfChange(ChangeKind.ADD_LEARNER, 1)),  # no voter left
        (Membership.of([1]), ConfChange(ChangeKind.ADD_VOTER, 0)),
        (Membership.of(list(range(1, limits.raft_group_members_max + 1))),
         ConfChange(ChangeKind.ADD_LEARNER, 100)),
    ],
)
def test_membership_apply_refuses_invalid_changes(membership: Membership, change: ConfChange) -> None:
    with pytest.raises(InvalidProposal):
        membership.apply(change)


# ============================================================================ config
def test_default_config_is_valid() -> None:
    Config(id=1).validate()


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"id": 0}, "id must be positive"),
        ({"heartbeat_ticks": 0}, "heartbeat_ticks must be >= 1"),
        ({"election_ticks": 3, "heartbeat_ticks": 3}, "election_ticks must be > heartbeat_ticks"),
        ({"msg_entries_max": 0}, "msg_entries_max must be >= 1"),
        ({"inflight_msgs_max": 0}, "inflight_msgs_max must be >= 1"),
        ({"read_requests_max": 0}, "read_requests_max must be >= 1"),
        ({"msg_bytes_max": 2048, "inflight_bytes_max": 1024}, "msg_bytes_max must be <= inflight_bytes_max"),
        ({"entry_bytes_max": 300, "uncommitted_bytes_max": 200},
         "entry_bytes_max must be <= uncommitted_bytes_max"),
        ({"applied": -1}, "applied must be >= 0"),
        ({"bugs": frozenset({"no-such-bug"})}, "unknown bugs ['no-such-bug']"),
    ],
)
def test_config_validation_names_the_problem(changes: dict[str, object], problem: str) -> None:
    config = Config(**{"id": 1, **changes})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="invalid raft config") as excinfo:
        config.validate()
    assert problem in str(excinfo.value)


def test_config_validation_lists_every_problem() -> None:
    with pytest.raises(ValueError) as excinfo:
        Config(id=0, heartbeat_ticks=0, msg_entries_max=0).validate()
    message = str(excinfo.value)
    for problem in ("id must be positive", "heartbeat_ticks", "msg_entries_max"):
        assert problem in message


def test_the_core_validates_its_config() -> None:
    with pytest.raises(ValueError):
        Raft(Config(id=1, election_ticks=1), MemoryStorage(Membership.of([1])), random.Random(1))


# ============================================================================ purity
#: Modules of ``raft/`` outside the pure core: stores and drivers that do I/O or
#: draw randomness. Everything else must not import the modules below.
NOT_CORE = {"lmdb_store.py", "group_commit.py"}
FORBIDDEN = {"grpc", "lmdb", "asyncio", "time", "random", "threading", "socket"}


def _core_modules() -> list[Path]:
    return sorted(
        path for path in RAFT_DIR.rglob("*.py")
        if path.name not in NOT_CORE and "sim" not in path.relative_to(RAFT_DIR).parts[:-1]
    )


def _imported_roots(path: Path) -> set[str]:
    roots: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def test_core_modules_exist() -> None:
    names = {path.name for path in _core_modules()}
    assert {"core.py", "log.py", "progress.py", "quorum.py", "membership.py", "storage.py"} <= names


@pytest.mark.parametrize("path", _core_modules(), ids=lambda path: str(path.relative_to(RAFT_DIR)))
def test_core_module_imports_nothing_impure(path: Path) -> None:
    assert not _imported_roots(path) & FORBIDDEN, (
        f"{path.name} imports {sorted(_imported_roots(path) & FORBIDDEN)}: the Raft core does no "
        "I/O, reads no clock and draws no randomness of its own (STYLE.md, after etcd raft)"
    )


# ============================================================================ core regressions
def _follower(entries: list[Entry], term: int, commit: int) -> Raft:
    storage = MemoryStorage(Membership.of([1, 2, 3]))
    storage.save(HardState(term, 0, commit), entries, None)
    storage.sync()
    return Raft(Config(id=3), storage, random.Random(3))


def test_snapshot_already_held_is_acknowledged_only_up_to_its_index() -> None:
    # The follower holds the snapshot's last entry (1/2) and an uncommitted entry 2/3 that
    # the leader (term 3) need not have: its reply must not claim a match beyond index 2.
    follower = _follower(
        [Entry(1, 1, EntryKind.NOOP), Entry(1, 2, EntryKind.DATA, b"a"), Entry(2, 3, EntryKind.DATA, b"b")],
        term=2, commit=1)
    snapshot = Snapshot(SnapshotMeta(2, 1, Membership.of([1, 2, 3])))
    follower.step(Message(MessageType.SNAPSHOT, 3, 1, 3, snapshot=snapshot))
    (reply,) = follower.ready().messages
    assert (reply.type, reply.reject, reply.index) == (MessageType.APPEND_RESP, False, 2)
    assert follower.log.committed == 2 and follower.log.last_index() == 3


def test_installing_a_snapshot_must_be_synced() -> None:
    follower = _follower([Entry(1, 1, EntryKind.NOOP)], term=1, commit=1)
    snapshot = Snapshot(SnapshotMeta(5, 1, Membership.of([1, 2, 3])))
    follower.step(Message(MessageType.SNAPSHOT, 3, 1, 1, snapshot=snapshot))
    rd = follower.ready()
    assert rd.snapshot == snapshot and not rd.entries
    assert rd.must_sync  # the reply acknowledges the snapshot
    assert [m.index for m in rd.messages] == [5]


def test_the_purity_check_sees_every_form_of_import(tmp_path: Path) -> None:
    module = tmp_path / "impure.py"
    module.write_text(
        "import os, time\nimport grpc.aio\nfrom random import Random\nfrom . import sibling\n"
        "def later():\n    import socket\n"
    )
    assert _imported_roots(module) == {"os", "time", "grpc", "random", "socket"}
