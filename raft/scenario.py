"""Data-driven Raft scenarios in the style of etcd's ``rafttest`` interaction tests.

A scenario file states its goal in ``#`` comments, then lists commands, each
followed by a ``----`` line and the output the command must produce; a blank
line ends the output::

    # Goal: three nodes elect node 1.
    add-nodes 3 voters=(1,2,3)
    ----
    1: follower (voter) term=0 vote=0 lead=0 commit=0 applied=0 last=0
    ...

    campaign 1
    ----
    ok

:func:`run_file` executes a file and compares (or, with ``rewrite=True``,
regenerates) the expected output; :class:`Scenario` runs single commands, so a
user can drive the core from their own tests. The interpreter is a *correct*
driver of the core (it follows the Ready contract in :mod:`millpond.raft.ready`):
scenarios test the core, not the driver. It also checks two safety properties
on every step and raises :class:`SafetyViolation` (which no rewrite can record)
if either fails: at most one leader per term, and no two nodes apply different
entries at one index.

Everything is deterministic: each node draws its election timeouts from its own
generator, made by the ``rng_factory`` passed in (``random.Random`` in the
tests) from ``seed`` and the node id; all listings are sorted; and the network
is a FIFO queue delivered only on command. Like the core, this module draws no
randomness of its own.

Notation: ``T/I`` is the entry at index ``I`` of term ``T`` (as in etcd).

Commands (``ID...`` means one or more node ids; ``(1,2)`` is a list):

``add-nodes N [voters=(..)] [learners=(..)] [seed=S] [<config>=V ...]``
    Create ``N`` nodes with the next free ids. Their bootstrap membership is
    ``voters``/``learners`` if given, else all new nodes as voters for the first
    call and an empty membership (a joining node that learns its configuration
    from the leader) later. ``<config>`` is any :class:`Config` field with dashes,
    e.g. ``pre-vote=false check-quorum=false election-ticks=10 msg-entries-max=8
    msg-bytes-max=4096 inflight-msgs-max=2 inflight-bytes-max=... entry-bytes-max=64
    uncommitted-bytes-max=256 propose-entries-max=... bugs=(commit-old-term)``.
``campaign ID``
    Start an election now (pre-vote first if enabled).
``tick ID [N]``: tick ``N`` times (default 1). ``tick-heartbeat ID...``: one
    heartbeat interval. ``tick-election ID...``: a leader ticks one election
    timeout (a check-quorum period); any other node ticks until its randomized
    election timer fires (at most twice the election timeout).
``propose ID DATA [count=N] [bytes=B] [batch=true|false]``
    Propose ``N`` entries (payload ``DATA``, or ``DATA0..DATA<N-1>`` if ``N>1``;
    ``bytes`` pads each payload to that size) in one call, or in ``N`` calls with
    ``batch=false``.
``propose-conf-change ID add-voter|add-learner|remove NODE``
``transfer-leader FROM TO`` / ``read-index ID CTX``
``process-ready ID...``
    Take a Ready; persist it (fsync if ``must_sync``); send its messages; apply;
    advance.
``write-ready ID`` then ``sync ID``
    The same, split: ``write-ready`` persists without fsync and holds the rest
    of the Ready (messages, applying, advance) until ``sync``, as a driver with
    asynchronous fsync would. A ``crash`` in between loses the write and the
    messages are never sent.
``deliver-msgs [ID...] [drop=(IDs)] [type=TYPE] [from=ID]``
    Step the queued messages addressed to ``ID...`` (all nodes if none is given
    and no ``drop``) into their nodes, in send order; messages to ``drop``
    nodes are discarded. ``type`` and ``from`` select only some messages.
    Messages across a partition or to a down node are dropped.
``stabilize [ID...]``
    Repeat: every listed node (default all) with a Ready processes it, then
    every queued message to a listed node is delivered; until nothing changes.
``partition A.. | B.. [| C..]`` / ``heal``
    Drop every message between groups (an unlisted node is alone in its own),
    both those sent during the partition and those in flight when it starts /
    stop dropping.
``crash ID`` / ``restart ID``
    Crash: the store loses its unsynced writes, the node and messages queued for
    it vanish. Restart: a new core from the store (state machine rebuilt by
    replaying the committed log).
``compact ID INDEX``
    Snapshot the node's state machine at applied ``INDEX`` and drop the log prefix.
``status ID`` / ``raft-state`` / ``raft-log ID`` / ``msg-stats``
    Inspect one node (with the leader's view of each follower), every node, one
    node's log, or the messages sent since the last ``msg-stats`` per sender,
    receiver and type.
``log-level full|summary|none``
    How much of each Ready and delivery ``stabilize``/``process-ready``/
    ``deliver-msgs`` print (default ``full``); with ``none``, ``msg-stats``
    only resets its counters.

Output. A command with nothing to say prints ``ok``; an error the core raises to
its caller prints ``error: <class>: <message>``. At ``full`` level a Ready prints
as ``> ID handling Ready`` (``(must-sync)`` if its write must be fsynced), then
one line per part, in the order the driver handles them: ``role:`` (soft state),
``hard-state:``, ``snapshot:``, ``persist:`` (entries), ``send:`` (messages, by
receiver), ``apply:`` (committed entries), ``read-state:``. Deliveries print as
``> ID receiving messages`` and one line per message, with ``(dropped: why)`` if
it was not stepped. A message prints as ``FROM->TO TYPE term=T`` and its fields:
``prev=T/I commit=C entries=[..]`` (APPEND), ``index=I`` or ``reject index=I
hint=T/I`` (APPEND_RESP), ``last=T/I`` and ``transfer`` (VOTE, PRE_VOTE),
``granted``/``rejected``, ``commit=C read-round=R`` (HEARTBEAT),
``snapshot=T/I voters=(..)``. Lists of more than four entries print as the first
two, ``..``, the last and the count; a run of identical lines prints once with
``(xN)``.
"""

