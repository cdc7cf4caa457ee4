"""``resilience observe alerts|grafana APP_MODULE``: print generated rules or a dashboard.

``resilience.cli`` calls :func:`register` with its subparsers; the handler is stored as the
parser's ``handler`` default and returns the exit code.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from typing import Any

from ..circuit import registry as default_registry
from ..errors import ConfigError
from ._observe import (
    DEFAULT_DASHBOARD_UID,
    DEFAULT_GRAFANA_URL,
    ObserveConfig,
    alert_rules,
    grafana_dashboard,
)

__all__ = ["register"]


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``observe`` (with ``alerts`` and ``grafana``) to a subparsers object."""
    observe: argparse.ArgumentParser = subparsers.add_parser(
        "observe", help="generate Prometheus alert rules or a Grafana dashboard"
    )
    inner = observe.add_subparsers(dest="observe_command", required=True)
    for name, what in (
        ("alerts", "Prometheus alert rules (YAML, or JSON with --json)"),
        ("grafana", "a Grafana dashboard (JSON)"),
    ):
        p = inner.add_parser(
            name, help=what, description=f"Print {what} for APP_MODULE's dependencies."
        )
        p.add_argument(
            "app_module",
            metavar="APP_MODULE",
            help="module to import; importing it registers its dependencies",
        )
        p.add_argument(
            "--grafana-url", default=DEFAULT_GRAFANA_URL, help="base URL of Grafana (panel links)"
        )
        p.add_argument(
            "--uid",
            default=DEFAULT_DASHBOARD_UID,
            help="the dashboard's uid: at most 40 characters of a-z A-Z 0-9 - _",
        )
        p.add_argument("--title", default="resilience", help="the dashboard's title")
        p.add_argument(
            "--selector", default="", help='label matchers added to every query, e.g. job="api"'
        )
        p.add_argument(
            "--admin-url", default=None, help="the admin dashboard page, linked from each rule"
        )
        p.add_argument(
            "--runbook-url",
            default=None,
            help="runbook_url annotation of every rule; {alert} becomes the alert's name",
        )
        p.add_argument("--circuit-open-for", type=float, default=None, metavar="SECONDS")
        p.add_argument(
            "--error-rate", type=float, default=None, help="failure rate that alerts (fraction)"
        )
        p.add_argument("--json", action="store_true", help="alerts as JSON instead of YAML")
        p.add_argument("-o", "--output", default="-", help="file to write (default: stdout)")
        p.set_defaults(handler=_run, observe_what=name)
    return observe


# ObserveConfig field -> the command-line option that sets it, for error messages.
_OPTIONS = {
    "grafana_url": "--grafana-url",
    "dashboard_uid": "--uid",
    "title": "--title",
    "selector": "--selector",
    "admin_url": "--admin-url",
    "runbook_url": "--runbook-url",
    "error_rate": "--error-rate",
    "circuit_open_for": "--circuit-open-for",
}


def _run(args: argparse.Namespace) -> int:
    # Options are checked before the module is imported: a typo costs no service start-up.
    fields: dict[str, Any] = {
        "grafana_url": args.grafana_url,
        "dashboard_uid": args.uid,
        "title": args.title,
        "selector": args.selector,
        "admin_url": args.admin_url,
        "runbook_url": args.runbook_url,
        "error_rate": args.error_rate,
    }
    if args.circuit_open_for is not None:
        fields["circuit_open_for"] = args.circuit_open_for
    try:
        config = ObserveConfig(**fields)
    except ConfigError as exc:
        option = _OPTIONS.get(exc.field, exc.field)
        print(f"resilience observe: {option}: {exc.message}", file=sys.stderr)
        return 2
    sys.path.insert(0, "")  # the module is usually the service in the current directory
    try:
        importlib.import_module(args.app_module)
    except ImportError as exc:
        print(f"resilience observe: cannot import {args.app_module}: {exc}", file=sys.stderr)
        return 2
    reg = default_registry()
    if args.observe_what == "grafana":
        text = json.dumps(grafana_dashboard(reg, config), indent=2) + "\n"
    else:
        text = _dump_rules(alert_rules(reg, config), as_json=args.json)
    if args.output == "-":
        sys.stdout.write(text)
    else:
        with open(args.output, "w", encoding="utf-8") as f:
            f.write(text)
    return 0


def _dump_rules(rules: dict[str, Any], as_json: bool) -> str:
    if not as_json:
        try:
            import yaml
        except ImportError:  # PyYAML is optional; JSON is valid YAML for promtool too
            pass
        else:
            return str(yaml.safe_dump(rules, sort_keys=False, width=1000))
    return json.dumps(rules, indent=2) + "\n"
