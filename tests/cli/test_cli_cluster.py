"""The ``millpond`` command against real node processes: a cluster from LocalCluster, and ``millpond dev``."""

from __future__ import annotations

import collections
import json
import os
import random
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from millpond.testing.cluster import LocalCluster
from millpond.testing.waiting import wait_until

TIMEOUT_S = 120


def millpond(*args: str, bootstrap: str | None = None, stdin: str = "",
             timeout_s: float = TIMEOUT_S) -> subprocess.CompletedProcess[str]:
    env = {**os.environ}
    if bootstrap is not None:
        env["MILLPOND_BOOTSTRAP"] = bootstrap
    return subprocess.run([sys.executable, "-m", "millpond.cli", *args], input=stdin, capture_output=True,
                          text=True, env=env, timeout=timeout_s, check=False)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with LocalCluster(3, data_dir=tmp_path_factory.mktemp("cluster")) as running:
        yield running


def test_keyed_records_through_the_cli_keep_per_key_order(cluster: LocalCluster) -> None:
    bootstrap = cluster.bootstrap
    status = millpond("cluster", "status", "--wait", "60", "--json", bootstrap=bootstrap)
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["ready"]
    created = millpond("topic", "create", "cli-keyed", "--partitions", "3", "--replication", "3",
                       bootstrap=bootstrap)
    assert created.returncode == 0, created.stderr
    lines = [f"user-{i % 5}:event {i}" for i in range(500)]
    produced = millpond("produce", "cli-keyed", "--key-separator", ":", "--print-acks", "--header", "via=cli",
                        bootstrap=bootstrap, stdin="\n".join(lines) + "\n")
    assert produced.returncode == 0, produced.stderr
    acks = [line.split("\t") for line in produced.stdout.splitlines()]
    assert len(acks) == 500 and {len(a) for a in acks} == {3}
    consumed = millpond("consume", "cli-keyed", "--from-beginning", "--format", "json",
                        "--max-messages", "500",
                        "--timeout-ms", "30000", bootstrap=bootstrap)
    assert consumed.returncode == 0, consumed.stderr
    records = [json.loads(line) for line in consumed.stdout.splitlines()]
    assert len(records) == 500
    assert {(r["partition"], r["offset"]) for r in records} == {(int(p), int(o)) for p, o, _ in acks}
    assert all(r["headers"] == [["via", "cli"]] and r["topic"] == "cli-keyed" for r in records)
    per_key: dict[str, list[int]] = collections.defaultdict(list)
    partitions_of_key: dict[str, set[int]] = collections.defaultdict(set)
    for record in sorted(records, key=lambda r: (r["partition"], r["offset"])):
        per_key[record["key"]].append(int(record["value"].split()[1]))
        partitions_of_key[record["key"]].add(record["partition"])
    assert sorted(per_key) == [f"user-{i}" for i in range(5)]
    assert all(numbers == sorted(numbers) for numbers in per_key.values())
    assert all(len(p) == 1 for p in partitions_of_key.values())
    described = millpond("topic", "describe", "cli-keyed", "--json", bootstrap=bootstrap)
    assert described.returncode == 0, described.stderr
    assert sum(p["high_watermark"] for p in json.loads(described.stdout)["partitions"]) == 500
    listed = millpond("topic", "list", bootstrap=bootstrap)
    assert "cli-keyed" in listed.stdout.split()


