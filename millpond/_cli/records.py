"""``millpond produce`` (stdin lines to records) and ``millpond consume`` (records to stdout)."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time
from collections.abc import AsyncIterator
from typing import BinaryIO

from millpond._cli.common import CommandError, json_bytes, parse_pairs, text_bytes
from millpond.client import (
    AsyncAdmin,
    AsyncConsumer,
    AsyncProducer,
    ClientConfig,
    ConsumerConfig,
    ConsumerRecord,
    ProducerConfig,
    RecordMetadata,
)
from millpond.errors import MillpondError, UnknownPartition

_STDIN_CHUNK_BYTES = 64 * 1024
#: How long an interrupted or failed produce waits for records already sent.
_CLOSE_TIMEOUT_S = 5.0


async def _stdin_lines(stream: BinaryIO) -> AsyncIterator[bytes]:
    """Lines of ``stream`` without their line ending; reads in a thread, a chunk at a time."""
    loop = asyncio.get_running_loop()
    read = getattr(stream, "read1", stream.read)
    pending = b""
    while True:
        chunk: bytes = await loop.run_in_executor(None, read, _STDIN_CHUNK_BYTES)
        if not chunk:
            break
        lines = (pending + chunk).split(b"\n")
        pending = lines.pop()
        for line in lines:
            yield line[:-1] if line.endswith(b"\r") else line
    if pending:
        yield pending[:-1] if pending.endswith(b"\r") else pending


def produce(args: argparse.Namespace) -> int:
    """One record per stdin line; with ``--key-separator``, the text before the first separator is the key."""
    headers = [(key, value.encode()) for key, value in parse_pairs(args.header, "--header")]
    separator = args.key_separator.encode() if args.key_separator else None
    config = ProducerConfig(acks=args.acks)
    failures: list[BaseException] = []

    def acknowledged(future: asyncio.Future[RecordMetadata], key: bytes | None) -> None:
        if future.cancelled():
            return
        error = future.exception()
        if error is not None:
            failures.append(error)
        elif args.print_acks:
            ack = future.result()
            sys.stdout.write(f"{ack.partition}\t{ack.offset}\t{text_bytes(key)}\n")

    async def run() -> int:
        sent = 0
        producer = AsyncProducer(args.bootstrap, config)
        try:
            futures: list[asyncio.Future[RecordMetadata]] = []
            async for line in _stdin_lines(sys.stdin.buffer):
                key: bytes | None = None
                value = line
                if separator is not None and separator in line:
                    key, value = line.split(separator, 1)
                future = await producer.send(args.topic, value, key=key, headers=headers)
                future.add_done_callback(lambda f, k=key: acknowledged(f, k))  # type: ignore[misc]
                futures.append(future)
                sent += 1
                if len(futures) >= 10_000:  # keep memory bounded: drop completed futures
                    futures = [f for f in futures if not f.done()]
            await producer.flush()
            if futures:
                await asyncio.wait(futures)
        finally:
            await producer.close(timeout_s=_CLOSE_TIMEOUT_S)  # immediate after a flush; bounded on errors
        sys.stdout.flush()
        return sent

    sent = asyncio.run(run())
    if failures:
        first = failures[0]
        detail = first.message if isinstance(first, MillpondError) else str(first)
        raise CommandError(f"{len(failures)} of {sent} records failed: {type(first).__name__}: {detail}")
    return 0


def _format_record(record: ConsumerRecord, form: str) -> bytes:
    if form == "json":
        return (json.dumps({
            "topic": record.topic,
            "partition": record.partition,
            "offset": record.offset,
            "timestamp": record.timestamp_ms,
            "key": json_bytes(record.key),
            "value": json_bytes(record.value),
            "headers": [[key, json_bytes(value)] for key, value in record.headers],
        }) + "\n").encode()
    return (record.value or b"") + b"\n"


def consume(args: argparse.Namespace) -> int:
    """Print records of a topic (all partitions, or one) from the end, the beginning, or an offset;
    with ``--group``, the partitions the group gives this member, from the group's committed offsets."""
    if getattr(args, "group", None) is not None:
        return _consume_in_group(args)
    if getattr(args, "session_timeout_ms", None) is not None:
        raise CommandError("--session-timeout-ms needs --group")
    if args.offset is not None and args.partition is None:
        raise CommandError("--offset needs --partition")
    if args.from_beginning and args.offset is not None:
        raise CommandError("--from-beginning and --offset exclude each other")
    explicit = args.offset is not None and args.offset not in ("earliest", "latest")
    reset = "none" if explicit else ("earliest" if args.from_beginning else "latest")
    config = ConsumerConfig(auto_offset_reset=reset)  # type: ignore[arg-type]
    out = sys.stdout.buffer

    async def run() -> None:
        async with AsyncAdmin(args.bootstrap, ClientConfig()) as admin:
            topic = await admin.describe_topic(args.topic)
        count = len(topic.partitions)
        if args.partition is not None and not 0 <= args.partition < count:
            raise UnknownPartition(
                f"topic {args.topic!r} has {count} partitions, no partition {args.partition}"
            )
        partitions = [args.partition] if args.partition is not None else list(range(count))
        async with AsyncConsumer(args.bootstrap, config) as consumer:
            consumer.assign([(args.topic, p) for p in partitions])
            if args.from_beginning or args.offset == "earliest":
                await consumer.seek_to_beginning()
            elif args.offset is None or args.offset == "latest":
                await consumer.seek_to_end()
            else:
                consumer.seek((args.topic, args.partition), int(args.offset))
            printed = 0
            idle_since = time.monotonic()
            while args.max_messages is None or printed < args.max_messages:
                wait_ms = 1000
                if args.timeout_ms is not None:
                    wait_ms = int((idle_since + args.timeout_ms / 1000 - time.monotonic()) * 1000)
                    if wait_ms <= 0:
                        break
                wanted = 500 if args.max_messages is None else min(500, args.max_messages - printed)
                records = await consumer.poll(timeout_ms=min(wait_ms, 1000), max_records=wanted)
                if records:
                    idle_since = time.monotonic()
                    out.write(b"".join(_format_record(r, args.format) for r in records))
                    out.flush()
                    printed += len(records)

    asyncio.run(run())
    return 0


