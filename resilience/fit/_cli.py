"""The ``resilience fit`` subcommands: ``run`` and ``discover``."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from ..errors import ConfigError, ResilienceError
from ._carrier import DEPENDENCIES_PATH
from ._discover import DEFAULT_REQUESTS_PER_DEPENDENCY, discover
from ._recipe import Expectation, Recipe
from ._report import LeakCheck
from ._runner import (
    DEFAULT_BASELINE_REQUESTS,
    DEFAULT_CONCURRENCY,
    DEFAULT_REQUEST_TIMEOUT,
    DEFAULT_REQUESTS,
    DEFAULT_TAGGED_SHARE,
    Progress,
    run,
)
from ._tags import DEFAULT_KEY_ID
from ._toxiproxy import ToxiproxyClient

__all__ = ["register_fit"]

SECRET_ENV = "RESILIENCE_FIT_SECRET"
KEY_ID_ENV = "RESILIENCE_FIT_KEY_ID"
TOXIPROXY_ENV = "RESILIENCE_TOXIPROXY_URL"
EXIT_PASSED, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def register_fit(subparsers: Any) -> None:
    """Add ``fit run`` and ``fit discover`` to the top-level parser's subcommands."""
    fit = subparsers.add_parser("fit", help="failure injection testing")
    commands = fit.add_subparsers(dest="fit_command", required=True)

    def common(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--target", required=True, help="URL of the endpoint to test")
        parser.add_argument("--secret", help=f"tag signing secret (default: ${SECRET_ENV})")
        parser.add_argument(
            "--key-id",
            help=f"key id of the secret (default: ${KEY_ID_ENV}, else {DEFAULT_KEY_ID!r})",
        )
        parser.add_argument(
            "--timeout",
            type=float,
            default=DEFAULT_REQUEST_TIMEOUT,
            help="seconds one request may take (default: %(default)s)",
        )

    p = commands.add_parser(
        "run",
        help="run a recipe against an endpoint",
        description="Send a baseline of untagged requests, then tagged requests under the "
        "recipe with untagged control requests between them; check the recipe's expectations, "
        "that the service acknowledged the tag and injected every fault, and that control "
        "traffic stayed as good as the baseline. Exit 0 passed, 1 failed, 2 invalid run or "
        "configuration error, 130 interrupted.",
    )
    p.add_argument("recipe", help="recipe file (YAML or JSON)")
    common(p)
    p.add_argument(
        "--requests",
        type=int,
        default=DEFAULT_REQUESTS,
        help="tagged requests to send (default: %(default)s)",
    )
    p.add_argument(
        "--tagged-share",
        type=float,
        default=DEFAULT_TAGGED_SHARE,
        help="share of the runner's requests that are tagged; the rest are untagged control "
        "requests (default: %(default)s)",
    )
    p.add_argument(
        "--baseline",
        type=int,
        default=DEFAULT_BASELINE_REQUESTS,
        help="untagged requests measured before the experiment (default: %(default)s)",
    )
    leak = LeakCheck()
    p.add_argument(
        "--leak-error-ratio",
        type=float,
        default=leak.error_ratio,
        help="control error ratio allowed above the baseline's (default: %(default)s)",
    )
    p.add_argument(
        "--leak-p99-factor",
        type=float,
        default=leak.p99_factor,
        help="control p99 allowed, as a multiple of the baseline's (default: %(default)s)",
    )
    p.add_argument(
        "--leak-p99-slack",
        type=float,
        default=leak.p99_slack_seconds,
        help="seconds of control p99 above the baseline's always allowed (default: %(default)s)",
    )
    p.add_argument(
        "--concurrency",
        type=int,
        default=DEFAULT_CONCURRENCY,
        help="requests in flight at once (default: %(default)s)",
    )
    p.add_argument(
        "--by-id",
        action="store_true",
        help="tag with the recipe's name only; services must know it (default: off)",
    )
    p.add_argument(
        "--dependencies-url",
        action="append",
        help="a service's dependency route, checked before the run; repeat for services "
        f"down the chain (default: the target's {DEPENDENCIES_PATH})",
    )
    p.add_argument(
        "--no-dependency-check",
        action="store_true",
        help="do not check the recipe's faults against the dependency route (default: off)",
    )
    p.add_argument(
        "--allow-global-faults",
        action="store_true",
        help="run recipes with Toxiproxy toxics, which slow every request through their proxy, "
        "untagged traffic included (staging only; default: off)",
    )
    p.add_argument("--toxiproxy", help=f"Toxiproxy API URL (default: ${TOXIPROXY_ENV})")
    p.add_argument("--report-json", type=Path, help="write the JSON report here (default: none)")
    p.add_argument("--junit", type=Path, help="write a JUnit XML report here (default: none)")
    p.add_argument("--quiet", action="store_true", help="no progress line (default: off)")
    p.set_defaults(handler=_run)

    d = commands.add_parser("discover", help="find the dependencies an endpoint cannot lose")
    common(d)
    d.add_argument(
        "--dependencies-url",
        help=f"the service's dependency route (default: the target's {DEPENDENCIES_PATH})",
    )
    d.add_argument(
        "--expect-status",
        type=int,
        action="append",
        help="accepted status, repeat for more (default: 200)",
    )
    d.add_argument(
        "--requests-per-dependency",
        type=int,
        default=DEFAULT_REQUESTS_PER_DEPENDENCY,
        help="tagged requests per dependency (default: %(default)s)",
    )
    d.add_argument(
        "--write-recipe", type=Path, help="write a critical-path recipe here (default: none)"
    )
    d.set_defaults(handler=_discover)


def _secret(args: argparse.Namespace) -> tuple[str, str]:
    secret = args.secret or os.environ.get(SECRET_ENV)
    if not secret:
        raise ConfigError("secret", f"give --secret or set {SECRET_ENV}")
    return secret, args.key_id or os.environ.get(KEY_ID_ENV) or DEFAULT_KEY_ID


class _ProgressLine:
    """One progress line, redrawn at most every 0.2 s (a new line each time when not a tty)."""

    def __init__(self, stream: TextIO, name: str) -> None:
        self.stream = stream
        self.name = name
        self.tty = stream.isatty()
        self.last = 0.0

    def __call__(self, p: Progress) -> None:
        now = time.monotonic()
        done = p.experiment >= p.planned
        if not done and now - self.last < (0.2 if self.tty else 1.0):
            return
        self.last = now
        text = (
            f"fit {self.name}: {p.experiment}/{p.planned} tagged ({p.experiment_failed} broke)"
            f"  {p.control} control ({p.control_failed} broke)"
        )
        self.stream.write(("\r" + text) if self.tty else text + "\n")
        if self.tty and done:
            self.stream.write("\n")
        self.stream.flush()


def _run(args: argparse.Namespace) -> int:
    recipe = Recipe.load(args.recipe)
    secret, key_id = _secret(args)
    toxiproxy_url = args.toxiproxy or os.environ.get(TOXIPROXY_ENV)
    toxiproxy = ToxiproxyClient(toxiproxy_url) if toxiproxy_url else None
    progress = None if args.quiet else _ProgressLine(sys.stderr, recipe.name)
    leak = LeakCheck(
        error_ratio=args.leak_error_ratio,
        p99_factor=args.leak_p99_factor,
        p99_slack_seconds=args.leak_p99_slack,
    )
    report = asyncio.run(
        run(
            recipe,
            args.target,
            secret=secret,
            key_id=key_id,
            requests=args.requests,
            concurrency=args.concurrency,
            tagged_share=args.tagged_share,
            baseline_requests=args.baseline,
            leak=leak,
            request_timeout=args.timeout,
            by_id=args.by_id,
            toxiproxy=toxiproxy,
            allow_global_faults=args.allow_global_faults,
            dependencies_urls=args.dependencies_url,
            check_dependency_list=not args.no_dependency_check,
            progress=progress,
        )
    )
    print(report.to_text())
    if args.report_json:
        args.report_json.write_text(report.to_json() + "\n", encoding="utf-8")
    if args.junit:
        args.junit.write_text(report.to_junit() + "\n", encoding="utf-8")
    if report.invalid:
        return EXIT_USAGE
    return EXIT_PASSED if report.passed else EXIT_FAILED


def _discover(args: argparse.Namespace) -> int:
    secret, key_id = _secret(args)
    expect = Expectation(status=tuple(args.expect_status or (200,)))
    found = asyncio.run(
        discover(
            args.target,
            secret=secret,
            key_id=key_id,
            dependencies_url=args.dependencies_url,
            expect=expect,
            requests_per_dependency=args.requests_per_dependency,
            request_timeout=args.timeout,
        )
    )
    print(found.to_text())
    if args.write_recipe:
        data = found.recipe().to_dict()
        if args.write_recipe.suffix == ".json":
            text = json.dumps(data, indent=2)
        else:
            import yaml

            text = yaml.safe_dump(data, sort_keys=False)
        args.write_recipe.write_text(text, encoding="utf-8")
        print(f"wrote {args.write_recipe}")
    return EXIT_PASSED


def handle(args: argparse.Namespace) -> int:
    """Run a parsed ``fit`` command; configuration and server errors exit 2 with a message."""
    try:
        return int(args.handler(args))
    except KeyboardInterrupt:
        print("interrupted: every injected toxic was removed", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (ResilienceError, OSError) as exc:
        print(f"resilience fit: {exc}", file=sys.stderr)
        return EXIT_USAGE
