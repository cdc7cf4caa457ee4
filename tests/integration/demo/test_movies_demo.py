"""End to end: the main-job demo in its non-interactive mode, checked through its summary."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import find_binary

ROOT = Path(__file__).resolve().parents[3]
pytestmark = pytest.mark.integration


def test_the_demo_keeps_its_promises(tmp_path: Path) -> None:
    env = dict(os.environ)
    env["RESILIENCE_MEMCACHED"] = find_binary("RESILIENCE_MEMCACHED", "memcached")
    env["RESILIENCE_TOXIPROXY"] = find_binary("RESILIENCE_TOXIPROXY", "toxiproxy-server", "server")
    summary_path = tmp_path / "summary.json"
    done = subprocess.run(
        [sys.executable, "-m", "examples.movies.run_demo", "--pause", "0",
         "--summary-json", str(summary_path)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert summary_path.exists(), done.stdout + done.stderr
    summary = json.loads(summary_path.read_text())
    checks = summary["checks"]
    assert checks["fit_ratings_down_passed"], done.stdout
    assert checks["fit_recommendations_slow_passed"], done.stdout
    assert checks["pages_200_during_ratings_down"], done.stdout
    assert checks["pages_200_during_recommendations_slow"], done.stdout
    assert checks["toxic_run_says_control_was_affected"], done.stdout
    assert checks["toxics_removed"], done.stdout
    assert summary["cache_misses_during_zone_loss"] == 0, done.stdout
    assert checks["kill_switch_took_effect"], done.stdout
    assert checks["all_circuits_closed_at_end"], done.stdout
    assert set(summary["circuits_at_end"].values()) == {"closed"}
    # FIT in production: no untagged page is degraded by an experiment, during or after it
    assert summary["untagged_degraded"] == {
        "ratings-down": {"during": 0, "after": 0},
        "recommendations-slow": {"during": 0, "after": 0},
    }, done.stdout
    assert summary["passed"] and done.returncode == 0, done.stdout + done.stderr
