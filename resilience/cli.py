"""The ``resilience`` console script: ``fit run``, ``fit discover``, ``observe alerts|grafana``,
``flags list|get|set|delete|history``.

Each part adds its subcommands with one ``register`` function; every leaf parser stores a
``handler`` default that takes the parsed arguments and returns the exit status.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence

from .fit._cli import handle as handle_fit
from .fit._cli import register_fit
from .flags._cli import register as register_flags
from .web._cli import register as register_observe

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="resilience",
        description="resilience: failure injection runs and generated observability.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True)
    register_fit(subparsers)
    register_observe(subparsers)
    register_flags(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run the command; returns the exit status."""
    args = build_parser().parse_args(argv)
    if args.command == "fit":
        return handle_fit(args)  # maps configuration errors and Ctrl-C to exit codes
    handler: Callable[[argparse.Namespace], int] = args.handler
    return int(handler(args))


if __name__ == "__main__":
    raise SystemExit(main())
