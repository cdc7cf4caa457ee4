"""A real Prometheus scrapes the admin app, loads the generated rules, and fires the alert."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from resilience import protect
from resilience.circuit import Registry
from resilience.web import AdminServer, ObserveConfig, alert_rules, serve_admin
from tests.support import find_binary, free_port

pytestmark = pytest.mark.integration

CONFIG = ObserveConfig(
    grafana_url="http://grafana.test",
    dashboard_uid="svc",
    circuit_open_for=1.0,
    error_rate_for=1.0,
    runbook_url="https://runbooks.test/resilience#{alert}",
)


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.load(resp)


def _write_rules(path: Path, reg: Registry) -> Path:
    path.write_text(yaml.safe_dump(alert_rules(reg, CONFIG), sort_keys=False))
    return path


@pytest.fixture
def admin(fresh_registry: Registry) -> Iterator[AdminServer]:
    with serve_admin(port=free_port()) as server:
        yield server


@pytest.fixture
def failing_dependency(fresh_registry: Registry) -> dict[str, bool]:
    """A protected call whose dependency fails while ``switch["down"]`` is true."""
    switch = {"down": False}

    @protect("ratings", min_calls=5, open_duration=120.0, fallback=[])
    def ratings() -> list[int]:
        if switch["down"]:
            raise ConnectionError("ratings is down")
        return [5]

    switch["call"] = ratings  # type: ignore[assignment]
    ratings()
    return switch


def _start_prometheus(
    tmp_path: Path, target: str, rules: Path
) -> tuple[subprocess.Popen[bytes], str]:
    binary = find_binary("RESILIENCE_PROMETHEUS", "prometheus")
    port = free_port()
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "900ms"},
        "rule_files": [str(rules)],
        "scrape_configs": [
            {
                "job_name": "svc",
                "metrics_path": "/metrics",
                "static_configs": [{"targets": [target]}],
            }
        ],
    }
    cfg = tmp_path / "prometheus.yml"
    cfg.write_text(yaml.safe_dump(config))
    log = (tmp_path / "prometheus.log").open("wb")
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={cfg}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{base}/-/ready", timeout=1) as resp:
                if resp.status == 200:
                    return proc, base
        except OSError:
            time.sleep(0.1)
        if proc.poll() is not None:
            break
    proc.kill()
    raise AssertionError(f"prometheus did not start: {(tmp_path / 'prometheus.log').read_text()}")


@pytest.fixture
def prometheus(
    tmp_path: Path,
    admin: AdminServer,
    failing_dependency: dict[str, bool],
    fresh_registry: Registry,
) -> Iterator[str]:
    rules = _write_rules(tmp_path / "rules.yml", fresh_registry)
    proc, base = _start_prometheus(tmp_path, f"127.0.0.1:{admin.port}", rules)
    yield base
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def test_promtool_accepts_generated_rules(tmp_path: Path, fresh_registry: Registry) -> None:
    promtool = find_binary("RESILIENCE_PROMTOOL", "promtool")
    for i in range(20):
        fresh_registry.dependency(f"svc.dep-{i}", failure_rate=0.3 + i / 100)
    rules = _write_rules(tmp_path / "rules.yml", fresh_registry)
    out = subprocess.run(
        [promtool, "check", "rules", str(rules)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS: 62 rules found" in out.stdout


def _alerts(base: str) -> list[dict[str, Any]]:
    return list(_get(f"{base}/api/v1/alerts")["data"]["alerts"])


def test_circuit_open_alert_fires_in_prometheus(
    prometheus: str, failing_dependency: dict[str, Any]
) -> None:
    base = prometheus
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:  # scraped at least once, with our series in it
        result = _get(
            f'{base}/api/v1/query?query=resilience_calls_total{{dependency="ratings",outcome="success"}}'
        )
        if result["data"]["result"]:
            break
        time.sleep(0.2)
    else:
        raise AssertionError("prometheus never scraped the admin app")
    assert not [a for a in _alerts(base) if a["labels"]["alertname"] == "ResilienceCircuitOpen"]

    failing_dependency["down"] = True
    for _ in range(10):
        assert failing_dependency["call"]() == []  # the fallback answers
    deadline = time.monotonic() + 30
    firing: list[dict[str, Any]] = []
    while time.monotonic() < deadline and not firing:
        firing = [
            a
            for a in _alerts(base)
            if a["labels"]["alertname"] == "ResilienceCircuitOpen" and a["state"] == "firing"
        ]
        time.sleep(0.3)
    assert firing, _alerts(base)
    alert = firing[0]
    assert alert["labels"]["dependency"] == "ratings"
    assert alert["labels"]["severity"] == "page"
    annotations = alert["annotations"]
    assert annotations["dashboard"].startswith("http://grafana.test/d/svc/")
    # what Grafana reads to link the alert to its panel, and the runbook
    assert annotations["__dashboardUid__"] == "svc"
    assert annotations["dashboard"].endswith(f"viewPanel={annotations['__panelId__']}")
    assert annotations["runbook_url"] == "https://runbooks.test/resilience#ResilienceCircuitOpen"
