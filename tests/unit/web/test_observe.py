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
        # Grafana's own link from an alert to its panel: string annotations
        assert rule["annotations"]["__dashboardUid__"] == "svc"
        assert rule["annotations"]["__panelId__"] == match.group(1)
        assert "runbook_url" not in rule["annotations"]  # only when configured
    assert panel_url(config, 3).endswith("viewPanel=3")


def test_runbook_url_per_alert(fresh_registry: Registry) -> None:
    _deps(fresh_registry)
    config = ObserveConfig(runbook_url="https://wiki.example/runbooks#{alert}")
    rules = alert_rules(fresh_registry, config)["groups"][0]["rules"]
    assert {r["annotations"]["runbook_url"] for r in rules} == {
        f"https://wiki.example/runbooks#{name}"
        for name in (
            "ResilienceCircuitOpen",
            "ResilienceErrorRate",
            "ResiliencePoolSaturated",
            "ResilienceCacheZoneDown",
            "ResilienceFlagSourceStale",
        )
    }
    plain = ObserveConfig(runbook_url="https://wiki.example/resilience")
    rules = alert_rules(fresh_registry, plain)["groups"][0]["rules"]
    assert {r["annotations"]["runbook_url"] for r in rules} == {"https://wiki.example/resilience"}


def test_rules_read_the_prometheus_contract_names(fresh_registry: Registry) -> None:
    _deps(fresh_registry)
    exprs = {
        (r["alert"], r["labels"].get("dependency")): r["expr"]
        for r in alert_rules(fresh_registry)["groups"][0]["rules"]
    }
    assert "resilience_circuit_failure_ratio{" in exprs[("ResilienceErrorRate", "ratings")]
    saturated = exprs[("ResiliencePoolSaturated", "ratings")]
    assert "resilience_concurrency_limit{" in saturated and "resilience_limit" not in saturated
    # stale means no successful check lately, not no change lately
    stale = exprs[("ResilienceFlagSourceStale", None)]
    assert stale.startswith("time() - resilience_flag_source_last_success_timestamp_seconds")
    every = " ".join(exprs.values())
    for old in ("resilience_limit{", "_failure_rate{", "resilience_flag_last_update"):
        assert old not in every


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
        ("dashboard_uid", "a" * 41),
        ("dashboard_uid", "my uid"),
        ("dashboard_uid", "svc/prod"),
        ("dashboard_uid", ""),
        ("runbook_url", "wiki/runbooks"),
        ("runbook_url", "https://wiki/{dependency}"),
        ("runbook_url", "https://wiki/{alert"),
    ],
)
def test_config_validation_names_the_field(field: str, value: object) -> None:
    with pytest.raises(ConfigError) as info:
        ObserveConfig(**{field: value})
    assert info.value.field == field


def test_grafana_uid_rule() -> None:
    for uid in ("a" * 40, "svc-prod_1", "X"):
        assert ObserveConfig(dashboard_uid=uid).dashboard_uid == uid
    with pytest.raises(ConfigError, match="40 characters"):
        ObserveConfig(dashboard_uid="é")
