"""protect and Dependency: fallbacks, error typing and chaining, retries, signatures, states."""

from __future__ import annotations

import contextlib
import inspect
import threading
from typing import Any

import pytest
import tenacity

from resilience import (
    BulkheadFullError,
    CallTimeoutError,
    CircuitOpenError,
    FallbackFailedError,
    Policy,
    Retry,
    State,
    StateChange,
    protect,
    registry,
)
from resilience import testing as rtesting
from resilience.circuit import OUTCOMES


class Boom(Exception):
    pass


class BadRequest(Exception):
    pass


def counts(name: str) -> dict[str, int]:
    dep = registry().get(name)
    assert dep is not None
    return dict(zip(OUTCOMES, dep.window.totals().counts, strict=True))


def test_success_passes_the_result_through_and_is_counted() -> None:
    @protect("svc", isolation="semaphore")
    def double(x: int) -> int:
        return 2 * x

    assert double(21) == 42
    assert counts("svc")["success"] == 1


def test_failure_without_fallback_reraises_the_functions_own_exception() -> None:
    err = Boom("original")

    @protect("svc", isolation="semaphore")
    def fails() -> None:
        raise err

    with pytest.raises(Boom) as info:
        fails()
    assert info.value is err
    assert counts("svc")["failure"] == 1


@pytest.mark.parametrize("isolation", ["semaphore", "thread"])
def test_static_and_callable_fallbacks(isolation: str) -> None:
    @protect("a", isolation=isolation, fallback=[])
    def static(user: int) -> list[int]:
        raise Boom()

    @protect("b", isolation=isolation, fallback=lambda user: [user, -1])
    def computed(user: int) -> list[int]:
        raise Boom()

    assert static(1) == []
    assert computed(7) == [7, -1]
    assert counts("a")["fallback_success"] == 1 and counts("a")["failure"] == 1


def test_failing_fallback_raises_fallback_failed_chaining_both() -> None:
    def bad_fallback(x: int) -> int:
        raise KeyError("fb")

    @protect("svc", isolation="semaphore", fallback=bad_fallback)
    def fails(x: int) -> int:
        raise Boom("call")

    with pytest.raises(FallbackFailedError) as info:
        fails(1)
    assert isinstance(info.value.error, Boom)
    assert isinstance(info.value.__cause__, KeyError)
    assert isinstance(info.value.__cause__.__context__, Boom)
    assert counts("svc")["fallback_failure"] == 1


def test_ignored_exceptions_pass_uncounted_and_without_fallback() -> None:
    @protect("svc", isolation="semaphore", ignore=BadRequest, fallback="fb", min_calls=1)
    def bad() -> str:
        raise BadRequest()

    for _ in range(5):
        with pytest.raises(BadRequest):
            bad()
    c = counts("svc")
    assert c["ignored"] == 5 and c["failure"] == 0 and c["fallback_success"] == 0
    assert registry().dependency("svc").state is State.CLOSED


def test_circuit_opens_then_short_circuits_with_the_last_error_chained() -> None:
    calls = []

    @protect("svc", isolation="semaphore", min_calls=4, failure_rate=0.5, open_duration=5)
    def flaky() -> None:
        calls.append(1)
        raise Boom("down")

    with rtesting.fake_clock():
        for _ in range(4):
            with pytest.raises(Boom):
                flaky()
        with pytest.raises(CircuitOpenError) as info:
            flaky()
    assert len(calls) == 4  # the short-circuited call never ran
    assert info.value.dependency == "svc" and info.value.state == "open"
    assert info.value.retry_after == pytest.approx(5.0)
    assert isinstance(info.value.__cause__, Boom)
    assert counts("svc")["short_circuited"] == 1


def test_half_open_trial_closes_the_circuit_and_listeners_see_every_transition() -> None:
    seen: list[StateChange] = []
    registry().on_state_change(seen.append)
    healthy = [False]

    @protect("svc", isolation="semaphore", min_calls=2, open_duration=5)
    def call() -> str:
        if not healthy[0]:
            raise Boom()
        return "ok"

    with rtesting.fake_clock() as clock:
        for _ in range(2):
            with pytest.raises(Boom):
                call()
        with pytest.raises(CircuitOpenError):
            call()
        clock.advance(5.0)
        healthy[0] = True
        assert call() == "ok"
    assert [(c.old, c.new) for c in seen] == [
        (State.CLOSED, State.OPEN),
        (State.OPEN, State.HALF_OPEN),
        (State.HALF_OPEN, State.CLOSED),
    ]


