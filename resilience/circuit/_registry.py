"""The registry: one Dependency per name, shared by every decorator and call site."""

from __future__ import annotations

import os
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from ..errors import ConfigError
from ._breaker import StateChange
from ._dependency import Dependency, Listener
from ._policy import DEFAULT_POLICY, Policy

__all__ = ["MetricsSource", "Registry", "registry", "set_registry"]


class MetricsSource(Protocol):
    """Anything that adds Prometheus metric families at scrape time (caches, flags, FIT)."""

    def collect_metrics(self) -> Iterator[Any]: ...


class Registry:
    """Holds dependencies by name, their shared listeners, and extra metric sources."""

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self.clock = clock
        self.sleep: Callable[[float], object] | None = None
        self._deps: dict[str, Dependency] = {}
        self._lock = threading.Lock()
        self._listeners: list[Listener] = []
        self._sources: list[MetricsSource] = []
        _registries.add(self)

    def dependency(self, name: str, policy: Policy | None = None, **options: Any) -> Dependency:
        """The dependency named ``name``, created on first use.

        A later registration that states a policy (or policy options) must state the same one:
        otherwise ``ConfigError`` names the fields that differ. One that states none reuses it.
        A dependency first created by a lookup that stated nothing takes the policy of the
        first registration that states one.
        """
        if not isinstance(name, str) or not name:
            raise ConfigError("name", f"must be a non-empty string, got {name!r}")
        if policy is not None and not isinstance(policy, Policy):
            raise ConfigError("policy", f"must be a resilience.Policy, got {policy!r}")
        stated = policy is not None or bool(options)
        wanted = Policy.build(policy or DEFAULT_POLICY, **options) if stated else DEFAULT_POLICY
        with self._lock:
            dep = self._deps.get(name)
            if dep is None:
                dep = self._deps[name] = Dependency(name, wanted, self.clock, self._listeners)
                if self.sleep is not None:
                    dep.set_clock(self.clock, self.sleep)
                dep.declared = stated
                return dep
            if stated and not dep.declared:
                # Looked up before (a flag binding, a test, the admin app): the first
                # registration that states a policy still decides it.
                dep.adopt(wanted)
                return dep
        if stated and wanted != dep.declared_policy:
            fields = wanted.differences(dep.declared_policy)
            raise ConfigError(
                fields[0],
                f"dependency {name!r} is already registered with a different policy "
                f"(differs in: {', '.join(fields)})",
            )
        return dep

    def get(self, name: str) -> Dependency | None:
        return self._deps.get(name)

    def __iter__(self) -> Iterator[Dependency]:
        return iter(list(self._deps.values()))

    def __len__(self) -> int:
        return len(self._deps)

    def names(self) -> list[str]:
        return sorted(self._deps)

    def on_state_change(self, listener: Callable[[StateChange], None]) -> Callable[[], None]:
        """Listen to transitions of every dependency, present and future."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def add_metrics_source(self, source: MetricsSource) -> None:
        if source not in self._sources:
            self._sources.append(source)

    def remove_metrics_source(self, source: MetricsSource) -> None:
        if source in self._sources:
            self._sources.remove(source)

    @property
    def metrics_sources(self) -> list[MetricsSource]:
        return list(self._sources)

    def set_clock(
        self, clock: Callable[[], float], sleep: Callable[[float], object] | None = None
    ) -> None:
        """Read time from ``clock`` in every dependency, present and future.

        ``sleep``: what the library's own waits (retry back-off, rate-limit tokens) call instead
        of ``time.sleep``; give a fake clock's ``advance`` so they move it. None: real sleeps.
        """
        self.clock = clock
        self.sleep = sleep
        for dep in self:
            dep.set_clock(clock, sleep)

    def reset(self) -> None:
        """Close every circuit and start fresh windows (between tests)."""
        for dep in self:
            dep.reset()
            dep.window.resize(dep.policy.window, dep.policy.buckets, dep.policy.slow_call_duration)

    def clear(self) -> None:
        """Forget every dependency (decorators made before keep theirs)."""
        with self._lock:
            self._deps.clear()


_registries: weakref.WeakSet[Registry] = weakref.WeakSet()


def _reset_after_fork() -> None:
    # A thread of the parent may have held a registry's lock at fork(): not in the child.
    for reg in list(_registries):
        reg._lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)

_default = Registry()


def registry() -> Registry:
    """The process-wide default registry."""
    return _default


def set_registry(new: Registry) -> Registry:
    """Make ``new`` the default registry; returns the previous one."""
    global _default
    old, _default = _default, new
    return old
