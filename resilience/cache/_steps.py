"""What a flow yields to its driver, and the marker of a miss.

The cache's decisions are generators (*flows*, in ``_core`` and ``_write_flows``) that yield
steps; the sync and the async driver run the same flows and only do what a step asks:

- ``(CALL, zone, op, args)``: one zone call; the driver sends back ``(ok, reply or error)``.
- ``(WAIT, flight, lock)``: wait for another caller's fetch; the driver sends back its value.
- ``(WRITE, op, args, zones, tally)``: one write to ``zones`` (None: every zone) counted in
  ``tally`` (None: a new one); the driver sends back the tally once its policy is decided.
- ``(LOAD, guard, fn, args, kwargs)``: run a read-through loader through its guard; the
  driver sends back ``(True, value)`` or ``(False, the exception it raised)``.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any, TypeVar

__all__ = ["CALL", "LOAD", "MISS", "WAIT", "WRITE", "Flow", "Step"]

CALL = 0
WAIT = 1
WRITE = 2
LOAD = 3

T = TypeVar("T")
Step = tuple[Any, ...]
Flow = Generator[Step, Any, T]  # a flow answering T


class _Miss:
    def __repr__(self) -> str:
        return "MISS"


MISS: Any = _Miss()
