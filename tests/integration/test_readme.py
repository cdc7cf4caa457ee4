"""Every ```python block of README.md runs as printed, so the documentation cannot drift.

Blocks that talk to memcached use the addresses 127.0.0.1:11211..11213 as printed; the test
starts three real memcached processes on free ports and points those addresses at them (the
only change made to a block), so it never touches a memcached the machine already runs.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from resilience import fit, testing
from tests.support import free_port, start_memcached, stop

README = Path(__file__).resolve().parents[2] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
PRINTED_PORTS = ("11211", "11212", "11213")
pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def memcached_ports() -> Iterator[dict[str, int]]:
    ports = {printed: free_port() for printed in PRINTED_PORTS}
    procs = []
    try:
        for port in ports.values():
            procs.append(start_memcached(port, memory_mb=16))
        yield ports
    finally:
        for proc in procs:
            stop(proc)


def test_readme_has_code() -> None:
    assert len(BLOCKS) >= 5


@pytest.mark.parametrize("code", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_readme_block_runs(code: str, memcached_ports: dict[str, int]) -> None:
    for printed, port in memcached_ports.items():
        code = code.replace(f"127.0.0.1:{printed}", f"127.0.0.1:{port}")
    with testing.isolated_registry():
        try:
            exec(compile(code, str(README), "exec"), {"__name__": "readme"})
        finally:
            fit.disable()
