"""Circuits that read flags: forced state and numeric policy fields changed at runtime.

A binding watches a handful of flags and drives the dependency through its public controls
(``force_open``, ``force_closed``, ``reset``, ``update_policy``). It also installs validators, so
a value the policy would refuse is rejected at the door (a source update keeps its last good
document; an override raises ``ConfigError``, an admin call answers 400). A combination that only
``update_policy`` can judge is rejected there: counted, logged, and the last good policy stays.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from ..circuit import Dependency, Policy, State
from ..errors import ConfigError
from ._events import FlagChange

if TYPE_CHECKING:
    from ..circuit import Registry

__all__ = ["FORCED_VALUES", "POLICY_FIELDS", "CircuitBinding"]

log = logging.getLogger("resilience.flags")

POLICY_FIELDS = (
    "timeout",
    "failure_rate",
    "pool_size",
    "queue_size",
    "max_concurrent",
    "min_calls",
    "open_duration",
    "half_open_calls",
)
FORCED_VALUES = ("open", "closed", "auto")
_FORCED_STATES = (State.FORCED_OPEN, State.FORCED_CLOSED)


class FlagReader(Protocol):
    """What a binding needs from ``Flags`` (named here so this module never imports it)."""

    bindings: list[CircuitBinding]

    def value(self, name: str) -> Any: ...

    def add_validator(self, name: str, check: Callable[[Any], None]) -> Callable[[], None]: ...

    def on_change(
        self, name: str | None, callback: Callable[[FlagChange], None]
    ) -> Callable[[], None]: ...


class CircuitBinding:
    """Flags bound to one dependency's circuit (made by ``Flags.bind_circuit``).

    Args:
        flag_names: ``forced`` and any of ``POLICY_FIELDS`` mapped to a flag name, or to
            ``None`` to leave it alone; by default ``circuits.<dependency>.<field>``.

    A forced flag of ``"open"`` / ``"closed"`` forces the circuit; ``"auto"`` or no flag resets a
    circuit this binding forced (a circuit forced by other means is left as it is). A policy
    field whose flag disappears goes back to the value the dependency was declared with.
    """

    def __init__(
        self,
        flags: FlagReader,
        dependency: str,
        *,
        registry: Registry | None = None,
        **flag_names: str | None,
    ) -> None:
        unknown = sorted(set(flag_names) - {"forced", *POLICY_FIELDS})
        if unknown:
            raise ConfigError(unknown[0], "is not a flag a circuit can read")
        if registry is None:
            from ..circuit import registry as default_registry

            registry = default_registry()
        self.flags = flags
        self.dependency: Dependency = registry.dependency(dependency)
        prefix = f"circuits.{dependency}."
        names = {f: flag_names.get(f, prefix + f) for f in ("forced", *POLICY_FIELDS)}
        self.forced_flag = names.pop("forced")
        self.fields: dict[str, str] = {f: n for f, n in names.items() if n is not None}
        self.rejected = 0
        self.last_error: str | None = None
        self._forced: str | None = None
        self._lock = threading.Lock()
        self._undo = []
        if self.forced_flag is not None:
            self._undo.append(flags.add_validator(self.forced_flag, _check_forced))
            self._undo.append(flags.on_change(self.forced_flag, self._changed))
        for field, flag_name in self.fields.items():
            self._undo.append(flags.add_validator(flag_name, self._field_check(field)))
            self._undo.append(flags.on_change(flag_name, self._changed))
        self.apply()

    def _field_check(self, field: str) -> Any:
        def check(value: Any) -> None:
            Policy.build(self.dependency.policy, **{field: value})

        return check

    def _changed(self, change: FlagChange) -> None:
        self.apply()

    def apply(self) -> None:
        """Bring the circuit in line with the flags now (done on every change)."""
        dep = self.dependency
        with self._lock:  # applies from two pollers must not interleave their reads and writes
            wanted: dict[str, Any] = {}
            for field, flag_name in self.fields.items():
                value = self.flags.value(flag_name)
                if value is None:
                    value = getattr(dep.declared_policy, field)
                if getattr(dep.policy, field) != value:
                    wanted[field] = value
            if wanted:
                try:
                    dep.update_policy(**wanted)
                    log.info("circuit %s: policy from flags %s", dep.name, wanted)
                except ConfigError as exc:
                    self._reject(f"policy {wanted}: {exc}")
            if self.forced_flag is not None:
                self._apply_forced(self.flags.value(self.forced_flag))

    def _apply_forced(self, value: Any) -> None:
        dep = self.dependency
        if value is not None and value not in FORCED_VALUES:
            self._reject(f"{self.forced_flag}: must be one of {', '.join(FORCED_VALUES)}")
            return
        if value == "open":
            if dep.state is not State.FORCED_OPEN:
                dep.force_open()
            self._forced = value
        elif value == "closed":
            if dep.state is not State.FORCED_CLOSED:
                dep.force_closed()
            self._forced = value
        elif self._forced is not None:
            self._forced = None
            if dep.state in _FORCED_STATES:
                dep.reset()

    def _reject(self, message: str) -> None:
        self.rejected += 1
        self.last_error = message
        log.warning(
            "circuit %s: flag value rejected, last good kept: %s", self.dependency.name, message
        )

    def status(self) -> dict[str, Any]:
        return {
            "dependency": self.dependency.name,
            "forced_flag": self.forced_flag,
            "fields": dict(self.fields),
            "forced": self._forced,
            "rejected": self.rejected,
            "last_error": self.last_error,
        }

    def close(self) -> None:
        """Stop following the flags (the circuit keeps its current state and policy)."""
        for undo in self._undo:
            undo()
        self._undo.clear()
        if self in self.flags.bindings:
            self.flags.bindings.remove(self)


def _check_forced(value: Any) -> None:
    if value not in FORCED_VALUES:
        raise ValueError(f"must be one of {', '.join(FORCED_VALUES)}, got {value!r}")
