"""JSON views of circuits, pools, caches and flags, read at request time from their own counters.

Everything here is plain, non-blocking code: it takes the window's short per-read lock and
nothing else, so building a view never stops a protected call.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

import attrs

from ..circuit import OUTCOMES, Dependency, Registry, State, StateChange

__all__ = [
    "HasStatus",
    "circuit_view",
    "hystrix_command",
    "hystrix_pool",
    "limit_view",
    "snapshot",
    "state_change_view",
]

log = logging.getLogger("resilience.web")

# Quantiles shown for latency: the dashboard's p50/p99 and Hystrix's percentile keys.
_HYSTRIX_PERCENTILES = ("0", "25", "50", "75", "90", "95", "99", "99.5", "100")
_OPEN_STATES = (State.OPEN, State.FORCED_OPEN)


class HasStatus(Protocol):
    """A cache or flags object the admin app shows: ``status()`` returns a JSON-able dict."""

    def status(self) -> dict[str, Any]: ...


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000.0, 3)


def limit_view(dep: Dependency) -> dict[str, Any]:
    """The concurrency limit in force: adaptive (with what its algorithm sees), or fixed."""
    adaptive = dep.adaptive
    if adaptive is not None:
        config = adaptive.config
        lowest, _, highest = config.bounds
        return {
            "kind": "adaptive",
            "algorithm": config.algorithm,
            "limit": adaptive.limit,
            "inflight": adaptive.inflight,
            "waiting": adaptive.waiting,
            "rtt_ms": _ms(adaptive.last_rtt),
            "baseline_ms": _ms(adaptive.baseline),
            "min": lowest,
            "max": highest,
        }
    pool = dep.pool
    if pool is not None:
        return {"kind": "pool", "limit": pool.pool_size, "inflight": pool.running + pool.queued}
    return {"kind": "fixed", "limit": dep.permits.limit, "inflight": dep.permits.in_use}


def rate_limit_view(dep: Dependency) -> dict[str, Any] | None:
    bucket = dep.rate_limiter
    if bucket is None:
        return None
    config = bucket.config
    return {
        "rate": config.rate,
        "per": config.per,
        "burst": config.capacity,
        "available": round(bucket.available(bucket.clock()), 3),
    }


def circuit_view(dep: Dependency, now: float | None = None) -> dict[str, Any]:
    """One dependency's state, rolling counts, rates, latency percentiles, limits, pool and
    policy."""
    policy = dep.policy
    snap = dep.window.snapshot(now)
    counts = dict(zip(OUTCOMES, snap.counts, strict=True))
    # Rate counts every call that reached the dependency's gate, including refused ones.
    attempts = snap.calls + counts["short_circuited"] + counts["rejected"]
    pool = dep.pool
    return {
        "name": dep.name,
        "state": dep.state.value,
        "open": dep.state in _OPEN_STATES,
        "counts": counts,
        "calls": snap.calls,
        "rate": attempts / policy.window,
        "error_rate": snap.failure_rate,
        "slow_rate": snap.slow_rate,
        "latency_ms": {
            "p50": _ms(snap.percentile(0.5)),
            "p90": _ms(snap.percentile(0.9)),
            "p99": _ms(snap.percentile(0.99)),
            "mean": _ms(snap.latency_sum / snap.calls) if snap.calls else None,
        },
        "opened_count": dep.breaker.opened_count,
        "retries": dep.retries,
        "concurrent": dep.limiter.in_use,
        "limit": limit_view(dep),
        "rate_limit": rate_limit_view(dep),
        "hedges": dep.hedge_counts(),
        "pool": None
        if pool is None
        else {
            "running": pool.running,
            "queued": pool.queued,
            "abandoned": pool.abandoned,
            "pool_size": pool.pool_size,
            "queue_size": pool.queue_size,
            "executed": pool.executed,
            "max_running": pool.max_running,
        },
        "policy": attrs.asdict(policy, value_serializer=_plain),
    }


def _plain(inst: Any, field: Any, value: Any) -> Any:
    # Policy values that are configs of their own (limit, rate_limit) show as dicts.
    if attrs.has(type(value)):
        return attrs.asdict(value)
    return value


def _status(obj: HasStatus, kind: str) -> dict[str, Any]:
    # A failing status() must not take the whole admin page down with it.
    try:
        return dict(obj.status())
    except Exception as exc:
        log.exception("%s status() failed", kind)
        return {"error": f"{type(exc).__name__}: {exc}"}


def snapshot(
    reg: Registry,
    caches: Mapping[str, HasStatus] | Iterable[HasStatus] = (),
    flags: HasStatus | None = None,
) -> dict[str, Any]:
    """The whole admin state: circuits, pools, caches and flags, as one JSON-able dict."""
    circuits = [circuit_view(dep) for dep in reg]
    pools = {c["name"]: c["pool"] for c in circuits if c["pool"] is not None}
    if isinstance(caches, Mapping):
        named = dict(caches)
    else:
        named = {}
        for i, cache in enumerate(caches):
            named[str(getattr(cache, "name", None) or f"cache{i}")] = cache
    return {
        "time": time.time(),
        "circuits": circuits,
        "pools": pools,
        "caches": {name: _status(cache, "cache") for name, cache in named.items()},
        "flags": None if flags is None else _status(flags, "flags"),
    }


def state_change_view(change: StateChange) -> dict[str, Any]:
    return {
        "dependency": change.dependency,
        "old": change.old.value,
        "new": change.new.value,
        "reason": change.reason,
        "time": time.time(),
    }


def _group(name: str) -> str:
    return name.split(".", 1)[0]


def _error_percentage(errors: int, requests: int) -> int:
    # Hystrix: (int) ((double) errorCount / totalCount * 100), truncated toward zero.
    return int(errors / requests * 100) if requests else 0


def hystrix_command(dep: Dependency) -> dict[str, Any]:
    """One ``HystrixCommand`` message of Hystrix's metrics stream, from a dependency.

    Field names and JSON types are those of Hystrix's own serializer. ``requestCount``,
    ``errorCount`` and ``errorPercentage`` are Hystrix's HealthCounts: short-circuited calls are
    in neither, and the percentage is truncated. A dependency reports THREAD isolation once a
    sync call gave it a thread pool, SEMAPHORE otherwise (async and semaphore dependencies), and
    its rejections as thread-pool or semaphore rejections accordingly.
    """
    policy = dep.policy
    snap = dep.window.snapshot()
    c = dict(zip(OUTCOMES, snap.counts, strict=True))
    # Hystrix's HealthCounts: short-circuited calls count in neither total nor errors.
    errors = c["failure"] + c["timeout"] + c["rejected"]
    requests = snap.calls + c["rejected"]
    # From the window's fine histogram (within 2% of the samples), in whole ms as Hystrix sends.
    quantiles = dep.window.percentiles([float(key) / 100.0 for key in _HYSTRIX_PERCENTILES])
    latency = {
        key: round(value * 1000.0)
        for key, value in zip(_HYSTRIX_PERCENTILES, quantiles, strict=True)
    }
    mean = round(snap.latency_sum / snap.calls * 1000.0) if snap.calls else 0
    state = dep.state
    window_ms = round(policy.window * 1000.0)
    # A dependency only runs on threads once a sync call made its pool; async (and semaphore)
    # ones never have one, and their rejections are the semaphore's.
    thread = dep.pool is not None
    limit = policy.max_concurrent if dep.adaptive is None else dep.adaptive.limit
    return {
        "type": "HystrixCommand",
        "name": dep.name,
        "group": _group(dep.name),
        "currentTime": int(time.time() * 1000),
        "isCircuitBreakerOpen": state in _OPEN_STATES or state is State.HALF_OPEN,
        "errorPercentage": _error_percentage(errors, requests),
        "errorCount": errors,
        "requestCount": requests,
        "rollingCountBadRequests": c["ignored"],
        "rollingCountCollapsedRequests": 0,
        "rollingCountEmit": 0,
        "rollingCountExceptionsThrown": c["exception_thrown"],
        "rollingCountFailure": c["failure"],
        "rollingCountFallbackEmit": 0,
        "rollingCountFallbackFailure": c["fallback_failure"],
        "rollingCountFallbackMissing": c["fallback_missing"],
        "rollingCountFallbackRejection": 0,
        "rollingCountFallbackSuccess": c["fallback_success"],
        "rollingCountResponsesFromCache": 0,
        "rollingCountSemaphoreRejected": 0 if thread else c["rejected"],
        "rollingCountShortCircuited": c["short_circuited"],
        "rollingCountSuccess": c["success"],
        "rollingCountThreadPoolRejected": c["rejected"] if thread else 0,
        "rollingCountTimeout": c["timeout"],
        "currentConcurrentExecutionCount": _in_flight(dep),
        "rollingMaxConcurrentExecutionCount": dep.peak_concurrency(),
        "latencyExecute_mean": mean,
        "latencyExecute": latency,
        "latencyTotal_mean": mean,
        "latencyTotal": latency,
        "propertyValue_circuitBreakerRequestVolumeThreshold": policy.min_calls,
        "propertyValue_circuitBreakerSleepWindowInMilliseconds": round(
            policy.open_duration * 1000.0
        ),
        "propertyValue_circuitBreakerErrorThresholdPercentage": round(policy.failure_rate * 100),
        "propertyValue_circuitBreakerForceOpen": state is State.FORCED_OPEN,
        "propertyValue_circuitBreakerForceClosed": state is State.FORCED_CLOSED,
        "propertyValue_circuitBreakerEnabled": True,
        "propertyValue_executionIsolationStrategy": "THREAD" if thread else "SEMAPHORE",
        "propertyValue_executionIsolationThreadTimeoutInMilliseconds": round(
            policy.timeout * 1000.0
        ),
        "propertyValue_executionTimeoutInMilliseconds": round(policy.timeout * 1000.0),
        "propertyValue_executionIsolationThreadInterruptOnTimeout": False,
        "propertyValue_executionIsolationThreadPoolKeyOverride": None,
        "propertyValue_executionIsolationSemaphoreMaxConcurrentRequests": limit,
        "propertyValue_fallbackIsolationSemaphoreMaxConcurrentRequests": policy.max_concurrent,
        "propertyValue_metricsRollingStatisticalWindowInMilliseconds": window_ms,
        "propertyValue_requestCacheEnabled": False,
        "propertyValue_requestLogEnabled": False,
        "reportingHosts": 1,
        "threadPool": dep.name,
    }


def _in_flight(dep: Dependency) -> int:
    if dep.adaptive is not None:  # one limit admits coroutines and pool calls alike
        return dep.adaptive.inflight
    return dep.permits.in_use + (dep.pool.running if dep.pool else 0)


def hystrix_pool(dep: Dependency) -> dict[str, Any] | None:
    """One ``HystrixThreadPool`` message, or None while the dependency has no thread pool."""
    pool = dep.pool
    if pool is None:
        return None
    snap = dep.window.snapshot()
    return {
        "type": "HystrixThreadPool",
        "name": dep.name,
        "currentTime": int(time.time() * 1000),
        "currentActiveCount": pool.running,
        "currentCompletedTaskCount": pool.executed,
        "currentCorePoolSize": pool.limit,
        "currentLargestPoolSize": pool.max_running,
        "currentMaximumPoolSize": pool.limit,
        "currentPoolSize": pool.limit,
        "currentQueueSize": pool.queued,
        "currentTaskCount": pool.executed + pool.running + pool.queued,
        "rollingCountThreadsExecuted": snap.calls,
        "rollingMaxActiveThreads": pool.max_running,
        "rollingCountCommandRejections": snap.counts[OUTCOMES.index("rejected")],
        "propertyValue_queueSizeRejectionThreshold": pool.queue_size,
        "propertyValue_metricsRollingStatisticalWindowInMilliseconds": round(
            dep.policy.window * 1000.0
        ),
        "reportingHosts": 1,
    }
