"""``millpond group list | describe | reset-offsets | delete``: consumer-group administration.

::

    millpond group list
    millpond group describe GROUP [--json]
    millpond group reset-offsets GROUP --topic T [--topic T2 ...]
        (--to-earliest | --to-latest | --to-datetime ISO-8601 | --shift-by N | --to-offset N) [--execute]
    millpond group delete GROUP

``reset-offsets`` is a dry run unless ``--execute`` is given: it prints every
partition's current and new committed offset. The cluster refuses a reset (and
a delete) while the group has members (``group not empty``): stop its
consumers first. ``--to-datetime`` takes an ISO-8601 time
(``2024-05-01T12:00:00Z``; without a zone it is local time).
"""

from __future__ import annotations

import argparse
import asyncio
import json
from dataclasses import asdict
from datetime import datetime
from typing import Any

from millpond._cli.common import print_table
from millpond.client import AsyncAdmin, ClientConfig, GroupDescription, GroupListing, OffsetChange

__all__ = ["add_commands", "group_delete", "group_describe", "group_list", "group_reset_offsets"]

#: How long a group command keeps retrying an unreachable cluster before it reports it.
_REQUEST_TIMEOUT_MS = 5000


def _admin(args: argparse.Namespace) -> AsyncAdmin:
    return AsyncAdmin(args.bootstrap, ClientConfig(request_timeout_ms=_REQUEST_TIMEOUT_MS))


