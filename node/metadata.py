"""The metadata log's state machine on every node (Raft group 0 → MetadataImage)."""

from __future__ import annotations

from collections.abc import Callable

from millpond.controller import ApplyResult, MetadataImage
from millpond.raft import Entry, EntryKind, Snapshot, SoftState


class MetadataMachine:
    """Applies committed metadata entries to the node's :class:`MetadataImage`.

    ``on_change`` is called after every applied record that changed partitions
    (and after a snapshot restore, with ``None``) so the node can reconcile
    the partition replicas it hosts.
    """

    def __init__(self, on_change: Callable[[ApplyResult | None], None]) -> None:
        self.image = MetadataImage()
        self._on_change = on_change

    def apply(self, entry: Entry) -> object:
        if entry.kind != EntryKind.CONTROL:
            self.image.mark_applied(entry.index)
            return None
        result = self.image.apply(entry.index, entry.data)
        if result.ok:
            self._on_change(result)
        return result

    def restore(self, snapshot: Snapshot) -> None:
        self.image = MetadataImage.restore(snapshot.data) if snapshot.data else MetadataImage()
        self._on_change(None)

    def on_soft_state(self, soft: SoftState, term: int) -> None:
        """Controller start/stop is driven by the node's controller loop, which polls."""
