"""Circuits driven by flags with real calls: forced open from a watched file, live timeouts."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path

import pytest

from resilience import protect
from resilience.circuit import Registry, State
from resilience.errors import CallTimeoutError, CircuitOpenError
from resilience.flags import FileSource, Flags, InMemorySource

from .waiting import wait_for


def test_a_circuit_forced_open_by_a_file_flag_short_circuits(
    tmp_path: Path, fresh_registry: Registry
) -> None:
    path = tmp_path / "flags.json"
    path.write_text(json.dumps({"flags": {}}))
    flags = Flags(FileSource(path, interval=0.02))
    calls = []

    @protect("ratings", timeout=1.0, fallback=lambda user: "fallback")
    def ratings(user: str) -> str:
        calls.append(user)
        return "live"

    try:
        flags.bind_circuit("ratings")
        assert ratings("u1") == "live"
        path.write_text(json.dumps({"flags": {"circuits.ratings.forced": {"value": "open"}}}))
        st = path.stat()
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10_000_000))
        dep = fresh_registry.dependency("ratings")
        assert wait_for(lambda: dep.state is State.FORCED_OPEN)
        assert ratings("u2") == "fallback"
        with pytest.raises(CircuitOpenError):
            dep.call(lambda: "direct")
        assert calls == ["u1"]  # the short-circuited call never ran
        assert dep.window.totals().counts[3] >= 1  # counted as short_circuited
    finally:
        flags.close()


async def test_a_timeout_changed_by_a_flag_applies_to_the_next_async_call(
    fresh_registry: Registry,
) -> None:
    flags = Flags(InMemorySource({"circuits.slow.timeout": {"value": 2.0}}))

    @protect("slow")
    async def slow() -> str:
        await asyncio.sleep(0.3)
        return "done"

    flags.bind_circuit("slow")
    assert await slow() == "done"
    flags.set("circuits.slow.timeout", 0.05)
    start = time.perf_counter()
    with pytest.raises(CallTimeoutError) as info:
        await slow()
    assert info.value.timeout == 0.05
    assert time.perf_counter() - start < 0.25  # cut off at the new timeout, not after 0.3 s
    flags.clear("circuits.slow.timeout")
    assert await slow() == "done"


def test_a_timeout_changed_by_a_flag_applies_to_the_next_sync_call(
    fresh_registry: Registry,
) -> None:
    flags = Flags(InMemorySource({}))

    @protect("slow-sync", timeout=2.0)
    def slow() -> str:
        time.sleep(0.3)
        return "done"

    flags.bind_circuit("slow-sync")
    assert slow() == "done"
    flags.set("circuits.slow-sync.timeout", 0.05)
    with pytest.raises(CallTimeoutError):
        slow()
