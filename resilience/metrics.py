"""Every Prometheus metric the library exports, defined once, read at scrape time.

Nothing from prometheus-client runs on the call path: calls count into the library's own
rolling buckets, and :class:`ResilienceCollector` turns those into metric families when Prometheus
scrapes. Other parts (cache, flags, fit) register a *metrics source* on the resilience registry
and build their families with the names and helpers defined here.

The collector for the default registry is added to prometheus-client's default ``REGISTRY`` when
``resilience`` is imported (:func:`install`), so ``prometheus_client.generate_latest()`` and any
existing ``/metrics`` route show resilience's metrics without further setup.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.registry import REGISTRY, Collector, CollectorRegistry

if TYPE_CHECKING:
    from .circuit import Registry

__all__ = [
    "CACHE_ACQUIRE_TIMEOUTS",
    "CACHE_BATCHED_GETS",
    "CACHE_CATCH_UP_KEYS",
    "CACHE_CATCH_UP_PENDING",
    "CACHE_DEDUP_HITS",
    "CACHE_DEGRADED_WRITES",
    "CACHE_READ_REPAIRS",
    "CACHE_REMOTE_HITS",
    "CACHE_REQUESTS",
    "CACHE_SINGLEFLIGHT_SHARES",
    "CACHE_WRITE_FAILURES",
    "CACHE_ZONE_UP",
    "CALLS",
    "CALL_DURATION",
    "CIRCUIT_FAILURE_RATIO",
    "CIRCUIT_FAILURE_RATIO_THRESHOLD",
    "CIRCUIT_OPENED",
    "CIRCUIT_SLOW_CALL_RATIO",
    "CIRCUIT_STATE",
    "CONCURRENCY_LIMIT",
    "CONCURRENT_CALLS",
    "FALLBACKS",
    "FIT_CALLS",
    "FIT_INJECTIONS",
    "FIT_TAGS",
    "FLAG_EVALUATIONS",
    "FLAG_LAST_SUCCESS",
    "FLAG_LAST_UPDATE",
    "FLAG_SOURCE_ERRORS",
    "HEDGES",
    "POOL_ABANDONED",
    "POOL_ACTIVE",
    "POOL_QUEUED",
    "QUEUE_LIMIT",
    "RATE_LIMIT_TOKENS",
    "RETRIES",
    "STREAM_CLIENTS",
    "STREAM_DROPPED",
    "TIMEOUT_SECONDS",
    "ResilienceCollector",
    "circuit_families",
    "counter",
    "gauge",
    "install",
]

# circuit (labels: dependency). The meanings are a contract: see README "Prometheus".
CALLS = "resilience_calls"  # counter, + outcome: each caller call once, by its main outcome
FALLBACKS = "resilience_fallbacks"  # counter, + outcome (success, failure)
CALL_DURATION = "resilience_call_duration_seconds"  # histogram of attempts that ran
CIRCUIT_STATE = "resilience_circuit_state"  # gauge 0/1, + state
CIRCUIT_FAILURE_RATIO = "resilience_circuit_failure_ratio"  # gauge 0..1 over the rolling window
CIRCUIT_SLOW_CALL_RATIO = "resilience_circuit_slow_call_ratio"  # gauge 0..1
CIRCUIT_FAILURE_RATIO_THRESHOLD = "resilience_circuit_failure_ratio_threshold"  # gauge 0..1
CIRCUIT_OPENED = "resilience_circuit_opened"  # counter of transitions to open
RETRIES = "resilience_retries"  # counter, + outcome (attempted, budget_exhausted)
TIMEOUT_SECONDS = "resilience_timeout_seconds"  # gauge: each attempt's timeout
CONCURRENCY_LIMIT = "resilience_concurrency_limit"  # gauge: calls admitted at once (adaptive: now)
RATE_LIMIT_TOKENS = "resilience_rate_limit_available_tokens"  # gauge: the token bucket now
HEDGES = "resilience_hedges"  # counter, + outcome (sent, won, budget_exhausted)
QUEUE_LIMIT = "resilience_queue_limit"  # gauge: calls that may wait for a pool worker
POOL_ACTIVE = "resilience_pool_active_workers"  # thread pools only, as the two below
POOL_QUEUED = "resilience_pool_queued_calls"
POOL_ABANDONED = "resilience_pool_abandoned_workers"  # timed out, still running
CONCURRENT_CALLS = "resilience_concurrent_calls"  # semaphore / coroutine permits in use

# cache (labels: cache, zone)
CACHE_REQUESTS = "resilience_cache_requests"  # counter, + op, result (hit, miss, error, ok)
CACHE_REMOTE_HITS = "resilience_cache_remote_hits"
CACHE_READ_REPAIRS = "resilience_cache_read_repairs"
CACHE_WRITE_FAILURES = "resilience_cache_write_failures"
CACHE_DEDUP_HITS = "resilience_cache_dedup_hits"
CACHE_SINGLEFLIGHT_SHARES = "resilience_cache_singleflight_shares"
CACHE_ZONE_UP = "resilience_cache_zone_up"  # gauge 1 when the zone's breaker lets calls through
CACHE_DEGRADED_WRITES = "resilience_cache_degraded_writes"  # met their policy with a zone failing
CACHE_ACQUIRE_TIMEOUTS = "resilience_cache_acquire_timeouts"  # gave up waiting for a zone permit
CACHE_CATCH_UP_KEYS = "resilience_cache_catch_up_keys"  # counter, + event (queued, replayed, ...)
CACHE_CATCH_UP_PENDING = "resilience_cache_catch_up_pending"  # gauge: missed keys not yet deleted
CACHE_BATCHED_GETS = "resilience_cache_batched_gets"  # async gets that shared a multi-get

# flags (labels: flag, source)
FLAG_EVALUATIONS = "resilience_flag_evaluations"  # counter, + flag, reason
FLAG_SOURCE_ERRORS = "resilience_flag_source_errors"  # counter, + source, kind
FLAG_LAST_UPDATE = "resilience_flag_last_update_timestamp_seconds"  # gauge, + source: last change
# gauge, + source: last good check, moves even when nothing changed (alert on this one)
FLAG_LAST_SUCCESS = "resilience_flag_source_last_success_timestamp_seconds"

# fit
FIT_TAGS = "resilience_fit_tags"  # counter, + result (accepted, unsigned, bad_signature, ...)
FIT_INJECTIONS = "resilience_fit_injections"  # counter, + dependency, kind
# counter, + dependency, recipe, outcome: each tagged call once (circuit/_shadow.py)
FIT_CALLS = "resilience_fit_calls"

# web
STREAM_CLIENTS = "resilience_stream_clients"  # gauge
STREAM_DROPPED = "resilience_stream_dropped_clients"  # counter: fell behind, disconnected


def counter(name: str, doc: str, labels: list[str]) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, labels=labels)


def gauge(name: str, doc: str, labels: list[str]) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, labels=labels)


class ResilienceCollector(Collector):
    """Reads a resilience registry (the default one unless given) at scrape time."""

    def __init__(self, registry: Registry | None = None) -> None:
        self._registry = registry

    def describe(self) -> list[Any]:
        # Families appear and disappear with dependencies; describing nothing keeps
        # prometheus-client from calling collect() at registration time.
        return []

    def collect(self) -> Iterator[Any]:
        from .circuit import registry as default_registry

        # ``is None``, never ``or``: a Registry with no dependency yet is empty, so falsy.
        reg = default_registry() if self._registry is None else self._registry
        yield from circuit_families(reg)
        for source in reg.metrics_sources:
            yield from source.collect_metrics()


def circuit_families(reg: Registry) -> list[Any]:
    """The circuit metric families of every dependency of ``reg``, read now."""
    from .circuit import CALL_OUTCOMES, LATENCY_BOUNDS, OUTCOMES, State

    fallback_success = OUTCOMES.index("fallback_success")
    fallback_failure = OUTCOMES.index("fallback_failure")
    retried = OUTCOMES.index("retried")
    exhausted = OUTCOMES.index("retry_budget_exhausted")
    calls = counter(
        CALLS,
        "Caller calls by main outcome: success, failure, timeout, short_circuited, rejected, "
        "rate_limited, ignored (an exception listed in ignore=). A retried call counts once, "
        "by its last attempt.",
        ["dependency", "outcome"],
    )
    fallbacks = counter(
        FALLBACKS, "Fallbacks served (success) or raising.", ["dependency", "outcome"]
    )
    duration = HistogramMetricFamily(
        CALL_DURATION, "Duration of attempts that ran, in seconds.", labels=["dependency"]
    )
    state = gauge(CIRCUIT_STATE, "1 for the circuit's current state.", ["dependency", "state"])
    failure_ratio = gauge(
        CIRCUIT_FAILURE_RATIO,
        "Failed and timed-out attempts over attempts that ran, in the rolling window (0..1).",
        ["dependency"],
    )
    slow_ratio = gauge(
        CIRCUIT_SLOW_CALL_RATIO,
        "Slow attempts over attempts that ran, in the rolling window (0..1).",
        ["dependency"],
    )
    threshold = gauge(
        CIRCUIT_FAILURE_RATIO_THRESHOLD,
        "Failure ratio at which the circuit opens (0..1).",
        ["dependency"],
    )
    opened = counter(CIRCUIT_OPENED, "Transitions to open.", ["dependency"])
    retries = counter(
        RETRIES,
        "Retries made (attempted) and not made for an exhausted retry budget.",
        ["dependency", "outcome"],
    )
    timeout = gauge(TIMEOUT_SECONDS, "Timeout of each attempt, in seconds.", ["dependency"])
    limit = gauge(
        CONCURRENCY_LIMIT,
        "Calls admitted at once: the adaptive limit now where there is one, else pool workers "
        "for thread pools, else max_concurrent.",
        ["dependency"],
    )
    tokens = gauge(
        RATE_LIMIT_TOKENS, "Tokens in the dependency's rate-limit bucket now.", ["dependency"]
    )
    hedges = counter(
        HEDGES,
        "Hedged attempts sent, won (an extra attempt's result was used), and not sent for an "
        "exhausted hedge budget.",
        ["dependency", "outcome"],
    )
    fit_calls = counter(
        FIT_CALLS,
        "Calls made under a FIT recipe, each once by its main outcome (injected: a fault ran "
        "in it). Never counted in resilience_calls_total when a fault was injected.",
        ["dependency", "recipe", "outcome"],
    )
    queue = gauge(QUEUE_LIMIT, "Calls that may wait for a pool worker.", ["dependency"])
    active = gauge(POOL_ACTIVE, "Pool workers running a call.", ["dependency"])
    queued = gauge(POOL_QUEUED, "Calls waiting for a pool worker.", ["dependency"])
    abandoned = gauge(
        POOL_ABANDONED, "Workers still running a call whose caller timed out.", ["dependency"]
    )
    concurrent = gauge(
        CONCURRENT_CALLS,
        "Permits in use (coroutines and semaphore isolation; the adaptive limit's in flight).",
        ["dependency"],
    )
    bounds = [("+Inf" if b == float("inf") else repr(b)) for b in (*LATENCY_BOUNDS, float("inf"))]
    for dep in reg:
        name = dep.name
        totals = dep.window.totals()
        superseded = dep.window.superseded()
        for i in CALL_OUTCOMES:
            calls.add_metric([name, OUTCOMES[i]], totals.counts[i] - superseded[i])
        fallbacks.add_metric([name, "success"], totals.counts[fallback_success])
        fallbacks.add_metric([name, "failure"], totals.counts[fallback_failure])
        retries.add_metric([name, "attempted"], totals.counts[retried])
        retries.add_metric([name, "budget_exhausted"], totals.counts[exhausted])
        cumulative = 0
        buckets: list[tuple[str, float]] = []
        for bound, n in zip(bounds, totals.histogram, strict=True):
            cumulative += n
            buckets.append((bound, cumulative))
        duration.add_metric([name], buckets, totals.latency_sum)
        current = dep.state
        for st in State:
            state.add_metric([name, st.value], 1.0 if st is current else 0.0)
        snap = dep.window.snapshot()
        failure_ratio.add_metric([name], snap.failure_rate)
        slow_ratio.add_metric([name], snap.slow_rate)
        opened.add_metric([name], dep.breaker.opened_count)
        p = dep.policy
        threshold.add_metric([name], p.failure_rate)
        timeout.add_metric([name], p.timeout)
        concurrent.add_metric([name], dep.limiter.in_use)
        bucket = dep.rate_limiter
        if bucket is not None:
            tokens.add_metric([name], bucket.available(bucket.clock()))
        for outcome, n in dep.hedge_counts().items():
            hedges.add_metric([name, outcome], n)
        for (recipe, outcome), n in sorted(dep.experiments.counts().items()):
            fit_calls.add_metric([name, recipe, outcome], n)
        pool = dep.pool
        adaptive = dep.adaptive
        if pool is None:
            limit.add_metric([name], dep.limiter.limit)
            continue
        limit.add_metric([name], pool.pool_size if adaptive is None else adaptive.limit)
        queue.add_metric([name], 0 if adaptive is not None else pool.queue_size)
        active.add_metric([name], pool.running)
        queued.add_metric([name], pool.queued)
        abandoned.add_metric([name], pool.abandoned)
    return [
        calls,
        fallbacks,
        duration,
        state,
        failure_ratio,
        slow_ratio,
        threshold,
        opened,
        retries,
        timeout,
        limit,
        tokens,
        hedges,
        fit_calls,
        queue,
        active,
        queued,
        abandoned,
        concurrent,
    ]


_installed: set[int] = set()
_install_lock = threading.Lock()


def install(prometheus_registry: CollectorRegistry = REGISTRY) -> ResilienceCollector | None:
    """Register the default-registry collector with a prometheus-client registry, once."""
    with _install_lock:
        if id(prometheus_registry) in _installed:
            return None
        collector = ResilienceCollector()
        prometheus_registry.register(collector)
        _installed.add(id(prometheus_registry))
        return collector