def _consume_in_group(args: argparse.Namespace) -> int:
    """``consume --group G``: join G, print records, and commit after printing them (at least once:
    a record printed and not yet committed when the command dies is printed again by the next
    member). Leaves the group on exit (``--max-messages``, ``--timeout-ms``, Ctrl-C, SIGTERM)."""
    if args.partition is not None or args.offset is not None:
        raise CommandError("--group assigns partitions: it excludes --partition and --offset")
    reset = "earliest" if args.from_beginning else "latest"
    config = ConsumerConfig(group_id=args.group, auto_offset_reset=reset,  # type: ignore[arg-type]
                            enable_auto_commit=False,
                            session_timeout_ms=args.session_timeout_ms or ConsumerConfig().session_timeout_ms)
    out = sys.stdout.buffer

    async def run() -> None:
        stopping = asyncio.Event()  # SIGTERM: stop after the records in hand, commit, leave the group
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopping.set)
        async with AsyncConsumer(args.bootstrap, config) as consumer:
            consumer.subscribe([args.topic])
            printed = 0
            idle_since = time.monotonic()
            while (args.max_messages is None or printed < args.max_messages) and not stopping.is_set():
                wait_ms = 1000
                if args.timeout_ms is not None:
                    wait_ms = int((idle_since + args.timeout_ms / 1000 - time.monotonic()) * 1000)
                    if wait_ms <= 0:
                        break
                wanted = 500 if args.max_messages is None else min(500, args.max_messages - printed)
                records = await consumer.poll(timeout_ms=min(wait_ms, 1000), max_records=wanted)
                if records:
                    idle_since = time.monotonic()
                    out.write(b"".join(_format_record(r, args.format) for r in records))
                    out.flush()
                    printed += len(records)
                    await consumer.commit()

    asyncio.run(run())
    return 0


def offset_argument(text: str) -> str:
    """``--offset``: a non-negative integer, ``earliest`` or ``latest``."""
    if text in ("earliest", "latest") or (text.isdigit()):
        return text
    raise argparse.ArgumentTypeError(f"must be an offset >= 0, 'earliest' or 'latest', got {text!r}")
