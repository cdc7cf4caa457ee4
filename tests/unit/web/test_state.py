"""JSON views of circuits and Hystrix messages, read from the circuit's own counters."""

from __future__ import annotations

import pytest

import resilience.web as web
from resilience import testing
from resilience.circuit import Registry
from resilience.web import circuit_view, hystrix_command, hystrix_pool, snapshot


def test_exports_sorted_and_complete() -> None:
    assert web.__all__ == sorted(web.__all__)
    public = {n for n in dir(web) if not n.startswith("_")}
    assert set(web.__all__) == public - {"annotations"}


def _boom() -> None:
    raise RuntimeError("down")


def _load(reg: Registry, ok: int, bad: int) -> None:
    dep = reg.dependency("ratings", isolation="semaphore", min_calls=100)
    for _ in range(ok):
        dep.call(lambda: 1)
    for _ in range(bad):
        with pytest.raises(RuntimeError):
            dep.call(_boom)


def test_circuit_view_counts_rates_and_policy(fresh_registry: Registry) -> None:
    with testing.fake_clock() as clock:
        _load(fresh_registry, ok=6, bad=2)
        dep = fresh_registry.dependency("ratings")
        view = circuit_view(dep)
        assert view["state"] == "closed" and view["open"] is False
        assert view["counts"]["success"] == 6 and view["counts"]["failure"] == 2
        assert view["calls"] == 8
        assert view["error_rate"] == pytest.approx(0.25)
        assert view["rate"] == pytest.approx(8 / dep.policy.window)
        assert view["latency_ms"]["p50"] is not None  # fake clock: every call took 0 s
        assert view["policy"]["min_calls"] == 100
        assert view["pool"] is None  # semaphore isolation never makes a pool
        clock.advance(dep.policy.window + 1)
        assert circuit_view(dep)["calls"] == 0  # the rolling window moved on


def test_circuit_view_open_state(fresh_registry: Registry) -> None:
    dep = fresh_registry.dependency("ratings")
    dep.force_open()
    view = circuit_view(dep)
    assert view["state"] == "forced_open" and view["open"] is True


def test_hystrix_command_fields(fresh_registry: Registry) -> None:
    with testing.fake_clock():
        _load(fresh_registry, ok=3, bad=1)
        msg = hystrix_command(fresh_registry.dependency("ratings"))
    assert msg["type"] == "HystrixCommand" and msg["name"] == "ratings"
    assert msg["rollingCountSuccess"] == 3 and msg["rollingCountFailure"] == 1
    assert msg["errorCount"] == 1 and msg["requestCount"] == 4 and msg["errorPercentage"] == 25
    assert msg["isCircuitBreakerOpen"] is False
    assert set(msg["latencyExecute"]) == {"0", "25", "50", "75", "90", "95", "99", "99.5", "100"}
    assert msg["propertyValue_executionIsolationStrategy"] == "SEMAPHORE"
    assert msg["propertyValue_circuitBreakerRequestVolumeThreshold"] == 100
    for key in (
        "currentConcurrentExecutionCount",
        "reportingHosts",
        "group",
        "rollingCountTimeout",
        "rollingCountShortCircuited",
        "rollingCountThreadPoolRejected",
        "rollingCountSemaphoreRejected",
        "rollingCountFallbackSuccess",
        "rollingCountFallbackFailure",
        "rollingCountResponsesFromCache",
        "latencyTotal",
    ):
        assert key in msg


def test_hystrix_pool_after_thread_call(fresh_registry: Registry) -> None:
    dep = fresh_registry.dependency("catalog")
    assert hystrix_pool(dep) is None
    assert dep.call(lambda: 2) == 2
    msg = hystrix_pool(dep)
    assert msg is not None and msg["type"] == "HystrixThreadPool"
    assert msg["rollingCountThreadsExecuted"] == 1 and msg["currentCorePoolSize"] == 10
    for key in ("currentActiveCount", "currentQueueSize", "rollingMaxActiveThreads"):
        assert key in msg


class _Cache:
    name = "sessions"

    def status(self) -> dict[str, object]:
        return {"zones": {"a": {"up": True, "hit_rate": 0.9}}}


class _Broken:
    def status(self) -> dict[str, object]:
        raise OSError("cannot reach")


def test_snapshot_with_caches_and_flags(fresh_registry: Registry) -> None:
    fresh_registry.dependency("catalog").call(lambda: 1)
    state = snapshot(fresh_registry, [_Cache(), _Broken()], _Cache())
    assert [c["name"] for c in state["circuits"]] == ["catalog"]
    assert state["pools"]["catalog"]["executed"] == 1
    assert state["caches"]["sessions"]["zones"]["a"]["hit_rate"] == 0.9
    assert "OSError" in state["caches"]["cache1"]["error"]  # a failing status() is reported
    assert state["flags"] == {"zones": {"a": {"up": True, "hit_rate": 0.9}}}
    assert snapshot(fresh_registry, {"named": _Cache()})["caches"].keys() == {"named"}
