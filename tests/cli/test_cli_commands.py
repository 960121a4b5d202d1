"""The CLI in-process against fake nodes: parsing, output formats, one-line errors, exit codes."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from client_fake_cluster import FakeCluster

from millpond import cli
from millpond.record_batch import Record


def _run(args: list[str], monkeypatch: pytest.MonkeyPatch, stdin: bytes = b"") -> int:
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(stdin)))
    return cli.main(args)


def test_the_help_lists_exactly_the_commands_of_the_issue(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for command in ["dev", "cluster", "topic", "produce", "consume", "node"]:
        assert f"    {command} " in out


def test_bootstrap_comes_from_the_option_then_the_environment_then_the_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[str] = []
    monkeypatch.setattr("millpond._cli.admin_commands.topic_list",
                        lambda args: seen.append(args.bootstrap) or 0)
    monkeypatch.delenv("MILLPOND_BOOTSTRAP", raising=False)
    assert cli.main(["topic", "list"]) == 0
    monkeypatch.setenv("MILLPOND_BOOTSTRAP", "10.0.0.1:1, 10.0.0.2:2")
    assert cli.main(["topic", "list"]) == 0
    assert cli.main(["topic", "list", "--bootstrap", "h:1,h:2"]) == 0
    assert seen == ["127.0.0.1:9091", "10.0.0.1:1,10.0.0.2:2", "h:1,h:2"]


def test_bad_usage_exits_2_and_bad_combinations_exit_1_with_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.main(["topic", "create", "t", "--partitions", "1"])  # --replication missing
    assert exit_.value.code == 2
    with pytest.raises(SystemExit) as exit_:
        cli.main(["topic", "list", "--bootstrap", "nohostport"])
    assert exit_.value.code == 2
    capsys.readouterr()
    assert cli.main(["consume", "t", "--offset", "3", "--bootstrap", "127.0.0.1:1"]) == 1
    err = capsys.readouterr().err
    assert err == "millpond: --offset needs --partition\n"
    monkeypatch.setenv("MILLPOND_BOOTSTRAP", "bad")
    assert cli.main(["topic", "list"]) == 1
    assert capsys.readouterr().err.count("\n") == 1


def test_an_unreachable_cluster_is_one_line_without_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["cluster", "status", "--bootstrap", "127.0.0.1:1", "--wait", "0.3"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("millpond: cluster not ready after 0.3 s: Unavailable")
    assert err.count("\n") == 1 and "Traceback" not in err


def test_topic_commands(fake: FakeCluster, monkeypatch: pytest.MonkeyPatch,
                        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("MILLPOND_BOOTSTRAP", fake.bootstrap)
    assert cli.main(["topic", "create", "orders", "--partitions", "3", "--replication", "1",
                     "--config", "retention_ms=1000"]) == 0
    assert capsys.readouterr().out == "created topic orders (3 partitions, replication 1)\n"
    assert cli.main(["topic", "create", "orders", "--partitions", "3", "--replication", "1"]) == 1
    assert capsys.readouterr().err.startswith("millpond: topic exists: topic 'orders' already exists")
    assert cli.main(["topic", "list"]) == 0
    assert capsys.readouterr().out == "orders\n"
    assert cli.main(["topic", "describe", "orders"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("topic orders  id 1  partitions 3  replication 1")
    assert out[1].split() == [
        "partition", "leader", "epoch", "replicas", "isr", "log-start", "high-watermark"
    ]
    assert len(out) == 5
    assert cli.main(["topic", "describe", "orders", "--json"]) == 0
    described = json.loads(capsys.readouterr().out)
    assert [p["partition"] for p in described["partitions"]] == [0, 1, 2]
    assert set(described["partitions"][0]) == {"partition", "leader", "leader_epoch", "replicas", "isr",
                                               "log_start_offset", "high_watermark"}
    assert cli.main(["topic", "delete", "orders"]) == 0
    assert capsys.readouterr().out == "deleted topic orders\n"
    assert cli.main(["topic", "describe", "orders"]) == 1
    assert capsys.readouterr().err == "millpond: unknown topic: unknown topic 'orders'\n"


def test_cluster_status_text_json_and_wait(fake: FakeCluster, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["cluster", "status", "--bootstrap", fake.bootstrap]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("cluster fake  controller 1  voters 1,2,3")
    assert out[1].split() == ["node", "address", "alive", "epoch", "role"]
    assert "controller" in out[2] and out[-1].startswith("topics 0")
    assert cli.main(["cluster", "status", "--bootstrap", fake.bootstrap, "--json", "--wait", "5"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["ready"] and [n["id"] for n in status["nodes"]] == [1, 2, 3]
    fake.call(lambda state: state.down.add(3))
    assert cli.main(["cluster", "status", "--bootstrap", fake.address(1), "--wait", "0.5"]) == 1
    assert "nodes not alive: 3" in capsys.readouterr().err


def test_produce_with_keys_headers_and_printed_acks(fake: FakeCluster, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    fake.create_topic("t", 2)
    lines = b"".join(f"user{i % 3}:event {i}\n".encode() for i in range(30)) + b"no separator\r\n"
    code = _run(["produce", "t", "--bootstrap", fake.bootstrap, "--key-separator", ":", "--header", "src=cli",
                 "--header", "run=1", "--print-acks", "--acks", "1"], monkeypatch, lines)
    assert code == 0
    acks = [line.split("\t") for line in capsys.readouterr().out.splitlines()]
    assert len(acks) == 31
    stored = {p: fake.records("t", p) for p in range(2)}
    for partition, offset, key in acks:
        record = stored[int(partition)][int(offset)]
        assert record.key == (key.encode() if key else None)
        assert record.headers == (("src", b"cli"), ("run", b"1"))
    assert [r.value for r in stored[0] + stored[1]].count(b"no separator") == 1
    for partition in range(2):  # printed in order per partition, and per key in send order
        offsets = [int(o) for p, o, _ in acks if int(p) == partition]
        assert offsets == sorted(offsets)
        for key in {r.key for r in stored[partition] if r.key}:
            numbers = [int(r.value.split()[1]) for r in stored[partition] if r.key == key]  # type: ignore[union-attr]
            assert numbers == sorted(numbers)


def test_produce_to_an_unknown_topic_fails_with_one_line(fake: FakeCluster, monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(["produce", "missing", "--bootstrap", fake.bootstrap], monkeypatch, b"x\n") == 1
    assert capsys.readouterr().err == "millpond: unknown topic: unknown topic 'missing'\n"


def _records(fake: FakeCluster, topic: str, partition: int, values: list[bytes | None], **extra: Any) -> None:
    fake.append(topic, partition,
                [Record(b"k", v, (("h", b"\xff"),), 1_000 + i) for i, v in enumerate(values)])


def test_consume_json_from_the_beginning(fake: FakeCluster, capsys: pytest.CaptureFixture[str]) -> None:
    fake.create_topic("t", 2)
    _records(fake, "t", 0, [b"a", b"b", None])
    _records(fake, "t", 1, [b"\xfe\xff"])
    assert cli.main(["consume", "t", "--bootstrap", fake.bootstrap, "--from-beginning",
                     "--format", "json", "--max-messages", "4"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(records) == 4
    first = next(r for r in records if r["partition"] == 0 and r["offset"] == 0)
    assert first == {"topic": "t", "partition": 0, "offset": 0, "timestamp": 1000, "key": "k", "value": "a",
                     "headers": [["h", {"base64": "/w=="}]]}
    assert next(r for r in records if r["offset"] == 2)["value"] is None
    assert next(r for r in records if r["partition"] == 1)["value"] == {"base64": "/v8="}


def test_consume_text_from_an_offset_until_idle(
    fake: FakeCluster, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    fake.create_topic("t", 1)
    _records(fake, "t", 0, [b"zero", b"one", b"two", b"three"])
    assert cli.main(["consume", "t", "--bootstrap", fake.bootstrap, "--partition", "0", "--offset", "2",
                     "--timeout-ms", "300"]) == 0
    assert capsysbinary.readouterr().out == b"two\nthree\n"


def test_consume_bad_positions_are_precise_errors(
    fake: FakeCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.create_topic("t", 1)
    _records(fake, "t", 0, [b"a"])
    assert cli.main(["consume", "t", "--bootstrap", fake.bootstrap, "--partition", "0", "--offset", "7",
                     "--timeout-ms", "2000"]) == 1
    assert capsys.readouterr().err == "millpond: offset out of range: offset 7 outside [0, 1]\n"
    assert cli.main(["consume", "t", "--bootstrap", fake.bootstrap, "--partition", "4"]) == 1
    assert capsys.readouterr().err.startswith("millpond: unknown partition: topic 't' has 1 partitions")


def test_node_delegates_its_arguments(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[list[str]] = []
    monkeypatch.setattr(cli, "_run_node", lambda argv: seen.append(argv) or 7)
    assert cli.main(["node", "--node-id", "1", "--help"]) == 7
    assert seen == [["--node-id", "1", "--help"]]
