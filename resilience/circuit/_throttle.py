"""The rate-limit step, between the breaker and the concurrency limit.

A dependency whose policy has a ``rate_limit`` carries a ``TokenBucket`` (``_ratelimit``); every
attempt takes one token from it before it may run. :func:`take` decides, without blocking
(the drivers only sleep):

- a token is there: the call goes on at once;
- none, but the config's ``wait`` (cut to what is left of the call's deadline) covers the time
  until the next one: that token is booked (callers that wait are served in arrival order) and
  the driver sleeps that long, then runs the call. A caller interrupted while it sleeps gives
  the booked token back (``TokenBucket.refund``);
- otherwise the call is refused: outcome ``rate_limited``, ``RateLimitedError`` (a
  ``RejectedError``, with ``retry_after``) or the fallback; never run, never retried.

The lock inside the bucket is held for a few float operations, never while anything runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._ratelimit import TokenBucket

if TYPE_CHECKING:
    from ._record import Recorder

__all__ = ["TokenBucket", "take"]


def take(bucket: TokenBucket, rec: Recorder, now: float, deadline_at: float | None) -> float:
    """Seconds to sleep before the attempt runs, its token held or booked (0.0: at once); or
    the ``RateLimitedError`` raised, recorded by ``rec``, when the attempt must be refused."""
    wait = bucket.wait
    if deadline_at is not None and deadline_at - now < wait:
        wait = deadline_at - now
    if wait <= 0.0:
        delay = bucket.try_take(now)
        if delay > 0.0:
            raise rec._rate_limited(bucket, delay)
        return 0.0
    booked = bucket.reserve(now, wait)
    if booked is None:
        raise rec._rate_limited(bucket, bucket.until(now))
    return booked
