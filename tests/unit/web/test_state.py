"""JSON views of circuits and Hystrix messages, read from the circuit's own counters."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import resilience.web as web
from resilience import testing
from resilience.circuit import Registry
from resilience.errors import BulkheadFullError, CircuitOpenError
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


# What Hystrix's own stream writes (hystrix-serialization, SerialHystrixDashboardData), with the
# JSON type of each field: the Hystrix dashboard and Turbine read exactly these.
HYSTRIX_COMMAND_FIELDS: dict[str, type | tuple[type, ...]] = {
    "type": str,
    "name": str,
    "group": str,
    "currentTime": int,
    "isCircuitBreakerOpen": bool,
    "errorPercentage": int,
    "errorCount": int,
    "requestCount": int,
    **{
        f"rollingCount{name}": int
        for name in (
            "BadRequests",
            "CollapsedRequests",
            "Emit",
            "ExceptionsThrown",
            "Failure",
            "FallbackEmit",
            "FallbackFailure",
            "FallbackMissing",
            "FallbackRejection",
            "FallbackSuccess",
            "ResponsesFromCache",
            "SemaphoreRejected",
            "ShortCircuited",
            "Success",
            "ThreadPoolRejected",
            "Timeout",
        )
    },
    "currentConcurrentExecutionCount": int,
    "rollingMaxConcurrentExecutionCount": int,
    "latencyExecute_mean": int,
    "latencyExecute": dict,
    "latencyTotal_mean": int,
    "latencyTotal": dict,
    "propertyValue_circuitBreakerRequestVolumeThreshold": int,
    "propertyValue_circuitBreakerSleepWindowInMilliseconds": int,
    "propertyValue_circuitBreakerErrorThresholdPercentage": int,
    "propertyValue_circuitBreakerForceOpen": bool,
    "propertyValue_circuitBreakerForceClosed": bool,
    "propertyValue_circuitBreakerEnabled": bool,
    "propertyValue_executionIsolationStrategy": str,
    "propertyValue_executionIsolationThreadTimeoutInMilliseconds": int,
    "propertyValue_executionTimeoutInMilliseconds": int,
    "propertyValue_executionIsolationThreadInterruptOnTimeout": bool,
    "propertyValue_executionIsolationThreadPoolKeyOverride": (str, type(None)),
    "propertyValue_executionIsolationSemaphoreMaxConcurrentRequests": int,
    "propertyValue_fallbackIsolationSemaphoreMaxConcurrentRequests": int,
    "propertyValue_metricsRollingStatisticalWindowInMilliseconds": int,
    "propertyValue_requestCacheEnabled": bool,
    "propertyValue_requestLogEnabled": bool,
    "reportingHosts": int,
    "threadPool": str,
}
HYSTRIX_POOL_FIELDS: dict[str, type] = {
    "type": str,
    "name": str,
    "currentTime": int,
    "currentActiveCount": int,
    "currentCompletedTaskCount": int,
    "currentCorePoolSize": int,
    "currentLargestPoolSize": int,
    "currentMaximumPoolSize": int,
    "currentPoolSize": int,
    "currentQueueSize": int,
    "currentTaskCount": int,
    "rollingCountThreadsExecuted": int,
    "rollingMaxActiveThreads": int,
    "rollingCountCommandRejections": int,
    "propertyValue_queueSizeRejectionThreshold": int,
    "propertyValue_metricsRollingStatisticalWindowInMilliseconds": int,
    "reportingHosts": int,
}
PERCENTILE_KEYS = {"0", "25", "50", "75", "90", "95", "99", "99.5", "100"}


def _same_shape(msg: dict[str, Any], fields: dict[str, Any]) -> None:
    assert set(msg) == set(fields)
    for key, kind in fields.items():
        value = msg[key]
        assert isinstance(value, kind), (key, value)
        if kind is int:
            assert not isinstance(value, bool), key  # Java writes a number, not true/false


def test_hystrix_messages_have_hystrix_fields_and_types(fresh_registry: Registry) -> None:
    dep = fresh_registry.dependency("catalog")
    dep.call(lambda: 2)
    command = hystrix_command(dep)
    _same_shape(command, HYSTRIX_COMMAND_FIELDS)
    for key in ("latencyExecute", "latencyTotal"):
        assert set(command[key]) == PERCENTILE_KEYS
        assert all(type(v) is int for v in command[key].values())
    pool = hystrix_pool(dep)
    assert pool is not None
    _same_shape(pool, HYSTRIX_POOL_FIELDS)


def test_hystrix_health_counts_leave_short_circuits_out(fresh_registry: Registry) -> None:
    with testing.fake_clock():
        _load(fresh_registry, ok=1, bad=2)
        dep = fresh_registry.dependency("ratings")
        dep.force_open()
        for _ in range(5):
            with pytest.raises(CircuitOpenError):
                dep.call(lambda: 1)
        msg = hystrix_command(dep)
    assert msg["rollingCountShortCircuited"] == 5
    # Hystrix's HealthCounts: success + failure + timeout + rejections; short circuits excluded
    assert msg["requestCount"] == 3 and msg["errorCount"] == 2
    # 2 / 3 = 66.67%: Hystrix truncates ((int) (errors / total * 100)), it does not round
    assert msg["errorPercentage"] == 66
    assert msg["isCircuitBreakerOpen"] is True


async def test_async_dependency_is_semaphore_isolated(fresh_registry: Registry) -> None:
    dep = fresh_registry.dependency("ratings-async", max_concurrent=1)  # isolation="thread"
    release = asyncio.Event()

    async def held() -> int:
        await release.wait()
        return 1

    async def quick() -> int:
        return 2

    first = asyncio.create_task(dep.acall(held))
    await asyncio.sleep(0)
    with pytest.raises(BulkheadFullError):
        await dep.acall(quick)
    release.set()
    assert await first == 1
    msg = hystrix_command(dep)
    # no thread pool was ever made: the calls ran under the semaphore, and Hystrix says so
    assert dep.pool is None and hystrix_pool(dep) is None
    assert msg["propertyValue_executionIsolationStrategy"] == "SEMAPHORE"
    assert msg["rollingCountSemaphoreRejected"] == 1
    assert msg["rollingCountThreadPoolRejected"] == 0
    assert msg["requestCount"] == 2 and msg["errorCount"] == 1 and msg["errorPercentage"] == 50


def test_sync_dependency_with_a_pool_is_thread_isolated(fresh_registry: Registry) -> None:
    dep = fresh_registry.dependency("catalog")
    dep.call(lambda: 2)
    msg = hystrix_command(dep)
    assert msg["propertyValue_executionIsolationStrategy"] == "THREAD"


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
