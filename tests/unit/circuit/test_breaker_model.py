"""The breaker checked against a small reference model with hypothesis stateful testing.

The model is written from the contract in DESIGN.md, independently of the implementation: a
list of (bucket, outcome) events, a failure-rate rule over the last ``buckets`` buckets, a timed
open state, and half-open trials that must all succeed.
"""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from resilience import CircuitOpenError, Policy
from resilience.circuit import Dependency, State
from resilience.testing import FakeClock


class Boom(Exception):
    pass


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
    )
    def setup(self, min_calls: int, rate: float, half_open: int, consecutive: int | None) -> None:
        self.clock = FakeClock(100.0)
        self.policy = Policy(
            isolation="semaphore", min_calls=min_calls, failure_rate=rate,
            half_open_calls=half_open, window=10.0, buckets=5, open_duration=3.0, timeout=60.0,
            consecutive_failures=consecutive,
        )  # fmt: skip
        self.dep = Dependency("model", self.policy, clock=self.clock)
        self.model = Model(self.policy, self.clock())

    def _call(self, fail: bool) -> None:
        def fn() -> str:
            if fail:
                raise Boom()
            return "ok"

        allowed = self.model.allows()
        try:
            self.dep.call(fn)
            ran, failed = True, False
        except Boom:
            ran, failed = True, True
        except CircuitOpenError:
            ran, failed = False, False
        assert ran == allowed, f"model allows={allowed}, breaker ran={ran}"
        if ran:
            self.model.result(failed)

    @rule()
    def succeed(self) -> None:
        self._call(False)

    @rule()
    def fail(self) -> None:
        self._call(True)

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


TestBreakerModel = BreakerMachine.TestCase
TestBreakerModel.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
