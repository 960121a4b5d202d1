"""Member sessions: which members stopped heartbeating, or take too long to release partitions.

The active controller keeps a :class:`SessionTracker` in memory only (time
is not part of the metadata image): it feeds it every successful heartbeat
decision (:meth:`SessionTracker.observe`), asks it on each tick which members
expired (:meth:`SessionTracker.expired`), and proposes
:func:`~millpond.controller.groups.coordinator.session_expired` for each.
No clock is read here: every method takes ``now_ms`` (a monotonic clock).

A member expires when

* it sent no heartbeat for longer than its session timeout (a static member
  that left temporarily keeps the session it had when it left: it must rejoin
  within that time), or
* it was asked to release partitions and still holds some after its
  rebalance timeout (a stuck member must not block its partitions' next
  owners forever).

After a controller failover the new controller starts from
:meth:`SessionTracker.sync` on its image: every member gets a full, fresh
session (the old controller's timers are lost, and a member must not be
expired for the time the cluster had no controller).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from millpond.controller.groups.state import GroupsImage

__all__ = ["Session", "SessionKey", "SessionTracker", "SessionUpdate", "expired_members"]

SessionKey = tuple[str, str]
"""(group id, member id)."""


@dataclass(frozen=True, slots=True)
class SessionUpdate:
    """What a heartbeat decision means for the sessions of its group (from the coordinator)."""

    group_id: str
    member_id: str
    """The member whose session starts or continues; ``""`` if none (it left for good)."""
    heard_at_ms: int = 0
    """When the heartbeat was decided (the ``now_ms`` given to the coordinator)."""
    session_timeout_ms: int = 0
    rebalance_timeout_ms: int = 0
    revoking: bool = False
    """The member still has partitions to release (its rebalance timeout runs)."""
    forget: tuple[str, ...] = ()
    """Members of the group whose sessions end (left for good, or replaced by a rejoining static member)."""


@dataclass(frozen=True, slots=True)
class Session:
    """One member's session as the active controller sees it."""

    last_heartbeat_ms: int
    session_timeout_ms: int
    rebalance_timeout_ms: int
    revoking_since_ms: int | None = None
    """When the member was first asked to release partitions it still holds; ``None`` if it holds none."""


def expired_members(sessions: Mapping[SessionKey, Session], now_ms: int) -> list[SessionKey]:
    """The members whose session or rebalance timeout ran out at ``now_ms``, sorted (pure)."""
    return [key for key in sorted(sessions) if _expired(sessions[key], now_ms)]


def _expired(session: Session, now_ms: int) -> bool:
    if now_ms - session.last_heartbeat_ms > session.session_timeout_ms:
        return True
    since = session.revoking_since_ms
    return since is not None and now_ms - since > session.rebalance_timeout_ms


class SessionTracker:
    """Last heartbeat, timeouts and revocation start of every member (in memory, on the active controller).

    Bounded by the members in the image (:meth:`sync` drops the others). Not thread-safe.
    """

    def __init__(self) -> None:
        self._sessions: dict[SessionKey, Session] = {}

    @classmethod
    def fresh(cls, image: GroupsImage, now_ms: int) -> SessionTracker:
        """A tracker giving every member of ``image`` a full session from ``now_ms`` (a new controller)."""
        tracker = cls()
        tracker.sync(image, now_ms)
        return tracker

    @property
    def sessions(self) -> Mapping[SessionKey, Session]:
        """Every tracked session (read-only view)."""
        return MappingProxyType(self._sessions)

    def __len__(self) -> int:
        return len(self._sessions)

    def observe(self, update: SessionUpdate) -> None:
        """Apply a heartbeat decision's :class:`SessionUpdate` (once its records applied).

        The member's session restarts at ``update.heard_at_ms``; its
        revocation timer starts with the first update that says ``revoking``
        and stops with the first that does not.
        """
        for member_id in update.forget:
            self._sessions.pop((update.group_id, member_id), None)
        if not update.member_id:
            return
        key, now_ms = (update.group_id, update.member_id), update.heard_at_ms
        old = self._sessions.get(key)
        since = None
        if update.revoking:
            since = old.revoking_since_ms if old is not None and old.revoking_since_ms is not None else now_ms
        self._sessions[key] = Session(now_ms, update.session_timeout_ms, update.rebalance_timeout_ms, since)

    def forget(self, group_id: str, member_id: str) -> None:
        """End one member's session (it was removed)."""
        self._sessions.pop((group_id, member_id), None)

    def sync(self, image: GroupsImage, now_ms: int) -> None:
        """Track exactly the members of ``image``: new ones get a fresh session from ``now_ms``.

        Members that joined through records this controller did not decide
        (a previous controller's) and members removed by any record are
        reconciled here; call it on start and cheaply now and then (it walks
        every member).
        """
        present: set[SessionKey] = set()
        for group_id in image.group_ids():
            group = image.group(group_id)
            if group is None:
                continue
            for member in group.members.values():
                key = (group.group_id, member.member_id)
                present.add(key)
                if key not in self._sessions:
                    self._sessions[key] = Session(now_ms, member.session_timeout_ms,
                                                  member.rebalance_timeout_ms)
        for key in [key for key in self._sessions if key not in present]:
            del self._sessions[key]

    def expired(self, now_ms: int) -> list[SessionKey]:
        """:func:`expired_members` of the tracked sessions."""
        return expired_members(self._sessions, now_ms)
