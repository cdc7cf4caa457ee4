"""The rate-limit step, between the breaker and the concurrency limit.

A dependency may carry a token bucket (``Dependency.rate_limiter``; ``RateLimit`` supplies one).
The step only needs this of it:

```python
class TokenBucket(Protocol):
    wait: float                              # seconds a call may wait for a token (0: none)
    def try_take(self, now: float) -> float  # 0.0: a token was taken; else seconds until one
```

``try_take`` never blocks and takes nothing when it answers a delay. The drivers ask, and while
the answer fits in what is left of the call's ``wait`` (and of its deadline) they sleep that long
and ask again; otherwise the call is refused (outcome ``rate_limited``, a ``RejectedError``, or
the fallback), never run, never retried.
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["TokenBucket", "next_wait"]


class TokenBucket(Protocol):
    """What the rate-limit step asks of a limiter."""

    wait: float

    def try_take(self, now: float) -> float:
        """0.0 when a token was taken; otherwise the seconds until one is due (none taken)."""
        ...


def next_wait(
    delay: float, waited: float, wait: float, deadline_at: float | None, now: float
) -> float | None:
    """After ``try_take`` answered ``delay`` > 0: seconds to sleep before asking again, or
    ``None`` when the call must be refused (the token is due after its wait or deadline)."""
    left = wait - waited
    if deadline_at is not None:
        left = min(left, deadline_at - now)
    return delay if delay <= left else None
