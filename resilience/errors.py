"""Every exception the library raises, in one tree rooted at :class:`ResilienceError`.

Errors carry the fields a caller needs (``dependency``, ``state``, ``retry_after``) and subclass a
stdlib error where that helps callers that already catch it (``CallTimeoutError`` is a
``TimeoutError``; ``ConfigError`` is a ``ValueError``).
"""

from __future__ import annotations

__all__ = [
    "BulkheadFullError",
    "CacheClientError",
    "CacheError",
    "CacheWriteError",
    "CallTimeoutError",
    "CircuitOpenError",
    "ConfigError",
    "FallbackFailedError",
    "FaultInjectedError",
    "FlagConflictError",
    "FlagStoreError",
    "InvalidKeyError",
    "LimitExceededError",
    "RateLimitedError",
    "RecipeError",
    "RejectedError",
    "ResilienceError",
    "ToxiproxyError",
    "ValueTooLargeError",
]


class ResilienceError(Exception):
    """Root of every error raised by resilience."""


class ConfigError(ResilienceError, ValueError):
    """A configuration value is invalid; ``field`` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class RejectedError(ResilienceError):
    """The library refused to run the call (the function was never started)."""

    def __init__(self, dependency: str, message: str) -> None:
        super().__init__(f"{dependency}: {message}")
        self.dependency = dependency


class CircuitOpenError(RejectedError):
    """The dependency's circuit is open (or forced open, or half-open with no trial slot free)."""

    def __init__(self, dependency: str, state: str, retry_after: float | None) -> None:
        hint = "" if retry_after is None else f"; retry after {retry_after:.3f}s"
        super().__init__(dependency, f"circuit is {state}{hint}")
        self.state = state
        self.retry_after = retry_after


class BulkheadFullError(RejectedError):
    """Every worker and queue slot (or semaphore permit) of the dependency is taken."""

    def __init__(self, dependency: str, limit: int) -> None:
        super().__init__(dependency, f"bulkhead full ({limit} calls admitted)")
        self.limit = limit


class LimitExceededError(BulkheadFullError):
    """The dependency's adaptive concurrency limit is reached (after waiting ``waited`` seconds
    for a permit, if the limit allows waiting); ``limit`` is the limit in force."""

    def __init__(self, dependency: str, limit: int, inflight: int, waited: float = 0.0) -> None:
        hint = "" if waited <= 0 else f" after waiting {waited:.3f}s"
        # RejectedError's constructor, not BulkheadFullError's: same fields, its own message.
        RejectedError.__init__(
            self,
            dependency,
            f"concurrency limit reached ({inflight} in flight, limit {limit}){hint}",
        )
        self.limit = limit
        self.inflight = inflight
        self.waited = waited


class RateLimitedError(RejectedError):
    """The dependency's rate limit has no token for this call; one is due in ``retry_after``
    seconds. ``rate`` calls are allowed every ``per`` seconds."""

    def __init__(self, dependency: str, retry_after: float, rate: float, per: float) -> None:
        super().__init__(
            dependency, f"rate limited ({rate:g} per {per:g}s); retry after {retry_after:.3f}s"
        )
        self.retry_after = retry_after
        self.rate = rate
        self.per = per


class CallTimeoutError(ResilienceError, TimeoutError):
    """The call did not finish within the dependency's timeout."""

    def __init__(self, dependency: str, timeout: float) -> None:
        super().__init__(f"{dependency}: call timed out after {timeout:.3f}s")
        self.dependency = dependency
        self.timeout = timeout


class FallbackFailedError(ResilienceError):
    """The fallback raised. ``error`` is the call's failure, ``__cause__`` the fallback's."""

    def __init__(
        self, dependency: str, error: BaseException, fallback_error: BaseException
    ) -> None:
        super().__init__(f"{dependency}: fallback failed ({fallback_error!r}) after {error!r}")
        self.dependency = dependency
        self.error = error
        self.fallback_error = fallback_error


class FaultInjectedError(ResilienceError):
    """A failure injected by an active FIT recipe."""

    def __init__(self, dependency: str, recipe: str, status: int | None = None) -> None:
        detail = "" if status is None else f" (status {status})"
        super().__init__(f"{dependency}: fault injected by recipe {recipe!r}{detail}")
        self.dependency = dependency
        self.recipe = recipe
        self.status = status


class CacheError(ResilienceError):
    """A cache operation failed."""


class InvalidKeyError(CacheError, ValueError):
    """A key cannot be sent to memcached as it is; ``key`` holds it."""

    def __init__(self, key: str | bytes, reason: str) -> None:
        super().__init__(f"invalid cache key {key!r}: {reason}")
        self.key = key
        self.reason = reason


class ValueTooLargeError(CacheError, ValueError):
    """A serialised value is larger than the server's item size limit."""

    def __init__(self, key: str | bytes, size: int, limit: int) -> None:
        super().__init__(f"value for {key!r} is {size} bytes; the item size limit is {limit}")
        self.key = key
        self.size = size
        self.limit = limit


class CacheClientError(CacheError, ValueError):
    """memcached refused a command as the caller's mistake (``CLIENT_ERROR``), e.g. ``incr`` of
    a value that is not a number. The zones are healthy: nothing is counted against them."""

    def __init__(self, op: str, key: str | bytes | None, reason: str) -> None:
        target = "" if key is None else f" {key!r}"
        super().__init__(f"{op}{target}: memcached refused it: {reason}")
        self.op = op
        self.key = key
        self.reason = reason


class CacheWriteError(CacheError):
    """A write did not reach enough zones for its write policy; ``result`` says which did."""

    def __init__(self, message: str, result: object) -> None:
        super().__init__(message)
        self.result = result


class RecipeError(ConfigError):
    """A FIT recipe is invalid; ``field`` is its path in the recipe, ``line`` its line if known."""

    def __init__(self, field: str, message: str, line: int | None = None) -> None:
        super().__init__(field, message if line is None else f"{message} (line {line})")
        self.line = line


class ToxiproxyError(ResilienceError):
    """The Toxiproxy server refused a request or could not be reached in time."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class FlagStoreError(ResilienceError):
    """The fleet-wide flag store (etcd) refused or could not take a request."""


class FlagConflictError(FlagStoreError):
    """A flag write lost a compare-and-swap: the flag changed since the writer read it.

    ``expected`` is the revision the writer saw (0: absent), ``actual`` the flag's revision now.
    """

    def __init__(self, flag: str, expected: int, actual: int) -> None:
        super().__init__(
            f"{flag}: changed meanwhile (expected revision {expected}, found {actual}); "
            "read it again and retry"
        )
        self.flag = flag
        self.expected = expected
        self.actual = actual
