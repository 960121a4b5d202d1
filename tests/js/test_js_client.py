"""The Node.js client (``clients/js/``): its own unit tests, then a round trip with Python on a real cluster.

Proves that a gRPC client in another language, built only from the ``.proto``
files and ``docs/record-format.md``, interoperates byte for byte: records the
JS producer sends come out of the Python consumer unchanged, on the partition
Python's murmur2 picks, and records the Python producer sends come out of the
JS consumer unchanged.

Never skipped: without ``node`` or ``npm`` on the PATH the tests fail and say
so. Dependencies come from ``clients/js/package-lock.json`` (``npm ci``,
run here if ``clients/js/node_modules`` does not match the lock file).
Every subprocess runs in its own process group, killed whole if it overruns.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from millpond.client import Admin, ClientConfig, Consumer, ConsumerConfig, Producer, ProducerConfig
from millpond.partitioner import partition_for_key
from millpond.testing.cluster import LocalCluster

REPO = Path(__file__).resolve().parents[2]
JS = REPO / "clients" / "js"
E2E = JS / "scripts" / "e2e.js"
NODE_MAJOR_MIN = 20
#: Fast failure detection, as the other cluster tests use (tests/cluster/cluster_helpers.py).
FAST = ["--tick-ms", "50", "--heartbeat-interval-ms", "200", "--session-timeout-ms", "1500",
        "--replica-lag-ms-max", "1500"]

Record = tuple[bytes | None, bytes | None, list[tuple[str, bytes | None]], int | None]
"""key, value, headers, timestamp_ms (None: the producer's clock)."""


# --- running node and npm ---------------------------------------------------------------------------
def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name!r} is not on PATH: the JS client tests need Node.js >= {NODE_MAJOR_MIN} and npm "
                    "(e.g. `apt-get install nodejs npm`); they are never skipped", pytrace=False)
    return path


