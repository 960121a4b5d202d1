"""The history format: the writer's rules, the loader's validation, pairing, and nemesis windows."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from millpond.chaos.history import (
    OP_KEYS,
    FaultWindow,
    HistoryError,
    HistoryRecorder,
    HistoryWriter,
    NemesisWriter,
    Op,
    fault_windows,
    load_history,
    load_nemesis,
    pair_ops,
)


def ticking(step: float = 0.5) -> Callable[[], float]:
    """A fake clock: each reading is ``step`` seconds after the previous one."""
    moments = iter(range(1, 1_000_000))
    return lambda: next(moments) * step


def op_line(**overrides: object) -> str:
    """A valid history line with some fields replaced (or removed, with the value ``...``)."""
    fields: dict[str, object] = {
        "index": 0,
        "time": 0.5,
        "process": 0,
        "type": "invoke",
        "f": "send",
        "value": {"key": "k", "value": "a", "partition": 0},
        "error": None,
        "node": None,
    }
    fields.update(overrides)
    return json.dumps({key: value for key, value in fields.items() if value is not ...})


# ------------------------------------------------------------------------------- writer and loader
def test_writer_then_loader_round_trips_every_field(tmp_path: Path) -> None:
    path = tmp_path / "history.jsonl"
    with HistoryWriter(path, now=ticking()) as writer:
        send = writer.invoke(0, "send", {"key": "k", "value": "a", "partition": 2}, node=3)
        writer.complete(send, "ok", {"key": "k", "value": "a", "partition": 2, "offset": 7})
        poll = writer.invoke(1, "poll", {})
        writer.complete(poll, "fail", None, error="UNAVAILABLE: no leader", node=1)
        writer.invoke(2, "poll", {})  # never completed: the run stopped
    loaded = load_history(path)
    assert loaded == [
        Op(0, 0.5, 0, "invoke", "send", {"key": "k", "value": "a", "partition": 2}, None, 3),
        Op(1, 1.0, 0, "ok", "send", {"key": "k", "value": "a", "partition": 2, "offset": 7}, None, 3),
        Op(2, 1.5, 1, "invoke", "poll", {}, None, None),
        Op(3, 2.0, 1, "fail", "poll", None, "UNAVAILABLE: no leader", 1),
        Op(4, 2.5, 2, "invoke", "poll", {}, None, None),
    ]
    first_line = path.read_text().splitlines()[0]
    assert list(json.loads(first_line)) == list(OP_KEYS)


def test_writer_flushes_each_line_before_returning(tmp_path: Path) -> None:
    path = tmp_path / "history.jsonl"
    writer = HistoryWriter(path, now=ticking())
    writer.invoke(0, "poll", {})
    # Still open: a harness that dies now leaves this line readable.
    assert [op.f for op in load_history(path)] == ["poll"]
    writer.close()


def test_writer_refuses_to_append_to_an_existing_history(tmp_path: Path) -> None:
    path = tmp_path / "history.jsonl"
    path.write_text("")
    with pytest.raises(FileExistsError):
        HistoryWriter(path)


def test_recorder_enforces_one_outstanding_op_per_process() -> None:
    recorder = HistoryRecorder(now=ticking())
    first = recorder.invoke(0, "poll", {})
    with pytest.raises(HistoryError, match="process 0 invoked 'send' while op 0 is outstanding"):
        recorder.invoke(0, "send", {})
    recorder.complete(first, "ok", {"records": []})
    with pytest.raises(HistoryError, match="not outstanding"):
        recorder.complete(first, "ok", {"records": []})
    assert [op.type for op in recorder.ops] == ["invoke", "ok"]


def test_recorder_retires_a_process_after_info() -> None:
    recorder = HistoryRecorder(now=ticking())
    recorder.complete(recorder.invoke(0, "send", {}), "info", None, error="deadline exceeded")
    with pytest.raises(HistoryError, match="process 0 got an info completion"):
        recorder.invoke(0, "send", {})
    recorder.invoke(1, "send", {})  # a new process takes over


def test_recorder_rejects_invoke_as_a_completion_type() -> None:
    recorder = HistoryRecorder(now=ticking())
    op = recorder.invoke(0, "poll", {})
    with pytest.raises(HistoryError, match="completion type"):
        recorder.complete(op, "invoke", None)  # type: ignore[arg-type]


def test_a_value_that_is_not_json_is_refused_and_leaves_no_trace() -> None:
    recorder = HistoryRecorder(now=ticking())
    with pytest.raises(TypeError):
        recorder.invoke(0, "send", {"value": object()})
    op = recorder.invoke(0, "send", {"value": "a"})
    assert op.index == 0
    with pytest.raises(ValueError):
        recorder.complete(op, "ok", {"offset": float("nan")})
    assert recorder.outstanding() == [op]  # still outstanding: it can be completed properly
    recorder.complete(op, "ok", {"offset": 1})
    assert [o.index for o in recorder.ops] == [0, 1]


def test_recorder_time_never_goes_back_even_if_the_clock_does() -> None:
    readings = iter([5.0, 3.0, 6.0])
    recorder = HistoryRecorder(now=lambda: next(readings))
    op = recorder.invoke(0, "poll", {})
    recorder.complete(op, "ok", {"records": []})
    recorder.invoke(0, "poll", {})
    assert [o.time for o in recorder.ops] == [5.0, 5.0, 6.0]


def test_many_asyncio_tasks_share_one_writer(tmp_path: Path) -> None:
    path = tmp_path / "history.jsonl"

    async def client(writer: HistoryWriter, process: int) -> None:
        for n in range(20):
            op = writer.invoke(process, "send", {"key": "k", "value": f"{process}-{n}", "partition": 0})
            await asyncio.sleep(0)
            writer.complete(op, "ok", {"key": "k", "value": f"{process}-{n}", "partition": 0, "offset": n})

    async def run() -> None:
        with HistoryWriter(path, now=ticking(0.001)) as writer:
            async with asyncio.TaskGroup() as group:
                for process in range(5):
                    group.create_task(client(writer, process))

    asyncio.run(run())
    history = load_history(path)
    assert len(history) == 200
    assert all(pair.type == "ok" for pair in pair_ops(history))


# ------------------------------------------------------------------------------- loader validation
def write_lines(tmp_path: Path, *lines: str, newline_at_end: bool = True) -> Path:
    path = tmp_path / "history.jsonl"
    path.write_text("\n".join(lines) + ("\n" if newline_at_end else ""))
    return path


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", r"history.jsonl:1: not valid JSON"),
        ("[1, 2]", r":1: expected a JSON object, got list"),
        (op_line(node=...), r":1: keys must be exactly .*missing \['node'\], extra \[\]"),
        (op_line(extra=1), r":1: keys must be exactly .*missing \[\], extra \['extra'\]"),
        (op_line(index="0"), r":1: index must be an integer"),
        (op_line(process=True), r":1: process must be an integer"),
        (op_line(time="soon"), r":1: time must be a finite number"),
        (op_line(type="done"), r":1: type must be one of"),
        (op_line(f=""), r":1: f must be a non-empty string"),
        (op_line(error=3), r":1: error must be a string or null"),
        (op_line(node=1.5), r":1: node must be an integer"),
        (op_line(index=4), r":1: index 4 should be 0"),
    ],
)
def test_loader_names_the_malformed_line(tmp_path: Path, line: str, message: str) -> None:
    path = write_lines(tmp_path, line)
    with pytest.raises(HistoryError, match=message):
        load_history(path)


def test_loader_rejects_time_going_back(tmp_path: Path) -> None:
    path = write_lines(tmp_path, op_line(time=2.0), op_line(index=1, type="ok", time=1.0))
    with pytest.raises(HistoryError, match=r":2: time 1.0 goes back from 2.0"):
        load_history(path)


def test_loader_reports_the_line_number_of_a_bad_line_in_the_middle(tmp_path: Path) -> None:
    path = write_lines(tmp_path, op_line(), "", op_line(index=2))
    with pytest.raises(HistoryError, match=r"history.jsonl:2: not valid JSON"):
        load_history(path)


def test_a_half_written_last_line_is_an_error_unless_asked_to_drop_it(tmp_path: Path) -> None:
    path = write_lines(tmp_path, op_line(), op_line(index=1)[:25], newline_at_end=False)
    with pytest.raises(HistoryError, match=r":2: not valid JSON"):
        load_history(path)
    assert [op.index for op in load_history(path, drop_partial_tail=True)] == [0]


def test_dropping_a_partial_tail_never_hides_a_bad_complete_line(tmp_path: Path) -> None:
    path = write_lines(tmp_path, op_line(), op_line(index=1)[:25])  # ends with a newline: complete
    with pytest.raises(HistoryError, match=r":2: not valid JSON"):
        load_history(path, drop_partial_tail=True)


# ------------------------------------------------------------------------------- pairing
def test_pair_ops_matches_completions_by_process_and_counts_the_unfinished_as_info() -> None:
    recorder = HistoryRecorder(now=ticking())
    a = recorder.invoke(0, "send", {"value": "a"})
    b = recorder.invoke(1, "poll", {})
    recorder.complete(b, "ok", {"records": []})
    recorder.complete(a, "fail", None, error="NOT_LEADER")
    c = recorder.invoke(0, "send", {"value": "c"})
    pairs = pair_ops(recorder.ops)
    assert [(p.invoke.index, p.completion.index if p.completion else None, p.type) for p in pairs] == [
        (0, 3, "fail"),
        (1, 2, "ok"),
        (c.index, None, "info"),
    ]
    assert pairs[0].latency == pytest.approx(1.5)
    assert pairs[2].latency is None


def op(index: int, process: int, type: str, f: str = "send") -> Op:
    return Op(index, float(index), process, type, f, None)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("history", "message"),
    [
        ([op(0, 0, "ok")], "op 0: ok of process 0 with no op outstanding"),
        ([op(0, 0, "invoke"), op(1, 0, "invoke")], "op 1: process 0 invoked while op 0 is outstanding"),
        ([op(0, 0, "invoke"), op(1, 0, "info"), op(2, 0, "invoke")], "op 2: process 0 invoked after an info"),
        (
            [op(0, 0, "invoke"), op(1, 0, "ok", f="poll")],
            "op 1: completes f='poll' but op 0 invoked f='send'",
        ),
    ],
)
def test_pair_ops_rejects_histories_that_break_the_process_rules(history: list[Op], message: str) -> None:
    with pytest.raises(HistoryError, match=message):
        pair_ops(history)


# ------------------------------------------------------------------------------- nemesis
def test_nemesis_writer_then_loader_then_windows(tmp_path: Path) -> None:
    path = tmp_path / "nemesis.jsonl"
    with NemesisWriter(path, now=ticking(2.0)) as nemesis:
        nemesis.record("start", 1, "partition", [[1], [2, 3]], True, {"cut": "1|2 3"})
        nemesis.record("start", 2, "kill", [2], False)
        nemesis.record("stop", 1, "partition", [[1], [2, 3]], True)
    events = load_nemesis(path)
    assert [(e.time, e.event, e.id) for e in events] == [
        (2.0, "start", 1),
        (4.0, "start", 2),
        (6.0, "stop", 1),
    ]
    assert events[0].detail == {"cut": "1|2 3"}
    assert fault_windows(events) == [
        FaultWindow(1, "partition", ([1], [2, 3]), 2.0, 6.0, True),
        FaultWindow(2, "kill", (2,), 4.0, None, False),  # never healed
    ]
    assert fault_windows(events)[1].end(run_end=30.0) == 30.0


def test_fault_windows_reject_a_stop_without_a_start_and_a_restarted_id(tmp_path: Path) -> None:
    path = tmp_path / "nemesis.jsonl"
    with NemesisWriter(path, now=ticking()) as nemesis:
        nemesis.record("stop", 7, "kill", [1], True)
    with pytest.raises(HistoryError, match="fault id 7 stopped but was not running"):
        fault_windows(load_nemesis(path))
    path.unlink()
    with NemesisWriter(path, now=ticking()) as nemesis:
        nemesis.record("start", 7, "kill", [1], True)
        nemesis.record("stop", 7, "kill", [1], True)
        nemesis.record("start", 7, "kill", [1], True)
    with pytest.raises(HistoryError, match="fault id 7 started twice"):
        fault_windows(load_nemesis(path))


def test_nemesis_loader_names_the_malformed_line(tmp_path: Path) -> None:
    path = tmp_path / "nemesis.jsonl"
    good = {"time": 1.0, "event": "start", "id": 1, "fault": "kill", "targets": [1], "keeps_majority": True}
    path.write_text(
        json.dumps({**good, "detail": {}}) + "\n" + json.dumps({**good, "event": "begin", "detail": {}})
    )
    with pytest.raises(HistoryError, match=r"nemesis.jsonl:2: event must be 'start' or 'stop'"):
        load_nemesis(path)
    path.write_text(json.dumps(good) + "\n")
    with pytest.raises(HistoryError, match=r"nemesis.jsonl:1: keys must be exactly .*missing \['detail'\]"):
        load_nemesis(path)
