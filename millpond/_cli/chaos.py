"""``millpond chaos``: fault-injection tools.

::

    millpond chaos proxy [--host 127.0.0.1] [--port 8474] [--seed N]

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

__all__ = ["add_commands", "proxy"]


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be in 0..65535, got {value}")
    return value


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``chaos`` and its subcommands to the top-level ``commands``."""
    chaos = commands.add_parser("chaos", help="fault injection: a Toxiproxy-compatible proxy")
    chaos_commands = chaos.add_subparsers(dest="chaos_command", required=True, metavar="COMMAND")
    _add_proxy(chaos_commands)


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