from __future__ import annotations

import difflib
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path

from millpond.raft.config import Config
from millpond.raft.core import Raft, Rng
from millpond.raft.errors import RaftError
from millpond.raft.membership import ChangeKind, ConfChange, Membership
from millpond.raft.messages import Entry, EntryKind, Message, MessageType, Snapshot, SnapshotMeta
from millpond.raft.ready import Ready, Role
from millpond.raft.storage import MemoryStorage

__all__ = ["SafetyViolation", "Scenario", "ScenarioResult", "format_entries", "format_message",
           "run_file"]

#: Upper bound on ``stabilize`` rounds: a scenario that needs more is livelocked.
STABILIZE_ROUNDS_MAX = 10_000
#: Entries listed one by one before a list is summarized as ``first, second, .., last (N entries)``.
ENTRIES_LISTED_MAX = 4
#: Payload bytes shown literally; longer payloads print as ``<N bytes>``.
PAYLOAD_SHOWN_BYTES_MAX = 16


class SafetyViolation(Exception):
    """Two leaders in one term, or two different entries applied at one index."""


# ============================================================================ rendering
def format_entry(entry: Entry) -> str:
    """``term/index`` and a short rendering of the payload."""
    head = f"{entry.term}/{entry.index}"
    if entry.kind == EntryKind.NOOP:
        return f"{head} noop"
    if entry.kind == EntryKind.CONFIG:
        return f"{head} conf {Membership.decode(entry.data)}"
    payload = _payload(entry.data)
    return f"{head} control {payload}" if entry.kind == EntryKind.CONTROL else f"{head} {payload}"


def _payload(data: bytes) -> str:
    if len(data) > PAYLOAD_SHOWN_BYTES_MAX:
        return f"<{len(data)} bytes>"
    return '"' + data.decode("utf-8", "backslashreplace") + '"'


def format_entries(entries: Sequence[Entry]) -> str:
    """Up to :data:`ENTRIES_LISTED_MAX` entries in full, longer lists summarized."""
    if len(entries) <= ENTRIES_LISTED_MAX:
        return ", ".join(format_entry(entry) for entry in entries)
    return (f"{format_entry(entries[0])}, {format_entry(entries[1])}, .., "
            f"{format_entry(entries[-1])} ({len(entries)} entries)")


def format_snapshot(snapshot: Snapshot) -> str:
    meta = snapshot.meta
    return f"{meta.term}/{meta.index} {meta.membership}"


