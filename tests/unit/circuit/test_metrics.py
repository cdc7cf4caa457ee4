"""The Prometheus collector reads the library's own counters at scrape time."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from resilience import metrics, protect, registry


class Boom(Exception):
    pass


def scrape() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    reg = CollectorRegistry()
    reg.register(metrics.ResilienceCollector(registry()))
    out = {}
    for family in text_string_to_metric_families(generate_latest(reg).decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_scrape_shows_outcomes_histogram_state_and_limits() -> None:
    @protect("ratings", isolation="semaphore", fallback=0, min_calls=3, max_concurrent=7)
    def ratings(ok: bool) -> int:
        if not ok:
            raise Boom()
        return 1

    for ok in (True, True, False, False, False, True):
        ratings(ok)
    m = scrape()
    dep = (("dependency", "ratings"),)

    def calls(outcome: str) -> float:
        return m[("resilience_calls_total", (("dependency", "ratings"), ("outcome", outcome)))]

    # two failures after two successes reach the 0.5 failure rate over min_calls=3 and open
    # the circuit; the last two calls are short-circuited
    assert calls("success") == 2 and calls("failure") == 2 and calls("short_circuited") == 2
    assert calls("fallback_success") == 4
    assert m[("resilience_call_duration_seconds_count", dep)] == 4
    assert m[("resilience_call_duration_seconds_bucket", (*dep, ("le", "+Inf")))] == 4
    assert m[("resilience_circuit_state", (*dep, ("state", "open")))] == 1
    assert m[("resilience_circuit_state", (*dep, ("state", "closed")))] == 0
    assert m[("resilience_circuit_opened_total", dep)] == 1
    assert m[("resilience_limit", (*dep, ("limit", "max_concurrent")))] == 7
    assert m[("resilience_circuit_failure_rate", dep)] == pytest.approx(0.5)


def test_pool_gauges_are_exported() -> None:
    @protect("pool", pool_size=3, queue_size=2)
    def ok() -> int:
        return 1

    ok()
    m = scrape()
    dep = (("dependency", "pool"),)
    assert m[("resilience_pool_active_workers", dep)] == 0
    assert m[("resilience_pool_abandoned_workers", dep)] == 0
    assert m[("resilience_limit", (*dep, ("limit", "pool_size")))] == 3


def test_extra_sources_are_collected() -> None:
    class Source:
        def collect_metrics(self):  # type: ignore[no-untyped-def]
            g = metrics.gauge(metrics.CACHE_ZONE_UP, "up", ["cache", "zone"])
            g.add_metric(["c", "a"], 1)
            yield g

    registry().add_metrics_source(Source())
    assert scrape()[("resilience_cache_zone_up", (("cache", "c"), ("zone", "a")))] == 1


def test_default_collector_is_installed_in_prometheus_default_registry() -> None:
    protect("visible", isolation="semaphore")(lambda: 1)()
    text = generate_latest().decode()
    assert 'resilience_calls_total{dependency="visible",outcome="success"} 1.0' in text
