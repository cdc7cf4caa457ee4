"""Adaptive concurrency limit: the number of calls admitted at once follows measured latency.

Config: ``AdaptiveLimit(algorithm="vegas", initial=None, min=None, max=None, wait=0.0,
**parameters)``. Algorithms and their defaults are those of Netflix concurrency-limits
(``core/limit/*.java``); ``initial``, ``min`` and ``max`` override each algorithm's own:

=============  =======  ===  ====  ==========================================================
algorithm      initial  min  max   parameters (defaults)
=============  =======  ===  ====  ==========================================================
``vegas``      20       1    1000  ``smoothing=1.0``, ``probe_multiplier=30``, and ours:
                                   ``window=10``, ``probe="drain"`` (``window=1,
                                   probe="reset"`` is the reference exactly)
``gradient2``  20       20   200   ``smoothing=0.2``, ``queue_size=4``, ``long_window=600``,
                                   ``rtt_tolerance=1.5``
``aimd``       20       20   200   ``backoff_ratio=0.9``, ``timeout=5.0``
=============  =======  ===  ====  ==========================================================

``wait`` (seconds) lets a call wait for a permit instead of being refused at once.

Runtime: ``AdaptiveLimiter(config, rng=None)``; thread-safe, decisions under a short lock, never
held while user code runs:

- ``try_acquire() -> bool``: a permit now or ``False`` (no waiting; never ahead of waiters);
- ``release(latency, dropped)``: the call finished; ``latency`` in seconds, ``dropped`` for a
  timeout or a failure (the algorithm backs off); every admitted call is released exactly once;
- ``give_back()``: return a permit whose call never ran (nothing is sampled);
- ``acquire_sync(timeout) -> bool`` (threads) and ``await acquire_async(timeout) -> bool``
  (asyncio): wait up to ``timeout`` seconds, FIFO. Both share one queue and one decision core;
  a waiter that times out, is cancelled or is interrupted never keeps nor loses a permit.
- ``limit``, ``inflight``, ``waiting``, ``last_rtt``, ``baseline``: what the exports show
  (``resilience_concurrency_limit``, the JSON state).

Which algorithm: Vegas (the default) reacts to queueing within a few samples and, with the
draining probe, holds p99 near the unloaded latency under overload. Gradient2 drifts up under a
sustained overload (its long RTT follows the load; see ``Gradient2``). AIMD reacts only to drops
(timeouts, failures): without them it grows to ``max``.
"""

from __future__ import annotations

import asyncio
import random
import threading
from collections import deque
from typing import Any

import attrs

from ..errors import ConfigError
from ._checks import check_count, check_number, check_seconds, seconds
from ._limit_algorithms import Aimd, Algorithm, Gradient2, Vegas

__all__ = ["ALGORITHMS", "DEFAULT_ALGORITHM", "AdaptiveLimit", "AdaptiveLimiter"]

DEFAULT_ALGORITHM = "vegas"
# (initial, min, max) per algorithm, as Netflix's builders default them.
_BOUNDS: dict[str, tuple[int, int, int]] = {
    "vegas": (20, 1, 1000),
    "gradient2": (20, 20, 200),
    "aimd": (20, 20, 200),
}
# Parameter defaults per algorithm, with their checks.
_PARAMETERS: dict[str, dict[str, Any]] = {
    "vegas": {"smoothing": 1.0, "probe_multiplier": 30, "probe": "drain", "window": 10},
    "gradient2": {"smoothing": 0.2, "queue_size": 4, "long_window": 600, "rtt_tolerance": 1.5},
    "aimd": {"backoff_ratio": 0.9, "timeout": 5.0},
}
ALGORITHMS = tuple(_BOUNDS)


def _check_parameter(name: str, value: Any) -> None:
    if name in ("smoothing",):
        check_number(name, value, low=0.0, high=1.0)
        if value == 0:
            raise ConfigError(name, "must be > 0 (0 would never move the limit)")
    elif name == "backoff_ratio":
        check_number(name, value, low=0.0, high=1.0)
        if value in (0, 1):
            raise ConfigError(name, f"must be strictly between 0 and 1, got {value!r}")
    elif name in ("probe_multiplier", "long_window", "window"):
        check_count(name, value, low=1)
    elif name == "queue_size":
        check_count(name, value, low=0)
    elif name == "rtt_tolerance":
        check_number(name, value, low=1.0)
    elif name == "timeout":
        check_seconds(name, value, positive=True)
    elif name == "probe" and value not in ("drain", "reset"):
        raise ConfigError(name, f"must be 'drain' or 'reset', got {value!r}")


