"""Load control on a dependency: its adaptive limit and token bucket, the retry and hedge
budgets its call sites share, the observed latency a hedge waits for, and its experiments.

``Dependency`` inherits this; the state it reads (policy, window, clock, limits) lives there.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from ._adaptive import AdaptiveLimiter
from ._breaker import State
from ._budget import RetryAccount, RetryBudget
from ._hedge import Hedge, HedgeThrottle
from ._ratelimit import TokenBucket

if TYPE_CHECKING:
    from ._bulkhead import ConcurrencyLimit, Permits, ThreadBulkhead
    from ._policy import Policy
    from ._retry import Retry
    from ._shadow import Experiments
    from ._window import RollingWindow

__all__ = ["HEDGE_OUTCOMES", "P95_EVERY", "P95_MIN_CALLS", "LoadControl", "LoadState"]

HEDGE_OUTCOMES = ("sent", "won", "budget_exhausted")  # resilience_hedges_total's outcomes
P95_EVERY = 0.1  # seconds between reads of the observed p95 (a hedge's adaptive delay): ~70 us
P95_MIN_CALLS = 20  # calls in the window before their p95 is trusted


class LoadState:
    """The runtime a dependency's call sites share for load control, in one attribute: a
    Dependency with more than 30 attributes would lose CPython's fast attribute reads, which
    its fast path lives on."""

    __slots__ = ("budgets", "hedges", "lock", "p95", "p95_at", "throttles")

    def __init__(self) -> None:
        self.budgets: dict[RetryBudget, RetryAccount] = {}
        self.throttles: dict[Hedge, HedgeThrottle] = {}
        self.hedges = [0, 0, 0]  # per HEDGE_OUTCOMES
        self.p95: float | None = None
        self.p95_at = float("-inf")
        self.lock = threading.Lock()


class LoadControl:
    """What ``Dependency`` adds for load control (see the module docstring)."""

    policy: Policy
    window: RollingWindow
    permits: Permits
    experiments: Experiments
    adaptive: AdaptiveLimiter | None
    _clock: Callable[[], float]
    _limiter: ConcurrencyLimit
    _rate_limiter: TokenBucket | None
    _pool: ThreadBulkhead | None
    _load: LoadState
    _refresh: Callable[[], None]  # Dependency's: recompute the fast-path flags

    def retry_budget(self, retry: Retry) -> RetryAccount | None:
        """The retry budget that callers retrying with ``retry`` share: one per budget config
        per key, so every call site with the default budget shares one (None: unlimited).
        Every caller call of the key deposits (Finagle deposits per request; here the calls
        are counted from the rolling window, so the deposit costs a call nothing)."""
        config = retry.budget
        if config is None:
            return None
        state = self._load
        account = state.budgets.get(config)
        if account is None:
            with state.lock:
                account = state.budgets.get(config)
                if account is None:
                    # Every caller call of the key deposits, counted from the window as its
                    # buckets close: a call pays nothing for it.
                    account = RetryAccount(config, self.window.open_calls)
                    state.budgets[config] = account
                    self.window.on_close = self._deposit_calls
        return account

    def _deposit_calls(self, calls: int, now: float) -> None:
        state = self._load
        for account in list(state.budgets.values()):
            account.deposit_calls(calls, now)

    def hedge_throttle(self, hedge: Hedge) -> HedgeThrottle:
        """The hedge budget that callers hedging with ``hedge`` share."""
        state = self._load
        throttle = state.throttles.get(hedge)
        if throttle is None:
            with state.lock:
                throttle = state.throttles.setdefault(hedge, HedgeThrottle(hedge))
        return throttle

    def observed_p95(self) -> float | None:
        """The p95 latency of calls in the rolling window (None before ``P95_MIN_CALLS`` of
        them), re-read at most every ``P95_EVERY`` seconds: the adaptive delay of a hedge.
        Calls that ran count (the winners of hedged calls; cancelled losers never record)."""
        now = self._clock()
        state = self._load
        # Until enough calls were seen, look again on every call: hedging starts with data.
        if state.p95 is None or now - state.p95_at >= P95_EVERY:
            state.p95_at = now
            if self.window.rates(now)[0] >= P95_MIN_CALLS:
                state.p95 = self.window.percentiles((0.95,), now)[0]
            else:
                state.p95 = None
        return state.p95

    def experiment_state(self, recipe: str) -> State | None:
        """The state of the circuit an experiment (FIT recipe ``recipe``) sees for this
        dependency, or None while no tagged call of it is remembered (see ``_shadow``)."""
        shadow = self.experiments.get(recipe)
        return None if shadow is None else shadow.breaker.state

    def _hedge_event(self, event: str) -> None:
        i = HEDGE_OUTCOMES.index(event)
        state = self._load
        with state.lock:
            state.hedges[i] += 1

    def hedge_counts(self) -> dict[str, int]:
        """Hedges sent, won, and not sent for an exhausted budget, since the start."""
        state = self._load
        with state.lock:
            return dict(zip(HEDGE_OUTCOMES, state.hedges, strict=True))

    def _build_limits(self, old: Policy | None) -> None:
        """Make the adaptive limit and the token bucket the policy asks for (again, if its
        ``limit`` or ``rate_limit`` changed); calls admitted before keep what admitted them."""
        new = self.policy
        if old is None or old.limit != new.limit:
            self.adaptive = None if new.limit is None else AdaptiveLimiter(new.limit)
            self._limiter = self.adaptive if self.adaptive is not None else self.permits
            if self._pool is not None:
                self._pool.follow(self.adaptive)
        if old is None or old.rate_limit != new.rate_limit:
            bucket = None if new.rate_limit is None else TokenBucket(new.rate_limit, self._clock)
            self._rate_limiter = bucket
        self._refresh()
