"""Injection: which fault a call gets under an active recipe, and the faults themselves.

:class:`ActiveRecipe` is the ``FaultContext`` the ``FIT`` contextvar holds for a tagged request.
Its ``fault_for`` is plain, non-blocking matching; the faults' ``wrap_sync`` / ``wrap_async``
differ only in how they wait (``time.sleep`` or ``asyncio.sleep``).

A fault is counted when it is *applied*, that is when the wrapped function runs, not when it is
chosen: a call that the breaker short-circuits or the bulkhead rejects never runs its function,
so nothing was injected into it (``resilience_fit_injections_total`` and the request's
acknowledgement both say so).
"""

from __future__ import annotations

import asyncio
import fnmatch
import random as _random
import re
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Any

from ..errors import FaultInjectedError
from ..metrics import FIT_INJECTIONS, FIT_TAGS, counter
from ._recipe import FaultSpec, Recipe, resolve_error

__all__ = [
    "DEFAULT_BULKHEAD_SHARE",
    "ISOLATED",
    "ActiveRecipe",
    "ErrorFault",
    "LatencyFault",
    "TimeoutFault",
    "stats",
]

# A timeout fault sleeps this much longer than the timeout: enough for the caller's timer to
# fire first, short enough that an abandoned worker thread comes back soon.
_HANG_FACTOR = 1.5
_HANG_MARGIN = 0.05
# The fault kind of a dependency failed because it is outside the critical list.
ISOLATED = "isolated"
# The share of a dependency's bulkhead that tagged calls may hold (``fit.enable``).
DEFAULT_BULKHEAD_SHARE = 0.1


class Stats:
    """Counts of verified tags by result and of applied faults, read at scrape time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.tags: Counter[str] = Counter()
        self.injections: Counter[tuple[str, str]] = Counter()

    def tag(self, result: str) -> None:
        with self._lock:
            self.tags[result] += 1

    def injected(self, dependency: str, kind: str) -> None:
        with self._lock:
            self.injections[(dependency, kind)] += 1

    def reset(self) -> None:
        with self._lock:
            self.tags.clear()
            self.injections.clear()

    def collect_metrics(self) -> Iterator[Any]:
        with self._lock:
            tags, injections = dict(self.tags), dict(self.injections)
        tag_family = counter(FIT_TAGS, "FIT request tags by verification result.", ["result"])
        for result, n in sorted(tags.items()):
            tag_family.add_metric([result], n)
        inj_family = counter(
            FIT_INJECTIONS, "Faults applied (the wrapped call ran).", ["dependency", "kind"]
        )
        for (dependency, kind), n in sorted(injections.items()):
            inj_family.add_metric([dependency, kind], n)
        yield tag_family
        yield inj_family


stats = Stats()


class _Fault:
    """What every fault shares: the call it belongs to and the hook that counts it as applied."""

    __slots__ = ("_applied", "dependency", "kind")

    def __init__(self, dependency: str, kind: str, applied: Callable[[str, str], None]) -> None:
        self.dependency = dependency
        self.kind = kind
        self._applied = applied

    def applied(self) -> None:
        self._applied(self.dependency, self.kind)


class ErrorFault(_Fault):
    """Raises instead of calling: ``FaultInjectedError`` (with ``status``) or a named class."""

    __slots__ = ("error", "recipe", "status")

    def __init__(
        self,
        dependency: str,
        recipe: str,
        error: type[Exception],
        status: int | None = None,
        *,
        kind: str = "error",
        applied: Callable[[str, str], None] = stats.injected,
    ) -> None:
        super().__init__(dependency, kind, applied)
        self.recipe = recipe
        self.error = error
        self.status = status

    def make(self) -> Exception:
        if self.error is FaultInjectedError:
            return FaultInjectedError(self.dependency, self.recipe, self.status)
        # Recipes are validated to name classes that take one message; this stays defensive
        # for a constructor that refuses some messages only.
        try:
            return self.error(f"{self.dependency}: fault injected by recipe {self.recipe!r}")
        except Exception as exc:
            raise FaultInjectedError(self.dependency, self.recipe, self.status) from exc

    def wrap_sync(self, fn: Callable[..., Any], timeout: float) -> Callable[..., Any]:
        def failing(*args: Any, **kwargs: Any) -> Any:
            self.applied()
            raise self.make()

        return failing

    def wrap_async(
        self, fn: Callable[..., Awaitable[Any]], timeout: float
    ) -> Callable[..., Awaitable[Any]]:
        async def failing(*args: Any, **kwargs: Any) -> Any:
            self.applied()
            raise self.make()

        return failing


class LatencyFault(_Fault):
    """Waits ``latency`` (plus up to ``jitter``) seconds, then runs the call."""

    __slots__ = ("jitter", "latency", "random")

    def __init__(
        self,
        latency: float,
        jitter: float = 0.0,
        random: Callable[[], float] = _random.random,
        *,
        dependency: str = "",
        applied: Callable[[str, str], None] = stats.injected,
    ) -> None:
        super().__init__(dependency, "latency", applied)
        self.latency = latency
        self.jitter = jitter
        self.random = random

    def delay(self) -> float:
        return self.latency + (self.jitter * self.random() if self.jitter else 0.0)

    def wrap_sync(self, fn: Callable[..., Any], timeout: float) -> Callable[..., Any]:
        def slow(*args: Any, **kwargs: Any) -> Any:
            self.applied()
            time.sleep(self.delay())
            return fn(*args, **kwargs)

        return slow

    def wrap_async(
        self, fn: Callable[..., Awaitable[Any]], timeout: float
    ) -> Callable[..., Awaitable[Any]]:
        async def slow(*args: Any, **kwargs: Any) -> Any:
            self.applied()
            await asyncio.sleep(self.delay())
            return await fn(*args, **kwargs)

        return slow


class TimeoutFault(_Fault):
    """Hangs past the dependency's timeout, then runs the call (whose result comes too late)."""

    __slots__ = ()

    def __init__(
        self, *, dependency: str = "", applied: Callable[[str, str], None] = stats.injected
    ) -> None:
        super().__init__(dependency, "timeout", applied)

    @staticmethod
    def hang(timeout: float) -> float:
        return timeout * _HANG_FACTOR + _HANG_MARGIN

    def wrap_sync(self, fn: Callable[..., Any], timeout: float) -> Callable[..., Any]:
        def hanging(*args: Any, **kwargs: Any) -> Any:
            self.applied()
            time.sleep(self.hang(timeout))
            return fn(*args, **kwargs)

        return hanging

    def wrap_async(
        self, fn: Callable[..., Awaitable[Any]], timeout: float
    ) -> Callable[..., Awaitable[Any]]:
        async def hanging(*args: Any, **kwargs: Any) -> Any:
            self.applied()
            await asyncio.sleep(self.hang(timeout))
            return await fn(*args, **kwargs)

        return hanging