@attrs.frozen(init=False)
class AdaptiveLimit:
    """An adaptive concurrency limit for one dependency (see the module docstring).

    Args:
        algorithm: ``"vegas"`` (default), ``"gradient2"`` or ``"aimd"``.
        initial / min / max: the starting limit and its bounds; ``None`` takes the
            algorithm's default.
        wait: seconds a call may wait for a permit (default 0: refused at once with
            ``LimitExceededError``).
        **parameters: the algorithm's own parameters; an unknown name is a ``ConfigError``.
    """

    algorithm: str
    initial: int | None
    min: int | None
    max: int | None
    wait: float = attrs.field(validator=seconds(positive=False))
    parameters: tuple[tuple[str, Any], ...]

    def __init__(
        self,
        algorithm: str = DEFAULT_ALGORITHM,
        *,
        initial: int | None = None,
        min: int | None = None,  # the keyword names, shadowing the builtins here
        max: int | None = None,
        wait: float = 0.0,
        **parameters: Any,
    ) -> None:
        if algorithm not in _BOUNDS:
            raise ConfigError(
                "algorithm", f"must be one of {', '.join(ALGORITHMS)}, got {algorithm!r}"
            )
        known = _PARAMETERS[algorithm]
        for name, value in parameters.items():
            if name not in known:
                raise ConfigError(
                    name, f"is not a parameter of {algorithm!r} (it takes {', '.join(known)})"
                )
            _check_parameter(name, value)
        for name, value in (("initial", initial), ("min", min), ("max", max)):
            if value is not None:
                check_count(name, value, low=1)
        self.__attrs_init__(
            algorithm=algorithm,
            initial=initial,
            min=min,
            max=max,
            wait=wait,
            parameters=tuple(sorted(parameters.items())),
        )
        lowest, start, highest = self.bounds
        if lowest > highest:
            raise ConfigError("min", f"must be <= max ({highest}), got {lowest}")
        if not lowest <= start <= highest:
            raise ConfigError(
                "initial", f"must be within min..max ({lowest}..{highest}), got {start}"
            )

    @property
    def bounds(self) -> tuple[int, int, int]:
        """(min, initial, max) in force: the given values, else the algorithm's defaults.

        A given ``min`` or ``max`` that the default ``initial`` falls outside of moves it in.
        """
        d_initial, d_min, d_max = _BOUNDS[self.algorithm]
        lowest = d_min if self.min is None else self.min
        highest = d_max if self.max is None else self.max
        if self.min is None and lowest > highest:
            lowest = highest
        if self.max is None and highest < lowest:
            highest = lowest
        start = d_initial if self.initial is None else self.initial
        if self.initial is None:
            start = min(highest, max(lowest, start))
        return lowest, start, highest

    def parameter(self, name: str) -> Any:
        """The value in force of one algorithm parameter (given, else the default)."""
        return dict(self.parameters).get(name, _PARAMETERS[self.algorithm][name])

    def new_algorithm(self, rng: random.Random | None = None) -> Algorithm:
        lowest, start, highest = self.bounds
        p = {**_PARAMETERS[self.algorithm], **dict(self.parameters)}
        if self.algorithm == "vegas":
            return Vegas(start, lowest, highest, rng=rng or random.Random(), **p)
        if self.algorithm == "gradient2":
            return Gradient2(start, lowest, highest, **p)
        return Aimd(start, lowest, highest, **p)


class _Waiter:
    """One caller waiting for a permit; ``granted`` and ``queued`` change under the lock."""

    __slots__ = ("granted", "queued", "wake")

    def __init__(self, wake: Any) -> None:
        self.granted = False
        self.queued = False
        self.wake = wake  # called (outside the lock) once the permit is granted


