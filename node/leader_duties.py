"""What a node does for the partitions it leads: report them, and carry out controller actions."""

from __future__ import annotations

import logging

from millpond.controller import ActionKind, LeaderAction, LeaderReport
from millpond.node.isr import IsrTracker
from millpond.node.partition import PartitionMachine
from millpond.node.raft_host import RaftHost
from millpond.raft import ChangeKind, ConfChange, RaftError, Role

log = logging.getLogger(__name__)


def leader_reports(partitions: dict[int, PartitionMachine], isr: IsrTracker,
                   now_ms: int) -> list[LeaderReport]:
    """One report per partition this node leads, sampling each follower's progress."""
    reports = []
    for group, machine in sorted(partitions.items()):
        raft = machine.replica.raft
        if raft.role != Role.LEADER:
            isr.forget(group)
            continue
        status = raft.status()
        matches = {node: match for node, (_, match, _) in status.progress.items() if node != raft.id}
        in_sync = isr.sample(group, status.term, status.last_index, matches, now_ms)
        reports.append(LeaderReport(
            group=group, term=status.term, voters=tuple(status.membership.voters),
            learners=tuple(status.membership.learners), in_sync=(raft.id, *in_sync),
            log_start_offset=machine.log_start_offset, high_watermark=machine.high_watermark,
        ))
    return reports


def carry_out(actions: list[LeaderAction], host: RaftHost) -> None:
    """Apply controller actions to the groups this node leads. Idempotent: the controller
    repeats an action until reports show its effect, so refusals are simply retried later."""
    for action in actions:
        replica = host.replica(action.group)
        if replica is None or replica.raft.role != Role.LEADER:
            continue
        raft = replica.raft
        membership = raft.membership
        log.debug("carrying out %s (members %s)", action, membership)
        try:
            if action.kind == ActionKind.TRANSFER_LEADER:
                raft.transfer_leader(action.node)
            elif action.kind == ActionKind.ADD_REPLICA:
                if action.node not in membership.members():
                    raft.propose_membership(ConfChange(ChangeKind.ADD_LEARNER, action.node))
                elif action.node in membership.learners:
                    raft.propose_membership(ConfChange(ChangeKind.ADD_VOTER, action.node))
            elif action.kind == ActionKind.REMOVE_REPLICA and action.node in membership.members():
                raft.propose_membership(ConfChange(ChangeKind.REMOVE, action.node))
        except RaftError as exc:
            log.debug("action %s on group %d deferred: %s", action, action.group, exc)
        host.mark(action.group)


def step_down_everywhere(partitions: dict[int, PartitionMachine], host: RaftHost) -> None:
    """A fenced node hands every leadership to another voter."""
    for group, machine in partitions.items():
        raft = machine.replica.raft
        if raft.role != Role.LEADER:
            continue
        others = sorted(raft.membership.voters - {raft.id})
        if others:
            try:
                raft.transfer_leader(others[0])
            except RaftError as exc:
                log.debug("could not hand off group %d: %s", group, exc)
            host.mark(group)
