"""``resilience flags list|get|set|delete|history --etcd URL --prefix P``: flags in etcd, by hand.

Writes are validated, compare-and-swapped and audited exactly as ``EtcdSource.write`` does them.
The password comes from ``$RESILIENCE_ETCD_PASSWORD`` (never from the command line, where the
process list and shell history would show it). Exit status: 0 done, 1 not found or conflict,
2 bad input, 3 etcd unreachable or refusing.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from ..errors import ConfigError, FlagConflictError, FlagStoreError
from ._etcd import DEFAULT_ENDPOINT, DEFAULT_PREFIX, EtcdSource

__all__ = ["PASSWORD_ENV", "register"]

PASSWORD_ENV = "RESILIENCE_ETCD_PASSWORD"


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``flags`` (list, get, set, delete, history) to a subparsers object."""
    flags: argparse.ArgumentParser = subparsers.add_parser(
        "flags", help="read and change fleet-wide flags in etcd"
    )
    inner = flags.add_subparsers(dest="flags_command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--etcd",
        action="append",
        metavar="URL",
        help=f"an etcd endpoint (default {DEFAULT_ENDPOINT}; repeat for more)",
    )
    common.add_argument(
        "--prefix", default=DEFAULT_PREFIX, help=f"key prefix (default {DEFAULT_PREFIX})"
    )
    common.add_argument("--user", default=None, help=f"etcd user (password from ${PASSWORD_ENV})")
    common.add_argument("--ca-file", default=None)
    common.add_argument("--cert-file", default=None)
    common.add_argument("--key-file", default=None)
    common.add_argument("--timeout", type=float, default=5.0, metavar="SECONDS")
    inner.add_parser("list", parents=[common], help="every flag with its revision")
    get = inner.add_parser("get", parents=[common], help="one flag's spec and revision")
    get.add_argument("name")
    put = inner.add_parser("set", parents=[common], help="write a flag (validated, audited)")
    put.add_argument("name")
    put.add_argument("spec", help="the flag as JSON, e.g. '{\"on\": false}' or '{\"value\": 0.5}'")
    put.add_argument(
        "--revision", type=int, default=None, help="only if still at this revision (0: new)"
    )
    put.add_argument("--actor", default=None, help="who is writing (default user@host)")
    delete = inner.add_parser("delete", parents=[common], help="delete a flag (audited)")
    delete.add_argument("name")
    delete.add_argument("--revision", type=int, default=None)
    delete.add_argument("--actor", default=None)
    history = inner.add_parser("history", parents=[common], help="a flag's audit trail")
    history.add_argument("name")
    history.add_argument("--limit", type=int, default=20)
    for parser in (flags, *inner.choices.values()):
        parser.set_defaults(handler=run)
    return flags


def _source(args: argparse.Namespace) -> EtcdSource:
    password = os.environ.get(PASSWORD_ENV) if args.user else None
    if args.user and password is None:
        raise ConfigError("user", f"needs the password in ${PASSWORD_ENV}")
    return EtcdSource(
        args.etcd or [DEFAULT_ENDPOINT],
        args.prefix,
        username=args.user,
        password=password,
        ca_file=args.ca_file,
        cert_file=args.cert_file,
        key_file=args.key_file,
        timeout=args.timeout,
    )


def _print(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=True) + "\n")


def run(args: argparse.Namespace) -> int:
    """Run one ``flags`` sub-command; returns the exit status."""
    try:
        src = _source(args)
        return _dispatch(src, args)
    except ConfigError as exc:
        print(f"resilience flags: {exc}", file=sys.stderr)
        return 2
    except FlagConflictError as exc:
        print(f"resilience flags: {exc}", file=sys.stderr)
        return 1
    except FlagStoreError as exc:
        print(f"resilience flags: {exc}", file=sys.stderr)
        return 3


def _dispatch(src: EtcdSource, args: argparse.Namespace) -> int:
    command = args.flags_command
    if command == "list":
        _print(
            {name: {"spec": spec, "revision": rev} for name, (spec, rev) in src.read_all().items()}
        )
        return 0
    if command == "get":
        spec, revision = src.get(args.name)
        if revision == 0:
            print(f"resilience flags: no flag {args.name!r} under {args.prefix}", file=sys.stderr)
            return 1
        _print({"name": args.name, "spec": spec, "revision": revision})
        return 0
    if command == "set":
        try:
            spec = json.loads(args.spec)
        except (ValueError, RecursionError) as exc:
            raise ConfigError("spec", f"must be a JSON object: {exc}") from exc
        result = src.write(args.name, spec, actor=args.actor, revision=args.revision)
        _print(result.to_dict())
        return 0
    if command == "delete":
        gone = src.delete(args.name, actor=args.actor, revision=args.revision)
        if gone is None:
            print(f"resilience flags: no flag {args.name!r} under {args.prefix}", file=sys.stderr)
            return 1
        _print(gone.to_dict())
        return 0
    _print([entry.to_dict() for entry in src.history(args.name, args.limit)])
    return 0
