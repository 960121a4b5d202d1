"""Conversion between the Raft core's messages and their protobuf form (internal.proto)."""

from __future__ import annotations

from millpond.raft.membership import Membership
from millpond.raft.messages import Entry, EntryKind, Message, MessageType, Snapshot, SnapshotMeta
from millpond.v1 import internal_pb2 as pb

_ENTRY_KINDS = {kind.value: kind for kind in EntryKind}
_MESSAGE_TYPES = {kind.value: kind for kind in MessageType}


def to_proto(group: int, message: Message) -> pb.RaftMessage:
    """Encode ``message`` of ``group`` for the wire."""
    proto = pb.RaftMessage(
        group=group, type=message.type.value, to=message.to, term=message.term,
        log_term=message.log_term, index=message.index, commit=message.commit,
        reject=message.reject, hint_index=message.hint_index, hint_term=message.hint_term,
        context=message.context,
        entries=[
            pb.RaftEntry(term=e.term, index=e.index, kind=e.kind.value, data=e.data)
            for e in message.entries
        ],
    )
    setattr(proto, "from", message.frm)  # "from" is a Python keyword
    if message.snapshot is not None:
        meta = message.snapshot.meta
        proto.snapshot.CopyFrom(pb.RaftSnapshot(
            index=meta.index, term=meta.term, voters=sorted(meta.membership.voters),
            learners=sorted(meta.membership.learners), data=message.snapshot.data,
        ))
    return proto


def from_proto(proto: pb.RaftMessage) -> tuple[int, Message]:
    """Decode a wire message into (group, message); raise ``ValueError`` if it is malformed."""
    message_type = _MESSAGE_TYPES.get(proto.type)
    if message_type is None:
        raise ValueError(f"unknown raft message type {proto.type}")
    entries = []
    for e in proto.entries:
        kind = _ENTRY_KINDS.get(e.kind)
        if kind is None:
            raise ValueError(f"unknown raft entry kind {e.kind}")
        entries.append(Entry(e.term, e.index, kind, e.data))
    snapshot = None
    if proto.HasField("snapshot"):
        s = proto.snapshot
        membership = Membership(frozenset(s.voters), frozenset(s.learners))
        snapshot = Snapshot(SnapshotMeta(s.index, s.term, membership), s.data)
    message = Message(
        type=message_type, to=proto.to, frm=getattr(proto, "from"), term=proto.term,
        log_term=proto.log_term, index=proto.index, entries=tuple(entries), commit=proto.commit,
        reject=proto.reject, hint_index=proto.hint_index, hint_term=proto.hint_term,
        snapshot=snapshot, context=proto.context,
    )
    return proto.group, message
