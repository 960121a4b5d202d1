"""Chaos histories: what the workload did, one JSON line per operation, and what the nemesis did.

A run writes two files that checkers read afterwards (Jepsen's model of a history):

* ``history.jsonl`` -- one :class:`Op` per line, keys exactly ``index, time, process, type, f,
  value, error, node``. ``index`` is the line number from 0; ``time`` is seconds since the run
  started (monotonic, never decreasing). A *process* is one logical client that runs one op at a
  time: it writes an ``invoke`` line, then later exactly one completion -- ``ok`` (it happened),
  ``fail`` (it definitely did not happen) or ``info`` (unknown: it may or may not have happened,
  e.g. a timed-out produce). A process that got ``info`` never issues again; the workload starts
  a new process id in its place (Jepsen's convention: an indeterminate op stays concurrent with
  everything after it). An invoke left without completion at the end of the history (the harness
  stopped or crashed) counts as ``info``.
* ``nemesis.jsonl`` -- one :class:`NemesisEvent` per line: ``{"time", "event": "start"|"stop",
  "id", "fault", "targets", "keeps_majority", "detail"}``, on the same clock as the history.
  :func:`fault_windows` pairs starts and stops into :class:`FaultWindow` s.

This layer knows nothing about any workload's ``f`` values: it stores, validates and pairs ops.
Workloads and their checkers give ``f`` and ``value`` their meaning.

The ``log`` workload's vocabulary (the contract between the workload and
:mod:`millpond.chaos.checkers.model`)
------------------------------------------------------------------------------------------------
Values are unique per run (every send sends a fresh ``value`` string); checkers identify a record
by its value. A record read back is the list ``[partition, offset, key, value]``.

``f="send"`` -- a producer appends one record.
    invoke ``{"key": str, "value": str, "partition": int}``;
    ok ``{"key", "value", "partition", "offset": int}`` -- committed (``acks=all``) at ``offset``;
    fail -- definitely not written (the broker refused it before appending);
    info -- unknown (deadline hit, connection lost): it may be in the log or not.
``f="assign"`` -- a poller (re)assigns itself partitions and seeks.
    invoke ``{"partitions": [int], "positions": {"<p>": offset}}``; ``positions[p]`` is the offset
    the next poll of ``p`` starts at (Kafka ``seek`` semantics); a partition listed without a
    position starts wherever the consumer decides. The invoke resets this process's poll tracking
    for the listed partitions. ok value may be ``null`` or echo the invoke value.
``f="poll"`` -- one poll of the assigned partitions.
    invoke ``{}``; ok ``{"records": [[partition, offset, key, value], ...]}`` in delivery order.
``f="final-read"`` -- after healing, a fresh process reads one partition from its beginning.
    invoke ``{"partition": p}``; ok ``{"partition": p, "high_watermark": hw, "records": [[partition,
    offset, key, value], ...], "caught_up": bool}`` where ``caught_up`` says the read reached
    ``hw`` (the high watermark the reader last saw).

The ``group`` workload's vocabulary (the contract with :mod:`millpond.chaos.checkers.group`)
------------------------------------------------------------------------------------------------
Producers, ``final-read`` and the records of a poll are the ``log`` vocabulary above. Consumers are
members of one consumer group; ``member`` is a member id (a new one for every member started,
replacements included), ``epoch`` a member epoch (KIP-848 fencing generation; epochs of all
members of a group are comparable), ``"<p>"`` a partition number as a JSON key.

``f="poll"`` -- a member polls (and thereby processes what it got).
    invoke ``{}``; ok ``{"records": [[partition, offset, key, value], ...], "member": m, "epoch": e}``;
    fail -- the poll raised (it had no effect on the group's offsets).
``f="commit"`` -- a member commits, after processing, the offset after the last record of each
    partition one poll returned (at least once).
    invoke ``{"member": m, "offsets": {"<p>": offset}, "epoch": e}`` (``e`` when invoked; the
    consumer may retry at a newer epoch); ok -- every offset committed; info -- unknown, some or all
    may be committed (the workload never records ``fail``: a refusal may follow a timed-out
    attempt that landed). A commit's process, like a send's, is retired after ``info``.
``f="final-committed"`` -- after the members closed, the group's committed offsets and each
    partition's high watermark.
    invoke ``{"partitions": [p, ...]}``; ok ``{"committed": {"<p>": offset or null},
    "high_watermarks": {"<p>": hw}}`` (null: nothing committed); fail -- could not read them.

Membership facts are recorded by each member's own *membership process* as an invoke and an ok
with the same value at one instant (rebalance callbacks run inside a poll or in the consumer's
heartbeat task, so they must not be recorded by the process whose poll is outstanding):

``f="join"`` -- ``{"member": m, "process": first poll/commit process}``: a member subscribed.
``f="own"`` -- ``{"member": m, "partitions": [p, ...], "epoch": e}``: ``on_assign``; ``e`` is the
    member epoch when the callback ran (at or after the epoch the partitions were given at).
``f="release"`` -- ``{"member": m, "partitions": [p, ...], "epoch": e, "lost": bool}``:
    ``on_revoke`` (``lost`` false: the member gives them back, or closes) or ``on_lost`` (true:
    the group fenced or forgot it; ``e`` is then the last epoch the member had seen, since the
    consumer is back at 0). Either way ``e`` is an epoch at which it still owned them.
``f="crash"`` -- ``{"member": m, "partitions": [p, ...], "epoch": e}``: the workload killed the
    member without leaving the group (as SIGKILL would); its ops in flight never complete. It owns
    nothing from ``e`` on: it will never act again.
``f="leave"`` -- ``{"member": m, "partitions": [p, ...]}``: the member closed cleanly (its
    ``release`` comes first; ``partitions`` lists any it still believed it owned).

The ``compaction`` workload's vocabulary (the contract with :mod:`millpond.chaos.checkers.compaction`)
------------------------------------------------------------------------------------------------
The ``log`` vocabulary, on a compacted topic, plus tombstones (records with a null payload). A
record is still identified by the unique string ``value`` of its send -- for a tombstone that is
not its payload (null on the wire) but its ``chaos-id`` record header -- so the ``log`` model and
checkers read these histories unchanged. (``"value": null`` would have made tombstones
unidentifiable among themselves, and a null in a read record breaks the ``log`` model.)

``f="send"`` invoke adds ``"tombstone": bool`` (the payload is null) and ``"timestamp_ms": int``
    (the record's timestamp: the producer's wall clock in ms, the clock tombstone expiry uses).
``f="poll"`` and ``f="final-read"`` ok values add ``"tombstones": [[partition, offset], ...]``:
    the records among ``records`` whose payload was null (their ``value`` is their ``chaos-id``
    header, ``""`` if they had none).
``f="final-read"`` ok value adds ``"compaction": {"point": C or null, "pass_after_ms": int or
    null, "delete_retention_ms": int, "read_end_ms": int}``: a compaction pass with compaction
    point C had completed on the node that served the whole read before the read began (every
    record below C then has no later record of its key below C); that pass's clock was later
    than ``pass_after_ms``; ``read_end_ms`` is the wall clock when the read ended (no tombstone
    newer than ``read_end_ms - delete_retention_ms`` can have expired by then). ``point`` null:
    the workload could not see such a pass complete before its deadline. A final read that
    found the partition's leader changed under it completes ``fail`` (``LEADER_CHANGED``) and is
    repeated by a new process. Marker sends (key ``marker-p<p>-r<n>``) are ordinary sends.

Later workloads (queues, transactions) add their own ``f`` values and checkers; nothing here
changes.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Literal, cast

__all__ = [
    "COMPLETION_TYPES",
    "OP_KEYS",
    "OP_TYPES",
    "CompletionType",
    "FaultWindow",
    "HistoryError",
    "HistoryRecorder",
    "HistoryWriter",
    "NemesisEvent",
    "NemesisWriter",
    "Op",
    "OpPair",
    "OpType",
    "fault_windows",
    "load_history",
    "load_nemesis",
    "pair_ops",
]

OpType = Literal["invoke", "ok", "fail", "info"]
CompletionType = Literal["ok", "fail", "info"]
OP_TYPES: frozenset[str] = frozenset({"invoke", "ok", "fail", "info"})
COMPLETION_TYPES: frozenset[str] = frozenset({"ok", "fail", "info"})
OP_KEYS: tuple[str, ...] = ("index", "time", "process", "type", "f", "value", "error", "node")
NEMESIS_KEYS: frozenset[str] = frozenset(
    {"time", "event", "id", "fault", "targets", "keeps_majority", "detail"}
)


class HistoryError(ValueError):
    """A history or nemesis file, or a sequence of ops, breaks the format described above.

    The message names the file and line (or the op index) and what is wrong with it.
    """


@dataclass(frozen=True, slots=True)
class Op:
    """One line of a history: an invocation or a completion of an operation.

    ``value`` is any JSON value; its meaning belongs to the workload (see the module docstring).
    ``node`` is the broker node the client talked to, when it knows.
    """

    index: int
    time: float
    process: int
    type: OpType
    f: str
    value: Any
    error: str | None = None
    node: int | None = None

    def to_json_line(self) -> str:
        """This op as one JSON line (no trailing newline), keys in :data:`OP_KEYS` order."""
        return json.dumps(
            {
                "index": self.index,
                "time": self.time,
                "process": self.process,
                "type": self.type,
                "f": self.f,
                "value": self.value,
                "error": self.error,
                "node": self.node,
            },
            separators=(",", ":"),
            allow_nan=False,
        )

    @classmethod
    def from_json(cls, data: object, where: str = "op") -> Op:
        """Validate a decoded JSON object and build an :class:`Op`.

        Raises :class:`HistoryError` naming ``where`` when a key is missing or extra, or a field
        has the wrong type.
        """
        if not isinstance(data, dict):
            raise HistoryError(f"{where}: expected a JSON object, got {type(data).__name__}")
        keys = set(data)
        if keys != set(OP_KEYS):
            missing = sorted(set(OP_KEYS) - keys)
            extra = sorted(keys - set(OP_KEYS))
            raise HistoryError(
                f"{where}: keys must be exactly {list(OP_KEYS)}; missing {missing}, extra {extra}"
            )
        index = _int(data["index"], where, "index")
        moment = _number(data["time"], where, "time")
        process = _int(data["process"], where, "process")
        op_type = data["type"]
        if op_type not in OP_TYPES:
            raise HistoryError(f"{where}: type must be one of {sorted(OP_TYPES)}, got {op_type!r}")
        f = data["f"]
        if not isinstance(f, str) or not f:
            raise HistoryError(f"{where}: f must be a non-empty string, got {f!r}")
        error = data["error"]
        if error is not None and not isinstance(error, str):
            raise HistoryError(f"{where}: error must be a string or null, got {error!r}")
        node = data["node"]
        if node is not None:
            node = _int(node, where, "node")
        return cls(index, moment, process, cast(OpType, op_type), f, data["value"], error, node)


def _int(value: object, where: str, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise HistoryError(f"{where}: {name} must be an integer, got {value!r}")
    return value


def _number(value: object, where: str, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise HistoryError(f"{where}: {name} must be a finite number, got {value!r}")
    return float(value)


def _monotonic_since_now() -> Callable[[], float]:
    start = time.monotonic()
    return lambda: time.monotonic() - start


class HistoryRecorder:
    """Records a history in memory (``ops``); assigns ``index`` and ``time`` to every op.

    It enforces the process rules of the module docstring: at most one outstanding op per process,
    and no op from a process after its ``info`` -- a breach raises :class:`HistoryError` (a
    workload bug, caught where it happens rather than by a confused checker later). Calls never
    await: any number of asyncio tasks of one event loop may share one recorder without a lock.
    Not thread-safe.

    ``now`` returns seconds since the run started; by default a monotonic clock started when the
    recorder is created. A clock that steps back (an injected test clock) is clamped so that
    ``time`` never decreases. Tests and tools use this class directly; a chaos run uses
    :class:`HistoryWriter`, which has the same interface and writes each op to a file instead.
    """

    def __init__(self, now: Callable[[], float] | None = None) -> None:
        self.now: Callable[[], float] = now if now is not None else _monotonic_since_now()
        self.ops: list[Op] = []
        self._next_index = 0
        self._last_time = 0.0
        self._outstanding: dict[int, Op] = {}
        self._crashed: set[int] = set()

    def invoke(self, process: int, f: str, value: Any, node: int | None = None) -> Op:
        """Record that ``process`` starts operation ``f`` with ``value``; returns the invoke op.

        Raises :class:`HistoryError` if the process already has an op outstanding or has
        completed an op with ``info`` before; TypeError/ValueError if ``value`` is not JSON.
        """
        if process in self._outstanding:
            raise HistoryError(
                f"process {process} invoked {f!r} while op {self._outstanding[process].index} is outstanding"
            )
        if process in self._crashed:
            raise HistoryError(f"process {process} got an info completion and must not issue again")
        op = self._append(process, "invoke", f, value, None, node)
        self._outstanding[process] = op
        return op

    def complete(
        self,
        invoke_op: Op,
        type: CompletionType,
        value: Any,
        error: str | None = None,
        node: int | None = None,
    ) -> Op:
        """Record the completion (``ok``, ``fail`` or ``info``) of ``invoke_op``; returns it.

        ``node`` defaults to the invoke's node. Raises :class:`HistoryError` if ``invoke_op`` is not
        this recorder's outstanding op for its process (completed twice, or never invoked here),
        or ``type`` is not a completion type; TypeError/ValueError if ``value`` is not JSON (the
        op then stays outstanding).
        """
        if type not in COMPLETION_TYPES:
            raise HistoryError(f"completion type must be one of {sorted(COMPLETION_TYPES)}, got {type!r}")
        if self._outstanding.get(invoke_op.process) is not invoke_op:
            raise HistoryError(f"op {invoke_op.index} of process {invoke_op.process} is not outstanding")
        op = self._append(
            invoke_op.process, type, invoke_op.f, value, error, invoke_op.node if node is None else node
        )
        del self._outstanding[invoke_op.process]
        if type == "info":
            self._crashed.add(invoke_op.process)
        return op

    def outstanding(self) -> list[Op]:
        """Invokes not completed yet, by index (they count as ``info`` if the run ends now)."""
        return sorted(self._outstanding.values(), key=lambda op: op.index)

    def _append(
        self, process: int, type: OpType, f: str, value: Any, error: str | None, node: int | None
    ) -> Op:
        moment = max(self._last_time, float(self.now()))
        op = Op(self._next_index, moment, process, type, f, value, error, node)
        self._emit(op)  # raises for a value that is not JSON: nothing is counted then
        self._next_index += 1
        self._last_time = moment
        return op

    def _emit(self, op: Op) -> None:
        op.to_json_line()  # the same check as the writer: only JSON values get in
        self.ops.append(op)


class HistoryWriter(HistoryRecorder):
    """Append-only writer of ``history.jsonl``: a :class:`HistoryRecorder` whose ops go to a file.

    Each op is written and flushed as one line before the call returns, so a harness that crashes
    leaves a readable prefix (:func:`load_history` with ``drop_partial_tail=True`` also drops a
    half-written last line). It keeps no ops in memory (``ops`` stays empty). Share ``now`` with
    :class:`NemesisWriter` so both files use one time base. The file must not exist yet (a history
    is never appended to across runs): FileExistsError otherwise.
    """

    def __init__(self, path: str | Path, now: Callable[[], float] | None = None) -> None:
        super().__init__(now)
        self.path = Path(path)
        self._file: IO[str] = self.path.open("x", encoding="utf-8")

    def close(self) -> None:
        """Flush and close the file. Outstanding ops stay without completion (read as ``info``)."""
        self._file.close()

    def __enter__(self) -> HistoryWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _emit(self, op: Op) -> None:
        self._file.write(op.to_json_line() + "\n")
        self._file.flush()


def _json_lines(path: Path, drop_partial_tail: bool) -> Iterator[tuple[int, object]]:
    """(line number from 1, decoded JSON) for each line; blank lines are errors."""
    text = path.read_text(encoding="utf-8")
    lines = text.split("\n")
    complete_tail = lines[-1] == ""
    if complete_tail:
        lines.pop()
    for number, line in enumerate(lines, start=1):
        last_partial = number == len(lines) and not complete_tail
        try:
            decoded = json.loads(line)
        except json.JSONDecodeError as exc:
            if last_partial and drop_partial_tail:
                return
            raise HistoryError(f"{path}:{number}: not valid JSON ({exc.msg}): {line[:120]!r}") from exc
        yield number, decoded


def load_history(path: str | Path, drop_partial_tail: bool = False) -> list[Op]:
    """Read and validate ``history.jsonl``; returns ops in file order (``ops[i].index == i``).

    Every line must be a JSON object with exactly :data:`OP_KEYS`, ``index`` equal to its line
    number from 0, and ``time`` never decreasing. With ``drop_partial_tail`` a last line that is
    cut short (no newline, not valid JSON: the harness crashed mid-write) is ignored.
    Raises :class:`HistoryError` naming the file and line of the first malformed line.
    """
    path = Path(path)
    ops: list[Op] = []
    last_time = 0.0
    for number, decoded in _json_lines(path, drop_partial_tail):
        where = f"{path}:{number}"
        op = Op.from_json(decoded, where)
        if op.index != len(ops):
            raise HistoryError(f"{where}: index {op.index} should be {len(ops)} (indexes count lines from 0)")
        if op.time < last_time:
            raise HistoryError(f"{where}: time {op.time} goes back from {last_time}")
        last_time = op.time
        ops.append(op)
    return ops


@dataclass(frozen=True, slots=True)
class OpPair:
    """An invocation and its completion; ``completion`` is None when the history ended first."""

    invoke: Op
    completion: Op | None

    @property
    def type(self) -> OpType:
        """``ok``, ``fail`` or ``info``; an op never completed counts as ``info``."""
        return "info" if self.completion is None else self.completion.type

    @property
    def process(self) -> int:
        return self.invoke.process

    @property
    def f(self) -> str:
        return self.invoke.f

    @property
    def latency(self) -> float | None:
        """Seconds from invoke to completion, or None if never completed."""
        return None if self.completion is None else self.completion.time - self.invoke.time


def pair_ops(history: Sequence[Op]) -> list[OpPair]:
    """Match each invoke to the next completion of the same process; pairs in invoke order.

    Raises :class:`HistoryError` (with the op index) when a process invokes while it has an op
    outstanding, invokes after an ``info``, completes with no op outstanding, or completes a
    different ``f`` than it invoked. Invokes left without completion are paired with None.
    """
    pairs: list[OpPair] = []
    outstanding: dict[int, int] = {}  # process -> position in pairs
    crashed: set[int] = set()
    for op in history:
        if op.type == "invoke":
            if op.process in outstanding:
                earlier = pairs[outstanding[op.process]].invoke.index
                raise HistoryError(
                    f"op {op.index}: process {op.process} invoked while op {earlier} is outstanding"
                )
            if op.process in crashed:
                raise HistoryError(f"op {op.index}: process {op.process} invoked after an info completion")
            outstanding[op.process] = len(pairs)
            pairs.append(OpPair(op, None))
            continue
        position = outstanding.pop(op.process, None)
        if position is None:
            raise HistoryError(f"op {op.index}: {op.type} of process {op.process} with no op outstanding")
        invoke = pairs[position].invoke
        if invoke.f != op.f:
            raise HistoryError(
                f"op {op.index}: completes f={op.f!r} but op {invoke.index} invoked f={invoke.f!r}"
            )
        pairs[position] = OpPair(invoke, op)
        if op.type == "info":
            crashed.add(op.process)
    return pairs


# ------------------------------------------------------------------------------------------ nemesis
@dataclass(frozen=True, slots=True)
class NemesisEvent:
    """One line of ``nemesis.jsonl``: a fault started or stopped (healed).

    ``keeps_majority`` says whether, while this fault (together with any other fault the nemesis
    knows to be active) lasts, a majority of every partition's replicas can still talk to each
    other and to clients -- the condition under which the liveness checker expects progress.
    """

    time: float
    event: Literal["start", "stop"]
    id: int
    fault: str
    targets: tuple[Any, ...]
    keeps_majority: bool
    detail: dict[str, Any] = field(default_factory=dict)

    def to_json_line(self) -> str:
        """This event as one JSON line (no trailing newline)."""
        return json.dumps(
            {
                "time": self.time,
                "event": self.event,
                "id": self.id,
                "fault": self.fault,
                "targets": list(self.targets),
                "keeps_majority": self.keeps_majority,
                "detail": self.detail,
            },
            separators=(",", ":"),
            allow_nan=False,
        )

    @classmethod
    def from_json(cls, data: object, where: str = "event") -> NemesisEvent:
        """Validate a decoded JSON object and build an event; raises :class:`HistoryError`."""
        if not isinstance(data, dict):
            raise HistoryError(f"{where}: expected a JSON object, got {type(data).__name__}")
        if set(data) != NEMESIS_KEYS:
            missing = sorted(NEMESIS_KEYS - set(data))
            extra = sorted(set(data) - NEMESIS_KEYS)
            raise HistoryError(
                f"{where}: keys must be exactly {sorted(NEMESIS_KEYS)}; missing {missing}, extra {extra}"
            )
        event = data["event"]
        if event not in ("start", "stop"):
            raise HistoryError(f"{where}: event must be 'start' or 'stop', got {event!r}")
        fault = data["fault"]
        if not isinstance(fault, str) or not fault:
            raise HistoryError(f"{where}: fault must be a non-empty string, got {fault!r}")
        targets = data["targets"]
        if not isinstance(targets, list):
            raise HistoryError(f"{where}: targets must be a list, got {targets!r}")
        keeps_majority = data["keeps_majority"]
        if not isinstance(keeps_majority, bool):
            raise HistoryError(f"{where}: keeps_majority must be true or false, got {keeps_majority!r}")
        detail = data["detail"]
        if not isinstance(detail, dict):
            raise HistoryError(f"{where}: detail must be an object, got {detail!r}")
        return cls(
            _number(data["time"], where, "time"),
            cast(Literal["start", "stop"], event),
            _int(data["id"], where, "id"),
            fault,
            tuple(targets),
            keeps_majority,
            detail,
        )


class NemesisWriter:
    """Append-only writer of ``nemesis.jsonl``, flushed per line, on the history's clock.

    Pass the history writer's ``now`` so fault windows and ops share one time base.
    """

    def __init__(self, path: str | Path, now: Callable[[], float]) -> None:
        self.path = Path(path)
        self.now = now
        self._file: IO[str] = self.path.open("x", encoding="utf-8")

    def record(
        self,
        event: Literal["start", "stop"],
        id: int,
        fault: str,
        targets: Iterable[Any],
        keeps_majority: bool,
        detail: dict[str, Any] | None = None,
    ) -> NemesisEvent:
        """Write one event stamped with ``now()`` and return it."""
        item = NemesisEvent(float(self.now()), event, id, fault, tuple(targets), keeps_majority, detail or {})
        self._file.write(item.to_json_line() + "\n")
        self._file.flush()
        return item

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> NemesisWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def load_nemesis(path: str | Path, drop_partial_tail: bool = False) -> list[NemesisEvent]:
    """Read and validate ``nemesis.jsonl``; raises :class:`HistoryError` naming the bad line."""
    path = Path(path)
    return [
        NemesisEvent.from_json(decoded, f"{path}:{number}")
        for number, decoded in _json_lines(path, drop_partial_tail)
    ]


@dataclass(frozen=True, slots=True)
class FaultWindow:
    """A fault from its start to its stop; ``stop`` is None when it was never healed."""

    id: int
    fault: str
    targets: tuple[Any, ...]
    start: float
    stop: float | None
    keeps_majority: bool

    def end(self, run_end: float) -> float:
        """When the fault ended, taking ``run_end`` for a fault never healed."""
        return run_end if self.stop is None else self.stop


def fault_windows(events: Iterable[NemesisEvent]) -> list[FaultWindow]:
    """Pair ``start`` and ``stop`` events by id into windows, ordered by start time.

    Raises :class:`HistoryError` for a second start of one id, a stop without a start, or a stop
    before its start.
    """
    started: dict[int, NemesisEvent] = {}
    windows: list[FaultWindow] = []
    stopped: set[int] = set()
    for event in events:
        if event.event == "start":
            if event.id in started or event.id in stopped:
                raise HistoryError(f"nemesis: fault id {event.id} started twice")
            started[event.id] = event
            continue
        begin = started.pop(event.id, None)
        if begin is None:
            raise HistoryError(f"nemesis: fault id {event.id} stopped but was not running")
        if event.time < begin.time:
            raise HistoryError(
                f"nemesis: fault id {event.id} stops at {event.time} before its start {begin.time}"
            )
        stopped.add(event.id)
        windows.append(
            FaultWindow(begin.id, begin.fault, begin.targets, begin.time, event.time, begin.keeps_majority)
        )
    for begin in started.values():
        windows.append(
            FaultWindow(begin.id, begin.fault, begin.targets, begin.time, None, begin.keeps_majority)
        )
    windows.sort(key=lambda window: (window.start, window.id))
    return windows