def format_message(m: Message) -> str:
    """One line per message: ``from->to TYPE term=T`` and the fields its type uses."""
    out = f"{m.frm}->{m.to} {m.type.name} term={m.term}"
    if m.type == MessageType.APPEND:
        out += f" prev={m.log_term}/{m.index} commit={m.commit}"
        if m.entries:
            out += f" entries=[{format_entries(m.entries)}]"
    elif m.type == MessageType.APPEND_RESP:
        if m.reject:
            out += f" reject index={m.index} hint={m.hint_term}/{m.hint_index}"
        else:
            out += f" index={m.index}"
    elif m.type in (MessageType.VOTE, MessageType.PRE_VOTE):
        out += f" last={m.log_term}/{m.index}"
        if m.context:
            out += " transfer"
    elif m.type in (MessageType.VOTE_RESP, MessageType.PRE_VOTE_RESP):
        out += " rejected" if m.reject else " granted"
    elif m.type == MessageType.HEARTBEAT:
        out += f" commit={m.commit}"
        if m.context:
            out += f" read-round={m.context}"
    elif m.type == MessageType.HEARTBEAT_RESP:
        if m.context:
            out += f" read-round={m.context}"
    elif m.type == MessageType.SNAPSHOT:
        assert m.snapshot is not None
        out += f" snapshot={format_snapshot(m.snapshot)}"
    return out


def _collapse(lines: Sequence[str]) -> list[str]:
    """Print a run of identical lines once, with ``(xN)``: heartbeats repeat a lot."""
    out: list[str] = []
    count = 0
    for i, line in enumerate(lines):
        count += 1
        if i + 1 < len(lines) and lines[i + 1] == line:
            continue
        out.append(f"{line} (x{count})" if count > 1 else line)
        count = 0
    return out


# ============================================================================ parsing
_TOKEN = re.compile(r"[^\s=]+=\([^)]*\)|\S+")


@dataclass
class _Command:
    name: str
    args: list[str]
    options: dict[str, str]

    @classmethod
    def parse(cls, line: str) -> _Command:
        tokens = _TOKEN.findall(line)
        if not tokens:
            raise ValueError("empty command")
        args: list[str] = []
        options: dict[str, str] = {}
        for token in tokens[1:]:
            key, eq, value = token.partition("=")
            if eq and key and not key.isdigit():
                options[key] = value
            else:
                args.append(token)
        return cls(tokens[0], args, options)

    def ids(self, minimum: int = 0) -> list[int]:
        ids = [_int(arg, "node id") for arg in self.args]
        if len(ids) < minimum:
            raise ValueError(f"{self.name} needs at least {minimum} node id(s)")
        return ids

    def take(self, key: str, default: str | None = None) -> str | None:
        return self.options.pop(key, default)

    def done(self) -> None:
        if self.options:
            raise ValueError(f"{self.name}: unknown option(s) {sorted(self.options)}")