Fault = ErrorFault | LatencyFault | TimeoutFault


def _pattern(glob: str) -> Callable[[str], bool]:
    if not any(c in glob for c in "*?["):
        return glob.__eq__
    return re.compile(fnmatch.translate(glob)).match  # type: ignore[return-value]


class ActiveRecipe:
    """The ``FaultContext`` for one request: which fault (if any) each dependency call gets.

    It also keeps the request's record of faults: every (dependency, kind) a fault matched,
    with how many times it was applied (0 when it matched but never ran, for instance because
    the call was short-circuited or the probability roll said no). Server integrations send that
    record back as the acknowledgement header; client integrations merge the acknowledgements
    of downstream services into it, so the first hop reports what the whole chain injected.

    Args:
        recipe: the scenario.
        random: returns floats in [0, 1); decides probabilities and latency jitter.
        tag: the verified request tag, forwarded to the next service by outgoing requests.
        bulkhead_share: the share of a dependency's bulkhead tagged calls may hold
            (``fit.enable(bulkhead_share=...)``), read by the circuit's injection point.
    """

    __slots__ = (
        "_critical",
        "_decided",
        "_faults",
        "_lock",
        "_record",
        "bulkhead_share",
        "random",
        "recipe",
        "tag",
    )

    def __init__(
        self,
        recipe: Recipe,
        *,
        random: Callable[[], float] = _random.random,
        tag: str | None = None,
        bulkhead_share: float = DEFAULT_BULKHEAD_SHARE,
    ) -> None:
        self.recipe = recipe
        self.random = random
        self.tag = tag
        self.bulkhead_share = bulkhead_share
        self._faults = [(_pattern(f.dependency), f) for f in recipe.faults]
        self._critical = [_pattern(c) for c in recipe.critical]
        # Matching is per dependency name; a request calls few names many times.
        self._decided: dict[str, tuple[FaultSpec | None, bool]] = {}
        self._lock = threading.Lock()
        self._record: dict[tuple[str, str], int] = {}

    @property
    def recipe_name(self) -> str:
        """The recipe's name: the label of the experiment's own metrics and shadow state."""
        return self.recipe.name

    def _decide(self, dependency: str) -> tuple[FaultSpec | None, bool]:
        for matches, spec in self._faults:
            if matches(dependency):
                return spec, False
        isolated = self.recipe.isolate_critical and not any(m(dependency) for m in self._critical)
        return None, isolated

    def _matched(self, dependency: str, kind: str) -> None:
        key = (dependency, kind)
        if key not in self._record:
            with self._lock:
                self._record.setdefault(key, 0)

    def _applied(self, dependency: str, kind: str) -> None:
        with self._lock:
            key = (dependency, kind)
            self._record[key] = self._record.get(key, 0) + 1
        stats.injected(dependency, kind)

    def fault_for(self, dependency: str) -> Fault | None:
        """The fault for one call to ``dependency``, or None (rolls the spec's probability).

        Choosing a fault counts nothing; the fault counts itself when the call runs it.
        """
        decided = self._decided.get(dependency)
        if decided is None:
            decided = self._decided[dependency] = self._decide(dependency)
        spec, isolated = decided
        if spec is not None:
            kind = spec.kind
            self._matched(dependency, kind)
            if spec.probability < 1.0 and self.random() >= spec.probability:
                return None
            if kind == "latency":
                assert spec.latency is not None
                return LatencyFault(
                    spec.latency,
                    spec.jitter,
                    self.random,
                    dependency=dependency,
                    applied=self._applied,
                )
            if kind == "timeout":
                return TimeoutFault(dependency=dependency, applied=self._applied)
            error = resolve_error(spec.error, imports=False)
            return ErrorFault(
                dependency, self.recipe.name, error, spec.status, kind=kind, applied=self._applied
            )
        if isolated:
            self._matched(dependency, ISOLATED)
            return ErrorFault(
                dependency,
                self.recipe.name,
                FaultInjectedError,
                kind=ISOLATED,
                applied=self._applied,
            )
        return None

    def record(self) -> dict[tuple[str, str], int]:
        """(dependency, kind) -> times applied, for every fault this request matched so far."""
        with self._lock:
            return dict(self._record)

    def merge(self, record: Mapping[tuple[str, str], int]) -> None:
        """Add what a downstream service acknowledged to this request's record."""
        with self._lock:
            for key, n in record.items():
                self._record[key] = self._record.get(key, 0) + n
