"""Seeing it: the admin app (Prometheus /metrics, JSON state, live streams, dashboard page) and
alert rules and a Grafana dashboard generated from the registered dependencies."""

from ._app import AdminOptions, Flags, admin_app
from ._observe import ObserveConfig, Watch, alert_rules, grafana_dashboard, panel_url, watches
from ._serve import AdminServer, serve_admin
from ._state import HasStatus, circuit_view, hystrix_command, hystrix_pool, snapshot

__all__ = [
    "AdminOptions",
    "AdminServer",
    "Flags",
    "HasStatus",
    "ObserveConfig",
    "Watch",
    "admin_app",
    "alert_rules",
    "circuit_view",
    "grafana_dashboard",
    "hystrix_command",
    "hystrix_pool",
    "panel_url",
    "serve_admin",
    "snapshot",
    "watches",
]
