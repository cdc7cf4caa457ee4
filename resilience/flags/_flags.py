"""``Flags``: layered sources, runtime overrides, evaluation, change callbacks, status, metrics.

Every update (a source delivering a document, an override set or cleared) is validated first,
outside any lock; only then is the merged view rebuilt under the lock and swapped in as a new
dict of compiled flags. Evaluation reads that dict without locking: a plain switch costs a dict
lookup, an attribute read and a counter increment. Callbacks run after the swap, outside the lock.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, overload

import attrs

from ..errors import ConfigError
from ..metrics import FLAG_EVALUATIONS, FLAG_LAST_UPDATE, FLAG_SOURCE_ERRORS, counter, gauge
from ._model import (
    R_ERROR,
    REASONS,
    Compiled,
    Details,
    Flag,
    check_type,
    compile_flag,
    evaluate,
    parse_document,
    type_of,
)
from ._sources import Source

if TYPE_CHECKING:
    from ..circuit import Registry
    from ._circuit import CircuitBinding

__all__ = ["OVERRIDE", "FlagChange", "Flags"]

log = logging.getLogger("resilience.flags")

P = ParamSpec("P")
T = TypeVar("T")

OVERRIDE = "override"
MAX_UNKNOWN_NAMES = 1000  # distinct unknown flag names counted one by one; the rest are lumped
_OTHER = "(other)"


@attrs.frozen(kw_only=True)
class FlagChange:
    """A flag changed: ``old`` / ``new`` are ``None`` when it appeared / disappeared."""

    name: str
    old: Flag | None
    new: Flag | None
    source: str | None


class _SourceState:
    """What ``status()`` shows about one source (mutable, written under the Flags lock)."""

    def __init__(self, source: Source) -> None:
        self.source = source
        self.updates = 0
        self.last_update: float | None = None
        self.last_error: str | None = None
        self.last_error_time: float | None = None
        self.errors: dict[str, int] = {}
        self.loaded = threading.Event()


class _Feed:
    """The feed handed to one source: binds its deliveries to its layer."""

    def __init__(self, flags: Flags, index: int) -> None:
        self._flags = flags
        self._index = index

    def publish(self, document: Any) -> bool:
        return self._flags._install(self._index, document)

    def error(self, kind: str, message: str) -> None:
        self._flags._source_error(self._index, kind, message)


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


class Flags:
    """Runtime switches and dynamic settings from layered sources, with overrides on top.

    ``Flags(FileSource("flags.yaml"), EnvSource())``: later sources override earlier ones flag by
    flag; ``set()`` / ``set_flag()`` overrides sit on top of every source until ``clear()``.
    Evaluation never raises: an unknown flag or a value of the wrong type gives the default
    (reason ``error``, counted).

    Args:
        registry: the circuit registry whose metrics include these flags (the default one).
        start: load every source and start their pollers now (else call ``start()``).
        wall: wall clock for update times in ``status()`` and metrics.
    """

    def __init__(
        self,
        *sources: Source,
        registry: Registry | None = None,
        start: bool = True,
        wall: Callable[[], float] = time.time,
    ) -> None:
        for s in sources:
            if not isinstance(s, Source):
                raise ConfigError("sources", f"must be flag sources, got {s!r}")
        self._wall = wall
        self._lock = threading.Lock()
        self._sources = list(sources)
        self._states = [_SourceState(s) for s in sources]
        self._layers: list[dict[str, Flag]] = [{} for _ in sources]
        self._overrides: dict[str, Flag] = {}
        self._table: dict[str, Compiled] = {}
        self._stats: dict[str, list[int]] = {}
        self._unknown: dict[str, int] = {}
        self._listeners: dict[str | None, list[Callable[[FlagChange], None]]] = {}
        self._validators: dict[str, list[Callable[[Any], None]]] = {}
        self.bindings: list[CircuitBinding] = []
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

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Load every source once and start the pollers of those that poll."""
        if self._started:
            return
        self._started = True
        for i, source in enumerate(self._sources):
            source.start(_Feed(self, i))

    def close(self) -> None:
        """Stop every poller and circuit binding; the flags keep their last values."""
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

    def ready(self, timeout: float | None = None) -> bool:
        """Wait until every source has delivered a good document once; ``False`` on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for state in self._states:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not state.loaded.wait(left):
                return False
        return True

    def _after_fork(self) -> None:
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
                c.stats[0] += 1  # a lock would cost more than the lookup; a rare lost count is ok
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
                c.stats[0] += 1
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
        """Value, variant, reason and error of one evaluation (never raises)."""
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
            )
        if reason == R_ERROR:
            c.stats[R_ERROR] += 1
            return Details(
                flag=name,
                value=default,
                reason=REASONS[R_ERROR],
                error_code="targeting_key_missing",
                error_message=f"{name!r} splits on a key",
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
            )
        c.stats[reason] += 1
        return Details(flag=name, value=coerced, reason=REASONS[reason], variant=variant)

    def _count_unknown(self, name: str) -> None:
        unknown = self._unknown
        if name not in unknown and len(unknown) >= MAX_UNKNOWN_NAMES:
            name = _OTHER
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

    # -- overrides --------------------------------------------------------------------------

    def set(self, name: str, value: Any) -> Flag:
        """Override ``name`` with a static value on top of every source; returns the new flag.

        A bool on a switch turns it on/off for everyone. A flag that exists keeps its type: a
        value of another type (or one a validator refuses) is a ``ConfigError`` and nothing
        changes. An unknown name becomes a switch (bool) or a value flag typed by ``value``.
        """
        current = self.get(name)
        if current is not None and current.kind == "switch":
            if not isinstance(value, bool):
                raise ConfigError(
                    name, f"is a switch: the value must be true or false, got {value!r}"
                )
            flag = Flag(name=name, on=value)
        elif current is not None:
            assert current.type is not None
            if value is None or not check_type(value, current.type):
                raise ConfigError(name, f"must be of type {current.type}, got {value!r}")
            flag = Flag(name=name, value=value, type=current.type)
        elif isinstance(value, bool):
            flag = Flag(name=name, on=value)
        else:
            flag = Flag(name=name, value=value, type=type_of(value))
        self._override(name, flag)
        return flag

    def set_flag(self, name: str, spec: Mapping[str, Any]) -> Flag:
        """Override ``name`` with a whole flag (``{"on": true, "rollout": 0.4}``)."""
        flag = Flag.from_dict(name, spec)
        self._override(name, flag)
        return flag

    def _override(self, name: str, flag: Flag) -> None:
        self._validate({name: flag})
        with self._lock:
            self._overrides[name] = flag
            changes = self._rebuild()
        self._notify(changes)

    def clear(self, name: str) -> bool:
        """Remove the override of ``name``; ``True`` when there was one."""
        with self._lock:
            if self._overrides.pop(name, None) is None:
                return False
            changes = self._rebuild()
        self._notify(changes)
        return True

    def overrides(self) -> dict[str, Flag]:
        return dict(self._overrides)

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

    # -- validation -------------------------------------------------------------------------

    def add_validator(self, name: str, check: Callable[[Any], None]) -> Callable[[], None]:
        """Refuse updates that would give ``name`` a value ``check`` raises on (``ValueError``).

        Every value the flag can give is checked, from sources and overrides alike: a refused
        source update keeps the source's last good document, a refused override raises
        ``ConfigError``. Returns a function that removes the check.
        """
        self._validators.setdefault(name, []).append(check)
        return lambda: self._validators.get(name, []).remove(check)

    def _validate(self, flags: Mapping[str, Flag]) -> None:
        for name, flag in flags.items():
            for check in self._validators.get(name, ()):
                for where, value in flag.possible_values():
                    try:
                        check(value)
                    except (ValueError, TypeError) as exc:  # ConfigError is a ValueError
                        raise ConfigError(f"flags.{name}.{where}", str(exc)) from exc

    # -- updates ----------------------------------------------------------------------------

    def _install(self, index: int, document: Any) -> bool:
        state = self._states[index]
        try:
            flags = parse_document(document)
            self._validate(flags)
        except ConfigError as exc:
            self._source_error(index, "invalid", str(exc))
            return False
        with self._lock:
            self._layers[index] = flags
            state.updates += 1
            state.last_update = self._wall()
            changes = self._rebuild()
        state.loaded.set()
        log.info(
            "flag source %s: %d flags, %d changed", state.source.name, len(flags), len(changes)
        )
        self._notify(changes)
        return True

    def _source_error(self, index: int, kind: str, message: str) -> None:
        state = self._states[index]
        with self._lock:
            state.errors[kind] = state.errors.get(kind, 0) + 1
            state.last_error = f"{kind}: {message}"
            state.last_error_time = self._wall()
        if kind == "invalid":
            log.warning("flag source %s: rejected update: %s", state.source.name, message)

    def _rebuild(self) -> list[FlagChange]:
        """Merge layers and overrides into a new table; swap it in. Caller holds the lock."""
        merged: dict[str, tuple[Flag, str]] = {}
        for state, layer in zip(self._states, self._layers, strict=True):
            for name, flag in layer.items():
                merged[name] = (flag, state.source.name)
        for name, flag in self._overrides.items():
            merged[name] = (flag, OVERRIDE)
        old = self._table
        table: dict[str, Compiled] = {}
        changes: list[FlagChange] = []
        for name, (flag, source) in merged.items():
            prev = old.get(name)
            if prev is not None and prev.flag is flag and prev.source == source:
                table[name] = prev
                continue
            stats = self._stats.get(name)
            if stats is None:
                stats = self._stats[name] = [0] * len(REASONS)
            table[name] = compile_flag(flag, source, stats)
            if prev is None or prev.flag != flag:
                changes.append(
                    FlagChange(
                        name=name, old=None if prev is None else prev.flag, new=flag, source=source
                    )
                )
        for name, prev in old.items():
            if name not in table:
                changes.append(FlagChange(name=name, old=prev.flag, new=None, source=None))
        self._table = table
        return changes

    # -- change callbacks -------------------------------------------------------------------

    def on_change(
        self, name: str | None, callback: Callable[[FlagChange], None]
    ) -> Callable[[], None]:
        """Call ``callback(FlagChange)`` when ``name`` (or any flag, for ``None``) changes.

        Callbacks run on the thread that made the change (a poller, or the caller of
        ``set``), after the new state is in force. Returns a function that unsubscribes.
        """
        self._listeners.setdefault(name, []).append(callback)
        return lambda: self._listeners.get(name, []).remove(callback)

    def _notify(self, changes: list[FlagChange]) -> None:
        if not changes:
            return
        listeners = self._listeners
        everyone = tuple(listeners.get(None, ()))
        for change in changes:
            for callback in (*listeners.get(change.name, ()), *everyone):
                try:
                    callback(change)
                except Exception:
                    log.exception("flag change callback %r failed", callback)

    # -- decorator --------------------------------------------------------------------------

    def switch(
        self,
        name: str,
        *,
        off: Any = None,
        key: Callable[..., Any] | None = None,
        attrs: Callable[..., Mapping[str, Any]] | None = None,
    ) -> Callable[[Callable[P, T]], Callable[P, T]]:
        """Run the function while switch ``name`` is on; otherwise ``off``.

        Args:
            off: called with the same arguments when the switch is off (awaited if it returns
                an awaitable, for coroutine functions); a non-callable is returned as is.
            key / attrs: compute the rollout key and rule attributes from the call's arguments.
        """

        def decide(args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
            k = None if key is None else key(*args, **kwargs)
            a = None if attrs is None else attrs(*args, **kwargs)
            return self.enabled(name, k, a)

        def decorate(fn: Callable[P, T]) -> Callable[P, T]:
            if inspect.iscoroutinefunction(fn):

                @functools.wraps(fn)
                async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                    if decide(args, kwargs):
                        return await fn(*args, **kwargs)
                    result = off(*args, **kwargs) if callable(off) else off
                    if inspect.isawaitable(result):
                        result = await result
                    return result

                return async_wrapper  # type: ignore[return-value]

            @functools.wraps(fn)
            def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
                if decide(args, kwargs):
                    return fn(*args, **kwargs)
                return off(*args, **kwargs) if callable(off) else off  # type: ignore[no-any-return]

            return wrapper

        return decorate

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
        from ._circuit import CircuitBinding

        binding = CircuitBinding(self, dependency, registry=registry, **flag_names)
        self.bindings.append(binding)
        return binding

    # -- status and metrics -----------------------------------------------------------------

    def describe(self, name: str) -> dict[str, Any] | None:
        """What ``status()`` shows for one flag (``None`` if unknown); not counted as a use."""
        c = self._table.get(name)
        return None if c is None else self._describe(c)

    @staticmethod
    def _describe(c: Compiled) -> dict[str, Any]:
        return {
            "kind": c.flag.kind,
            "type": c.type,
            "source": c.source,
            "overridden": c.source == OVERRIDE,
            "static": c.static,
            "value": c.value if c.static else None,
            "spec": c.flag.to_dict(),
            "evaluations": {r.value: n for r, n in zip(REASONS, c.stats, strict=True) if n},
        }

    def status(self) -> dict[str, Any]:
        """A JSON-able picture: flags in force, their sources, sources' health, bindings."""
        table = self._table
        flags = {name: self._describe(table[name]) for name in sorted(table)}
        with self._lock:
            sources = [
                {
                    "name": st.source.name,
                    "kind": type(st.source).__name__,
                    "updates": st.updates,
                    "last_update": st.last_update,
                    "errors": dict(st.errors),
                    "last_error": st.last_error,
                    "last_error_time": st.last_error_time,
                }
                for st in self._states
            ]
        return {
            "flags": flags,
            "sources": sources,
            "overrides": sorted(self._overrides),
            "unknown": dict(self._unknown),
            "bindings": [b.status() for b in self.bindings],
        }

    def collect_metrics(self) -> Iterator[Any]:
        """Prometheus families, built at scrape time from the flags' own counters."""
        evaluations = counter(FLAG_EVALUATIONS, "Flag evaluations by reason.", ["flag", "reason"])
        for name, stats in sorted(self._stats.items()):
            for reason, n in zip(REASONS, stats, strict=True):
                if n:
                    evaluations.add_metric([name, reason.value], n)
        for name, n in sorted(self._unknown.items()):
            evaluations.add_metric([name, "error"], n)
        errors = counter(
            FLAG_SOURCE_ERRORS, "Failed or rejected source updates.", ["source", "kind"]
        )
        last = gauge(FLAG_LAST_UPDATE, "Wall time of the last good update.", ["source"])
        for st in self._states:
            for kind, n in sorted(st.errors.items()):
                errors.add_metric([st.source.name, kind], n)
            if st.last_update is not None:
                last.add_metric([st.source.name], st.last_update)
        for binding in self.bindings:
            if binding.rejected:
                errors.add_metric(
                    [f"circuit:{binding.dependency.name}", "rejected"], binding.rejected
                )
        yield from (evaluations, errors, last)
