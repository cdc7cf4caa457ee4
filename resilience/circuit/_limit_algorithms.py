"""Limit algorithms of Netflix concurrency-limits: Vegas, Gradient2 and AIMD.

Each one is plain arithmetic on samples, with no lock and no clock: ``update(rtt, inflight,
dropped)`` folds one finished call into ``limit`` (a float; the limiter admits ``int(limit)``).
``rtt`` is the call's latency in seconds, ``inflight`` the calls in flight when it finished
(itself included), ``dropped`` whether it timed out or failed. ``AdaptiveLimiter`` calls them
under its lock, so they need none of their own.
"""

from __future__ import annotations

import math
import random as _random
from typing import Protocol

__all__ = ["Aimd", "Algorithm", "Gradient2", "Vegas"]


def _log10(limit: float) -> int:
    """Netflix's Log10RootFunction: the integer log10 of the limit, at least 1."""
    return max(1, int(math.log10(max(1.0, limit))))


class Algorithm(Protocol):
    limit: float

    def update(self, rtt: float, inflight: int, dropped: bool) -> None: ...


class Vegas:
    """TCP Vegas on latency: estimate the queue from ``rtt_noload / rtt`` and keep it small.

    ``queue = ceil(L * (1 - rtt_noload / rtt))``; with ``log = max(1, int(log10 L))``:
    a drop gives ``L - log``; ``inflight < L/2`` changes nothing (app-limited); ``queue <= log``
    gives ``L + 6 log``; ``queue < 3 log`` gives ``L + log``; ``queue > 6 log`` gives ``L - log``;
    the result is clamped and smoothed: ``L = (1 - smoothing) L + smoothing new``.

    The no-load RTT is the lowest RTT seen, re-probed every ``probe_multiplier * L`` samples
    (times a random jitter in 0.5..1) so it can rise when the dependency got slower for good.

    Two changes from the reference, each a parameter (``window=1, probe="reset"`` is the
    reference exactly):

    - ``window`` (default 10): the algorithm sees the mean RTT of each ``window`` samples (with
      their highest in-flight count, and a drop if any dropped), as Netflix's ``WindowedLimit``
      does. One sample at a time, the no-load RTT is the luckiest sample ever seen: with
      +-10% noise it sits ~25% under the typical RTT, so the reference reads a queue of 0.25 L
      where there is none and holds the limit near 20 whatever the capacity.
    - ``probe="drain"`` (default): the reference's probe makes the probing call's own RTT the
      new baseline; under load that RTT includes the queue, the algorithm then sees no queue,
      adds ``6 log`` per sample and overshoots until a faster sample pulls the baseline back,
      so p90 jumps after every probe. Draining measures instead: the limit is halved for a
      moment, the calls still in flight from before are skipped, the baseline becomes the mean
      RTT of the next ``L/2`` calls (admitted against a short queue), and the limit goes back
      where it was. A dependency that really got slower still moves the baseline up; a queue
      of our own making does not. It costs about half the throughput for one RTT every
      ``~22 L`` samples (about 2%).
    """

    def __init__(
        self,
        initial: float,
        lowest: float,
        highest: float,
        *,
        smoothing: float,
        probe_multiplier: int,
        probe: str,
        window: int,
        rng: _random.Random,
    ) -> None:
        self.limit = float(initial)
        self.min = lowest
        self.max = highest
        self.smoothing = smoothing
        self.probe_multiplier = probe_multiplier
        self.drain = probe == "drain"
        self.window = window
        self.rtt_noload = 0.0
        self._rng = rng
        self._probe_count = 0
        self._jitter = rng.uniform(0.5, 1.0)
        # the window being filled: samples, RTT sum, highest in-flight, any drop
        self._n = 0
        self._sum = 0.0
        self._inflight = 0
        self._dropped = False
        # a drain probe in progress: samples left, of which calls admitted before it
        self._draining = 0
        self._skip = 0
        self._held = 0.0  # the limit to return to
        self._probe_n = 0
        self._probe_sum = 0.0

    def update(self, rtt: float, inflight: int, dropped: bool) -> None:
        if rtt <= 0:
            return
        if self._draining:
            self._drain_sample(rtt, dropped)
            return
        self._probe_count += 1
        self._n += 1
        self._sum += rtt
        self._inflight = max(self._inflight, inflight)
        self._dropped = self._dropped or dropped
        if self._n < self.window:
            return
        rtt = self._sum / self._n
        inflight, dropped = self._inflight, self._dropped
        self._n, self._sum, self._inflight, self._dropped = 0, 0.0, 0, False
        if self._jitter * self.probe_multiplier * self.limit <= self._probe_count:
            self._jitter = self._rng.uniform(0.5, 1.0)
            self._probe_count = 0
            if not self.drain:
                self.rtt_noload = rtt
                return
            self._held = self.limit
            self.limit = max(self.min, self.limit / 2)
            self._skip = max(0, inflight - 1)  # calls admitted before the drain
            self._draining = self._skip + max(1, int(self.limit))
            self._probe_n, self._probe_sum = 0, 0.0
            return
        if self.rtt_noload == 0 or rtt < self.rtt_noload:
            self.rtt_noload = rtt
            return
        self._adjust(rtt, inflight, dropped)

    def _drain_sample(self, rtt: float, dropped: bool) -> None:
        self._draining -= 1
        if dropped:  # still back off on drops; the limit resumes from the lowered value
            self._held = max(self.min, self._held - _log10(self._held))
        if self._skip:
            self._skip -= 1
        else:
            self._probe_n += 1
            self._probe_sum += rtt
        if self._draining == 0:
            if self._probe_n:
                self.rtt_noload = self._probe_sum / self._probe_n
            self.limit = self._held

    def _adjust(self, rtt: float, inflight: int, dropped: bool) -> None:
        limit = self.limit
        log = _log10(limit)
        if dropped:
            new = limit - log
        elif inflight * 2 < limit:
            return
        else:
            queue = math.ceil(limit * (1.0 - self.rtt_noload / rtt))
            if queue <= log:
                new = limit + 6 * log
            elif queue < 3 * log:
                new = limit + log
            elif queue > 6 * log:
                new = limit - log
            else:
                return
        new = min(self.max, max(self.min, new))
        self.limit = (1.0 - self.smoothing) * limit + self.smoothing * new


