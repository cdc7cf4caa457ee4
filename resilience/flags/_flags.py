"""``Flags``: evaluation, overrides, fleet-wide writes, the switch decorator, circuits, status.

The store (``_store``) keeps layers and the compiled table; this class adds what users call.
Evaluation reads the table without locking: a plain switch costs a dict lookup, an attribute
read and a counter increment. No source is ever on the evaluation path: a watch or a poller
swaps a new table in, evaluation only reads the current one.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
import weakref
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, overload

from ..errors import ConfigError
from ._circuit import CircuitBinding
from ._evaluate import R_ERROR, REASONS, Compiled, Details, evaluate
from ._fleet import FleetWrites
from ._model import Flag, flag_from_value, parse_one
from ._source import Source
from ._status import collect_metrics, describe, status
from ._store import OVERRIDE, SourceFeed
from ._switch import switch_decorator

if TYPE_CHECKING:
    from ..circuit import Registry

__all__ = ["DEFAULT_READY_TIMEOUT", "OVERRIDE", "Flags"]

log = logging.getLogger("resilience.flags")

P = ParamSpec("P")
T = TypeVar("T")

DEFAULT_READY_TIMEOUT = 5.0
MAX_UNKNOWN_NAMES = 1000  # distinct unknown flag names counted one by one; the rest are lumped
_OTHER = "(other)"

_LIVE: weakref.WeakSet[Flags] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for flags in list(_LIVE):
        flags._after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)


def _coerce(value: Any, default: Any) -> tuple[bool, Any]:
    """(ok, value) of a flag value asked for with a default of some type."""
    if default is None or type(value) is type(default):
        return True, value
    if isinstance(default, bool) or isinstance(value, bool):
        return False, default
    if isinstance(default, float) and isinstance(value, int):
        return True, float(value)
    if isinstance(default, (dict, list)) and isinstance(value, (dict, list)):
        return type(value) is type(default), value if type(value) is type(default) else default
    return False, default


class Flags(FleetWrites):
    """Runtime switches and dynamic settings from layered sources, with overrides on top.

    ``Flags(FileSource("flags.yaml"), EnvSource())``: later sources override earlier ones flag by
    flag; ``set()`` / ``set_flag()`` overrides sit on top of every source until ``clear()``.
    Evaluation never raises: an unknown flag or a value of the wrong type gives the default
    (reason ``error``, counted; an unknown name is logged once).

    Args:
        registry: the circuit registry whose metrics include these flags (the default one).
        start: load every source and start their pollers and watches now (else ``start()``).
        require: at start, wait up to ``ready_timeout`` for the sources and raise
            ``ConfigError`` when none of them produced a good document (a backup file counts):
            for services that would rather not start than run blind.
        wall: wall clock for update times in ``status()`` and metrics.
    """

    def __init__(
        self,
        *sources: Source,
        registry: Registry | None = None,
        start: bool = True,
        require: bool = False,
        ready_timeout: float = DEFAULT_READY_TIMEOUT,
        wall: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(sources, wall)
        self._started = False
        self._closed = False
        if registry is None:
            from ..circuit import registry as default_registry

            registry = default_registry()
        self._registry = registry
        registry.add_metrics_source(self)
        _LIVE.add(self)
        if start:
            self.start()
            if require:
                try:
                    self.ready(ready_timeout, require=True)
                except ConfigError:
                    self.close()
                    raise

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Load every source once and start the pollers and watches of those that have them."""
        if self._started:
            return
        self._started = True
        for i, source in enumerate(self._sources):
            source.start(SourceFeed(self, i))

    def close(self) -> None:
        """Stop every poller, watch and circuit binding; the flags keep their last values."""
        self._closed = True
        for binding in list(self.bindings):
            binding.close()
        for source in self._sources:
            source.stop()
        self._registry.remove_metrics_source(self)

    def __enter__(self) -> Flags:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def ready(self, timeout: float | None = None, *, require: bool = False) -> bool:
        """Wait until every source has delivered a fresh good document once.

        ``False`` on timeout (the flags in force meanwhile are the sources' backups and the
        callers' defaults). ``require=True``: on timeout, raise ``ConfigError`` when no source
        produced any good document at all.
        """
        if self._wait_loaded(timeout):
            return True
        if require and not any(s.good for s in self._states):
            problems = "; ".join(
                f"{s.source.name}: {s.last_error or 'nothing yet'}" for s in self._states
            )
            raise ConfigError("flags", f"no source produced a good document ({problems})")
        return False

    def _after_fork(self) -> None:
        import threading

        self._lock = threading.Lock()
        if self._started and not self._closed:
            for source in self._sources:
                source.after_fork()

    # -- evaluation (hot path) ------------------------------------------------------------

    def enabled(
        self,
        name: str,
        key: Any = None,
        attrs: Mapping[str, Any] | None = None,
        *,
        default: bool = False,
    ) -> bool:
        """Whether switch ``name`` is on for ``key`` (rollout) and ``attrs`` (rules).

        Args:
            key: the identity a rollout is sticky on (a user id); converted with ``str()``.
            default: returned for an unknown flag, a non-boolean flag, or a rollout without key.
        """
        c = self._table.get(name)
        if c is not None:
            on = c.switch
            if on is not None:
                c.stats[c.reason] += 1  # a lock would cost more than the lookup; a rare lost count
                return on
        return self._enabled(name, c, key, attrs, default)

    def _enabled(
        self,
        name: str,
        c: Compiled | None,
        key: Any,
        attrs: Mapping[str, Any] | None,
        default: bool,
    ) -> bool:
        if c is None:
            self._count_unknown(name)
            return default
        try:
            value, _, reason = evaluate(c, key, attrs)
        except Exception:  # a rule on exotic attribute values must not break the caller
            log.exception("evaluating flag %s failed", name)
            value, reason = None, R_ERROR
        if reason == R_ERROR or not isinstance(value, bool):
            c.stats[R_ERROR] += 1
            return default
        c.stats[reason] += 1
        return value

    @overload
    def value(self, name: str) -> Any: ...
    @overload
    def value(
        self, name: str, default: T, key: Any = None, attrs: Mapping[str, Any] | None = None
    ) -> T: ...

    def value(
        self,
        name: str,
        default: Any = None,
        key: Any = None,
        attrs: Mapping[str, Any] | None = None,
    ) -> Any:
        """The value of flag ``name`` (a dynamic setting), or ``default``.

        The flag's value must have ``default``'s type (an int is accepted for a float and
        converted); otherwise, and for an unknown flag, ``default`` comes back (reason error).
        """
        c = self._table.get(name)
        if c is not None and c.static:
            v = c.value
            if default is None or type(v) is type(default):
                c.stats[c.reason] += 1
                return v
        return self.details(name, key, attrs, default=default).value

    def details(
        self,
        name: str,
        key: Any = None,
        attrs: Mapping[str, Any] | None = None,
        *,
        default: Any = None,
    ) -> Details:
        """Value, variant, reason, error, source and version of one evaluation (never raises)."""
        c = self._table.get(name)
        if c is None:
            self._count_unknown(name)
            return Details(
                flag=name,
                value=default,
                reason=REASONS[R_ERROR],
                error_code="flag_not_found",
                error_message=f"no flag {name!r}",
            )
        try:
            value, variant, reason = evaluate(c, key, attrs)
        except Exception as exc:
            log.exception("evaluating flag %s failed", name)
            c.stats[R_ERROR] += 1
            return Details(
                flag=name,
                value=default,
                reason=REASONS[R_ERROR],
                error_code="general",
                error_message=repr(exc),
                source=c.source,
                version=c.version,
            )
        if reason == R_ERROR:
            c.stats[R_ERROR] += 1
            return Details(
                flag=name,
                value=default,
                reason=REASONS[R_ERROR],
                error_code="targeting_key_missing",
                error_message=f"{name!r} splits on a key",
                source=c.source,
                version=c.version,
            )
        ok, coerced = _coerce(value, default)
        if not ok:
            c.stats[R_ERROR] += 1
            return Details(
                flag=name,
                value=default,
                reason=REASONS[R_ERROR],
                error_code="type_mismatch",
                error_message=f"{name!r} is a {c.type}, the default a {type(default).__name__}",
                source=c.source,
                version=c.version,
            )
        c.stats[reason] += 1
        return Details(
            flag=name,
            value=coerced,
            reason=REASONS[reason],
            variant=variant,
            source=c.source,
            version=c.version,
        )

    def _count_unknown(self, name: str) -> None:
        unknown = self._unknown
        if name not in unknown:
            if len(unknown) >= MAX_UNKNOWN_NAMES:
                name = _OTHER
            elif name not in self._unknown_logged and self._all_loaded():
                # once per name, and only once the sources have loaded: before that every
                # name is unknown and saying so would be noise
                self._unknown_logged.add(name)
                log.warning("flag %r is not defined by any source: callers get their default", name)
        unknown[name] = unknown.get(name, 0) + 1

    def __contains__(self, name: str) -> bool:
        return name in self._table

    def names(self) -> list[str]:
        return sorted(self._table)

    def get(self, name: str) -> Flag | None:
        """The flag in force for ``name`` (after layering and overrides)."""
        c = self._table.get(name)
        return None if c is None else c.flag

    def source_of(self, name: str) -> str | None:
        """The name of the source ``name`` comes from (``"override"`` for overrides)."""
        c = self._table.get(name)
        return None if c is None else c.source

    # -- overrides (this process only) ----------------------------------------------------

    def set(self, name: str, value: Any) -> Flag:
        """Override ``name`` with a static value on top of every source; returns the new flag.

        A bool on a switch turns it on/off for everyone. A flag that exists keeps its type: a
        value of another type (or one a validator refuses) is a ``ConfigError`` and nothing
        changes. An unknown name becomes a switch (bool) or a value flag typed by ``value``.
        """
        flag = flag_from_value(name, value, self.get(name))
        self._override(name, flag)
        return flag

    def set_flag(self, name: str, spec: Mapping[str, Any]) -> Flag:
        """Override ``name`` with a whole flag (``{"on": true, "rollout": 0.4}``)."""
        flag = parse_one(name, spec)
        self._override(name, flag)
        return flag

    @contextlib.contextmanager
    def overridden(self, values: Mapping[str, Any]) -> Iterator[Flags]:
        """Override flags for a ``with`` block (tests), then restore the overrides before it."""
        before = {name: self._overrides.get(name) for name in values}
        try:
            for name, value in values.items():
                self.set(name, value)
            yield self
        finally:
            for name, flag in before.items():
                if flag is None:
                    self.clear(name)
                else:
                    self._override(name, flag)

    # -- decorator --------------------------------------------------------------------------

    def switch(
        self,
        name: str,
        *,
        off: Any = None,
        default: bool = False,
        key: Callable[..., Any] | None = None,
        attrs: Callable[..., Mapping[str, Any]] | None = None,
    ) -> Callable[[Callable[P, T]], Callable[P, T]]:
        """Run the function while switch ``name`` is on; otherwise ``off``.

        Args:
            off: called with the same arguments when the switch is off (awaited if it returns
                an awaitable, for coroutine functions); a non-callable is returned as is.
            default: whether the function runs while the flag is missing or broken (``False``:
                ``off`` is used, a switch fails closed; ``True``: it fails open).
            key / attrs: compute the rollout key and rule attributes from the call's arguments.
        """
        return switch_decorator(self.enabled, name, off=off, default=default, key=key, attrs=attrs)

    # -- circuits -----------------------------------------------------------------------------

    def bind_circuit(
        self, dependency: str, *, registry: Registry | None = None, **flag_names: str | None
    ) -> CircuitBinding:
        """Let flags force circuit ``dependency`` and set its policy at runtime.

        By default the flag ``circuits.<dependency>.forced`` (``"open"``, ``"closed"`` or
        ``"auto"``) forces the circuit, and ``circuits.<dependency>.<field>`` sets each numeric
        policy field (timeout, failure_rate, pool_size, queue_size, max_concurrent, min_calls,
        open_duration, half_open_calls). Pass ``timeout="ops.ratings.timeout"`` to read another
        flag, or ``None`` to leave a field alone. See ``CircuitBinding``.
        """
        binding = CircuitBinding(self, dependency, registry=registry, **flag_names)
        self.bindings.append(binding)
        return binding

    # -- status and metrics -----------------------------------------------------------------

    def describe(self, name: str) -> dict[str, Any] | None:
        """What ``status()`` shows for one flag (``None`` if unknown); not counted as a use."""
        c = self._table.get(name)
        return None if c is None else describe(c)

    def status(self) -> dict[str, Any]:
        """A JSON-able picture: flags in force, their sources, sources' health, bindings."""
        return status(self)

    def collect_metrics(self) -> Iterator[Any]:
        """Prometheus families, built at scrape time from the flags' own counters."""
        return collect_metrics(self)
