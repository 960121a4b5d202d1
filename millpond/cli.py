"""The ``millpond`` command: a local dev cluster, cluster status, topics, produce, consume, and the node.

::

    millpond dev [--nodes 3] [--data-dir .millpond] [--port 9091] [--detach]
    millpond dev stop [--data-dir .millpond]
    millpond cluster status [--wait SECONDS] [--json]
    millpond topic create NAME --partitions N --replication R [--config k=v]...
    millpond topic list | describe NAME [--json] | alter NAME --partitions N | delete NAME
    millpond produce TOPIC [--key-separator SEP] [--acks 0|1|all] [--header k=v]... [--print-acks]
    millpond consume TOPIC [--from-beginning | --partition P --offset O] [--max-messages N]
                           [--timeout-ms T] [--format text|json]
                           [--group G [--session-timeout-ms MS]]
    millpond group list | describe GROUP [--json] | delete GROUP
    millpond group reset-offsets GROUP --topic T (--to-earliest | --to-latest | --to-datetime ISO
                                 | --shift-by N | --to-offset N) [--execute]
    millpond node --node-id N --listen HOST:PORT --data-dir DIR --peers ID=HOST:PORT,... [...]

Every client command takes ``--bootstrap HOST:PORT[,...]`` (default
``$MILLPOND_BOOTSTRAP``, else ``127.0.0.1:9091``). A failure prints one line,
``millpond: <what went wrong>``, to stderr and exits 1 (2 for bad usage,
130 when interrupted); no traceback for operating errors. ``millpond node``
hands its arguments to :func:`millpond.node.main.main`.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from millpond import __version__
from millpond._cli import admin_commands, chaos, dev, groups, records
from millpond._cli.common import CommandError, default_bootstrap, error_line, fail
from millpond.client import parse_bootstrap
from millpond.errors import MillpondError

Command = Callable[[argparse.Namespace], int]


def _bootstrap(text: str) -> str:
    try:
        return ",".join(parse_bootstrap(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every command (``millpond node`` only appears in the help)."""
    client = argparse.ArgumentParser(add_help=False)
    client.add_argument("--bootstrap", type=_bootstrap, default=None, metavar="HOST:PORT[,...]",
                        help="nodes to ask first (default: $MILLPOND_BOOTSTRAP, else 127.0.0.1:9091)")

    parser = argparse.ArgumentParser(prog="millpond", description="millpond: a distributed message broker.")
    parser.add_argument("--version", action="version", version=f"millpond {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    dev_parser = commands.add_parser("dev", help="run a local cluster (foreground, or --detach)")
    dev_parser.add_argument("action", nargs="?", choices=["stop"], help="stop a detached cluster")
    dev_parser.add_argument("--nodes", type=_positive, default=3, help="how many nodes (default 3)")
    dev_parser.add_argument("--data-dir", default=".millpond",
                            help="data, logs and state (default .millpond)")
    dev_parser.add_argument("--port", type=_positive, default=9091,
                            help="port of node 1; the others follow (default 9091)")
    dev_parser.add_argument("--detach", action="store_true",
                            help="leave the nodes running in the background")
    dev_parser.set_defaults(run=dev.dev)

    cluster = commands.add_parser("cluster", help="cluster status")
    cluster_commands = cluster.add_subparsers(dest="cluster_command", required=True, metavar="COMMAND")
    status = cluster_commands.add_parser("status", parents=[client],
                                         help="nodes, controller, under-replicated partitions")
    status.add_argument("--wait", type=float, metavar="SECONDS",
                        help="wait until every node is alive and every partition has a leader")
    status.add_argument("--json", action="store_true", help="print one JSON object")
    status.set_defaults(run=admin_commands.cluster_status)

    topic = commands.add_parser("topic", help="create, list, describe, alter or delete topics")
    topic_commands = topic.add_subparsers(dest="topic_command", required=True, metavar="COMMAND")
    create = topic_commands.add_parser("create", parents=[client], help="create a topic")
    create.add_argument("name")
    create.add_argument("--partitions", type=_non_negative, required=True, metavar="N")
    create.add_argument("--replication", type=_non_negative, required=True, metavar="R")
    create.add_argument("--config", action="append", default=[], metavar="KEY=VALUE",
                        help="a topic setting (repeatable)")
    create.set_defaults(run=admin_commands.topic_create)
    listing = topic_commands.add_parser("list", parents=[client], help="topic names")
    listing.set_defaults(run=admin_commands.topic_list)
    describe = topic_commands.add_parser("describe", parents=[client],
                                         help="per partition: leader, replicas, ISR, offsets")
    describe.add_argument("name")
    describe.add_argument("--json", action="store_true", help="print one JSON object")
    describe.set_defaults(run=admin_commands.topic_describe)
    alter = topic_commands.add_parser("alter", parents=[client], help="grow a topic's partition count")
    alter.add_argument("name")
    alter.add_argument("--partitions", type=_non_negative, required=True, metavar="N")
    alter.set_defaults(run=admin_commands.topic_alter)
    delete = topic_commands.add_parser("delete", parents=[client], help="delete a topic and its data")
    delete.add_argument("name")
    delete.set_defaults(run=admin_commands.topic_delete)

    produce = commands.add_parser("produce", parents=[client], help="send stdin lines as records")
    produce.add_argument("topic")
    produce.add_argument("--key-separator", metavar="SEP",
                         help="split each line at the first SEP into key and value (no SEP: no key)")
    produce.add_argument("--acks", choices=["0", "1", "all"], default="all", help="default: all")
    produce.add_argument("--header", action="append", default=[], metavar="KEY=VALUE",
                         help="a header on every record (repeatable)")
    produce.add_argument("--print-acks", action="store_true",
                         help="print partition<TAB>offset<TAB>key per acknowledged record")
    produce.set_defaults(run=records.produce)

    consume = commands.add_parser("consume", parents=[client], help="print records of a topic")
    consume.add_argument("topic")
    consume.add_argument("--from-beginning", action="store_true", help="start at each partition's log start")
    consume.add_argument("--partition", type=_non_negative, metavar="P", help="only this partition")
    consume.add_argument("--offset", type=records.offset_argument, metavar="O",
                         help="start offset in --partition (or earliest, latest); default: latest")
    consume.add_argument("--max-messages", type=_positive, metavar="N", help="stop after N records")
    consume.add_argument("--timeout-ms", type=_non_negative, metavar="T",
                         help="stop after T ms without a record")
    consume.add_argument("--format", choices=["text", "json"], default="text",
                         help="text: the value; json: one object per line")
    consume.add_argument("--group", metavar="G",
                         help="consume as a member of consumer group G (its partitions, from its committed "
                              "offsets; commits after printing)")
    consume.add_argument("--session-timeout-ms", type=_positive, metavar="MS",
                         help="with --group: the member's session timeout (default 45000)")
    consume.set_defaults(run=records.consume)

    groups.add_commands(commands, client)

    chaos.add_commands(commands)
    commands.add_parser("node", add_help=False, help="run a broker node (see millpond node --help)")
    return parser


def _run_node(argv: list[str]) -> int:
    from millpond.node.main import main as node_main  # imported only here: the node is heavy

    return node_main(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; return its exit code (0 success, 1 failure, 2 bad usage, 130 interrupted)."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == ["node"]:
        return _run_node(arguments[1:])
    args = build_parser().parse_args(arguments)
    if getattr(args, "bootstrap", "") is None:
        try:
            args.bootstrap = _bootstrap(default_bootstrap())
        except argparse.ArgumentTypeError as exc:
            return fail(f"MILLPOND_BOOTSTRAP: {exc}")
    run: Command = args.run
    try:
        return run(args)
    except CommandError as exc:
        return fail(str(exc))
    except BrokenPipeError:
        return _broken_pipe()
    except (MillpondError, OSError, ValueError) as exc:
        return fail(error_line(exc, getattr(args, "bootstrap", None)))
    except KeyboardInterrupt:
        return 130


def _broken_pipe() -> int:
    """stdout's reader went away (``| head``): stop quietly, as Unix tools do."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    return 0


if __name__ == "__main__":
    sys.exit(main())