class AdaptiveLimiter:
    """The runtime of one ``AdaptiveLimit``: permits, the algorithm, and a FIFO of waiters."""

    def __init__(self, config: AdaptiveLimit, rng: random.Random | None = None) -> None:
        if not isinstance(config, AdaptiveLimit):
            raise ConfigError("limit", f"must be a resilience.AdaptiveLimit, got {config!r}")
        self.config = config
        self._algorithm = config.new_algorithm(rng)
        self._limit = max(1, int(self._algorithm.limit))
        self._inflight = 0
        self._waiters: deque[_Waiter] = deque()
        self._lock = threading.Lock()
        self.last_rtt: float | None = None

    @property
    def limit(self) -> int:
        return self._limit

    @property
    def inflight(self) -> int:
        return self._inflight

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    @property
    def baseline(self) -> float | None:
        """The latency (seconds) the algorithm compares calls against: Vegas' no-load RTT,
        Gradient2's long-window RTT; None for AIMD or before any sample."""
        algorithm = self._algorithm
        if isinstance(algorithm, Vegas):
            value = algorithm.rtt_noload
        elif isinstance(algorithm, Gradient2):
            value = algorithm.long_rtt
        else:
            return None
        return value if value > 0 else None

    # The ConcurrencyLimit protocol of the pipeline's concurrency-limit step (``_bulkhead``).
    @property
    def wait(self) -> float:
        """Seconds a call may wait for a permit (the config's ``wait``)."""
        return self.config.wait

    @property
    def in_use(self) -> int:
        return self._inflight

    def acquire(self, max_wait: float) -> bool:
        """``acquire_sync`` under the protocol's name (a thread waits at most ``max_wait``)."""
        return self.acquire_sync(max_wait) if max_wait > 0 else self.try_acquire()

    def reset_after_fork(self) -> None:
        """In a forked child: no call of the parent is in flight nor waiting there."""
        self._lock = threading.Lock()
        self._inflight = 0
        self._waiters.clear()

    @property
    def algorithm(self) -> Algorithm:
        return self._algorithm

    def try_acquire(self) -> bool:
        """A permit now, or ``False``; never jumps ahead of callers already waiting."""
        with self._lock:
            if self._inflight < self._limit and not self._waiters:
                self._inflight += 1
                return True
        return False

    def release(self, latency: float, dropped: bool) -> None:
        """The call admitted by a permit finished: sample it and free its permit."""
        with self._lock:
            if self._inflight <= 0:
                raise RuntimeError("AdaptiveLimiter.release() without a permit taken")
            self.last_rtt = latency
            algorithm = self._algorithm
            algorithm.update(latency, self._inflight, dropped)
            self._limit = max(1, int(algorithm.limit))
            self._inflight -= 1
            woken = self._grant()
        for waiter in woken:
            waiter.wake()

    def give_back(self) -> None:
        """Return a permit whose call never ran: no sample, the next waiter may take it."""
        with self._lock:
            if self._inflight <= 0:
                raise RuntimeError("AdaptiveLimiter.give_back() without a permit taken")
            self._inflight -= 1
            woken = self._grant()
        for waiter in woken:
            waiter.wake()

    def _grant(self) -> list[_Waiter]:
        """Hand free permits to waiters in order (under the lock); returns those to wake."""
        woken = []
        waiters = self._waiters
        while waiters and self._inflight < self._limit:
            waiter = waiters.popleft()
            waiter.queued = False
            waiter.granted = True
            self._inflight += 1
            woken.append(waiter)
        return woken

    def _enqueue(self, waiter: _Waiter) -> bool:
        """Grant at once if free and nobody waits, else queue ``waiter``; True if granted."""
        with self._lock:
            if self._inflight < self._limit and not self._waiters:
                self._inflight += 1
                return True
            self._waiters.append(waiter)
            waiter.queued = True
        return False

    def _settle(self, waiter: _Waiter) -> bool:
        """The waiter stops waiting: True if it holds a permit, else it leaves the queue."""
        with self._lock:
            if waiter.granted:
                return True
            if waiter.queued:
                self._waiters.remove(waiter)
                waiter.queued = False
        return False

    def _revoke(self, waiter: _Waiter) -> None:
        """Take back a grant that cannot be delivered (the waiter's event loop is closed)."""
        with self._lock:
            if not waiter.granted:
                return
            waiter.granted = False
            self._inflight -= 1
            woken = self._grant()
        for other in woken:
            other.wake()

    def acquire_sync(self, timeout: float | None = None) -> bool:
        """Wait up to ``timeout`` seconds (default: the config's ``wait``) for a permit."""
        timeout = self.config.wait if timeout is None else timeout
        if timeout <= 0:
            return self.try_acquire()
        gate = _new_gate()
        gate.acquire()
        waiter = _Waiter(gate.release)
        if self._enqueue(waiter):
            return True
        ok = False
        try:
            gate.acquire(timeout=timeout)
            ok = True
        finally:
            granted = self._settle(waiter)
            if granted and not ok:  # interrupted after the grant: pass the permit on
                self.give_back()
        return granted

    async def acquire_async(self, timeout: float | None = None) -> bool:  # noqa: ASYNC109
        """The asyncio counterpart of ``acquire_sync``; cancellation never leaks a permit."""
        timeout = self.config.wait if timeout is None else timeout
        if timeout <= 0:
            return self.try_acquire()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()

        def wake() -> None:
            try:
                loop.call_soon_threadsafe(_resolve, future)
            except RuntimeError:  # its loop is closed: the waiter will never take the permit
                self._revoke(waiter)

        waiter = _Waiter(wake)
        if self._enqueue(waiter):
            return True
        ok = False
        try:
            async with asyncio.timeout(timeout):
                await future
            ok = True
        except TimeoutError:
            ok = True
        finally:
            granted = self._settle(waiter)
            if granted and not ok:  # cancelled after the grant: pass the permit on
                self.give_back()
        return granted


_new_gate = threading.Lock  # what a sync waiter blocks on (a module name: tests replace it)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