def test_operating_errors_are_one_line_with_exit_code_1(cluster: LocalCluster) -> None:
    bootstrap = cluster.bootstrap
    assert millpond("topic", "create", "cli-errors", "--partitions", "2", "--replication", "3",
                    bootstrap=bootstrap).returncode == 0
    cases = [
        (["topic", "describe", "no-such-topic"], "unknown topic"),
        (["consume", "no-such-topic", "--timeout-ms", "100"], "unknown topic"),
        (["topic", "alter", "cli-errors", "--partitions", "1"], "grow"),
        (["topic", "create", "bad name!", "--partitions", "1", "--replication", "1"], "invalid topic name"),
        (["topic", "create", "too-wide", "--partitions", "1", "--replication", "4"], "replication factor"),
        (["topic", "create", "empty", "--partitions", "0", "--replication", "1"], "invalid"),
        (["topic", "create", "cli-errors", "--partitions", "2", "--replication", "3"], "topic exists"),
        (["consume", "cli-errors", "--partition", "0", "--offset", "5", "--timeout-ms", "5000"],
         "offset out of range"),
        (["consume", "cli-errors", "--partition", "9"], "unknown partition"),
    ]
    for args, expected in cases:
        result = millpond(*args, bootstrap=bootstrap)
        assert result.returncode == 1, (args, result.stdout, result.stderr)
        assert result.stderr.startswith("millpond: "), (args, result.stderr)
        assert result.stderr.count("\n") == 1, (args, result.stderr)
        assert expected in result.stderr.lower(), (args, result.stderr)
        assert "Traceback" not in result.stderr
    produced = millpond("produce", "no-such-topic", bootstrap=bootstrap, stdin="x\n")
    assert produced.returncode == 1 and "unknown topic" in produced.stderr
    described = json.loads(millpond("topic", "describe", "cli-errors", "--json", bootstrap=bootstrap).stdout)
    assert [p["high_watermark"] for p in described["partitions"]] == [0, 0]  # no effect on stored data


def _consecutive_free_ports(count: int) -> int:
    """A base port below the ephemeral range with ``count`` free ports from it."""
    for _ in range(200):
        base = random.randrange(20_000, 32_000)
        sockets = []
        try:
            for port in range(base, base + count):
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sockets.append(sock)
                sock.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
    raise RuntimeError("no consecutive free ports")


def _alive(pid: int) -> bool:
    try:
        return b"millpond.cli" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def test_dev_detach_then_stop_leaves_no_process(tmp_path: Path) -> None:
    data_dir = str(tmp_path / "dev")
    port = _consecutive_free_ports(3)
    started = millpond("dev", "--nodes", "3", "--port", str(port), "--data-dir", data_dir, "--detach")
    assert started.returncode == 0, started.stderr  # a failed start stops what it started
    pids = [node["pid"] for node in json.loads((tmp_path / "dev" / "dev.json").read_text())["nodes"]]
    try:
        bootstrap = started.stdout.strip()
        assert bootstrap == ",".join(f"127.0.0.1:{port + i}" for i in range(3))
        assert all(_alive(pid) for pid in pids)
        status = millpond("cluster", "status", "--wait", "60", bootstrap=bootstrap)
        assert status.returncode == 0, status.stderr
        again = millpond("dev", "--port", str(port), "--data-dir", data_dir, "--detach")
        assert again.returncode == 1 and "already running" in again.stderr
        stopped = millpond("dev", "stop", "--data-dir", data_dir)
        assert stopped.returncode == 0 and stopped.stdout == "stopped 3 nodes\n", stopped
        assert not (tmp_path / "dev" / "dev.json").exists()
        assert not any(_alive(pid) for pid in pids)
    finally:
        for pid in pids:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_dev_in_the_foreground_stops_every_node_on_ctrl_c(tmp_path: Path) -> None:
    data_dir = tmp_path / "dev"
    port = _consecutive_free_ports(2)
    supervisor = subprocess.Popen(
        [sys.executable, "-m", "millpond.cli", "dev", "--nodes", "2", "--port", str(port),
         "--data-dir", str(data_dir)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    pids: list[int] = []
    try:
        assert supervisor.stdout is not None
        bootstrap = supervisor.stdout.readline().strip()  # printed once the cluster is ready
        assert bootstrap == f"127.0.0.1:{port},127.0.0.1:{port + 1}"
        pids = [node["pid"] for node in json.loads((data_dir / "dev.json").read_text())["nodes"]]
        assert millpond("cluster", "status", "--wait", "60", bootstrap=bootstrap).returncode == 0
        supervisor.send_signal(signal.SIGINT)
        assert supervisor.wait(TIMEOUT_S) == 0
        assert "stopping the cluster" in supervisor.stderr.read()  # type: ignore[union-attr]
        wait_until(lambda: not any(_alive(pid) for pid in pids), 30, "every node process to exit")
        assert not (data_dir / "dev.json").exists()
    finally:
        if supervisor.poll() is None:
            supervisor.kill()
            supervisor.wait()
        for pid in pids:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
