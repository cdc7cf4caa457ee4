"""The retry step: ``Retry`` (what to retry, how often, how long to wait) and its decisions.

``Retrier`` decides, without IO, after each attempt of one caller call: retry (after how many
seconds) or stop. The sync and async drivers only sleep and call again. tenacity supplies the
wait strategies (``Retry(wait=...)`` takes any of them); the loop is the library's own, so the
attempt count, the call's deadline and the dependency's retry budget decide together.

Retries spend a retry budget (``Retry(budget=RetryBudget(...))``, on by default with Finagle's
defaults; ``budget=None``: unlimited), shared by every caller of one dependency key that retries
with the same budget settings (``Dependency.retry_budget``). The step needs this of it
(``_budget.RetryAccount`` supplies one):

```python
class RetryBudgetState(Protocol):
    def deposit(self, now: float) -> None       # once per caller call that may retry
    def try_withdraw(self, now: float) -> bool  # once per retry; False: budget exhausted
```

An exhausted budget stops the retries: the last error goes on to the fallback (or the caller),
and the retry is counted ``budget_exhausted``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any, ClassVar, Protocol

import attrs
import tenacity

from ..errors import ConfigError, FallbackFailedError, RejectedError
from ._budget import RetryBudget
from ._policy import count_validator

__all__ = ["NETWORK_ERRORS", "NetworkErrors", "Retrier", "Retry", "RetryBudgetState"]

# Exceptions of HTTP clients that mean "the network or the server failed", by module name.
# Looked up only in modules already imported: an application that never imported httpx cannot
# have an httpx error to retry, so nothing is imported for this.
_CLIENT_ERRORS: dict[str, tuple[str, ...]] = {
    "aiohttp": ("ClientConnectionError", "ClientPayloadError"),
    "httpx": ("TimeoutException", "NetworkError", "RemoteProtocolError"),
    "requests": ("ConnectionError", "Timeout"),
}


class NetworkErrors:
    """The default of ``Retry(on=...)``: network failures and timeouts.

    ``ConnectionError`` (refused, reset, broken pipe...), ``TimeoutError`` (so also
    ``CallTimeoutError``), and when those clients are in use, aiohttp's
    ``ClientConnectionError`` / ``ClientPayloadError``, httpx's ``TimeoutException`` /
    ``NetworkError`` / ``RemoteProtocolError``, and requests' ``ConnectionError`` / ``Timeout``.
    HTTP error statuses are not exceptions here: retry those with ``on_result`` or a predicate.
    """

    # Keyed by the client modules themselves (None: not imported), so a module that is
    # replaced in sys.modules (reloaded, or faked in a test) is read again.
    _cache: ClassVar[dict[tuple[object, ...], tuple[type[BaseException], ...]]] = {}

    def types(self) -> tuple[type[BaseException], ...]:
        """The exception types retried now (depends on which clients are imported)."""
        loaded = tuple(sys.modules.get(name) for name in _CLIENT_ERRORS)
        found = self._cache.get(loaded)
        if found is None:
            types: list[type[BaseException]] = [ConnectionError, TimeoutError]
            for name, attrs_ in _CLIENT_ERRORS.items():
                module = sys.modules.get(name)
                for attr in attrs_ if module is not None else ():
                    t = getattr(module, attr, None)
                    if isinstance(t, type) and issubclass(t, BaseException):
                        types.append(t)
            found = self._cache[loaded] = tuple(types)
        return found

    def __call__(self, exc: BaseException) -> bool:
        return isinstance(exc, self.types())

    def __repr__(self) -> str:
        return "NETWORK_ERRORS"


NETWORK_ERRORS = NetworkErrors()

RetryOn = tuple[type[Exception], ...] | Callable[[BaseException], bool]


def _as_on(value: Any) -> Any:
    if isinstance(value, str):
        raise ConfigError("on", f"wants exception types or a predicate, not the string {value!r}")
    if isinstance(value, type):
        return (value,)
    if isinstance(value, (tuple, list, set, frozenset)):
        return tuple(value)
    return value


def _check_on(inst: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if isinstance(value, tuple):
        bad = [t for t in value if not (isinstance(t, type) and issubclass(t, Exception))]
        if bad or not value:
            raise ConfigError(
                attribute.name,
                f"wants Exception subclasses or a predicate on the exception, got {value!r}",
            )
    elif not callable(value):
        raise ConfigError(
            attribute.name, f"wants exception types or a predicate on the exception, got {value!r}"
        )


def _check_wait(inst: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not callable(value):
        raise ConfigError(attribute.name, f"must be a tenacity wait strategy, got {value!r}")


def _check_budget(inst: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and not isinstance(value, RetryBudget):
        raise ConfigError(
            attribute.name, f"must be a resilience.RetryBudget or None (no budget), got {value!r}"
        )


def _check_on_result(inst: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and not callable(value):
        raise ConfigError(attribute.name, f"must be a predicate on the result, got {value!r}")


@attrs.frozen(kw_only=True)
class Retry:
    """Retries for one decorated function: engaged only after a first attempt asks for one.

    Args:
        attempts: total attempts including the first (1 means no retry).
        wait: any tenacity wait strategy; default full-jitter exponential from 50 ms, capped
            at 2 s (``tenacity.wait_random_exponential(multiplier=0.05, max=2.0)``).
        on: which failures are retried: exception types, or a predicate taking the exception.
            Default ``NETWORK_ERRORS``: ``ConnectionError``, ``TimeoutError`` (so attempts that
            timed out) and the network errors of aiohttp, httpx and requests.
        on_result: a predicate on a successful result; true retries it (an HTTP 503 response,
            say). When attempts run out, the caller gets the last result.
        budget: the retry budget (Finagle's): every caller call deposits, every retry
            withdraws, and with the budget spent a retry is not made (counted
            ``budget_exhausted``; the last error, or the fallback, is returned). Shared by
            every caller of the dependency key with the same budget. Default
            ``RetryBudget()``: 20% of the calls plus 10 a second, over 10 s. None: no budget.

    Rejections (open circuit, full bulkhead, rate limit), ignored exceptions and failed
    fallbacks are never retried. Every attempt passes the breaker and the limits again and is
    recorded in the rolling window; ``resilience_calls_total`` counts the caller's call once,
    by its last attempt.
    """

    attempts: int = attrs.field(default=3, validator=count_validator(minimum=1))
    wait: Any = attrs.field(
        factory=lambda: tenacity.wait_random_exponential(multiplier=0.05, max=2.0),
        validator=_check_wait,
    )
    on: RetryOn = attrs.field(default=NETWORK_ERRORS, converter=_as_on, validator=_check_on)
    on_result: Callable[[Any], bool] | None = attrs.field(default=None, validator=_check_on_result)
    budget: RetryBudget | None = attrs.field(factory=RetryBudget, validator=_check_budget)


class RetryBudgetState(Protocol):
    """A retry budget shared by every caller of one dependency key (Finagle's RetryBudget)."""

    def deposit(self, now: float) -> None:
        """A caller call that may retry has started."""

    def try_withdraw(self, now: float) -> bool:
        """Take one retry from the budget; False when it is exhausted."""
        ...


class _Outcome:
    """What tenacity's wait strategies read of an attempt (``retry_state.outcome``), without the
    ``concurrent.futures.Future`` tenacity would build for it (a Condition per attempt)."""

    __slots__ = ("_error", "_value", "attempt_number", "failed")

    def __init__(self, attempt: int, error: BaseException | None, value: Any) -> None:
        self.attempt_number = attempt
        self.failed = error is not None
        self._error = error
        self._value = value

    def exception(self, timeout: float | None = None) -> BaseException | None:
        return self._error

    def result(self, timeout: float | None = None) -> Any:
        if self._error is not None:
            raise self._error
        return self._value


class Retrier:
    """One caller call's retry decisions. Plain code, no IO: the drivers sleep and call.

    ``after_error`` / ``after_result`` answer the seconds to wait before the next attempt, or
    ``None`` to stop (not retryable, attempts used up, deadline too near, budget exhausted:
    then ``exhausted`` is True).
    """

    __slots__ = ("_ignore", "_on", "_state", "attempt", "budget", "exhausted", "retry")

    def __init__(
        self,
        retry: Retry,
        budget: RetryBudgetState | None,
        ignore: tuple[type[BaseException], ...],
    ) -> None:
        self.retry = retry
        self.budget = budget
        self._ignore = ignore
        self._on = retry.on
        self.attempt = 1
        self.exhausted = False
        self._state: tenacity.RetryCallState | None = None

    def retryable(self, exc: BaseException) -> bool:
        if isinstance(exc, (RejectedError, FallbackFailedError)):
            return False
        if self._ignore and isinstance(exc, self._ignore):
            return False
        on = self._on
        if isinstance(on, tuple):
            return isinstance(exc, on)
        return bool(on(exc))

    def wants(self, result: Any) -> bool:
        """Does this successful result ask for another attempt (``on_result``)?"""
        check = self.retry.on_result
        return check is not None and bool(check(result))

    def after_error(
        self, exc: BaseException, now: float, deadline_at: float | None
    ) -> float | None:
        if not self.retryable(exc):
            return None
        state = self._call_state()
        state.outcome = _Outcome(self.attempt, exc, None)  # type: ignore[assignment]
        state.outcome_timestamp = time.monotonic()
        return self._next(state, now, deadline_at)

    def after_result(self, result: Any, now: float, deadline_at: float | None) -> float | None:
        state = self._call_state()
        state.outcome = _Outcome(self.attempt, None, result)  # type: ignore[assignment]
        state.outcome_timestamp = time.monotonic()
        return self._next(state, now, deadline_at)

    def _call_state(self) -> tenacity.RetryCallState:
        state = self._state
        if state is None:
            state = self._state = tenacity.RetryCallState(None, None, (), {})  # type: ignore[arg-type]
        state.attempt_number = self.attempt
        return state

    def _next(
        self, state: tenacity.RetryCallState, now: float, deadline_at: float | None
    ) -> float | None:
        if self.attempt >= self.retry.attempts:
            return None
        wait = max(0.0, float(self.retry.wait(state)))
        if deadline_at is not None and now + wait >= deadline_at:
            return None
        budget = self.budget
        if budget is not None and not budget.try_withdraw(now):
            self.exhausted = True
            return None
        self.attempt += 1
        state.idle_for += wait
        return wait
