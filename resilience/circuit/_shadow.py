"""FIT isolation: what an experiment does to a dependency stays in the experiment.

A call made under a FIT recipe (the ``FIT`` contextvar holds a context: a *tagged* call) belongs
to the experiment of that recipe. Per dependency, an :class:`Experiments` book keeps one
:class:`Shadow` per recipe: a rolling window and a breaker with the dependency's policy, and the
experiment's own retry budgets. What goes where (see ``_experiment`` for the routes):

- an attempt into which FIT injects a fault is judged by the shadow only: its outcome, its
  latency, the breaker's verdict, its retries and its fallback never reach the dependency's
  window, breaker, retry budget or ``resilience_calls_total``, and the adaptive limit it holds a
  permit of takes no sample from it;
- an attempt FIT leaves alone is a real call: recorded as any call is, and judged by the shadow
  as well (so a real outage also opens the experiment's circuit);
- a tagged call runs only if both the dependency's breaker and its shadow admit it; refusals
  made for the experiment (its own circuit open, its share of the bulkhead used up) are the
  shadow's;
- attempts with a fault still hold a permit or thread of the dependency (a latency fault holds
  it as long as the latency lasts), but together at most ``bulkhead_share`` of them (at least
  one; ``fit.enable(bulkhead_share=...)``): past it a faulty attempt is refused inside its
  experiment, so untagged calls always find the rest free. Tagged attempts FIT leaves alone are
  real calls and take permits as any call does.

``resilience_fit_calls_total{dependency, recipe, outcome}`` counts each tagged call once, by
the outcome of the attempt that decided it (``injected`` when a fault ran in it). Shadows not used
for ``SHADOW_IDLE`` seconds are dropped, and at most ``MAX_SHADOWS`` are kept per dependency
(the least recently used goes first), so experiments cannot grow memory without bound.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ._breaker import Breaker, StateChange
from ._budget import RetryAccount, RetryBudget
from ._hedge import Hedge, HedgeThrottle
from ._policy import Policy
from ._record import Listener, Recorder
from ._window import FAILURE, IGNORED, SUCCESS, TIMEOUT, RollingWindow

if TYPE_CHECKING:
    from ._retry import Retry

__all__ = ["MAX_SHADOWS", "SHADOW_IDLE", "Experiments", "Shadow"]

log = logging.getLogger("resilience.circuit")

SHADOW_IDLE = 120.0  # seconds without a tagged call before an experiment's state is dropped
MAX_SHADOWS = 64  # experiments kept per dependency at once
_SWEEP_EVERY = 10.0  # seconds between looks for idle shadows


class Shadow(Recorder):
    """One experiment's view of one dependency: its window, its breaker, its retry budgets."""

    def __init__(
        self, name: str, recipe: str, policy: Policy, clock: Callable[[], float], now: float
    ) -> None:
        self.name = name
        self.recipe = recipe
        self.policy = policy
        self._clock = clock
        self._listeners: list[Listener] = []
        self._shared_listeners: list[Listener] = []
        self._loop_warned = True  # warnings are the dependency's business
        self.window = RollingWindow(policy.window, policy.buckets, clock, policy.slow_call_duration)
        self.breaker = Breaker(name, policy, self.window, self._emit)
        self.used = now
        self._budgets: dict[RetryBudget, RetryAccount] = {}
        self._throttles: dict[Hedge, HedgeThrottle] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<Shadow {self.name!r} recipe={self.recipe!r} {self.breaker.state.value}>"

    def _emit(self, change: StateChange) -> None:
        # The experiment's circuit: logged, never handed to the dependency's listeners (alerts,
        # dashboards), which watch real traffic only.
        log.info(
            "FIT experiment %r: circuit %s %s -> %s (%s)",
            self.recipe,
            self.name,
            change.old.value,
            change.new.value,
            change.reason,
        )

    def adopt(self, policy: Policy) -> None:
        """Follow a policy change of the dependency."""
        old, self.policy = self.policy, policy
        if (old.window, old.buckets, old.slow_call_duration) != (
            policy.window,
            policy.buckets,
            policy.slow_call_duration,
        ):
            self.window.resize(policy.window, policy.buckets, policy.slow_call_duration)
        self.breaker.policy = policy

    def retry_budget(self, retry: Retry) -> RetryAccount | None:
        """The experiment's own budget for retries made with ``retry`` (None: unlimited)."""
        config = retry.budget
        if config is None:
            return None
        account = self._budgets.get(config)
        if account is None:
            with self._lock:
                account = self._budgets.setdefault(config, RetryAccount(config))
        return account

    def hedge_throttle(self, hedge: Hedge) -> HedgeThrottle:
        """The experiment's own hedge budget for ``hedge``."""
        throttle = self._throttles.get(hedge)
        if throttle is None:
            with self._lock:
                throttle = self._throttles.setdefault(hedge, HedgeThrottle(hedge))
        return throttle

    def mirror(self, decision: int, outcome: int, value: Any, latency: float, now: float) -> None:
        """Judge the real outcome of a tagged call that the dependency recorded already."""
        if outcome == SUCCESS:
            self._success(decision, latency, now)
        elif outcome == FAILURE:
            self.window.record_call(FAILURE, latency, now)
            self.breaker.on_result(decision, False, now, value)
        elif outcome == TIMEOUT:
            self.window.record_call(TIMEOUT, latency, now)
            self.breaker.on_result(decision, False, now, value)
        else:
            if outcome == IGNORED:
                self.window.record(IGNORED, now)
            self.breaker.release(decision)

    def refused(self, decision: int, outcome: int, now: float) -> None:
        """The dependency refused a tagged call (``outcome``): counted, its trial slot freed."""
        self.window.record(outcome, now)
        self.breaker.release(decision)


