"""``millpond chaos``: fault-injection tools.

::

    millpond chaos proxy [--host 127.0.0.1] [--port 8474] [--seed N]
    millpond chaos run [--workload log] [--nemesis kill-leader,partition] [--nodes 3]
                       [--duration 60] [--seed 7] [--out runs/] [--test-count N] [--opt k=v]...
                       [--proxy own|external|URL] [--faults-at-once N] [--list]

``chaos run`` runs chaos tests (see :mod:`millpond.chaos.runner`): with
``--test-count N``, seeds ``seed``, ``seed+1``, ... until the first run that is
not valid. Exit code of the last run: 0 valid, 1 safety violation, 2 liveness
failure, 3 unknown or harness error. ``--list`` prints workloads and faults.

``chaos proxy`` serves Toxiproxy's HTTP API (a TCP fault proxy, see
:mod:`millpond.chaos.proxy`) until SIGINT or SIGTERM, then closes every proxy
and exits 0. Its one line on stdout, once it listens, is
``toxiproxy API listening on http://HOST:PORT`` (the real port when
``--port 0``), so that a parent process can wait for it and read the port.
"""

from __future__ import annotations

import argparse
import asyncio
import signal

__all__ = ["add_commands", "proxy", "run"]


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be in 0..65535, got {value}")
    return value


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``chaos`` and its subcommands to the top-level ``commands``."""
    chaos = commands.add_parser("chaos", help="chaos tests, and a Toxiproxy-compatible fault proxy")
    chaos_commands = chaos.add_subparsers(dest="chaos_command", required=True, metavar="COMMAND")
    _add_proxy(chaos_commands)
    _add_run(chaos_commands)


def _positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value:g}")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _option(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected k=v, got {text!r}")
    return key, value


def _add_run(chaos_commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = chaos_commands.add_parser("run", help="run chaos tests: workload + nemesis, then check")
    parser.add_argument("--workload", default="log", help="workload (see --list; default log)")
    parser.add_argument("--nemesis", default="kill-leader",
                        help="comma-separated faults: names, shell patterns (kill-*) or families "
                             "(partition = partition-*); default kill-leader")
    parser.add_argument("--nodes", type=_positive_int, default=3, help="cluster size (default 3)")
    parser.add_argument("--duration", type=_positive_float, default=60.0,
                        help="seconds of workload under faults (default 60)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the fault plan and workload (default 0)")
    parser.add_argument("--out", default="runs", help="directory for run directories (default runs/)")
    parser.add_argument("--test-count", type=_positive_int, default=1,
                        help="run this many seeds (seed, seed+1, ...), stopping at the first failure")
    parser.add_argument("--opt", type=_option, action="append", default=[], metavar="K=V",
                        help="workload option, repeatable (e.g. rate=200)")
    parser.add_argument("--proxy", default="own",
                        help="own (built-in proxy), external (toxiproxy-server on PATH) or an API URL")
    parser.add_argument("--faults-at-once", type=_positive_int, default=1,
                        help="distinct faults active together in each fault period (default 1)")
    parser.add_argument("--recovery", type=_positive_float, default=60.0,
                        help="seconds allowed for recovery and the final reads (default 60)")
    parser.add_argument("--list", action="store_true", help="print workloads and faults, then exit")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """``millpond chaos run``: run tests, print one verdict line per run; the last run's exit code."""
    from pathlib import Path

    from millpond.chaos.nemesis.registry import describe_faults
    from millpond.chaos.runner import RunConfig
    from millpond.chaos.runner import run as run_chaos
    from millpond.chaos.workloads.registry import describe_workloads

    if args.list:
        print("workloads:")
        for name, text in describe_workloads().items():
            print(f"  {name:<28} {text}")
        print("faults (families: kill, pause, restart, partition, packet; or shell patterns):")
        for name, text in describe_faults().items():
            print(f"  {name:<28} {text}")
        return 0
    code = 3
    for offset in range(args.test_count):
        config = RunConfig(
            workload=args.workload, nemesis=tuple(args.nemesis.split(",")), nodes=args.nodes,
            duration_s=args.duration, seed=args.seed + offset, out=Path(args.out),
            options=dict(args.opt), proxy=args.proxy, recovery_s=args.recovery,
            faults_at_once=args.faults_at_once)
        try:
            outcome = run_chaos(config)
        except (KeyError, ValueError) as exc:
            from millpond._cli.common import CommandError

            raise CommandError(str(exc).strip("'\"")) from exc
        verdict = (outcome.result.summary() if outcome.result is not None
                   else f"harness error: {outcome.error}")
        print(f"seed {config.seed}: exit {outcome.exit_code}: {verdict}  ({outcome.directory})", flush=True)
        code = outcome.exit_code
        if code != 0:
            break
    return code


def _add_proxy(chaos_commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = chaos_commands.add_parser("proxy", help="serve Toxiproxy's HTTP API: a TCP fault proxy")
    parser.add_argument("--host", default="127.0.0.1", help="API address (default 127.0.0.1)")
    parser.add_argument("--port", type=_port, default=8474, help="API port, 0 for a free one (default 8474)")
    parser.add_argument("--seed", type=int, default=None,
                        help="seed of every random choice (toxicity, jitter, slices); default: random")
    parser.set_defaults(run=proxy)


def proxy(args: argparse.Namespace) -> int:
    """``millpond chaos proxy``: serve until SIGINT/SIGTERM; 0 on a clean stop."""
    return asyncio.run(_serve_proxy(args.host, args.port, args.seed))


async def _serve_proxy(host: str, port: int, seed: int | None) -> int:
    from millpond.chaos.proxy import ProxyServer  # imported only here: other commands need not load it
    from millpond.chaos.proxy.addresses import format_address

    server = ProxyServer(host, port, seed=seed)
    try:
        bound_host, bound_port = await server.start()
        print(f"toxiproxy API listening on http://{format_address(bound_host, bound_port)}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        stopped = asyncio.ensure_future(stop.wait())
        closed = asyncio.ensure_future(server.wait_closed())
        try:
            await asyncio.wait([stopped, closed], return_when=asyncio.FIRST_COMPLETED)
        finally:
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(signum)
            stopped.cancel()
            closed.cancel()
            await asyncio.gather(stopped, closed, return_exceptions=True)
    finally:
        await server.close()
    if server.failure is not None:
        raise server.failure  # a bug: the traceback is wanted
    return 0