def _run(args: list[str], *, timeout_s: float, stdin: str | None = None,
         cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    """Run ``args`` in a new process group; on timeout (or any interruption) kill the whole group."""
    with subprocess.Popen(args, cwd=cwd, text=True, start_new_session=True,
                          stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE) as process:
        try:
            stdout, stderr = process.communicate(stdin, timeout=timeout_s)
        except BaseException as exc:
            os.killpg(process.pid, signal.SIGKILL)  # the leader is not reaped yet: the group id is still ours
            stdout, stderr = process.communicate()
            if isinstance(exc, subprocess.TimeoutExpired):
                pytest.fail(f"`{' '.join(args)}` did not finish within {timeout_s} s\n"
                            f"stdout:\n{stdout}\nstderr:\n{stderr}")
            raise
    return subprocess.CompletedProcess(args, process.returncode, stdout, stderr)


def _installed_matches_lock() -> bool:
    """True if node_modules holds exactly the versions package-lock.json pins (npm's hidden lock file)."""
    try:
        wanted = json.loads((JS / "package-lock.json").read_text())["packages"]
        have = json.loads((JS / "node_modules" / ".package-lock.json").read_text())["packages"]
    except (OSError, ValueError, KeyError):
        return False
    return all(have.get(path, {}).get("version") == info.get("version")
               for path, info in wanted.items() if path)


@pytest.fixture(scope="module")
def node() -> Iterator[str]:
    """The ``node`` executable, with clients/js/node_modules installed from the lock file."""
    node, npm = _tool("node"), _tool("npm")
    version = _run([node, "--version"], timeout_s=30).stdout.strip()
    match = re.match(r"v(\d+)\.", version)
    if match is None or int(match.group(1)) < NODE_MAJOR_MIN:
        pytest.fail(f"Node.js {version} is too old: the JS client needs >= {NODE_MAJOR_MIN}", pytrace=False)
    # pytest-xdist workers share clients/js: one `npm ci` at a time.
    lock_path = Path(tempfile.gettempdir()) / f"millpond-npm-{hashlib.sha1(bytes(JS)).hexdigest()[:12]}.lock"
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not _installed_matches_lock():
            done = _run([npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund"], cwd=JS, timeout_s=300)
            assert done.returncode == 0, f"npm ci failed in {JS}:\n{done.stdout}\n{done.stderr}"
            assert _installed_matches_lock(), "npm ci did not install what package-lock.json pins"
    yield node


# --- the tests -----------------------------------------------------------------------------------------
def test_js_unit_tests_pass(node: str) -> None:
    """node --test: golden bytes of docs/record-format.md, murmur2 vectors, CRC-32C, client vs fake nodes."""
    done = _run([node, "--test", "clients/js/test/"], timeout_s=180)
    summary = dict(re.findall(r"^# (tests|pass|fail|cancelled) (\d+)$", done.stdout, re.MULTILINE))
    assert done.returncode == 0 and summary.get("fail") == "0", \
        f"JS unit tests failed:\n{done.stdout}\n{done.stderr}"
    assert int(summary["pass"]) >= 30, f"expected the whole JS suite to run, got {summary}"


def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode()


def _unb64(text: str | None) -> bytes | None:
    return None if text is None else base64.b64decode(text)


def _records(prefix: str, count: int) -> list[Record]:
    """Keyed records covering the format's corners, then three keyless ones."""
    records: list[Record] = []
    for i in range(count):
        key: bytes = b"%s-%d" % (prefix.encode(), i)
        value: bytes | None = b"value %d " % i * (i % 7 + 1)
        header_choices: list[list[tuple[str, bytes | None]]] = [
            [], [("trace", b"t-%d" % i), ("trace", None)], [("ключ-🙂", bytes([0xFF, 0, i % 256]))],
        ]
        headers = header_choices[i % 3]
        timestamp: int | None = None if i % 10 == 9 else 1_700_000_000_000 + 1_000 * i
        if i == 0:
            key = b""  # the empty key is a key (not null): murmur2(b"") decides
        elif i == 1:
            key = bytes(range(256))  # every byte value
        elif i == 2:
            value = None  # a tombstone
        elif i == 3:
            value = b""  # empty, not null
        elif i == 4:
            value = bytes(range(256)) * 400  # ~100 KiB
        elif i == 5:
            headers = [("", b""), ("k" * 256, None)]  # empty and longest header keys
        records.append((key, value, headers, timestamp))
    records += [(None, b"keyless %d" % i, [], 1_600_000_000_000 + i) for i in range(3)]
    return records


Expected = dict[tuple[int, int], tuple[bytes | None, bytes | None, list[Any], int]]
"""(partition, offset) -> (key, value, headers as a list of (key, value) tuples, timestamp_ms)."""


class JsClient:
    """``clients/js/scripts/e2e.js`` against one cluster."""

    def __init__(self, node: str, bootstrap: str) -> None:
        self.node, self.bootstrap = node, bootstrap

    def __call__(self, *args: str, stdin: str | None = None,
                 timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
        command = [self.node, str(E2E), *args, "--bootstrap", self.bootstrap]
        return _run(command, stdin=stdin, timeout_s=timeout_s)

    @staticmethod
    def stats(done: subprocess.CompletedProcess[str]) -> dict[str, int]:
        """The client's counters, from the ``stats {...}`` line on stderr."""
        return json.loads(done.stderr.rsplit("stats ", 1)[1])  # type: ignore[no-any-return]


def _js_produces_python_consumes(js: JsClient, bootstrap: str, topic: str, partitions: int) -> None:
    sent = _records("js", 60)
    lines = "".join(
        json.dumps({"key": _b64(key), "value": _b64(value), "headers": [[k, _b64(v)] for k, v in headers],
                    "timestampMs": timestamp}) + "\n"
        for key, value, headers, timestamp in sent
    )
    before_ms = int(time.time() * 1000)
    produced = js("produce", "--topic", topic, "--acks", "all", "--misroute", stdin=lines)
    after_ms = int(time.time() * 1000)
    assert produced.returncode == 0, f"JS producer failed:\n{produced.stderr}"
    acks = [json.loads(line) for line in produced.stdout.splitlines()]
    assert len(acks) == len(sent)
    assert js.stats(produced)["redirects"] >= 1, "--misroute: the producer should have followed NOT_LEADER"

    expected: Expected = {}
    keyless_partitions = set()
    for (key, value, headers, timestamp), ack in zip(sent, acks, strict=True):
        if key is None:
            keyless_partitions.add(ack["partition"])
        else:
            assert ack["partition"] == partition_for_key(key, partitions), f"key {key!r}: {ack}"
        if timestamp is None:
            assert before_ms <= ack["timestampMs"] <= after_ms
        else:
            assert ack["timestampMs"] == timestamp
        expected[(ack["partition"], ack["offset"])] = (key, value, headers, ack["timestampMs"])
    assert len(keyless_partitions) == 1, "the keyless records of one send share the sticky partition"
    for partition in range(partitions):  # a fresh topic, one producer: offsets 0, 1, ... in the order sent
        offsets = [ack["offset"] for ack in acks if ack["partition"] == partition]
        assert offsets == list(range(len(offsets))), f"partition {partition}: {offsets}"

    with Consumer(bootstrap, ConsumerConfig(auto_offset_reset="earliest")) as consumer:
        consumer.assign([(topic, p) for p in range(partitions)])
        got: list[Any] = []
        deadline = time.monotonic() + 60
        while len(got) < len(sent) and time.monotonic() < deadline:
            got += consumer.poll(timeout_ms=500)
    assert len(got) == len(sent), f"Python consumed {len(got)} of {len(sent)} records"
    assert {(r.partition, r.offset): (r.key, r.value, [tuple(h) for h in r.headers], r.timestamp_ms)
            for r in got} == expected


def _python_produces_js_consumes(js: JsClient, bootstrap: str, topic: str) -> None:
    sent = _records("py", 40)
    with Producer(bootstrap, ProducerConfig(acks="all")) as producer:
        futures = [producer.send(topic, value, key=key, headers=headers, timestamp_ms=timestamp)
                   for key, value, headers, timestamp in sent]
        metadata = [future.result(60) for future in futures]
    expected: Expected = {(m.partition, m.offset): (key, value, headers, m.timestamp_ms)
                          for (key, value, headers, _), m in zip(sent, metadata, strict=True)}

    consumed = js("consume", "--topic", topic, "--count", str(len(sent)), "--timeout-ms", "60000",
                  "--misroute")
    assert consumed.returncode == 0, f"JS consumer failed:\n{consumed.stderr}"
    records = [json.loads(line) for line in consumed.stdout.splitlines()]
    assert len(records) == len(sent)
    got: Expected = {
        (r["partition"], r["offset"]):
            (_unb64(r["key"]), _unb64(r["value"]), [(k, _unb64(v)) for k, v in r["headers"]],
             r["timestampMs"])
        for r in records
    }
    assert got == expected
    assert js.stats(consumed)["redirects"] >= 1, "--misroute: the consumer should have followed NOT_LEADER"


def test_js_and_python_clients_exchange_records_through_a_3_node_cluster(node: str, tmp_path: Path) -> None:
    with LocalCluster(3, data_dir=tmp_path / "cluster", node_args=FAST, ready_timeout_s=90) as cluster:
        with Admin(cluster.bootstrap, ClientConfig(request_timeout_ms=5000)) as admin:
            keep = {"retention_ms": "-1"}  # the records carry 2023 timestamps, which retention would delete
            admin.create_topic("js-to-py", partitions=5, replication_factor=3, config=keep)
            admin.create_topic("py-to-js", partitions=4, replication_factor=3, config=keep)
        for topic, partitions in (("js-to-py", 5), ("py-to-js", 4)):
            for partition in range(partitions):
                cluster.leader(topic, partition, timeout_s=30)
        js = JsClient(node, cluster.bootstrap)

        described = js("describe")  # the JS admin sees the same cluster
        assert described.returncode == 0, described.stderr
        seen = json.loads(described.stdout)
        assert {n["id"]: n["address"] for n in seen["nodes"]} == {i: cluster.address(i) for i in (1, 2, 3)}
        assert seen["topics"] == {"js-to-py": 5, "py-to-js": 4}

        _js_produces_python_consumes(js, cluster.bootstrap, "js-to-py", 5)
        _python_produces_js_consumes(js, cluster.bootstrap, "py-to-js")

        missing = js("consume", "--topic", "no-such-topic", "--count", "1", timeout_s=60)
        assert missing.returncode == 1  # errors reach JS as reasons
        assert "UNKNOWN_TOPIC" in missing.stderr, missing.stderr
