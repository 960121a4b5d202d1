"""``millpond group ...`` and ``millpond consume --group`` against real node processes, plus their
usage errors: describe with committed offsets, high watermarks and lag, dry-run and executed offset
resets (refused while members are active), delete, and a consumer that resumes where its group
committed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from millpond import cli
from millpond.testing.cluster import LocalCluster
from millpond.testing.waiting import wait_until

TIMEOUT_S = 120
#: Group members heartbeat every 200 ms; the CLI member asks for a 2 s session.
NODE_ARGS = ["--tick-ms", "50", "--heartbeat-interval-ms", "200", "--session-timeout-ms", "1500",
             "--group-heartbeat-interval-ms", "200", "--group-session-timeout-ms", "2000"]


def millpond(*args: str, bootstrap: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MILLPOND_BOOTSTRAP": bootstrap}
    return subprocess.run([sys.executable, "-m", "millpond.cli", *args], input=stdin, capture_output=True,
                          text=True, env=env, timeout=TIMEOUT_S, check=False)


def ok(*args: str, bootstrap: str, stdin: str = "") -> str:
    result = millpond(*args, bootstrap=bootstrap, stdin=stdin)
    assert result.returncode == 0, (args, result.stdout, result.stderr)
    return result.stdout


def one_line_error(result: subprocess.CompletedProcess[str], expected: str) -> None:
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert result.stderr.startswith("millpond: ") and result.stderr.count("\n") == 1, result.stderr
    assert expected in result.stderr, result.stderr


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with LocalCluster(3, data_dir=tmp_path_factory.mktemp("cluster"), node_args=NODE_ARGS,
                      ready_timeout_s=90) as running:
        yield running


def listed_state(bootstrap: str, group: str) -> str | None:
    """The state ``group list`` shows for ``group`` (``None`` if not listed)."""
    for line in ok("group", "list", bootstrap=bootstrap).splitlines()[1:]:
        name, state, *_ = line.split()
        if name == group:
            return state
    return None


def committed(bootstrap: str, group: str) -> dict[int, int]:
    described = json.loads(ok("group", "describe", group, "--json", bootstrap=bootstrap))
    return {p["partition"]: p["committed_offset"] for p in described["partitions"]}


def test_consume_in_a_group_then_describe_reset_and_resume(cluster: LocalCluster) -> None:
    bootstrap = cluster.bootstrap
    ok("topic", "create", "cli-g", "--partitions", "3", "--replication", "3", bootstrap=bootstrap)
    ok("produce", "cli-g", "--key-separator", ":", bootstrap=bootstrap,
       stdin="".join(f"k{i}:value {i}\n" for i in range(30)))
    consumed = ok("consume", "cli-g", "--group", "readers", "--from-beginning", "--max-messages", "30",
                  "--timeout-ms", "30000", "--session-timeout-ms", "2000", bootstrap=bootstrap)
    assert sorted(consumed.split("\n")[:-1]) == sorted(f"value {i}" for i in range(30))

    # It committed after printing and left: the group is empty, nothing is left to read.
    listed = ok("group", "list", bootstrap=bootstrap).splitlines()
    assert listed[0].split() == ["group", "state", "epoch", "members"]
    wait_until(lambda: listed_state(bootstrap, "readers") == "empty", 30, "the member to leave")
    described = json.loads(ok("group", "describe", "readers", "--json", bootstrap=bootstrap))
    assert described["state"] == "empty" and described["members"] == []
    assert sum(p["committed_offset"] for p in described["partitions"]) == 30
    assert all(p["lag"] == 0 and p["committed_offset"] == p["high_watermark"]
               for p in described["partitions"])
    text = ok("group", "describe", "readers", bootstrap=bootstrap).splitlines()
    assert text[0].startswith("group readers  state empty")
    assert text[1].split() == ["topic", "partition", "committed", "high-watermark", "lag", "member"]
    assert len(text) == 2 + 3

    # A dry run shows the move and commits nothing; --execute commits it.
    before = committed(bootstrap, "readers")
    dry = ok("group", "reset-offsets", "readers", "--topic", "cli-g", "--to-earliest", bootstrap=bootstrap)
    assert dry.splitlines()[0].split() == ["topic", "partition", "committed", "new"]
    assert dry.splitlines()[-1] == "dry run: nothing committed (add --execute to commit these offsets)"
    assert [line.split()[3] for line in dry.splitlines()[1:-1]] == ["0", "0", "0"]
    assert committed(bootstrap, "readers") == before
    executed = ok("group", "reset-offsets", "readers", "--topic", "cli-g", "--shift-by", "-2", "--execute",
                  bootstrap=bootstrap)
    assert executed.splitlines()[-1] == "committed new offsets of 3 partitions for group readers"
    assert committed(bootstrap, "readers") == {p: max(0, o - 2) for p, o in before.items()}
    future = "2999-01-01T00:00:00Z"
    ok("group", "reset-offsets", "readers", "--topic", "cli-g", "--to-datetime", future, "--execute",
       bootstrap=bootstrap)
    assert committed(bootstrap, "readers") == before  # no record that late: the high watermark
    ok("group", "reset-offsets", "readers", "--topic", "cli-g", "--to-offset", "1", "--execute",
       bootstrap=bootstrap)

    # The next member resumes at the committed offsets: offset 1 of each partition onwards.
    again = ok("consume", "cli-g", "--group", "readers", "--format", "json", "--max-messages", "27",
               "--timeout-ms", "30000", "--session-timeout-ms", "2000", bootstrap=bootstrap)
    records = [json.loads(line) for line in again.splitlines()]
    assert sorted((r["partition"], r["offset"]) for r in records) == sorted(
        (p, o) for p, end in before.items() for o in range(1, end))

    wait_until(lambda: listed_state(bootstrap, "readers") == "empty", 30, "the member to leave")
    assert ok("group", "delete", "readers", bootstrap=bootstrap) == "deleted group readers\n"
    one_line_error(millpond("group", "describe", "readers", bootstrap=bootstrap), "group id not found")


def test_reset_and_delete_are_refused_while_a_member_is_active(cluster: LocalCluster) -> None:
    bootstrap = cluster.bootstrap
    ok("topic", "create", "cli-busy", "--partitions", "2", "--replication", "3", bootstrap=bootstrap)
    member = subprocess.Popen(
        [sys.executable, "-m", "millpond.cli", "consume", "cli-busy", "--group", "busy",
         "--session-timeout-ms", "2000", "--bootstrap", bootstrap],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        def joined() -> bool:
            group = json.loads(ok("group", "describe", "busy", "--json", bootstrap=bootstrap))
            return group["state"] == "stable" and len(group["members"]) == 1

        wait_until(joined, 60, "the member to join")
        one_line_error(millpond("group", "reset-offsets", "busy", "--topic", "cli-busy", "--to-latest",
                                bootstrap=bootstrap), "group not empty: group 'busy' has 1 member(s)")
        one_line_error(millpond("group", "delete", "busy", bootstrap=bootstrap), "group not empty")
        member.send_signal(signal.SIGINT)  # Ctrl-C: the member leaves the group on its way out
        assert member.wait(30) == 130
        started = time.monotonic()
        wait_until(lambda: listed_state(bootstrap, "busy") == "empty", 30, "the member to leave")
        assert time.monotonic() - started < 2.0  # it left: no session timeout needed
        assert ok("group", "delete", "busy", bootstrap=bootstrap) == "deleted group busy\n"
    finally:
        if member.poll() is None:
            member.kill()
            member.wait()


def test_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    for args in (["group", "reset-offsets", "g", "--topic", "t"],
                 ["group", "reset-offsets", "g", "--topic", "t", "--to-earliest", "--to-latest"],
                 ["group", "reset-offsets", "g", "--topic", "t", "--to-datetime", "yesterday"],
                 ["group", "reset-offsets", "g", "--topic", "t", "--to-offset", "-1"],
                 ["group", "describe"]):
        with pytest.raises(SystemExit) as exit_:
            cli.main(args)
        assert exit_.value.code == 2, args
    capsys.readouterr()
    assert cli.main(["consume", "t", "--group", "g", "--partition", "0", "--bootstrap", "127.0.0.1:1"]) == 1
    assert capsys.readouterr().err == ("millpond: --group assigns partitions: it excludes --partition and "
                                       "--offset\n")
    assert cli.main(["consume", "t", "--session-timeout-ms", "2000", "--bootstrap", "127.0.0.1:1"]) == 1
    assert capsys.readouterr().err == "millpond: --session-timeout-ms needs --group\n"
    assert cli.main(["group", "list", "--bootstrap", "127.0.0.1:1"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("millpond: unavailable: ") and err.count("\n") == 1
