"""Event sourcing on a compacted topic: rebuild the current state of every account by reading it.

Each record of the ``accounts`` topic is the whole current state of one account
(its key is the account id), so the latest record of a key is all a reader
needs. Closing an account writes a *tombstone* (a null value): readers drop the
account, and compaction eventually drops the tombstone too. Because the topic
is compacted (``cleanup_policy=compact``), millpond keeps only the latest record
per key in the background, so rebuilding the view from the beginning stays
cheap however many updates were written — and gives the same answer before and
after compaction.

Run it against a running cluster, or without arguments to start a local one::

    python examples/event_sourcing.py --bootstrap 127.0.0.1:7001
    python examples/event_sourcing.py

What it does:

1. create a compacted topic (every record needs a key there: a keyless one is refused);
2. write account events: opened, deposits and withdrawals, one account closed;
3. rebuild the materialised view by reading the topic from the beginning;
4. wait until compaction has dropped the superseded events and rebuild it again.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager

from millpond.client import (
    Admin,
    ClientConfig,
    Consumer,
    ConsumerConfig,
    Producer,
    ProducerConfig,
    RecordKeyRequired,
    TopicExists,
)

Account = dict[str, object]


def create_topic(bootstrap: str, topic: str) -> None:
    """A one-partition compacted topic: the latest event of each account is kept forever; tombstones
    stay readable for 2 s (``delete_retention_ms``) so slow readers still see closures."""
    with Admin(bootstrap, ClientConfig(request_timeout_ms=10_000)) as admin:
        try:
            admin.create_topic(topic, partitions=1, replication_factor=1,
                               config={"cleanup_policy": "compact", "delete_retention_ms": "2000",
                                       "min_compaction_lag_ms": "0"})
        except TopicExists:
            pass


def write_events(bootstrap: str, topic: str) -> dict[str, Account | None]:
    """Write the account history; return what the view must end up as (None: closed)."""
    history: list[tuple[str, Account | None]] = [
        ("alice", {"owner": "Alice", "balance": 100}),
        ("bob", {"owner": "Bob", "balance": 20}),
        ("alice", {"owner": "Alice", "balance": 150}),  # deposit 50
        ("carol", {"owner": "Carol", "balance": 5}),
        ("bob", {"owner": "Bob", "balance": 5}),  # withdraw 15
        ("carol", None),  # closed: a tombstone
        ("alice", {"owner": "Alice", "balance": 120}),  # withdraw 30
    ]
    with Producer(bootstrap, ProducerConfig(acks="all", linger_ms=0)) as producer:
        for account, state in history:
            value = None if state is None else json.dumps(state, sort_keys=True).encode()
            producer.send(topic, value, key=account.encode(), partition=0).result(timeout=30)
        try:  # a compacted topic refuses records without a key: there would be nothing to keep
            producer.send(topic, b"no key", partition=0).result(timeout=30)
        except RecordKeyRequired as exc:
            print(f"refused as expected: {exc}")
    return dict(history)


def rebuild(bootstrap: str, topic: str) -> tuple[dict[str, Account], int]:
    """The materialised view: read from the beginning to the end; return it and how many records
    were read. A tombstone removes the account."""
    view: dict[str, Account] = {}
    records = 0
    with Consumer(bootstrap, ConsumerConfig(auto_offset_reset="earliest")) as consumer:
        consumer.assign([(topic, 0)])
        consumer.seek_to_beginning()
        end = consumer.offset_for((topic, 0), "latest")
        while consumer.position((topic, 0)) < end:
            for record in consumer.poll(timeout_ms=1000):
                records += 1
                account = record.key.decode() if record.key is not None else ""
                if record.value is None:
                    view.pop(account, None)
                else:
                    view[account] = json.loads(record.value)
    return view, records


def wait_for_compaction(bootstrap: str, topic: str, records_max: int, timeout_s: float = 60.0) -> int:
    """Rebuild until at most ``records_max`` records remain (compaction runs in the background)."""
    deadline = time.monotonic() + timeout_s
    while True:
        _, records = rebuild(bootstrap, topic)
        if records <= records_max or time.monotonic() > deadline:
            return records
        time.sleep(0.5)


def main(bootstrap: str, topic: str = "accounts") -> dict[str, Account]:
    """Run the example against ``bootstrap``; return the final view."""
    create_topic(bootstrap, topic)
    expected = write_events(bootstrap, topic)
    view, records = rebuild(bootstrap, topic)
    print(f"rebuilt from {records} records: {view}")
    assert view == {account: state for account, state in expected.items() if state is not None}
    remaining = wait_for_compaction(bootstrap, topic, records_max=len(view))
    compacted_view, _ = rebuild(bootstrap, topic)
    print(f"after compaction {remaining} records give the same view: {compacted_view}")
    assert compacted_view == view
    return view


@contextmanager
def _bootstrap(address: str | None) -> Iterator[str]:
    if address is not None:
        yield address
        return
    from millpond.testing import LocalCluster

    with LocalCluster(nodes=1) as cluster:
        yield cluster.bootstrap


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", help="HOST:PORT of a node (default: start a local one-node cluster)")
    parser.add_argument("--topic", default="accounts")
    arguments = parser.parse_args()
    with _bootstrap(arguments.bootstrap) as address:
        main(address, arguments.topic)