def _datetime_ms(text: str) -> int:
    """``--to-datetime``: ISO-8601 to ms since the Unix epoch (a time without zone is local time)."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an ISO-8601 time such as 2024-05-01T12:00:00Z, "
                                         f"got {text!r}") from None
    if moment.tzinfo is None:
        moment = moment.astimezone()
    milliseconds = int(moment.timestamp() * 1000)
    if milliseconds < 0:
        raise argparse.ArgumentTypeError(f"must not be before 1970, got {text!r}")
    return milliseconds


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser],
                 client: argparse.ArgumentParser) -> None:
    """Add ``group`` and its subcommands to the top-level ``commands`` (``client``: the parser of
    --bootstrap, their parent)."""
    group = commands.add_parser("group", help="list, describe, reset offsets of, or delete consumer groups")
    group_commands = group.add_subparsers(dest="group_command", required=True, metavar="COMMAND")
    listing = group_commands.add_parser("list", parents=[client], help="every group: state, epoch, members")
    listing.set_defaults(run=group_list)

    describe = group_commands.add_parser(
        "describe", parents=[client],
        help="state, members and assignments; per partition the committed offset, high watermark and lag")
    describe.add_argument("group")
    describe.add_argument("--json", action="store_true", help="print one JSON object")
    describe.set_defaults(run=group_describe)

    reset = group_commands.add_parser(
        "reset-offsets", parents=[client],
        help="move a group's committed offsets (dry run unless --execute; the group must have no members)")
    reset.add_argument("group")
    reset.add_argument("--topic", action="append", required=True, metavar="T",
                       help="a topic whose partitions to reset (repeatable)")
    target = reset.add_mutually_exclusive_group(required=True)
    target.add_argument("--to-earliest", action="store_true", help="to each partition's log start")
    target.add_argument("--to-latest", action="store_true", help="to each high watermark (skip everything)")
    target.add_argument("--to-datetime", type=_datetime_ms, metavar="ISO-8601",
                        help="to the first record at or after this time")
    target.add_argument("--shift-by", type=int, metavar="N",
                        help="move the committed offsets by N (may be < 0)")
    target.add_argument("--to-offset", type=_non_negative, metavar="N", help="to offset N")
    reset.add_argument("--execute", action="store_true", help="commit the new offsets (default: dry run)")
    reset.set_defaults(run=group_reset_offsets)

    delete = group_commands.add_parser("delete", parents=[client],
                                       help="delete an empty group and its committed offsets")
    delete.add_argument("group")
    delete.set_defaults(run=group_delete)


def group_list(args: argparse.Namespace) -> int:
    async def listing() -> list[GroupListing]:
        async with _admin(args) as admin:
            return await admin.list_groups()

    groups = asyncio.run(listing())
    print_table(["group", "state", "epoch", "members"],
                [[g.group_id, g.state, g.group_epoch, g.members] for g in groups])
    return 0


def _partitions_text(partitions: tuple[Any, ...]) -> str:
    by_topic: dict[str, list[int]] = {}
    for topic, partition in partitions:
        by_topic.setdefault(topic, []).append(partition)
    text = " ".join(f"{topic}:{','.join(map(str, numbers))}" for topic, numbers in sorted(by_topic.items()))
    return text or "-"


def _group_json(group: GroupDescription) -> dict[str, Any]:
    def tps(items: tuple[Any, ...]) -> list[list[Any]]:
        return [[topic, partition] for topic, partition in items]

    return {
        "group_id": group.group_id, "state": group.state, "group_epoch": group.group_epoch,
        "assignment_epoch": group.assignment_epoch, "assignor": group.assignor,
        "members": [{**asdict(m), "subscribed_topic_names": list(m.subscribed_topic_names),
                     "assigned": tps(m.assigned), "pending_revocation": tps(m.pending_revocation),
                     "target": tps(m.target)} for m in group.members],
        "partitions": [asdict(p) for p in group.partitions],
    }


def _subscription_text(names: tuple[str, ...], regex: str) -> str:
    return ",".join(names) + (f" /{regex}/" if regex else "")


def _or_dash(value: int) -> str:
    return "-" if value < 0 else str(value)


def group_describe(args: argparse.Namespace) -> int:
    async def describe() -> GroupDescription:
        async with _admin(args) as admin:
            return await admin.describe_group(args.group)

    group = asyncio.run(describe())
    if args.json:
        print(json.dumps(_group_json(group)))
        return 0
    print(f"group {group.group_id}  state {group.state}  epoch {group.group_epoch}  "
          f"assignment-epoch {group.assignment_epoch}  assignor {group.assignor or '-'}  "
          f"members {len(group.members)}")
    if group.members:
        print_table(
            ["member", "instance", "epoch", "assigned", "releasing", "subscription"],
            [[m.member_id, m.instance_id or "-", m.member_epoch, _partitions_text(m.assigned),
              _partitions_text(m.pending_revocation), _subscription_text(m.subscribed_topic_names,
                                                                         m.subscribed_topic_regex)]
             for m in group.members])
    print_table(
        ["topic", "partition", "committed", "high-watermark", "lag", "member"],
        [[p.topic, p.partition, _or_dash(p.committed_offset), _or_dash(p.high_watermark), _or_dash(p.lag),
          p.member_id or "-"] for p in group.partitions])
    return 0


def group_reset_offsets(args: argparse.Namespace) -> int:
    target: dict[str, Any] = {}
    if args.to_earliest:
        target["to_earliest"] = True
    elif args.to_latest:
        target["to_latest"] = True
    elif args.to_datetime is not None:
        target["to_datetime_ms"] = args.to_datetime
    elif args.shift_by is not None:
        target["shift_by"] = args.shift_by
    else:
        target["to_offset"] = args.to_offset

    async def reset() -> list[OffsetChange]:
        async with _admin(args) as admin:
            return await admin.reset_offsets(args.group, list(dict.fromkeys(args.topic)),
                                             dry_run=not args.execute, **target)

    changes = asyncio.run(reset())
    print_table(["topic", "partition", "committed", "new"],
                [[c.topic, c.partition, _or_dash(c.previous), c.offset] for c in changes])
    if args.execute:
        print(f"committed new offsets of {len(changes)} partitions for group {args.group}")
    else:
        print("dry run: nothing committed (add --execute to commit these offsets)")
    return 0


def group_delete(args: argparse.Namespace) -> int:
    async def delete() -> None:
        async with _admin(args) as admin:
            await admin.delete_group(args.group)

    asyncio.run(delete())
    print(f"deleted group {args.group}")
    return 0
