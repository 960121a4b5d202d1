"""``millpond node``: run one broker node in the foreground."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from millpond.node.config import ConfigError, add_arguments, from_arguments
from millpond.node.node import serve


def main(argv: list[str] | None = None) -> int:
    """Parse flags, run the node until SIGTERM/SIGINT; 0 on a clean stop, 2 on bad config."""
    parser = argparse.ArgumentParser(prog="millpond node", description=__doc__)
    add_arguments(parser)
    parser.add_argument("--log-level", default="WARNING",
                        choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = from_arguments(args)
    except ConfigError as exc:
        print(f"millpond node: {exc}", file=sys.stderr)
        return 2
    asyncio.run(serve(config))
    return 0


if __name__ == "__main__":
    sys.exit(main())
