"""The breaker checked against a small reference model with hypothesis stateful testing.

The model is written from the contract in DESIGN.md, independently of the implementation: a
list of (bucket, outcome) events, a failure-rate rule over the last ``buckets`` buckets, a timed
open state, and half-open trials that must all succeed. Calls run sync (semaphore or thread
isolation) and async; some end in a BaseException (KeyboardInterrupt, SystemExit, the user's own)
or are cancelled: those decide nothing in the model, and after every step nothing may be left in
flight (permits, pool workers, half-open trial slots, coroutine deadlines).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from resilience import CircuitOpenError, Policy
from resilience.circuit import Dependency, State
from resilience.circuit._dependency import PROBATION_CALLS
from resilience.testing import FakeClock


class Boom(Exception):
    pass


class Abort(BaseException):
    pass


BASE_EXCEPTIONS: dict[str, type[BaseException]] = {
    "keyboard": KeyboardInterrupt,
    "exit": SystemExit,
    "abort": Abort,
}


class Model:
    def __init__(self, policy: Policy, now: float) -> None:
        self.p = policy
        self.state = "closed"
        self.events: list[tuple[int, bool]] = []  # (bucket epoch, failed)
        self.opened_at = 0.0
        self.trial_ok = 0
        self.streak = 0  # consecutive failures of calls made while closed
        self.now = now

    def epoch(self) -> int:
        return int(self.now / self.p.bucket_width)

    def allows(self) -> bool:
        if self.state == "open" and self.now - self.opened_at >= self.p.open_duration:
            self.state = "half_open"
            self.trial_ok = 0
        return self.state in ("closed", "half_open")

    def result(self, failed: bool) -> None:
        if self.state == "half_open":
            if failed:
                self.state, self.opened_at = "open", self.now
            else:
                self.trial_ok += 1
                if self.trial_ok >= self.p.half_open_calls:
                    self.state, self.events = "closed", []
            return
        self.events.append((self.epoch(), failed))
        self.streak = self.streak + 1 if failed else 0
        limit = self.p.consecutive_failures
        if failed and self.state == "closed" and limit is not None and self.streak >= limit:
            self.state, self.opened_at, self.streak = "open", self.now, 0
            return
        if failed and self.state == "closed":
            live = [f for e, f in self.events if e > self.epoch() - self.p.buckets]
            if len(live) >= self.p.min_calls and sum(live) / len(live) >= self.p.failure_rate:
                self.state, self.opened_at, self.streak = "open", self.now, 0


class BreakerMachine(RuleBasedStateMachine):
    @initialize(
        min_calls=st.integers(1, 6),
        rate=st.sampled_from([0.2, 0.5, 0.8, 1.0]),
        half_open=st.integers(1, 3),
        consecutive=st.sampled_from([None, 2, 3]),
        isolation=st.sampled_from(["semaphore", "thread"]),
    )
    def setup(
        self, min_calls: int, rate: float, half_open: int, consecutive: int | None, isolation: str
    ) -> None:
        self.clock = FakeClock(100.0)
        self.policy = Policy(
            isolation=isolation, min_calls=min_calls, failure_rate=rate,  # type: ignore[arg-type]
            half_open_calls=half_open, window=10.0, buckets=5, open_duration=3.0, timeout=60.0,
            consecutive_failures=consecutive, pool_size=1, queue_size=0, max_concurrent=1,
        )  # fmt: skip
        self.dep = Dependency("model", self.policy, clock=self.clock)
        self.dep._first_calls(PROBATION_CALLS)  # decorated calls take the fast paths
        self.model = Model(self.policy, self.clock())
        self.loop = asyncio.new_event_loop()

    def teardown(self) -> None:
        if hasattr(self, "loop"):
            self.loop.close()
            if self.dep.pool is not None:
                self.dep.pool.close()

    def _check(self, call: Callable[[], Any], outcome: str) -> None:
        """Run one call; ``outcome`` is what the function does: ok, fail, or a BaseException."""
        allowed = self.model.allows()
        try:
            call()
            ran, failed = True, False
        except Boom:
            ran, failed = True, True
        except CircuitOpenError:
            ran, failed = False, False
        except (KeyboardInterrupt, SystemExit, Abort, asyncio.CancelledError) as exc:
            assert outcome in BASE_EXCEPTIONS or outcome == "cancel", exc
            assert allowed, "a call the model refuses ran and raised"
            return  # decides nothing
        assert ran == allowed, f"model allows={allowed}, breaker ran={ran}"
        if ran:
            self.model.result(failed)

    def _sync(self, outcome: str, decorated: bool = False) -> None:
        def fn() -> str:
            if outcome == "fail":
                raise Boom()
            if outcome in BASE_EXCEPTIONS:
                raise BASE_EXCEPTIONS[outcome]()
            return "ok"

        # A decorated function takes the specialised closed-circuit path; ``call`` the general one.
        run = self.dep.guard().fast_sync(fn) if decorated else lambda: self.dep.call(fn)
        self._check(run, outcome)

    def _async(self, outcome: str, decorated: bool = False) -> None:
        started = asyncio.Event()

        async def fn() -> str:
            started.set()
            if outcome == "fail":
                raise Boom()
            if outcome == "cancel":
                await asyncio.Event().wait()
            if outcome in BASE_EXCEPTIONS:
                raise BASE_EXCEPTIONS[outcome]()
            return "ok"

        async def caller() -> Any:
            call = self.dep.guard().fast_async(fn) if decorated else lambda: self.dep.acall(fn)
            if outcome != "cancel":
                # A KeyboardInterrupt or SystemExit leaving this task stops the loop and comes
                # out of run_until_complete, as it would in a service.
                return await call()
            task = asyncio.ensure_future(call())
            for _ in range(3):  # let it start and block, or be refused
                await asyncio.sleep(0)
            if not task.done():
                assert started.is_set()
                task.cancel()
            return await task

        self._check(lambda: self.loop.run_until_complete(caller()), outcome)

    @rule(decorated=st.booleans())
    def succeed(self, decorated: bool) -> None:
        self._sync("ok", decorated)

    @rule(decorated=st.booleans())
    def fail(self, decorated: bool) -> None:
        self._sync("fail", decorated)

    @rule(kind=st.sampled_from(sorted(BASE_EXCEPTIONS)), decorated=st.booleans())
    def interrupted(self, kind: str, decorated: bool) -> None:
        self._sync(kind, decorated)

    @rule(
        outcome=st.sampled_from(["ok", "fail", "cancel", "abort", "exit"]), decorated=st.booleans()
    )
    def coroutine(self, outcome: str, decorated: bool) -> None:
        self._async(outcome, decorated)

    @rule(dt=st.sampled_from([0.1, 0.5, 1.0, 2.0, 3.0, 5.0]))
    def advance(self, dt: float) -> None:
        self.clock.advance(dt)
        self.model.now = self.clock()

    @precondition(lambda self: hasattr(self, "dep"))
    @invariant()
    def same_state(self) -> None:
        # OPEN -> HALF_OPEN is lazy in both: compare after normalising that one step.
        expected = self.model.state
        actual = self.dep.state
        assert actual.value == expected or (expected == "half_open" and actual is State.OPEN), (
            f"model {expected}, breaker {actual.value}"
        )

    @precondition(lambda self: hasattr(self, "dep"))
    @invariant()
    def nothing_in_flight(self) -> None:
        dep = self.dep
        assert dep.permits.in_use == 0
        assert dep.breaker.trials_in_flight == 0
        pool = dep.pool
        if pool is not None:
            assert pool.permits.in_use == 0 and pool.running == 0
            assert sum(t.is_alive() for t in pool._threads) == pool.pool_size
        for deadlines in dep._deadlines.values():
            assert deadlines.live() == 0


TestBreakerModel = BreakerMachine.TestCase
TestBreakerModel.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
