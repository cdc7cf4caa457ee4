"""The threaded example runs as printed and keeps its promises."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import find_binary

ROOT = Path(__file__).resolve().parents[3]
pytestmark = pytest.mark.integration


def test_sync_worker_example() -> None:
    env = dict(os.environ, RESILIENCE_MEMCACHED=find_binary("RESILIENCE_MEMCACHED", "memcached"))
    done = subprocess.run(
        [sys.executable, "-m", "examples.sync_worker"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "circuit open" in done.stdout and done.stdout.rstrip().endswith("OK")
