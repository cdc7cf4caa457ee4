"""Fleet-wide writes: changes sent to the writable source (etcd), which every process reads.

Distinct from overrides (``Flags.set``), which change this process only.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import ConfigError
from ._model import Flag, flag_from_value, parse_one
from ._source import Source
from ._store import OVERRIDE, FlagStore
from ._writes import WriteResult

__all__ = ["FleetWrites"]


class FleetWrites(FlagStore):
    """The write half of ``Flags``: validate here, then write to the writable source."""

    # -- fleet-wide writes ----------------------------------------------------------------

    @property
    def writable(self) -> Source | None:
        """The source fleet-wide writes go to: the last writable one (``None`` if none)."""
        for source in reversed(self._sources):
            if source.writable:
                return source
        return None

    def _writer(self) -> Any:
        source = self.writable
        if source is None:
            raise ConfigError("sources", "no writable source (add an EtcdSource)")
        return source

    def write(
        self,
        name: str,
        spec: Mapping[str, Any],
        *,
        actor: str | None = None,
        revision: int | None = None,
    ) -> WriteResult:
        """Write flag ``name`` to the writable source: every process reading it sees it.

        Validated first (the spec, and this process's validators such as circuit bindings): a
        bad spec is a ``ConfigError`` and nothing is written. ``revision``: the version the
        caller saw (0: the flag must not exist); another write in between is a
        ``FlagConflictError``. An override of ``name`` in this process still wins here.
        """
        self.validate(parse_one(name, spec))
        result: WriteResult = self._writer().write(name, spec, actor=actor, revision=revision)
        return result

    def write_value(
        self, name: str, value: Any, *, actor: str | None = None, revision: int | None = None
    ) -> WriteResult:
        """``write`` of a plain value, typed as ``set()`` types it (a bool on a switch...)."""
        current = self._current(name)
        if self._table.get(name) is not None and self._table[name].source == OVERRIDE:
            current = self._layer_flag(name)
        return self.write(
            name, flag_from_value(name, value, current).to_dict(), actor=actor, revision=revision
        )

    def _layer_flag(self, name: str) -> Flag | None:
        for layer in reversed(self._layers):
            if name in layer:
                return layer[name]
        return None

    def remove(
        self, name: str, *, actor: str | None = None, revision: int | None = None
    ) -> WriteResult | None:
        """Delete flag ``name`` from the writable source (``None``: it was not there)."""
        result: WriteResult | None = self._writer().delete(name, actor=actor, revision=revision)
        return result

    def _current(self, name: str) -> Flag | None:
        c = self._table.get(name)
        return None if c is None else c.flag