class Gradient2:
    """Gradient of a short (one sample) vs a long (exponential average) RTT.

    ``gradient = clamp(tolerance * long / short, 0.5, 1)``; ``new = L * gradient + queue_size``;
    ``L = (1 - smoothing) L + smoothing new``, clamped. When ``long / short > 2`` the long RTT
    is cut by 5% (recovery after a long overload). App-limited samples (``inflight < L/2``)
    leave the limit alone. Drops are not used (as in the reference): only latency moves it.

    Drift: the long RTT is an average of what the calls see, so under a sustained overload it
    follows the loaded RTT up; the gradient returns to 1 and the limit keeps growing by
    ``queue_size`` a sample until ``max``. The benchmark shows it (bench/load_control.py).
    """

    def __init__(
        self,
        initial: float,
        lowest: float,
        highest: float,
        *,
        smoothing: float,
        queue_size: int,
        long_window: int,
        rtt_tolerance: float,
    ) -> None:
        self.limit = float(initial)
        self.min = lowest
        self.max = highest
        self.smoothing = smoothing
        self.queue_size = queue_size
        self.tolerance = rtt_tolerance
        self._factor = 2.0 / (long_window + 1)
        self._warmup = 10
        self._count = 0
        self._sum = 0.0
        self.long_rtt = 0.0

    def update(self, rtt: float, inflight: int, dropped: bool) -> None:
        if rtt <= 0:
            return
        if self._count < self._warmup:
            self._count += 1
            self._sum += rtt
            self.long_rtt = self._sum / self._count
        else:
            self.long_rtt += (rtt - self.long_rtt) * self._factor
        if self.long_rtt / rtt > 2:
            self.long_rtt *= 0.95
        limit = self.limit
        if inflight < limit / 2:
            return
        gradient = max(0.5, min(1.0, self.tolerance * self.long_rtt / rtt))
        new = limit * gradient + self.queue_size
        new = (1.0 - self.smoothing) * limit + self.smoothing * new
        self.limit = min(self.max, max(self.min, new))


class Aimd:
    """Additive increase, multiplicative decrease on drops (loss-based, latency-blind).

    A drop, or an RTT over ``timeout``: ``L * backoff_ratio``; otherwise, while at least half
    the limit is in use: ``L + 1``. Without drops it only grows (to ``max``).
    """

    def __init__(
        self,
        initial: float,
        lowest: float,
        highest: float,
        *,
        backoff_ratio: float,
        timeout: float,
    ) -> None:
        self.limit = float(initial)
        self.min = lowest
        self.max = highest
        self.backoff_ratio = backoff_ratio
        self.timeout = timeout

    def update(self, rtt: float, inflight: int, dropped: bool) -> None:
        limit = self.limit
        if dropped or rtt > self.timeout:
            limit = int(limit * self.backoff_ratio)
        elif inflight * 2 >= limit:
            limit += 1
        self.limit = min(self.max, max(self.min, limit))
