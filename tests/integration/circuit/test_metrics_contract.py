"""The circuit's Prometheus families as a real scraper gets them: over HTTP from the admin app,
parsed by prometheus-client's parser, and clean under ``promtool check metrics``."""

from __future__ import annotations

import asyncio
import subprocess
import urllib.request
from collections.abc import Iterator

import pytest
import tenacity
from prometheus_client.parser import text_string_to_metric_families

from resilience import AdaptiveLimit, Hedge, RateLimit, Retry, fit, protect
from resilience.circuit import Registry
from resilience.web import AdminServer, serve_admin
from tests.support import find_binary

pytestmark = pytest.mark.integration


@pytest.fixture
def admin(fresh_registry: Registry) -> Iterator[AdminServer]:
    server = serve_admin(port=0, registry=fresh_registry)
    yield server
    server.stop()


def traffic() -> None:
    """Every kind of dependency and outcome the families describe."""
    outcomes: list[object] = [ConnectionError(), "ok"]

    @protect("sem", isolation="semaphore", retry=Retry(wait=tenacity.wait_none()), fallback="fb")
    def sem() -> object:
        item = outcomes.pop(0) if outcomes else KeyError()
        if isinstance(item, Exception):
            raise item
        return item

    @protect("pool", pool_size=2, queue_size=1, ignore=KeyError)
    def pooled(bad: bool) -> int:
        if bad:
            raise KeyError()
        return 1

    @protect("coro", max_concurrent=3, fallback=0)
    async def coro() -> int:
        raise ConnectionError()

    @protect("adaptive", isolation="semaphore", limit=AdaptiveLimit("aimd", initial=30),
             rate_limit=RateLimit(50))  # fmt: skip
    def adaptive() -> int:
        return 1

    @protect("hedged", hedge=Hedge(delay=0.0, budget=1.0))
    async def hedged() -> int:
        return 1

    sem(), sem()
    pooled(False)
    with pytest.raises(KeyError):
        pooled(True)
    asyncio.run(coro())
    adaptive()
    asyncio.run(hedged())
    recipe = fit.Recipe.from_dict({"name": "exp", "faults": [{"dependency": "sem", "error": True}]})
    with fit.active(recipe):
        sem()  # an injected failure: the experiment's, not sem's


def test_metrics_parse_and_pass_promtool(admin: AdminServer) -> None:
    traffic()
    with urllib.request.urlopen(admin.url + "metrics", timeout=10) as resp:
        text = resp.read().decode()

    families = {f.name: f for f in text_string_to_metric_families(text)}
    expected = {
        "resilience_calls": "counter",
        "resilience_fallbacks": "counter",
        "resilience_call_duration_seconds": "histogram",
        "resilience_circuit_state": "gauge",
        "resilience_circuit_failure_ratio": "gauge",
        "resilience_circuit_slow_call_ratio": "gauge",
        "resilience_circuit_failure_ratio_threshold": "gauge",
        "resilience_circuit_opened": "counter",
        "resilience_retries": "counter",
        "resilience_timeout_seconds": "gauge",
        "resilience_concurrency_limit": "gauge",
        "resilience_queue_limit": "gauge",
        "resilience_pool_active_workers": "gauge",
        "resilience_concurrent_calls": "gauge",
        "resilience_rate_limit_available_tokens": "gauge",
        "resilience_hedges": "counter",
        "resilience_fit_calls": "counter",
    }
    for name, kind in expected.items():
        assert families[name].type == kind, name
    assert "resilience_limit" not in families

    def value(family: str, **labels: str) -> float:
        for s in families[family].samples:
            if all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
        raise KeyError((family, labels))

    assert value("resilience_calls", dependency="sem", outcome="success") == 1
    assert value("resilience_calls", dependency="sem", outcome="failure") == 1  # the 2nd call
    assert value("resilience_retries", dependency="sem", outcome="attempted") == 1
    assert value("resilience_fallbacks", dependency="sem", outcome="success") == 1
    assert value("resilience_fallbacks", dependency="coro", outcome="success") == 1
    assert value("resilience_calls", dependency="pool", outcome="ignored") == 1
    assert value("resilience_queue_limit", dependency="pool") == 1
    with pytest.raises(KeyError):
        value("resilience_queue_limit", dependency="coro")
    assert value("resilience_concurrency_limit", dependency="adaptive") == 30
    assert value("resilience_rate_limit_available_tokens", dependency="adaptive") >= 48
    assert value("resilience_hedges", dependency="hedged", outcome="sent") == 1
    assert value("resilience_calls", dependency="hedged", outcome="success") == 1
    assert value("resilience_fit_calls", dependency="sem", recipe="exp", outcome="injected") == 1
    assert value("resilience_calls", dependency="sem", outcome="failure") == 1  # unchanged

    promtool = find_binary("RESILIENCE_PROMTOOL", "promtool")
    out = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0 and not out.stdout.strip() and not out.stderr.strip(), (
        out.stdout + out.stderr
    )
