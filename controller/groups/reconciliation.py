"""Member reconciliation: move one member from what it owns toward its target, never double-owning.

KIP-848's incremental cooperative rebalancing, as one pure function
(:func:`reconcile`), called by the coordinator for the member that heartbeats.
The rules, in order, each with its reason:

1. **Revocations first.** While the member has partitions pending
   revocation, it gets nothing new and keeps its epoch. A pending partition
   is released when the member's heartbeat reports an owned list without it
   (an absent list means "unchanged": nothing is released). Released
   partitions are freed one by one, so their next owners need not wait for
   the member's slowest release.
2. **Shrink to the target.** A member owning partitions outside its target
   keeps only ``assigned ∩ target`` and must release the rest: they become
   pending revocation (unless its owned list already shows them released),
   and its epoch stays where it is, so offsets it commits while releasing
   are still accepted.
3. **Advance.** With nothing to release, the member moves to the target's
   epoch and is given every target partition that no other member owns
   (neither assigned nor pending revocation). Partitions still owned by
   their previous owner are given in a later heartbeat, once released
   (Kafka calls this state UNRELEASED_PARTITIONS); the member's epoch is
   already the target's, as in Kafka: its revocations are done, which is
   what the epoch attests.

So a partition changes owner only after the previous owner confirmed the
release (or left the group, or was removed), and at every step no two
members own the same partition.
"""

from __future__ import annotations

from collections.abc import Mapping, Set
from dataclasses import replace

from millpond.controller.groups.state import MemberState, TopicPartition

__all__ = ["reconcile"]


def reconcile(member: MemberState, target_epoch: int, target: Set[TopicPartition],
              owned: Set[TopicPartition] | None, owners: Mapping[TopicPartition, str]) -> MemberState:
    """The member's next state toward ``target`` at ``target_epoch`` (see the module rules).

    ``owned`` is the owned list of the member's heartbeat (``None``: not
    reported, i.e. unchanged); ``owners`` maps every partition owned in the
    group to its owner (this member included). Returns ``member`` itself when
    nothing changes. Pure; never raises.
    """
    pending = member.pending_revocation
    if pending:
        still_owned = pending if owned is None else pending & frozenset(owned)
        if still_owned:
            return member if still_owned == pending else replace(member, pending_revocation=still_owned)
    keep = member.assigned & frozenset(target)
    revoke = member.assigned - keep
    if revoke and owned is not None:
        revoke &= frozenset(owned)  # those it already reports released need no wait
    if revoke:
        return _step(member, member.member_epoch, keep, revoke)
    free = frozenset(tp for tp in target
                     if tp not in keep and owners.get(tp, member.member_id) == member.member_id)
    return _step(member, target_epoch, keep | free, frozenset())


def _step(member: MemberState, epoch: int, assigned: frozenset[TopicPartition],
          pending: frozenset[TopicPartition]) -> MemberState:
    if (epoch, assigned, pending) == (member.member_epoch, member.assigned, member.pending_revocation):
        return member
    previous = member.member_epoch if epoch != member.member_epoch else member.previous_member_epoch
    return replace(member, member_epoch=epoch, previous_member_epoch=previous, assigned=assigned,
                   pending_revocation=pending)
