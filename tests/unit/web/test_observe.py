"""Alert rules and the Grafana dashboard come from one list of watches and link to each other."""

from __future__ import annotations

import re

import pytest

from resilience.circuit import Registry
from resilience.errors import ConfigError
from resilience.web import ObserveConfig, alert_rules, grafana_dashboard, panel_url, watches


def _deps(reg: Registry) -> None:
    reg.dependency("ratings", failure_rate=0.4)
    reg.dependency("catalog")


def test_one_watch_per_concern_and_dependency(fresh_registry: Registry) -> None:
    _deps(fresh_registry)
    alerts = [w.alert for w in watches(fresh_registry)]
    assert alerts.count("ResilienceCircuitOpen") == 2
    assert alerts.count("ResilienceErrorRate") == 2
    assert alerts.count("ResiliencePoolSaturated") == 2
    assert alerts.count("ResilienceCacheZoneDown") == 1
    assert alerts.count("ResilienceFlagSourceStale") == 1


def test_every_rule_links_to_the_panel_that_shows_it(fresh_registry: Registry) -> None:
    _deps(fresh_registry)
    config = ObserveConfig(grafana_url="http://grafana:3000/", dashboard_uid="svc", title="My Svc")
    rules = alert_rules(fresh_registry, config)["groups"][0]["rules"]
    panels = {p["id"]: p for p in grafana_dashboard(fresh_registry, config)["panels"]}
    assert len(rules) == len(panels) == 8
    for rule in rules:
        url = rule["annotations"]["dashboard"]
        match = re.fullmatch(r"http://grafana:3000/d/svc/my-svc\?viewPanel=(\d+)", url)
        assert match, url
        panel = panels[int(match.group(1))]
        assert panel["title"] == rule["annotations"]["panel"]
        assert rule["expr"] in panel["description"]  # the panel names the alert it backs
    assert panel_url(config, 3).endswith("viewPanel=3")


def test_rule_expressions(fresh_registry: Registry) -> None:
    _deps(fresh_registry)
    config = ObserveConfig(selector='job="api"', circuit_open_for=1.5, error_rate=None)
    rules = {
        (r["alert"], r["labels"].get("dependency")): r
        for r in alert_rules(fresh_registry, config)["groups"][0]["rules"]
    }
    opened = rules[("ResilienceCircuitOpen", "ratings")]
    assert 'dependency="ratings"' in opened["expr"] and 'job="api"' in opened["expr"]
    assert 'state=~"open|half_open"' in opened["expr"]
    assert opened["for"] == "1500ms" and opened["labels"]["severity"] == "page"
    # error rate warns at half the dependency's own trip threshold
    assert rules[("ResilienceErrorRate", "ratings")]["expr"].endswith(">= 0.2")
    assert rules[("ResilienceErrorRate", "catalog")]["expr"].endswith(">= 0.25")
    assert "for" not in rules[("ResilienceFlagSourceStale", None)]
    fixed = ObserveConfig(error_rate=0.1)
    assert all(
        r["expr"].endswith(">= 0.1")
        for r in alert_rules(fresh_registry, fixed)["groups"][0]["rules"]
        if r["alert"] == "ResilienceErrorRate"
    )


def test_dashboard_shape(fresh_registry: Registry) -> None:
    _deps(fresh_registry)
    dash = grafana_dashboard(fresh_registry, ObserveConfig(dashboard_uid="x"))
    assert dash["uid"] == "x"
    ids = [p["id"] for p in dash["panels"]]
    assert ids == sorted(set(ids))
    positions = {(p["gridPos"]["x"], p["gridPos"]["y"]) for p in dash["panels"]}
    assert len(positions) == len(ids)  # no two panels on top of each other
    assert all(p["targets"] and p["targets"][0]["expr"] for p in dash["panels"])


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("selector", "job=api"),
        ("pool_saturation", 0),
        ("error_rate", 1.5),
        ("circuit_open_for", -1),
        ("grafana_url", ""),
    ],
)
def test_config_validation_names_the_field(field: str, value: object) -> None:
    with pytest.raises(ConfigError) as info:
        ObserveConfig(**{field: value})
    assert info.value.field == field
