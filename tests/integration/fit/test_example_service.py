"""Runner and discovery against the example service, its downstream services and memcached."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from resilience import fit, registry
from resilience.fit import Expectation, Recipe

from .conftest import SECRET
from .service import CRITICAL, DEPENDENCIES, start_example

EXPECT = {"status": [200], "json": {"title": "Dune", "price": 9}, "max_latency": 2.0}


async def test_untagged_page_uses_every_dependency(serve: Any, memcached: Any) -> None:
    fit.enable(secret=SECRET)
    target = await start_example(serve, memcached)
    async with aiohttp.ClientSession() as session, session.get(target) as response:
        assert response.status == 200
        assert await response.json() == {
            "title": "Dune",
            "price": 9,
            "ratings": [5, 4],
            "user": "ada",
        }
    assert registry().names() == sorted(DEPENDENCIES)


async def test_isolate_critical_recipe_passes(serve: Any, memcached: Any) -> None:
    fit.enable(secret=SECRET)
    target = await start_example(serve, memcached)
    recipe = Recipe.from_dict(
        {
            "name": "critical-only",
            "critical": list(CRITICAL),
            "isolate_critical": True,
            "expect": EXPECT,
        }
    )
    report = await fit.run(recipe, target, secret=SECRET, requests=20, concurrency=4)
    assert report.passed, report.to_text()
    assert len(report.experiment) == 20 and len(report.control) == 180  # tagged share 0.1
    assert len(report.baseline) == 20 and report.leak()["judged"] and not report.leaked
    # The non-critical dependencies really failed on every tagged request, and only there.
    assert fit.stats.injections[("ratings", "isolated")] == 20
    assert fit.stats.injections[("cache.profile.a", "isolated")] == 20
    assert ("catalog", "isolated") not in fit.stats.injections
    # the acknowledgements say so too; one more tag verified: the dependency route's check
    assert report.injections() == {("cache.profile.a", "isolated"): 20, ("ratings", "isolated"): 20}
    assert fit.tag_counts() == {"accepted": 21}


async def test_failing_a_critical_dependency_fails_and_names_the_expectation(
    serve: Any, memcached: Any, tmp_path: Path
) -> None:
    fit.enable(secret=SECRET)
    target = await start_example(serve, memcached)
    recipe = Recipe.from_dict(
        {
            "name": "pricing-down",
            "faults": [{"dependency": "pricing", "status": 503}],
            "expect": EXPECT,
            "error_budget": 0.2,
        }
    )
    report = await fit.run(recipe, target, secret=SECRET, requests=20, concurrency=2)
    assert not report.passed
    assert report.aborted is not None  # 5 > 4 failures allowed: stopped before the 20
    assert len(report.experiment) < 20
    broken = report.broken()
    assert set(broken) == {"status", "json:price", "json:title"}
    assert broken["status"][1] == "got 503, expected one of [200]"
    assert all(s.ok for s in report.control)  # control requests untouched
    assert "expect status: BROKEN" in report.to_text()


async def test_discovery_finds_exactly_the_critical_dependencies(
    serve: Any, memcached: Any
) -> None:
    fit.enable(secret=SECRET)
    target = await start_example(serve, memcached)
    found = await fit.discover(target, secret=SECRET, expect=Expectation(status=(200,)))
    assert found.dependencies == tuple(sorted(DEPENDENCIES))
    assert found.critical == CRITICAL
    assert "503" in found.details["catalog"]
    assert found.recipe().critical == CRITICAL and found.recipe().isolate_critical


async def test_dependency_list_needs_fit_and_a_valid_tag(serve: Any, memcached: Any) -> None:
    target = await start_example(serve, memcached)
    url = target.replace("/page", fit.DEPENDENCIES_PATH)
    good = fit.tag_headers(Recipe(name="list"), secret=SECRET)
    async with aiohttp.ClientSession() as session:
        async with session.get(url, headers=good) as response:
            assert response.status == 404  # FIT off in this process
        fit.enable(secret=SECRET)
        async with session.get(url) as response:
            assert response.status == 403
        async with session.get(url, headers=good) as response:
            assert response.status == 200
            assert (await response.json())["dependencies"] == sorted(DEPENDENCIES)


async def test_cli_discover_writes_a_recipe_and_run_writes_reports(
    serve: Any, memcached: Any, tmp_path: Path
) -> None:
    fit.enable(secret=SECRET)
    target = await start_example(serve, memcached)
    written = tmp_path / "critical.yaml"

    async def cli(*args: str) -> tuple[int, str]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "resilience.cli",
            "fit",
            *args,
            "--target",
            target,
            "--secret",
            SECRET,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode is not None
        return proc.returncode, out.decode()

    code, out = await cli("discover", "--write-recipe", str(written))
    assert code == 0, out
    assert "catalog: CRITICAL" in out and "ratings: optional" in out
    data = yaml.safe_load(written.read_text())
    assert data == {
        "name": "critical-path",
        "critical": ["catalog", "pricing"],
        "isolate_critical": True,
    }

    report_json, junit = tmp_path / "r.json", tmp_path / "r.xml"
    code, out = await cli(
        "run",
        str(written),
        "--requests",
        "10",
        "--concurrency",
        "2",
        "--report-json",
        str(report_json),
        "--junit",
        str(junit),
    )
    assert code == 0, out
    assert "PASSED" in out and "10/10 tagged" in out
    assert json.loads(report_json.read_text())["passed"] is True
    assert 'failures="0"' in junit.read_text()
