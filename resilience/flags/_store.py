"""The flag store: one layer per source, overrides on top, merged into a table of compiled flags.

Every update (a source delivering a document or a patch of some keys, an override set or
cleared) is validated first, flag by flag and outside any lock: an invalid flag keeps its last
good spec (or stays absent) and is reported, the valid ones beside it are installed. Only then
is the merged view rebuilt under the lock and swapped in as a new dict of compiled flags, so
evaluation reads it without locking. Callbacks run after the swap, outside the lock.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from ..errors import ConfigError
from ._circuit import CircuitBinding
from ._evaluate import REASONS, Compiled, compile_flag
from ._events import FlagChange, Health, HealthChange
from ._model import Flag, parse_one
from ._source import Source, Unreadable

__all__ = ["OVERRIDE", "FlagStore", "SourceState"]

log = logging.getLogger("resilience.flags")

OVERRIDE = "override"
_RANK = {Health.OK: 0, Health.STALE: 1, Health.ERROR: 2}


class SourceState:
    """What ``status()`` shows about one source (mutable, written under the store's lock)."""

    def __init__(self, source: Source) -> None:
        self.source = source
        self.updates = 0
        self.last_update: float | None = None  # wall time of the last change it delivered
        self.last_success: float | None = None  # wall time of its last good check
        self.last_error: str | None = None
        self.last_error_time: float | None = None
        self.errors: dict[str, int] = {}
        self.flag_errors: dict[str, str] = {}  # flags refused, their last good kept
        self.failing = False  # its last check failed
        self.good = False  # it delivered a good document once (its backup file counts)
        self.stale = False  # what it serves came from its backup file
        self.loaded = threading.Event()  # it delivered a fresh good document once

    def health(self) -> Health:
        if not self.good:
            return Health.ERROR if self.failing else Health.OK
        if self.failing or self.stale or self.flag_errors:
            return Health.STALE
        return Health.OK


class SourceFeed:
    """The feed handed to one source: binds its deliveries to its layer of the store."""

    def __init__(self, store: FlagStore, index: int) -> None:
        self._store = store
        self._index = index

    def publish(self, document: Any, *, stale: bool = False) -> bool:
        return self._store._publish(self._index, document, stale=stale)

    def patch(
        self,
        changes: Mapping[str, Any],
        *,
        versions: Mapping[str, int] | None = None,
        replace: bool = False,
        stale: bool = False,
    ) -> frozenset[str]:
        return self._store._apply(self._index, changes, versions or {}, replace, stale)

    def error(self, kind: str, message: str, *, flag: str | None = None) -> None:
        self._store._source_error(self._index, kind, message, flag)

    def ok(self) -> None:
        self._store._source_ok(self._index)


class FlagStore:
    """Layers, overrides, validators, the compiled table, and the listeners of changes."""

    def __init__(self, sources: tuple[Source, ...], wall: Callable[[], float]) -> None:
        for s in sources:
            if not isinstance(s, Source):
                raise ConfigError("sources", f"must be flag sources, got {s!r}")
        self._wall = wall
        self._lock = threading.Lock()
        self._sources = list(sources)
        self._states = [SourceState(s) for s in sources]
        self._layers: list[dict[str, Flag]] = [{} for _ in sources]
        self._versions: list[dict[str, int]] = [{} for _ in sources]
        self._overrides: dict[str, Flag] = {}
        self._table: dict[str, Compiled] = {}
        self._stats: dict[str, list[int]] = {}
        self._listeners: dict[str | None, list[Callable[[FlagChange], None]]] = {}
        self._health_listeners: list[Callable[[HealthChange], None]] = []
        self._validators: dict[str, list[Callable[[Any], None]]] = {}
        self._health = Health.OK
        self._unknown: dict[str, int] = {}  # evaluations of names no source defines
        self._unknown_logged: set[str] = set()
        self.bindings: list[CircuitBinding] = []

    # -- validation -------------------------------------------------------------------------

    def add_validator(self, name: str, check: Callable[[Any], None]) -> Callable[[], None]:
        """Refuse updates that would give ``name`` a value ``check`` raises on (``ValueError``).

        Every value the flag can give is checked, from sources and overrides alike: a refused
        source update keeps the flag's last good spec, a refused override or write raises
        ``ConfigError``. Returns a function that removes the check.
        """
        self._validators.setdefault(name, []).append(check)
        return lambda: self._validators.get(name, []).remove(check)

    def validate(self, flag: Flag) -> None:
        """Run ``flag`` through the validators of its name (``ConfigError`` names the field)."""
        for check in self._validators.get(flag.name, ()):
            for where, value in flag.possible_values():
                try:
                    check(value)
                except (ValueError, TypeError) as exc:  # ConfigError is a ValueError
                    raise ConfigError(f"flags.{flag.name}.{where}", str(exc)) from exc

    # -- updates from sources ---------------------------------------------------------------

    def _publish(self, index: int, document: Any, *, stale: bool = False) -> bool:
        from ._model import document_flags

        try:
            tree = document_flags(document)
            if not isinstance(tree, Mapping) or not all(isinstance(n, str) for n in tree):
                raise ConfigError("flags", "must be an object of flags with string names")
        except ConfigError as exc:
            self._source_error(index, "invalid", str(exc))
            return False
        return not self._apply(index, tree, {}, True, stale)

    def _apply(
        self,
        index: int,
        changes: Mapping[str, Any],
        versions: Mapping[str, int],
        replace: bool,
        stale: bool,
    ) -> frozenset[str]:
        """Install ``changes`` (name -> spec, or ``None`` to delete) into layer ``index``.

        Returns the names refused (each keeps its last good spec, or stays absent).
        """
        state = self._states[index]
        good: dict[str, Flag] = {}
        bad: dict[str, tuple[str, str]] = {}
        for name, spec in changes.items():
            if spec is None:
                continue
            if isinstance(spec, Unreadable):
                bad[name] = ("parse", f"flags.{name}: {spec.reason}")
                continue
            try:
                flag = parse_one(name, spec)
                self.validate(flag)
            except ConfigError as exc:
                bad[name] = ("invalid", str(exc))
            else:
                good[name] = flag
        with self._lock:
            layer, known = self._layers[index], self._versions[index]
            if replace:
                kept = {n: layer[n] for n in bad if n in layer}
                kept_versions = {n: known[n] for n in kept if n in known}
                touched = None
                layer = self._layers[index] = {**kept, **good}
                known = self._versions[index] = kept_versions
                state.flag_errors = {}
            else:
                touched = list(changes)
                for name in touched:
                    if changes[name] is None:
                        layer.pop(name, None)
                        known.pop(name, None)
                        state.flag_errors.pop(name, None)
                layer.update(good)
            for name in good:
                state.flag_errors.pop(name, None)
                known.pop(name, None)
            known.update({n: v for n, v in versions.items() if n in good})
            state.flag_errors.update({n: f"{k}: {m}" for n, (k, m) in bad.items()})
            now = self._wall()
            state.updates += 1
            state.last_success = now
            state.failing = False
            state.good = True
            state.stale = stale
            changed = self._rebuild(touched)
            if changed:
                state.last_update = now
            health = self._health_change(state, None)
        for name, (kind, message) in bad.items():
            self._count_error(index, kind, message, name)
        if not stale:
            state.loaded.set()
        log.info(
            "flag source %s: %d flags, %d changed, %d refused",
            state.source.name,
            len(good),
            len(changed),
            len(bad),
        )
        self._notify(changed)
        self._notify_health(health)
        return frozenset(bad)

    def _source_ok(self, index: int) -> None:
        state = self._states[index]
        with self._lock:
            state.last_success = self._wall()
            state.failing = False
            health = self._health_change(state, None)
        self._notify_health(health)

    def _source_error(self, index: int, kind: str, message: str, flag: str | None = None) -> None:
        state = self._states[index]
        with self._lock:
            # a listener hears of a failure when it starts, not on every retry of it
            news = state.flag_errors.get(flag) is None if flag is not None else not state.failing
            if flag is None:
                state.failing = True
            else:
                state.flag_errors[flag] = f"{kind}: {message}"
            health = self._health_change(state, f"{kind}: {message}" if news else None)
        self._count_error(index, kind, message, flag)
        self._notify_health(health)

    def _count_error(self, index: int, kind: str, message: str, flag: str | None) -> None:
        state = self._states[index]
        with self._lock:
            state.errors[kind] = state.errors.get(kind, 0) + 1
            state.last_error = f"{kind}: {message}"
            state.last_error_time = self._wall()
        where = f" (flag {flag}: its last good spec, if any, stays)" if flag is not None else ""
        log.warning("flag source %s: %s%s: %s", state.source.name, kind, where, message)

    # -- overrides ----------------------------------------------------------------------------

    def _override(self, name: str, flag: Flag) -> None:
        self.validate(flag)
        with self._lock:
            self._overrides[name] = flag
            changes = self._rebuild({name})
        self._notify(changes)

    def clear(self, name: str) -> bool:
        """Remove the override of ``name``; ``True`` when there was one."""
        with self._lock:
            if self._overrides.pop(name, None) is None:
                return False
            changes = self._rebuild({name})
        self._notify(changes)
        return True

    def overrides(self) -> dict[str, Flag]:
        return dict(self._overrides)

    # -- the merged table ---------------------------------------------------------------------

    def _winner(self, name: str) -> tuple[Flag, str, int | None] | None:
        flag = self._overrides.get(name)
        if flag is not None:
            return flag, OVERRIDE, None
        for i in range(len(self._layers) - 1, -1, -1):
            flag = self._layers[i].get(name)
            if flag is not None:
                return flag, self._states[i].source.name, self._versions[i].get(name)
        return None

    def _rebuild(self, names: Iterable[str] | None = None) -> list[FlagChange]:
        """Merge layers and overrides (only ``names``, or all) into a new table; swap it in.

        The caller holds the lock. Changes come in a stable order: known flags first.
        """
        old = self._table
        if names is None:
            ordered = dict.fromkeys(old)
            for layer in self._layers:
                ordered.update(dict.fromkeys(layer))
            ordered.update(dict.fromkeys(self._overrides))
            names = ordered
            table: dict[str, Compiled] = {}
        else:
            table = dict(old)
        changes: list[FlagChange] = []
        for name in names:
            prev = old.get(name)
            won = self._winner(name)
            if won is None:
                if prev is not None:
                    table.pop(name, None)
                    changes.append(FlagChange(name=name, old=prev.flag, new=None, source=None))
                continue
            flag, source, version = won
            if (
                prev is not None
                and prev.flag is flag
                and prev.source == source
                and prev.version == version
            ):
                table[name] = prev
                continue
            stats = self._stats.get(name)
            if stats is None:
                stats = self._stats[name] = [0] * len(REASONS)
            table[name] = compile_flag(flag, source, stats, version)
            if prev is None or prev.flag != flag:
                changes.append(
                    FlagChange(
                        name=name, old=None if prev is None else prev.flag, new=flag, source=source
                    )
                )
        self._table = table
        return changes

    # -- listeners ----------------------------------------------------------------------------

    def on_change(
        self, name: str | None, callback: Callable[[FlagChange], None]
    ) -> Callable[[], None]:
        """Call ``callback(FlagChange)`` when ``name`` (or any flag, for ``None``) changes.

        Callbacks run on the thread that made the change (a poller or watcher, or the caller of
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

    def health(self) -> Health:
        """The worst health of the sources (see ``Health``)."""
        return self._health

    def on_health(self, callback: Callable[[HealthChange], None]) -> Callable[[], None]:
        """Call ``callback(HealthChange)`` when the sources' health moves; returns an undo."""
        self._health_listeners.append(callback)
        return lambda: self._health_listeners.remove(callback)

    def _health_change(self, state: SourceState, message: str | None) -> HealthChange | None:
        """The caller holds the lock."""
        new = max((s.health() for s in self._states), key=_RANK.__getitem__, default=Health.OK)
        old, self._health = self._health, new
        if new == old and message is None:
            return None
        return HealthChange(old=old, new=new, source=state.source.name, message=message)

    def _notify_health(self, change: HealthChange | None) -> None:
        if change is None:
            return
        for callback in tuple(self._health_listeners):
            try:
                callback(change)
            except Exception:
                log.exception("flag health callback %r failed", callback)

    def _all_loaded(self) -> bool:
        return all(s.loaded.is_set() for s in self._states)

    def _wait_loaded(self, timeout: float | None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        for state in self._states:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not state.loaded.wait(left):
                return False
        return True