def _int(text: str, what: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{what} must be an integer, got {text!r}") from None


def _id_list(text: str) -> list[int]:
    inner = text.strip()
    if inner.startswith("(") and inner.endswith(")"):
        inner = inner[1:-1]
    return [_int(part, "node id") for part in inner.replace(",", " ").split()]


def _bool(text: str) -> bool:
    if text not in ("true", "false"):
        raise ValueError(f"expected true or false, got {text!r}")
    return text == "true"


# ============================================================================ the cluster
@dataclass
class _Node:
    """One simulated process: its store survives crashes, the rest does not."""

    id: int
    config: Config
    storage: MemoryStorage
    rng: Rng
    raft: Raft | None = None
    held: Ready | None = None
    """A Ready written but not yet synced (``write-ready``)."""
    applied: int = 0
    """The state machine's applied index."""

    def core(self) -> Raft:
        if self.raft is None:
            raise ValueError(f"node {self.id} is down")
        return self.raft


_LEVELS = ("full", "summary", "none")
_CHANGES = {"add-voter": ChangeKind.ADD_VOTER, "add-learner": ChangeKind.ADD_LEARNER,
            "remove": ChangeKind.REMOVE}
_CONFIG_FIELDS = {f.name for f in fields(Config)} - {"id", "applied", "bugs"}


@dataclass
class Scenario:
    """A cluster of cores driven by text commands; :meth:`run` returns a command's output.

    ``rng_factory(seed)`` makes each node's generator of election timeouts, e.g.
    ``random.Random``; the seed is ``1000 * seed + node id``.
    """

    rng_factory: Callable[[int], Rng]
    nodes: dict[int, _Node] = field(default_factory=dict)
    network: list[Message] = field(default_factory=list)
    groups: dict[int, int] | None = None
    level: str = "full"
    sent: Counter[tuple[int, int, str]] = field(default_factory=Counter)
    sent_entries: Counter[tuple[int, int, str]] = field(default_factory=Counter)
    leaders: dict[int, int] = field(default_factory=dict)
    applied_log: dict[int, Entry] = field(default_factory=dict)
    _lines: list[str] = field(default_factory=list)

    # -------------------------------------------------------------- entry point
    def run(self, line: str) -> str:
        """Execute one command line; return its output (never empty: ``ok`` if nothing else).

        Errors the core raises to its caller (:class:`RaftError`) are part of the
        output. A malformed command raises ``ValueError``; a broken safety
        property raises :class:`SafetyViolation`.
        """
        command = _Command.parse(line)
        handler: Callable[[_Command], None] | None = getattr(
            self, "_cmd_" + command.name.replace("-", "_"), None)
        if handler is None:
            raise ValueError(f"unknown command {command.name!r}")
        self._lines = []
        try:
            handler(command)
        except RaftError as exc:
            self._lines.append(f"error: {type(exc).__name__}: {exc}")
        else:
            command.done()  # every option must have been understood
        return "\n".join(self._lines) if self._lines else "ok"

    def _out(self, text: str) -> None:
        self._lines.append(text)

    def _node(self, node_id: int) -> _Node:
        node = self.nodes.get(node_id)
        if node is None:
            raise ValueError(f"no node {node_id}")
        return node

    def _up(self, ids: Iterable[int]) -> list[int]:
        return [i for i in sorted(ids) if self.nodes[i].raft is not None]

    # -------------------------------------------------------------- setup
    def _cmd_add_nodes(self, c: _Command) -> None:
        if len(c.args) != 1:
            raise ValueError("add-nodes N [options]")
        count = _int(c.args[0], "count")
        first = max(self.nodes, default=0) + 1
        new_ids = list(range(first, first + count))
        voters_opt, learners_opt = c.take("voters"), c.take("learners")
        if voters_opt is not None or learners_opt is not None:
            membership = Membership.of(_id_list(voters_opt or "()"), tuple(_id_list(learners_opt or "()")))
        elif not self.nodes:
            membership = Membership.of(new_ids)
        else:
            membership = Membership()
        seed = _int(c.take("seed", "0") or "0", "seed")
        settings: dict[str, object] = {}
        bugs = c.take("bugs")
        if bugs is not None:
            settings["bugs"] = frozenset(bugs.strip("()").replace(",", " ").split())
        for key in list(c.options):
            name = key.replace("-", "_")
            if name not in _CONFIG_FIELDS:
                raise ValueError(f"add-nodes: unknown option {key!r}")
            value = c.options.pop(key)
            settings[name] = _bool(value) if value in ("true", "false") else _int(value, key)
        c.done()
        for node_id in new_ids:
            config = Config(id=node_id, **settings)  # type: ignore[arg-type]
            node = _Node(node_id, config, MemoryStorage(membership), self.rng_factory(seed * 1000 + node_id))
            node.raft = Raft(config, node.storage, node.rng)
            self.nodes[node_id] = node
            self._out(self._state_line(node))

    def _cmd_log_level(self, c: _Command) -> None:
        if len(c.args) != 1 or c.args[0] not in _LEVELS:
            raise ValueError(f"log-level {'|'.join(_LEVELS)}")
        self.level = c.args[0]

    # -------------------------------------------------------------- time and elections
    def _cmd_campaign(self, c: _Command) -> None:
        for node_id in c.ids(1):
            self._node(node_id).core().campaign()

    def _cmd_tick(self, c: _Command) -> None:
        if len(c.args) not in (1, 2):
            raise ValueError("tick ID [N]")
        core = self._node(_int(c.args[0], "node id")).core()
        for _ in range(_int(c.args[1], "count") if len(c.args) == 2 else 1):
            core.tick()

    def _cmd_tick_heartbeat(self, c: _Command) -> None:
        for node_id in c.ids(1):
            core = self._node(node_id).core()
            for _ in range(core.config.heartbeat_ticks):
                core.tick()

    def _cmd_tick_election(self, c: _Command) -> None:
        for node_id in c.ids(1):
            core = self._node(node_id).core()
            if core.role == Role.LEADER:
                for _ in range(core.config.election_ticks):
                    core.tick()
                continue
            # Peeks at the core's election timer: tick until it fires (it resets to 0).
            for _ in range(2 * core.config.election_ticks):
                core.tick()
                if core._election_elapsed == 0:
                    break

    # -------------------------------------------------------------- requests
    def _cmd_propose(self, c: _Command) -> None:
        if len(c.args) != 2:
            raise ValueError("propose ID DATA [count=N] [bytes=B] [batch=true|false]")
        core = self._node(_int(c.args[0], "node id")).core()
        count = _int(c.take("count", "1") or "1", "count")
        size = c.take("bytes")
        batch = _bool(c.take("batch", "true") or "true")
        c.done()
        data = c.args[1]
        payloads = [f"{data}{i}" if count > 1 else data for i in range(count)]
        encoded = [p.encode() for p in payloads]
        if size is not None:
            width = _int(size, "bytes")
            encoded = [(p * (width // max(len(p), 1) + 1))[:width] for p in encoded]
        if batch:
            last = core.propose(encoded)
            first = last - count + 1
        else:
            first = last = 0
            for payload in encoded:
                last = core.propose([payload])
                first = first or last
        self._out(f"ok index={last}" if first == last else f"ok index={first}..{last}")

    def _cmd_propose_conf_change(self, c: _Command) -> None:
        if len(c.args) != 3 or c.args[1] not in _CHANGES:
            raise ValueError("propose-conf-change ID add-voter|add-learner|remove NODE")
        core = self._node(_int(c.args[0], "node id")).core()
        index = core.propose_membership(ConfChange(_CHANGES[c.args[1]], _int(c.args[2], "node")))
        self._out(f"ok index={index}")

    def _cmd_transfer_leader(self, c: _Command) -> None:
        source, target = c.ids(2)
        self._node(source).core().transfer_leader(target)

    def _cmd_read_index(self, c: _Command) -> None:
        if len(c.args) != 2:
            raise ValueError("read-index ID CTX")
        self._node(_int(c.args[0], "node id")).core().read_index(_int(c.args[1], "context"))

    # -------------------------------------------------------------- the driver
    def _cmd_process_ready(self, c: _Command) -> None:
        for node_id in c.ids(1):
            node = self._node(node_id)
            if node.held is not None:
                raise ValueError(f"node {node_id} holds an unsynced Ready: sync it first")
            if not node.core().has_ready():
                self._out(f"> {node_id} has no Ready")
                continue
            self._process_ready(node)

    def _cmd_write_ready(self, c: _Command) -> None:
        for node_id in c.ids(1):
            node = self._node(node_id)
            core = node.core()
            if node.held is not None or not core.has_ready():
                raise ValueError(f"node {node_id} has no Ready to write")
            rd = core.ready()
            self._check_ready(node, rd)
            node.storage.save(rd.hard_state, rd.entries, rd.snapshot)
            node.held = rd
            if self.level != "none":
                self._out(f"> {node_id} writing Ready, not yet synced")
                self._describe_ready(rd)
                held = [f"  held until synced: {format_message(m)}"
                        for m in sorted(rd.messages, key=lambda m: m.to)]
                self._lines.extend(_collapse(held))

    def _cmd_sync(self, c: _Command) -> None:
        for node_id in c.ids(1):
            node = self._node(node_id)
            rd = node.held
            if rd is None:
                raise ValueError(f"node {node_id} holds no Ready")
            node.held = None
            node.storage.sync()
            if self.level != "none":
                self._out(f"> {node_id} synced")
            self._finish_ready(node, rd, describe=self.level == "full")

    def _process_ready(self, node: _Node) -> None:
        rd = node.core().ready()
        self._check_ready(node, rd)
        if self.level == "full":
            self._out(f"> {node.id} handling Ready" + (" (must-sync)" if rd.must_sync else ""))
            self._describe_ready(rd)
        elif self.level == "summary":
            self._out(f"> {node.id} handling Ready: {self._summary(rd)}")
        node.storage.save(rd.hard_state, rd.entries, rd.snapshot)
        if rd.must_sync:
            node.storage.sync()
        self._finish_ready(node, rd, describe=self.level == "full")

    def _describe_ready(self, rd: Ready) -> None:
        if rd.soft_state is not None:
            self._out(f"  role: {rd.soft_state.role.value} lead={rd.soft_state.lead}")
        if rd.hard_state is not None:
            hs = rd.hard_state
            self._out(f"  hard-state: term={hs.term} vote={hs.vote} commit={hs.commit}")
        if rd.snapshot is not None:
            self._out(f"  snapshot: {format_snapshot(rd.snapshot)}")
        if rd.entries:
            self._out(f"  persist: {format_entries(rd.entries)}")

    def _finish_ready(self, node: _Node, rd: Ready, describe: bool) -> None:
        """Send, apply, hand out read states and advance: rules 2 to 5 of the Ready contract."""
        lines = []
        for m in sorted(rd.messages, key=lambda m: m.to):  # stable: per-receiver order is kept
            key = (m.frm, m.to, m.type.name)
            self.sent[key] += 1
            self.sent_entries[key] += len(m.entries)
            if self._partitioned(m):
                lines.append(f"  send: {format_message(m)} (dropped: partition)")
                continue
            lines.append(f"  send: {format_message(m)}")
            self.network.append(m)
        if describe:
            self._lines.extend(_collapse(lines))
        if rd.snapshot is not None:
            node.applied = rd.snapshot.meta.index
        if rd.committed_entries:
            if describe:
                self._out(f"  apply: {format_entries(rd.committed_entries)}")
            for entry in rd.committed_entries:
                self._apply(node, entry)
        for read in rd.read_states:
            if describe or self.level == "summary":
                self._out(f"  read-state: ctx={read.context} index={read.index}")
        node.core().advance(rd)

    def _summary(self, rd: Ready) -> str:
        parts = []
        if rd.soft_state is not None:
            parts.append(f"role={rd.soft_state.role.value}")
        if rd.hard_state is not None:
            hs = rd.hard_state
            parts.append(f"term={hs.term} vote={hs.vote} commit={hs.commit}")
        if rd.snapshot is not None:
            parts.append(f"snapshot={format_snapshot(rd.snapshot)}")
        for label, items in (("persist", rd.entries), ("apply", rd.committed_entries),
                             ("send", rd.messages)):
            if items:
                parts.append(f"{label}={len(items)}")
        return " ".join(parts)

    def _check_ready(self, node: _Node, rd: Ready) -> None:
        core = node.core()
        if rd.soft_state is not None and rd.soft_state.role == Role.LEADER:
            other = self.leaders.setdefault(core.term, node.id)
            if other != node.id:
                raise SafetyViolation(f"nodes {other} and {node.id} both lead term {core.term}")

    def _apply(self, node: _Node, entry: Entry) -> None:
        if entry.index != node.applied + 1:
            raise SafetyViolation(
                f"node {node.id} applies index {entry.index} after {node.applied}")
        seen = self.applied_log.setdefault(entry.index, entry)
        if seen != entry:
            raise SafetyViolation(
                f"node {node.id} applies {format_entry(entry)} where another node applied "
                f"{format_entry(seen)}")
        node.applied = entry.index

    # -------------------------------------------------------------- the network
    def _cmd_deliver_msgs(self, c: _Command) -> None:
        receivers = c.ids()
        drop_opt = c.take("drop")
        drop = _id_list(drop_opt) if drop_opt is not None else []
        type_opt = c.take("type")
        from_opt = c.take("from")
        sender = _int(from_opt, "from") if from_opt is not None else None
        c.done()
        if type_opt is not None and type_opt not in MessageType.__members__:
            raise ValueError(f"unknown message type {type_opt!r}")
        if set(receivers) & set(drop):
            raise ValueError("cannot both deliver and drop messages to one node")
        if not receivers and not drop:
            receivers = sorted({m.to for m in self.network})
        for node_id in sorted(set(receivers) | set(drop)):
            self._deliver(node_id, drop=node_id in drop, only=type_opt, sender=sender)

    def _deliver(self, node_id: int, drop: bool = False, only: str | None = None,
                 sender: int | None = None) -> bool:
        """Step (or drop) every queued message to ``node_id``; False if there was none."""
        batch = [m for m in self.network if m.to == node_id
                 and (only is None or m.type.name == only) and (sender is None or m.frm == sender)]
        if not batch:
            return False
        self.network = [m for m in self.network if not any(m is b for b in batch)]
        node = self.nodes.get(node_id)
        if self.level == "full":
            self._out(f"> {node_id} receiving messages")
        dropped = 0
        lines: list[str] = []
        for m in batch:
            reason = ""
            if drop:
                reason = "dropped"
            elif node is None:
                reason = "dropped: no such node"
            elif node.raft is None:
                reason = "dropped: node down"
            elif self._partitioned(m):
                reason = "dropped: partition"
            lines.append(f"  {format_message(m)}" + (f" ({reason})" if reason else ""))
            if reason:
                dropped += 1
                continue
            assert node is not None
            node.core().step(m)
        if self.level == "full":
            self._lines.extend(_collapse(lines))
        if self.level == "summary":
            note = f" ({dropped} dropped)" if dropped else ""
            self._out(f"> {node_id} receiving {len(batch)} message(s){note}")
        return True

    def _partitioned(self, m: Message) -> bool:
        """True if a partition separates the sender and the receiver of ``m``."""
        if self.groups is None:
            return False
        return self.groups.get(m.frm, -m.frm) != self.groups.get(m.to, -m.to)

    def _cmd_stabilize(self, c: _Command) -> None:
        ids = c.ids() or sorted(self.nodes)
        c.done()
        for _ in range(STABILIZE_ROUNDS_MAX):
            moved = False
            for node_id in self._up(ids):
                node = self.nodes[node_id]
                if node.held is None and node.core().has_ready():
                    self._process_ready(node)
                    moved = True
            for node_id in sorted(ids):
                moved = self._deliver(node_id) or moved
            if not moved:
                return
        raise ValueError(f"stabilize did not settle in {STABILIZE_ROUNDS_MAX} rounds")

    def _cmd_partition(self, c: _Command) -> None:
        groups: dict[int, int] = {}
        group = 0
        for arg in c.args:
            if arg == "|":
                group += 1
                continue
            groups[_int(arg, "node id")] = group
        if group == 0:
            raise ValueError("partition needs at least two groups separated by |")
        self.groups = groups

    def _cmd_heal(self, c: _Command) -> None:
        self.groups = None

    def _cmd_msg_stats(self, c: _Command) -> None:
        if self.level == "none":
            self.sent.clear()
            self.sent_entries.clear()
            return
        if not self.sent:
            self._out("no messages sent")
        for key in sorted(self.sent):
            frm, to, kind = key
            line = f"{frm}->{to} {kind}: {self.sent[key]}"
            if self.sent_entries[key]:
                line += f" ({self.sent_entries[key]} entries)"
            self._out(line)
        self.sent.clear()
        self.sent_entries.clear()

    # -------------------------------------------------------------- failures and storage
    def _cmd_crash(self, c: _Command) -> None:
        for node_id in c.ids(1):
            node = self._node(node_id)
            node.core()
            lost = node.storage.unsynced_writes()
            node.storage.crash()
            node.raft = None
            node.held = None
            before = len(self.network)
            self.network = [m for m in self.network if m.to != node_id]
            self._out(f"{node_id} crashed: lost {lost} unsynced write(s), "
                      f"{before - len(self.network)} queued message(s) to it")

    def _cmd_restart(self, c: _Command) -> None:
        for node_id in c.ids(1):
            node = self._node(node_id)
            if node.raft is not None:
                raise ValueError(f"node {node_id} is running")
            node.raft = Raft(node.config, node.storage, node.rng)
            node.applied = node.storage.snapshot().meta.index
            self._out(self._state_line(node))

    def _cmd_compact(self, c: _Command) -> None:
        node_id, index = c.ids(2)
        node = self._node(node_id)
        core = node.core()
        if index > node.applied or index < core.log.first_index():
            raise ValueError(f"node {node_id} can compact in [{core.log.first_index()}, "
                             f"{node.applied}], not at {index}")
        term = core.log.term(index)
        assert term is not None
        membership = [m for i, m in core.log.memberships if i <= index][-1]
        node.storage.compact(Snapshot(SnapshotMeta(index, term, membership)))
        self._out(f"ok: log starts at {core.log.first_index()} after snapshot {term}/{index}")

    # -------------------------------------------------------------- inspection
    def _state_line(self, node: _Node) -> str:
        if node.raft is None:
            return f"{node.id}: down"
        st = node.raft.status()
        kind = ("voter" if node.id in st.membership.voters
                else "learner" if node.id in st.membership.learners else "non-member")
        return (f"{node.id}: {st.role.value} ({kind}) term={st.term} vote={st.vote} lead={st.lead} "
                f"commit={st.commit} applied={node.applied} last={st.last_index}")

    def _cmd_raft_state(self, c: _Command) -> None:
        for node_id in sorted(self.nodes):
            self._out(self._state_line(self.nodes[node_id]))

    def _cmd_status(self, c: _Command) -> None:
        for node_id in c.ids(1):
            node = self._node(node_id)
            self._out(self._state_line(node))
            if node.raft is None:
                continue
            st = node.raft.status()
            self._out(f"  log=[{st.first_index}, {st.last_index}] {st.membership}")
            for peer in sorted(node.raft.progress):
                if peer == node_id or node.raft.role != Role.LEADER:
                    continue
                pr = node.raft.progress[peer]
                line = (f"  progress {peer}: {pr.state.value} match={pr.match} next={pr.next} "
                        f"inflight={pr.inflights.count()}")
                if pr.is_paused():
                    line += " paused"
                if pr.is_learner:
                    line += " learner"
                self._out(line)

    def _cmd_raft_log(self, c: _Command) -> None:
        (node_id,) = c.ids(1)
        core = self._node(node_id).core()
        log = core.log
        snapshot = log.snapshot()
        if snapshot.meta.index:
            self._out(f"snapshot {format_snapshot(snapshot)}")
        entries = log.slice(log.first_index(), log.last_index() + 1, 1 << 62)
        if not entries:
            self._out("log is empty")
        run: list[Entry] = []
        for entry in [*entries, None]:
            if (entry is not None and run and entry.kind == run[-1].kind == EntryKind.DATA
                    and entry.term == run[-1].term):
                run.append(entry)
                continue
            if len(run) > ENTRIES_LISTED_MAX:
                self._out(format_entries(run))
            else:
                for item in run:
                    self._out(format_entry(item))
            run = [entry] if entry is not None else []


# ============================================================================ files
@dataclass(frozen=True)
class ScenarioResult:
    """The outcome of one file: ``ok`` if every output matched; ``actual`` is the file as it
    should read; ``diff`` is a unified diff from the file to it."""

    ok: bool
    actual: str
    diff: str


def run_text(text: str, rng_factory: Callable[[int], Rng], name: str = "<scenario>") -> ScenarioResult:
    """Run a scenario given as text; see :func:`run_file`."""
    lines = text.splitlines()
    out: list[str] = []
    scenario = Scenario(rng_factory)
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.strip() or line.lstrip().startswith("#"):
            out.append(line)
            i += 1
            continue
        if i + 1 >= len(lines) or lines[i + 1] != "----":
            raise ValueError(f"{name}:{i + 1}: expected '----' after command {line!r}")
        lineno = i + 1
        i += 2
        while i < len(lines) and lines[i].strip():
            i += 1
        try:
            actual = scenario.run(line)
        except (ValueError, SafetyViolation) as exc:
            raise type(exc)(f"{name}:{lineno}: {line}: {exc}") from exc
        out.extend([line, "----", *actual.splitlines()])
        if i < len(lines):
            out.append("")
            i += 1  # the blank line ending the output
    actual_text = "\n".join(out) + "\n"
    diff = "".join(difflib.unified_diff(
        text.splitlines(keepends=True), actual_text.splitlines(keepends=True),
        fromfile=f"{name} (expected)", tofile=f"{name} (actual)"))
    return ScenarioResult(ok=not diff, actual=actual_text, diff=diff)


def run_file(path: str | Path, rng_factory: Callable[[int], Rng], rewrite: bool = False) -> ScenarioResult:
    """Run the scenario file at ``path``; with ``rewrite``, write the actual outputs back.

    ``rng_factory`` makes each node's random generator from a seed (``random.Random``).

    Raises ``ValueError`` for a malformed file or command and
    :class:`SafetyViolation` if the cluster breaks a safety property (neither is
    ever written back).
    """
    path = Path(path)
    result = run_text(path.read_text(), rng_factory, path.name)
    if rewrite and not result.ok:
        path.write_text(result.actual)
    return result