def test_half_open_admits_exactly_the_configured_concurrent_trials() -> None:
    dep = registry().dependency(
        "svc", policy=Policy(isolation="semaphore", min_calls=1, half_open_calls=2, open_duration=1)
    )
    release = threading.Event()
    started = threading.Barrier(3)
    with rtesting.fake_clock() as clock:
        with pytest.raises(Boom):
            dep.call(lambda: (_ for _ in ()).throw(Boom()))
        assert dep.state is State.OPEN
        clock.advance(1.0)

        def trial() -> str:
            started.wait(timeout=5)
            release.wait(timeout=5)
            return "ok"

        results: list[str] = []
        threads = [
            threading.Thread(target=lambda: results.append(dep.call(trial))) for _ in range(2)
        ]
        for t in threads:
            t.start()
        started.wait(timeout=5)  # both trials are inside the function now
        with pytest.raises(CircuitOpenError) as info:
            dep.call(lambda: "third")
        assert info.value.state == "half_open"
        release.set()
        for t in threads:
            t.join()
    assert results == ["ok", "ok"] and dep.state is State.CLOSED


def test_semaphore_isolation_rejects_past_max_concurrent() -> None:
    inside = threading.Event()
    release = threading.Event()

    @protect("svc", isolation="semaphore", max_concurrent=1)
    def hold() -> None:
        inside.set()
        release.wait(timeout=5)

    t = threading.Thread(target=hold)
    t.start()
    inside.wait(timeout=5)
    with pytest.raises(BulkheadFullError) as info:
        hold()
    release.set()
    t.join()
    assert info.value.limit == 1 and counts("svc")["rejected"] == 1


def test_semaphore_call_returning_past_its_timeout_counts_as_timeout() -> None:
    clock = rtesting.FakeClock()
    registry().set_clock(clock)

    @protect("svc", isolation="semaphore", timeout=0.5, fallback="late")
    def slow() -> str:
        clock.advance(0.75)
        return "value"

    assert slow() == "late"
    assert counts("svc")["timeout"] == 1


def test_forced_states() -> None:
    @protect("svc", isolation="semaphore", min_calls=1)
    def ok() -> str:
        return "ok"

    with rtesting.forced("svc", "open"):
        with pytest.raises(CircuitOpenError) as info:
            ok()
        assert info.value.state == "forced_open"
    assert ok() == "ok"

    @protect("svc2", isolation="semaphore", min_calls=1)
    def bad() -> None:
        raise Boom()

    with rtesting.forced("svc2", "closed"):
        for _ in range(5):
            with pytest.raises(Boom):
                bad()
        assert registry().dependency("svc2").state is State.FORCED_CLOSED


def test_retries_each_attempt_through_the_breaker_and_counts_attempts() -> None:
    attempts = []

    @protect(
        "svc",
        isolation="semaphore",
        retry=Retry(attempts=3, wait=tenacity.wait_none(), on=(ConnectionError,)),
    )
    def flaky() -> str:
        attempts.append(1)
        if len(attempts) < 3:
            raise ConnectionError()
        return "ok"

    assert flaky() == "ok"
    assert len(attempts) == 3
    c = counts("svc")
    assert c["failure"] == 2 and c["success"] == 1
    assert registry().dependency("svc").retries == 2


def test_retry_gives_up_after_attempts_then_falls_back() -> None:
    attempts = []

    @protect(
        "svc",
        isolation="semaphore",
        fallback="fb",
        retry=Retry(attempts=4, wait=tenacity.wait_none(), on=ConnectionError),
    )
    def down() -> str:
        attempts.append(1)
        raise ConnectionError()

    assert down() == "fb"
    assert len(attempts) == 4


def test_other_errors_and_short_circuits_are_not_retried() -> None:
    attempts = []

    @protect(
        "svc",
        isolation="semaphore",
        min_calls=1,
        retry=Retry(attempts=5, wait=tenacity.wait_none(), on=ConnectionError),
    )
    def fails() -> None:
        attempts.append(1)
        raise ConnectionError()

    with pytest.raises(CircuitOpenError):  # first failure opens (min_calls=1); retry stops
        fails()
    assert len(attempts) == 1
    with pytest.raises(Boom):
        protect("other", isolation="semaphore", retry=Retry(attempts=5, wait=tenacity.wait_none()))(
            lambda: (attempts.append(1), (_ for _ in ()).throw(Boom()))
        )()
    assert len(attempts) == 2


def test_decorator_keeps_signature_docs_and_typing() -> None:
    def plain(user_id: int, *, limit: int = 10) -> list[int]:
        """Ratings of a user."""
        return [user_id] * limit

    async def coro(user_id: int) -> int:
        """Async."""
        return user_id

    documented = protect("svc")(plain)
    adocumented = protect("svc2")(coro)
    assert documented.__name__ == "plain" and documented.__doc__ == "Ratings of a user."
    assert inspect.signature(documented) == inspect.signature(plain)
    assert str(inspect.signature(documented)).startswith("(user_id: 'int', *, limit")
    assert inspect.iscoroutinefunction(adocumented)
    assert not inspect.iscoroutinefunction(documented)
    assert inspect.signature(adocumented) == inspect.signature(coro)
    assert documented(2, limit=2) == [2, 2]


