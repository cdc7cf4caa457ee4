"""Injection: which fault a call gets under an active recipe, and the faults themselves.

:class:`ActiveRecipe` is the ``FaultContext`` the ``FIT`` contextvar holds for a tagged request.
Its ``fault_for`` is plain, non-blocking matching; the faults' ``wrap_sync`` / ``wrap_async``
differ only in how they wait (``time.sleep`` or ``asyncio.sleep``).
"""

from __future__ import annotations

import asyncio
import builtins
import fnmatch
import random as _random
import re
import sys
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from .. import errors
from ..errors import FaultInjectedError
from ..metrics import FIT_INJECTIONS, FIT_TAGS, counter
from ._recipe import FaultSpec, Recipe

__all__ = ["ActiveRecipe", "ErrorFault", "LatencyFault", "TimeoutFault", "stats"]

# A timeout fault sleeps this much longer than the timeout: enough for the caller's timer to
# fire first, short enough that an abandoned worker thread comes back soon.
_HANG_FACTOR = 1.5
_HANG_MARGIN = 0.05


class Stats:
    """Counts of verified tags by result and of injected faults, read at scrape time."""

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
        inj_family = counter(FIT_INJECTIONS, "Faults injected.", ["dependency", "kind"])
        for (dependency, kind), n in sorted(injections.items()):
            inj_family.add_metric([dependency, kind], n)
        yield tag_family
        yield inj_family


stats = Stats()


def resolve_error(name: str | bool | None) -> type[Exception]:
    """The exception class a fault raises; unknown names fall back to ``FaultInjectedError``.

    Only classes that already exist are used (builtins, ``resilience.errors``, or a dotted path
    into a module already imported): a tag must never make a service import code.
    """
    if not isinstance(name, str):
        return FaultInjectedError
    found: Any = getattr(builtins, name, None) or getattr(errors, name, None)
    if found is None and "." in name:
        module, _, attr = name.rpartition(".")
        found = getattr(sys.modules.get(module), attr, None)
    if isinstance(found, type) and issubclass(found, Exception):
        return found
    return FaultInjectedError


class ErrorFault:
    """Raises instead of calling: ``FaultInjectedError`` (with ``status``) or a named class."""

    __slots__ = ("dependency", "error", "recipe", "status")

    def __init__(
        self, dependency: str, recipe: str, error: type[Exception], status: int | None = None
    ) -> None:
        self.dependency = dependency
        self.recipe = recipe
        self.error = error
        self.status = status

    def make(self) -> Exception:
        if self.error is FaultInjectedError:
            return FaultInjectedError(self.dependency, self.recipe, self.status)
        try:
            return self.error(f"{self.dependency}: fault injected by recipe {self.recipe!r}")
        except Exception:  # a class that wants other arguments: say what was meant
            return FaultInjectedError(self.dependency, self.recipe, self.status)

    def wrap_sync(self, fn: Callable[..., Any], timeout: float) -> Callable[..., Any]:
        def failing(*args: Any, **kwargs: Any) -> Any:
            raise self.make()

        return failing

    def wrap_async(
        self, fn: Callable[..., Awaitable[Any]], timeout: float
    ) -> Callable[..., Awaitable[Any]]:
        async def failing(*args: Any, **kwargs: Any) -> Any:
            raise self.make()

        return failing


class LatencyFault:
    """Waits ``latency`` (plus up to ``jitter``) seconds, then runs the call."""

    __slots__ = ("jitter", "latency", "random")

    def __init__(
        self, latency: float, jitter: float = 0.0, random: Callable[[], float] = _random.random
    ) -> None:
        self.latency = latency
        self.jitter = jitter
        self.random = random

    def delay(self) -> float:
        return self.latency + (self.jitter * self.random() if self.jitter else 0.0)

    def wrap_sync(self, fn: Callable[..., Any], timeout: float) -> Callable[..., Any]:
        def slow(*args: Any, **kwargs: Any) -> Any:
            time.sleep(self.delay())
            return fn(*args, **kwargs)

        return slow

    def wrap_async(
        self, fn: Callable[..., Awaitable[Any]], timeout: float
    ) -> Callable[..., Awaitable[Any]]:
        async def slow(*args: Any, **kwargs: Any) -> Any:
            await asyncio.sleep(self.delay())
            return await fn(*args, **kwargs)

        return slow


class TimeoutFault:
    """Hangs past the dependency's timeout, then runs the call (whose result comes too late)."""

    __slots__ = ()

    @staticmethod
    def hang(timeout: float) -> float:
        return timeout * _HANG_FACTOR + _HANG_MARGIN

    def wrap_sync(self, fn: Callable[..., Any], timeout: float) -> Callable[..., Any]:
        def hanging(*args: Any, **kwargs: Any) -> Any:
            time.sleep(self.hang(timeout))
            return fn(*args, **kwargs)

        return hanging

    def wrap_async(
        self, fn: Callable[..., Awaitable[Any]], timeout: float
    ) -> Callable[..., Awaitable[Any]]:
        async def hanging(*args: Any, **kwargs: Any) -> Any:
            await asyncio.sleep(self.hang(timeout))
            return await fn(*args, **kwargs)

        return hanging


Fault = ErrorFault | LatencyFault | TimeoutFault


def _fault(spec: FaultSpec, dependency: str, recipe: str, random: Callable[[], float]) -> Fault:
    kind = spec.kind
    if kind == "latency":
        assert spec.latency is not None
        return LatencyFault(spec.latency, spec.jitter, random)
    if kind == "timeout":
        return TimeoutFault()
    return ErrorFault(dependency, recipe, resolve_error(spec.error), spec.status)


def _pattern(glob: str) -> Callable[[str], bool]:
    if not any(c in glob for c in "*?["):
        return glob.__eq__
    return re.compile(fnmatch.translate(glob)).match  # type: ignore[return-value]


class ActiveRecipe:
    """The ``FaultContext`` for one request: which fault (if any) each dependency call gets.

    Args:
        recipe: the scenario.
        random: returns floats in [0, 1); decides probabilities and latency jitter.
        tag: the verified request tag, forwarded to the next service by outgoing requests.
    """

    __slots__ = ("_critical", "_decided", "_faults", "random", "recipe", "tag")

    def __init__(
        self,
        recipe: Recipe,
        *,
        random: Callable[[], float] = _random.random,
        tag: str | None = None,
    ) -> None:
        self.recipe = recipe
        self.random = random
        self.tag = tag
        self._faults = [(_pattern(f.dependency), f) for f in recipe.faults]
        self._critical = [_pattern(c) for c in recipe.critical]
        # Matching is per dependency name; a request calls few names many times.
        self._decided: dict[str, tuple[FaultSpec | None, bool]] = {}

    def _decide(self, dependency: str) -> tuple[FaultSpec | None, bool]:
        for matches, spec in self._faults:
            if matches(dependency):
                return spec, False
        isolated = self.recipe.isolate_critical and not any(m(dependency) for m in self._critical)
        return None, isolated

    def fault_for(self, dependency: str) -> Fault | None:
        """The fault for one call to ``dependency``, or None (rolls the spec's probability)."""
        decided = self._decided.get(dependency)
        if decided is None:
            decided = self._decided[dependency] = self._decide(dependency)
        spec, isolated = decided
        if spec is not None:
            if spec.probability < 1.0 and self.random() >= spec.probability:
                return None
            stats.injected(dependency, spec.kind)
            return _fault(spec, dependency, self.recipe.name, self.random)
        if isolated:
            stats.injected(dependency, "isolated")
            return ErrorFault(dependency, self.recipe.name, FaultInjectedError)
        return None
