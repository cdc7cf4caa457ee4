"""FIT isolation: what a recipe injects stays in its experiment's shadow breaker and metrics;
real traffic, tagged or not, keeps its circuit, its counts and its capacity."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
import tenacity
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from resilience import (
    AdaptiveLimit,
    BulkheadFullError,
    CircuitOpenError,
    FaultInjectedError,
    Hedge,
    Retry,
    State,
    protect,
    registry,
)
from resilience import testing as rtesting
from resilience.circuit import MAX_SHADOWS, OUTCOMES, SHADOW_IDLE
from resilience.fit import Recipe, active
from resilience.metrics import ResilienceCollector


def recipe(name: str = "exp", **fields: object) -> Recipe:
    return Recipe.from_dict({"name": name, **fields})


FAIL = recipe(faults=[{"dependency": "svc", "error": True}])
ELSEWHERE = recipe(faults=[{"dependency": "other", "error": True}])  # leaves svc alone


def counts(name: str) -> dict[str, int]:
    return dict(zip(OUTCOMES, registry().dependency(name).window.totals().counts, strict=True))


def shadow_counts(name: str, recipe_name: str = "exp") -> dict[str, int]:
    shadow = registry().dependency(name).experiments.get(recipe_name)
    assert shadow is not None
    return dict(zip(OUTCOMES, shadow.window.totals().counts, strict=True))


def samples() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    prom = CollectorRegistry()
    prom.register(ResilienceCollector(registry()))
    text = generate_latest(prom).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def fit_calls(dependency: str, recipe_name: str = "exp") -> dict[str, float]:
    out = {}
    for (name, labels), value in samples().items():
        d = dict(labels)
        if (name, d.get("dependency"), d.get("recipe")) == (
            "resilience_fit_calls_total",
            dependency,
            recipe_name,
        ):
            out[d["outcome"]] = value
    return out


def calls_total(dependency: str) -> dict[str, float]:
    out = {}
    for (name, labels), value in samples().items():
        d = dict(labels)
        if name == "resilience_calls_total" and d.get("dependency") == dependency and value:
            out[d["outcome"]] = value
    return out


@pytest.mark.parametrize("isolation", ["semaphore", "thread"])
def test_injected_failures_open_the_experiments_circuit_only(isolation: str) -> None:
    ran: list[int] = []

    @protect("svc", isolation=isolation, min_calls=5, fallback="fallback")
    def fetch() -> str:
        ran.append(1)
        return "real"

    with active(FAIL):
        assert [fetch() for _ in range(20)] == ["fallback"] * 20
    dep = registry().dependency("svc")
    assert dep.experiment_state("exp") is State.OPEN  # the experiment saw its circuit open
    assert dep.state is State.CLOSED  # the real one never noticed
    assert ran == []
    assert fetch() == "real"  # an untagged call runs the real function
    assert ran == [1]
    # 5 injected failures opened the shadow; 15 were short-circuited by it, nothing injected
    assert fit_calls("svc") == {"injected": 5, "short_circuited": 15}
    assert shadow_counts("svc")["failure"] == 5
    assert shadow_counts("svc")["fallback_success"] == 20  # the experiment's fallbacks
    assert calls_total("svc") == {"success": 1}  # real metrics: only the untagged call
    c = counts("svc")
    assert c["failure"] == c["short_circuited"] == c["fallback_success"] == 0


def test_untagged_calls_during_an_experiment_keep_their_circuit() -> None:
    @protect("svc", isolation="semaphore", min_calls=2, fallback="fallback")
    def fetch() -> str:
        return "real"

    results = []
    for _ in range(50):  # interleaved: tagged, untagged, tagged...
        with active(FAIL):
            fetch()
        results.append(fetch())
    assert results == ["real"] * 50
    assert registry().dependency("svc").state is State.CLOSED


async def test_async_injected_timeouts_stay_in_the_experiment() -> None:
    @protect("svc", timeout=0.02, min_calls=2, fallback="fallback")
    async def fetch() -> str:
        return "real"

    hang = recipe(faults=[{"dependency": "svc", "timeout": True}])
    with active(hang, bulkhead_share=0.5):  # 5 of the 10 permits for faulty calls
        assert await asyncio.gather(*(fetch() for _ in range(4))) == ["fallback"] * 4
    assert await fetch() == "real"
    assert shadow_counts("svc")["timeout"] == 4
    assert counts("svc")["timeout"] == 0
    assert fit_calls("svc") == {"injected": 4}


def test_a_real_outage_is_seen_by_tagged_calls_and_judged_by_both() -> None:
    down = [True]

    @protect("svc", isolation="semaphore", min_calls=3, fallback="fallback", open_duration=60)
    def fetch() -> str:
        if down[0]:
            raise ConnectionError("really down")
        return "real"

    with active(ELSEWHERE):  # tagged, but svc gets no fault: real calls
        assert [fetch() for _ in range(3)] == ["fallback"] * 3
    dep = registry().dependency("svc")
    assert dep.state is State.OPEN  # real failures open the real circuit, tagged or not
    assert dep.experiment_state("exp") is State.OPEN  # ...and the experiment's
    assert calls_total("svc") == {"failure": 3}
    with active(FAIL):  # a fault while the real circuit is open: refused, nothing injected
        assert fetch() == "fallback"
    assert fit_calls("svc") == {"failure": 3, "short_circuited": 1}


def test_a_tagged_call_runs_only_if_both_circuits_admit_it() -> None:
    ran: list[int] = []

    @protect("svc", isolation="semaphore", min_calls=2, fallback="fallback")
    def fetch() -> str:
        ran.append(1)
        return "real"

    with active(FAIL):
        fetch()
        fetch()  # the experiment's circuit is open now
    with active(recipe(faults=[{"dependency": "svc", "error": True, "probability": 0.0}])):
        assert fetch() == "fallback"  # no fault this time, but the experiment's circuit is open
    assert ran == []
    with active(FAIL, bulkhead_share=1.0), pytest.raises(CircuitOpenError):
        protect("svc")(lambda: "no fallback")()
    with rtesting.forced("svc", "open"), active(ELSEWHERE):
        assert fetch() == "fallback"  # the real circuit is open: a real outage, seen
    assert registry().dependency("svc").experiment_state("exp") is State.OPEN


def test_experiments_have_shadows_of_their_own_and_they_are_forgotten() -> None:
    with rtesting.fake_clock() as clock:

        @protect("svc", isolation="semaphore", min_calls=2, fallback="fallback")
        def fetch() -> str:
            return "real"

        with active(recipe("a", faults=[{"dependency": "svc", "error": True}])):
            fetch()
            fetch()
        with active(recipe("b", faults=[{"dependency": "other", "error": True}])):
            assert fetch() == "real"  # recipe b's experiment has its own, closed, circuit
        dep = registry().dependency("svc")
        assert dep.experiment_state("a") is State.OPEN
        assert dep.experiment_state("b") is State.CLOSED
        clock.advance(SHADOW_IDLE + 1)
        with active(recipe("c", faults=[])):
            fetch()
        assert dep.experiment_state("a") is None and dep.experiment_state("b") is None
        for i in range(MAX_SHADOWS + 10):
            with active(recipe(f"r{i}", faults=[])):
                fetch()
        assert len(dep.experiments) == MAX_SHADOWS
        assert dep.experiment_state(f"r{MAX_SHADOWS + 9}") is State.CLOSED


def test_faulty_calls_hold_at_most_their_share_of_the_bulkhead() -> None:
    started = threading.Barrier(2)
    slow = recipe(faults=[{"dependency": "svc", "latency": 1.0}])
    dep = registry().dependency("svc", isolation="semaphore", max_concurrent=10, timeout=2.0)

    def tagged(out: list[Any]) -> None:
        with active(slow):  # bulkhead_share 0.1: one permit of ten
            started.wait()
            try:
                out.append(dep.call(lambda: "real"))
            except BulkheadFullError as exc:
                out.append(exc)

    out: list[Any] = []
    threads = [threading.Thread(target=tagged, args=(out,)) for _ in range(2)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 5
    while dep.permits.in_use < 1 and time.monotonic() < deadline:
        time.sleep(0.005)  # one tagged call sleeps in its latency fault, holding one permit
    assert dep.permits.in_use == 1
    untagged = [dep.permits.try_take() for _ in range(9)]
    assert all(untagged)  # untagged calls find the other 90% free
    for _ in untagged:
        dep.permits.give()
    for t in threads:
        t.join()
    assert out.count("real") == 1
    refused = [o for o in out if isinstance(o, BulkheadFullError)]
    assert len(refused) == 1 and refused[0].limit == 1
    assert fit_calls("svc") == {"injected": 1, "rejected": 1}
    assert counts("svc")["rejected"] == 0 and shadow_counts("svc")["rejected"] == 1
    assert dep.experiments.tagged == 0


def test_tagged_calls_without_a_fault_take_permits_as_any_call() -> None:
    dep = registry().dependency("svc", isolation="semaphore", max_concurrent=4)
    with active(ELSEWHERE):
        assert dep.call(lambda: [dep.permits.in_use, dep.experiments.tagged]) == [1, 0]


def test_injected_latency_teaches_the_adaptive_limit_nothing() -> None:
    limit = AdaptiveLimit("aimd", initial=10, min=1, max=10, backoff_ratio=0.5)
    dep = registry().dependency("svc", isolation="semaphore", limit=limit, timeout=0.02)
    with active(recipe(faults=[{"dependency": "svc", "timeout": True}])):
        assert dep.guard(fallback="fb").call(lambda: "real", None, (), {}) == "fb"
    assert dep.adaptive is not None and dep.adaptive.limit == 10  # no drop learnt
    assert dep.adaptive.inflight == 0
    with pytest.raises(Exception, match="timed out"):
        dep.call(lambda: time.sleep(0.03))  # a real timeout is a drop
    assert dep.adaptive.limit == 5


def test_a_tagged_call_counts_once_and_retries_on_the_experiments_budget() -> None:
    attempts: list[int] = []
    retry = Retry(attempts=3, wait=tenacity.wait_none(), on=FaultInjectedError)

    @protect("svc", isolation="semaphore", min_calls=100, fallback="fb", retry=retry)
    def fetch() -> str:
        attempts.append(1)
        return "real"

    with active(FAIL):
        assert fetch() == "fb"  # three injected failures, one caller call
    assert fit_calls("svc") == {"injected": 1}
    assert shadow_counts("svc")["failure"] == 3 and shadow_counts("svc")["retried"] == 2
    assert counts("svc")["retried"] == 0  # the real retries counter never moved
    dep = registry().dependency("svc")
    shadow = dep.experiments.get("exp")
    assert shadow is not None
    spent = shadow.retry_budget(retry)
    real = dep.retry_budget(retry)
    assert spent is not None and real is not None
    assert spent.balance(dep._clock()) < real.balance(dep._clock())  # the experiment paid


def test_every_attempt_of_a_tagged_call_asks_the_recipe() -> None:
    rolls = iter([0.1, 0.9])  # first attempt: fault (p < 0.5); second: none
    spec = recipe(faults=[{"dependency": "svc", "error": True, "probability": 0.5}])
    retry = Retry(attempts=2, wait=tenacity.wait_none(), on=FaultInjectedError)

    @protect("svc", isolation="semaphore", min_calls=100, retry=retry)
    def fetch() -> str:
        return "real"

    with active(spec, random=lambda: next(rolls)):
        assert fetch() == "real"  # the retry ran for real
    assert fit_calls("svc") == {"success": 1}  # counted once, by the attempt that decided it
    assert calls_total("svc") == {"success": 1}  # the real attempt is a real call


async def test_hedged_attempts_of_a_tagged_call_each_ask_the_recipe() -> None:
    rolls = iter([0.1, 0.9])  # attempt 1: 10 s of injected latency; attempt 2: no fault
    spec = recipe(faults=[{"dependency": "svc", "latency": 10.0, "probability": 0.5}])

    @protect("svc", hedge=Hedge(delay=0.02, budget=1.0), timeout=20.0, max_concurrent=10)
    async def fetch() -> str:
        return "real"

    start = time.monotonic()
    with active(spec, random=lambda: next(rolls), bulkhead_share=1.0):
        assert await fetch() == "real"
    assert time.monotonic() - start < 5.0  # the hedge won; the faulty attempt was cancelled
    assert fit_calls("svc") == {"success": 1}
    assert samples()[("resilience_hedges_total", (("dependency", "svc"), ("outcome", "sent")))] == 0
