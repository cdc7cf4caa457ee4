"""The generated Grafana dashboard against Grafana's published dashboard schema.

No Grafana server can be installed by the test command (Debian does not package it and its Go
module is AGPL, kept out of this project), so the dashboard goes through a strict checker built
on grafana-foundation-sdk, the types Grafana generates from its dashboard schema: unknown fields,
wrong types, missing required fields and broken constraints all fail. scripts/test builds it
(tests/integration/web/grafana_check) and points RESILIENCE_GRAFANA_CHECK at it.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from resilience.circuit import Registry
from resilience.web import ObserveConfig, grafana_dashboard
from tests.support import find_binary

pytestmark = pytest.mark.integration


def _check(tmp_path: Path, dashboard: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    checker = find_binary("RESILIENCE_GRAFANA_CHECK", "grafana-dashboard-check")
    path = tmp_path / "dashboard.json"
    path.write_text(json.dumps(dashboard))
    return subprocess.run([checker, str(path)], capture_output=True, text=True, timeout=60)


def _dashboard(reg: Registry) -> dict[str, Any]:
    for i in range(20):
        reg.dependency(f"svc.dep-{i}", failure_rate=0.3 + i / 100)
    config = ObserveConfig(
        dashboard_uid="svc-prod_1", title="svc (prod)", selector='job="svc"', error_rate=0.1
    )
    return grafana_dashboard(reg, config)


def test_dashboard_follows_grafanas_schema(tmp_path: Path, fresh_registry: Registry) -> None:
    dashboard = _dashboard(fresh_registry)
    out = _check(tmp_path, dashboard)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"OK ({len(dashboard['panels'])} panels)" in out.stdout


@pytest.mark.parametrize(
    ("change", "complaint"),
    [
        (lambda d: d["panels"][0].update(legend=True), "unexpected field 'legend'"),
        (lambda d: d["panels"][1]["options"]["legend"].pop("showLegend"), "showLegend"),
        (lambda d: d["panels"][2]["targets"][0].update(exp="up"), "unexpected field 'exp'"),
        (lambda d: d.pop("schemaVersion"), "schemaVersion"),
    ],
)
def test_the_checker_rejects_what_grafana_would(
    tmp_path: Path, fresh_registry: Registry, change: Any, complaint: str
) -> None:
    # The check above means something only if the checker refuses a dashboard Grafana would not
    # take: a misspelt field, a required one left out.
    dashboard = _dashboard(fresh_registry)
    change(dashboard)
    out = _check(tmp_path, dashboard)
    assert out.returncode == 1 and "INVALID" in out.stdout
    assert complaint in out.stdout