class Experiments:
    """The experiments touching one dependency: shadows by recipe, tagged calls in flight, and
    the cumulative ``resilience_fit_calls_total`` counts (kept when a shadow is dropped)."""

    def __init__(self) -> None:
        self._shadows: dict[str, Shadow] = {}
        self._lock = threading.Lock()
        self.tagged = 0  # faulty tagged calls holding a permit or thread of the dependency now
        self._counts: dict[tuple[str, str], int] = {}
        self._swept = float("-inf")

    def shadow(self, name: str, recipe: str, policy: Policy, clock: Callable[[], float]) -> Shadow:
        """The shadow of ``recipe``, created on first use; marks it used now."""
        now = clock()
        shadow = self._shadows.get(recipe)
        if shadow is None or now - self._swept >= _SWEEP_EVERY:
            with self._lock:
                self._sweep(now)
                shadow = self._shadows.get(recipe)
                if shadow is None:
                    shadow = self._shadows[recipe] = Shadow(name, recipe, policy, clock, now)
                    while len(self._shadows) > MAX_SHADOWS:
                        oldest = min(self._shadows.values(), key=lambda s: s.used)
                        del self._shadows[oldest.recipe]
        if shadow.policy is not policy:
            shadow.adopt(policy)
        shadow.used = now
        return shadow

    def _sweep(self, now: float) -> None:
        # Called with the lock held.
        self._swept = now
        for recipe in [r for r, s in self._shadows.items() if now - s.used > SHADOW_IDLE]:
            del self._shadows[recipe]

    def get(self, recipe: str) -> Shadow | None:
        return self._shadows.get(recipe)

    def __len__(self) -> int:
        return len(self._shadows)

    def take_slot(self, capacity: int) -> bool:
        """A permit's worth of the experiments' share: ``capacity`` is the most tagged calls
        the dependency lets hold its permits or threads at once (at least one)."""
        with self._lock:
            if self.tagged >= max(1, capacity):
                return False
            self.tagged += 1
            return True

    def give_slot(self) -> None:
        with self._lock:
            self.tagged -= 1

    def count(self, recipe: str, outcome: str) -> None:
        with self._lock:
            key = (recipe, outcome)
            self._counts[key] = self._counts.get(key, 0) + 1

    def counts(self) -> dict[tuple[str, str], int]:
        """(recipe, outcome) -> tagged calls, since the process started."""
        with self._lock:
            return dict(self._counts)

    def clear(self) -> None:
        """Drop every shadow (the clock changed, or a forked child starts over)."""
        self._lock = threading.Lock()
        self._shadows = {}
        self.tagged = 0
        self._swept = float("-inf")
