"""Discovery: fail each dependency of a service in turn and see which ones the endpoint needs."""

from __future__ import annotations

import re
from typing import Any

import aiohttp
import attrs
import yarl

from ..errors import ConfigError
from ._carrier import DEPENDENCIES_PATH
from ._recipe import Expectation, FaultSpec, Recipe
from ._report import EXPERIMENT, Sample
from ._runner import DEFAULT_REQUEST_TIMEOUT, send
from ._tags import DEFAULT_KEY_ID, sign_tag

__all__ = ["Discovery", "discover"]

DEFAULT_REQUESTS_PER_DEPENDENCY = 3


@attrs.frozen
class Discovery:
    """Which dependencies an endpoint cannot live without, and what broke without each."""

    target: str
    expect: Expectation
    dependencies: tuple[str, ...]
    critical: tuple[str, ...]
    details: dict[str, str]

    def recipe(self, name: str = "critical-path") -> Recipe:
        """A recipe failing everything but the critical dependencies, with the same checks."""
        return Recipe(name=name, critical=self.critical, isolate_critical=True, expect=self.expect)

    def to_text(self) -> str:
        lines = [f"FIT discovery against {self.target}: {len(self.dependencies)} dependencies"]
        for dep in self.dependencies:
            verdict = f"CRITICAL ({self.details[dep]})" if dep in self.critical else "optional"
            lines.append(f"  {dep}: {verdict}")
        return "\n".join(lines)


def _recipe_name(dependency: str) -> str:
    return "discover-" + re.sub(r"[^A-Za-z0-9_.-]", "_", dependency)[:80]


async def _probe(
    session: aiohttp.ClientSession,
    target: str,
    recipe: Recipe,
    expect: Expectation,
    tag: dict[str, str],
    count: int,
    request_timeout: float,
) -> list[Sample]:
    return [
        await send(session, "GET", target, tag, expect, EXPERIMENT, request_timeout)
        for _ in range(count)
    ]


async def discover(
    target: str,
    *,
    secret: str | bytes,
    key_id: str = DEFAULT_KEY_ID,
    dependencies_url: str | None = None,
    expect: Expectation | None = None,
    requests_per_dependency: int = DEFAULT_REQUESTS_PER_DEPENDENCY,
    request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
) -> Discovery:
    """Fail each dependency the service lists in turn; critical ones break an expectation.

    Args:
        dependencies_url: where the service lists its dependencies (its server integration);
            by default ``/_resilience/fit/dependencies`` on the target's host.
        expect: what an answer must satisfy (default: status 200).
        requests_per_dependency: tagged requests per dependency; any broken one makes it critical.
    """
    expect = expect if expect is not None else Expectation()
    if requests_per_dependency < 1:
        raise ConfigError("requests_per_dependency", "must be >= 1")
    url = dependencies_url or str(yarl.URL(target).with_path(DEPENDENCIES_PATH).with_query(None))
    baseline = Recipe(name="discover-baseline", expect=expect)

    def tag(recipe: Recipe) -> dict[str, str]:
        return {"X-Resilience-FIT": sign_tag(recipe, secret=secret, key_id=key_id)}

    async with aiohttp.ClientSession() as session:
        async with session.get(
            url, headers=tag(baseline), timeout=aiohttp.ClientTimeout(total=request_timeout)
        ) as response:
            if response.status != 200:
                raise ConfigError(
                    "dependencies_url", f"{url} answered {response.status}: is FIT enabled?"
                )
            listing: Any = await response.json()
        dependencies = tuple(sorted(str(d) for d in listing.get("dependencies", [])))
        samples = await _probe(
            session,
            target,
            baseline,
            expect,
            tag(baseline),
            requests_per_dependency,
            request_timeout,
        )
        broken = [b for s in samples for b in s.broken]
        if broken:
            raise ConfigError(
                "target",
                f"the endpoint fails with no fault injected: {broken[0][0]} {broken[0][1]}",
            )
        critical: list[str] = []
        details: dict[str, str] = {}
        for dependency in dependencies:
            # The exact key, escaped for fnmatch, so "a.*"-like names fail only themselves.
            escaped = re.sub(r"([*?\[])", r"[\1]", dependency)
            recipe = Recipe(
                name=_recipe_name(dependency),
                faults=(FaultSpec(dependency=escaped, error=True),),
                expect=expect,
            )
            samples = await _probe(
                session,
                target,
                recipe,
                expect,
                tag(recipe),
                requests_per_dependency,
                request_timeout,
            )
            broken = [b for s in samples for b in s.broken]
            if broken:
                critical.append(dependency)
                details[dependency] = f"{broken[0][0]}: {broken[0][1]}"
    return Discovery(target, expect, dependencies, tuple(critical), details)
