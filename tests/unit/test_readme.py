"""Every ```python block of README.md runs as printed, so the documentation cannot drift."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from resilience import testing

README = Path(__file__).resolve().parents[2] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_code() -> None:
    assert BLOCKS


@pytest.mark.parametrize("code", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_readme_block_runs(code: str) -> None:
    with testing.isolated_registry():
        exec(compile(code, str(README), "exec"), {"__name__": "readme"})