def test_methods_and_classmethods() -> None:
    class Client:
        def __init__(self) -> None:
            self.base = 10

        @protect("m", isolation="semaphore", fallback=lambda self, x: -x)
        def get(self, x: int) -> int:
            if x < 0:
                raise Boom()
            return self.base + x

        @protect("cm", isolation="semaphore")
        @classmethod
        def make(cls, x: int) -> str:
            return f"{cls.__name__}:{x}"

    c = Client()
    assert c.get(1) == 11 and c.get(-3) == 3
    assert Client.make(2) == "Client:2"


def test_thread_isolation_times_out_and_counts_abandoned_workers() -> None:
    release = threading.Event()
    finished = threading.Event()

    @protect("svc", timeout=0.05, pool_size=1, queue_size=0)
    def stuck() -> str:
        release.wait(timeout=10)
        finished.set()
        return "late"

    with pytest.raises(CallTimeoutError) as info:
        stuck()
    assert info.value.timeout == 0.05
    pool = registry().dependency("svc").pool
    assert pool is not None and pool.abandoned == 1 and pool.running == 1
    # the abandoned worker still holds the only slot: the pool must not admit another call
    with pytest.raises(BulkheadFullError):
        stuck()
    release.set()
    finished.wait(timeout=5)
    for _ in range(100):
        if pool.abandoned == 0 and pool.permits.in_use == 0:
            break
        threading.Event().wait(0.01)
    assert pool.abandoned == 0 and pool.max_running == 1


def test_thread_pool_runs_in_the_callers_context() -> None:
    import resilience

    @protect("svc")
    def read_scope() -> Any:
        scope = resilience.current_scope()
        return None if scope is None else scope.attrs.get("user")

    with resilience.request_scope({"user": "u1"}):
        assert read_scope() == "u1"
    assert read_scope() is None


def test_policy_changes_apply_to_the_next_call() -> None:
    clock = rtesting.FakeClock()
    registry().set_clock(clock)

    @protect("svc", isolation="semaphore", timeout=1.0, fallback="timeout")
    def takes_half_a_second() -> str:
        clock.advance(0.5)
        return "ok"

    assert takes_half_a_second() == "ok"
    registry().dependency("svc").update_policy(timeout=0.25)
    assert takes_half_a_second() == "timeout"


def test_slow_call_rate_opens_the_circuit() -> None:
    clock = rtesting.FakeClock()
    registry().set_clock(clock)

    @protect(
        "svc",
        isolation="semaphore",
        timeout=5.0,
        min_calls=4,
        slow_call_duration=0.5,
        slow_call_rate=0.5,
    )
    def sometimes_slow(slow: bool) -> str:
        clock.advance(0.75 if slow else 0.01)
        return "ok"

    for slow in (False, False, True):
        assert sometimes_slow(slow) == "ok"
    assert registry().dependency("svc").state is State.CLOSED
    assert sometimes_slow(True) == "ok"  # 2 slow of 4 calls: rate 0.5 reached
    assert registry().dependency("svc").state is State.OPEN


def test_consecutive_failures_open_even_behind_many_successes() -> None:
    @protect("svc", isolation="semaphore", min_calls=5, consecutive_failures=3)
    def call(ok: bool) -> str:
        if not ok:
            raise Boom()
        return "ok"

    for _ in range(200):
        call(True)
    for ok in (False, False, True, False, False):  # a success breaks the streak
        with contextlib.suppress(Boom):
            call(ok)
    assert registry().dependency("svc").state is State.CLOSED
    with pytest.raises(Boom):
        call(False)  # third in a row; the failure rate (5/205) is far below 0.5
    assert registry().dependency("svc").state is State.OPEN


def test_tickets_admit_record_and_short_circuit_like_calls() -> None:
    dep = registry().dependency("svc", isolation="semaphore", min_calls=3, max_concurrent=1)
    t = dep.begin()
    with pytest.raises(BulkheadFullError):
        dep.begin()  # the ticket holds the only permit
    t.success()
    dep.begin().failure(Boom())
    err = dep.begin().timeout()
    assert isinstance(err, CallTimeoutError)
    assert dep.state is State.OPEN
    with pytest.raises(CircuitOpenError):
        dep.begin()
    c = counts("svc")
    assert (c["success"], c["failure"], c["timeout"], c["rejected"]) == (1, 1, 1, 1)
    assert dep.permits.in_use == 0


def test_a_ticket_carries_the_active_fault() -> None:
    from resilience.context import FIT

    class Fault:
        def wrap_sync(self, fn: Any, timeout: float) -> Any:
            return fn

    fault = Fault()

    class Ctx:
        recipe_name = "r"
        bulkhead_share = 1.0

        def fault_for(self, dependency: str) -> object:
            return fault

    token = FIT.set(Ctx())  # type: ignore[arg-type]
    try:
        ticket = registry().dependency("svc").begin()
    finally:
        FIT.reset(token)
    assert ticket.fault is fault
    ticket.cancel()
    with pytest.raises(RuntimeError):
        ticket.success()
