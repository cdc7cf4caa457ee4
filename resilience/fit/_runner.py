"""The experiment runner: a baseline, then tagged requests with control requests between them.

The decisions (what to send next, what a response broke, whether the error budget is spent,
what the report says) are plain code in :class:`Plan`, :func:`check` and :class:`RunReport`;
:func:`run` only sends requests and waits.
"""

from __future__ import annotations

import asyncio
import fnmatch
import json
import math
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import aiohttp
import attrs
import yarl

from ..errors import ConfigError
from ._ack import ACK_HEADER, decode_ack
from ._carrier import DEPENDENCIES_PATH
from ._recipe import Expectation, Recipe
from ._report import BASELINE, CONTROL, EXPERIMENT, Kind, LeakCheck, RunReport, Sample
from ._tags import DEFAULT_KEY_ID, DEFAULT_TTL, HEADER, sign_tag
from ._toxiproxy import Injection, ToxiproxyClient

__all__ = [
    "DEFAULT_BASELINE_REQUESTS",
    "DEFAULT_CONCURRENCY",
    "DEFAULT_REQUESTS",
    "DEFAULT_REQUEST_TIMEOUT",
    "DEFAULT_TAGGED_SHARE",
    "Plan",
    "Progress",
    "Tagger",
    "check",
    "run",
    "send",
]

DEFAULT_REQUESTS = 100
DEFAULT_CONCURRENCY = 4
# Tagged requests are this share of the runner's traffic; the rest is untagged control traffic
# compared with the baseline, so a leak of the experiment into real traffic shows.
DEFAULT_TAGGED_SHARE = 0.1
DEFAULT_BASELINE_REQUESTS = 20
DEFAULT_REQUEST_TIMEOUT = 10.0
# Re-sign the run's tag this long before it expires, so no request leaves with a stale one.
_REFRESH_MARGIN = 10.0
_MISSING = object()


def _lookup(body: Any, path: str) -> Any:
    for part in path.split("."):
        if isinstance(body, dict) and part in body:
            body = body[part]
        elif (
            isinstance(body, list)
            and part.lstrip("-").isdigit()
            and -len(body) <= int(part) < len(body)
        ):
            body = body[int(part)]
        else:
            return _MISSING
    return body


def control_ratio(tagged_share: float) -> float:
    """Control requests per tagged one for a tagged share of the runner's traffic."""
    if (
        isinstance(tagged_share, bool)
        or not isinstance(tagged_share, (int, float))
        or not 0.01 <= tagged_share <= 1
    ):
        raise ConfigError("tagged_share", f"must be a fraction in 0.01..1, got {tagged_share!r}")
    return (1 - tagged_share) / tagged_share


def check(
    expect: Expectation, status: int | None, latency: float, body: bytes | None, error: str = ""
) -> tuple[tuple[str, str], ...]:
    """The expectations a response broke, each with what was seen instead."""
    broken: list[tuple[str, str]] = []
    if status is None:
        broken.append(("status", f"no response: {error}" if error else "no response"))
    elif status not in expect.status:
        broken.append(("status", f"got {status}, expected one of {list(expect.status)}"))
    if expect.max_latency is not None and latency > expect.max_latency:
        broken.append(("max_latency", f"took {latency:.3f}s > {expect.max_latency}s"))
    if status is None or not (expect.json or expect.json_present):
        return tuple(broken)
    try:
        document = json.loads(body or b"")
    except ValueError:
        document = _MISSING
    for path, wanted in expect.json.items():
        got = _MISSING if document is _MISSING else _lookup(document, path)
        if got is _MISSING:
            broken.append((f"json:{path}", "missing"))
        elif got != wanted:
            broken.append((f"json:{path}", f"got {got!r}, expected {wanted!r}"))
    for path in expect.json_present:
        if document is _MISSING or _lookup(document, path) is _MISSING:
            broken.append((f"json:{path}", "missing"))
    return tuple(broken)


class Plan:
    """What to send next and when to stop: ``requests`` tagged requests with control requests
    interleaved (``control_ratio`` per tagged one), stopping once the failures exceed what the
    recipe's error budget allows for the whole run.
    """

    def __init__(self, requests: int, control_ratio: float, error_budget: float) -> None:
        if isinstance(requests, bool) or not isinstance(requests, int) or requests < 1:
            raise ConfigError("requests", f"must be an integer >= 1, got {requests!r}")
        if not 0 <= control_ratio <= 100:
            raise ConfigError("control_ratio", f"must be in 0..100, got {control_ratio!r}")
        self.requests = requests
        self.allowed_failures = math.floor(error_budget * requests + 1e-9)
        self.failures = 0
        self.aborted: str | None = None
        self._schedule = self._kinds(requests, control_ratio)

    @staticmethod
    def _kinds(requests: int, ratio: float) -> Iterator[Kind]:
        for i in range(requests):
            for _ in range(math.floor((i + 1) * ratio + 1e-9) - math.floor(i * ratio + 1e-9)):
                yield CONTROL
            yield EXPERIMENT

    def next(self) -> Kind | None:
        if self.aborted is not None:
            return None
        return next(self._schedule, None)

    def record(self, sample: Sample) -> None:
        if sample.kind == EXPERIMENT and not sample.ok:
            self.failures += 1
            if self.failures > self.allowed_failures and self.aborted is None:
                self.aborted = (
                    f"error budget spent: {self.failures} tagged requests broke an expectation, "
                    f"the budget allows {self.allowed_failures} of {self.requests}"
                )


@attrs.frozen
class Progress:
    """Counts so far, passed to the progress callback after every response."""

    experiment: int
    experiment_failed: int
    control: int
    control_failed: int
    planned: int


class Tagger:
    """Signs the run's tag and signs a fresh one before it expires (long runs)."""

    def __init__(
        self,
        recipe: Recipe | str,
        *,
        secret: str | bytes,
        key_id: str,
        ttl: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._args = (recipe, secret, key_id, ttl)
        self._clock = clock
        self._tag = ""
        self._expires = -math.inf

    def headers(self) -> dict[str, str]:
        now = self._clock()
        if now >= self._expires - min(_REFRESH_MARGIN, self._args[3] / 2):
            recipe, secret, key_id, ttl = self._args
            self._tag = sign_tag(recipe, secret=secret, key_id=key_id, ttl=ttl, now=now)
            self._expires = now + ttl
        return {HEADER: self._tag}


async def send(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    headers: dict[str, str],
    expect: Expectation,
    kind: Kind,
    request_timeout: float,
) -> Sample:
    """One request, measured and checked; a tagged one keeps its acknowledgement."""
    start = time.perf_counter()
    status: int | None = None
    body: bytes | None = None
    ack_value: str | None = None
    error = ""
    try:
        async with session.request(
            method, url, headers=headers, timeout=aiohttp.ClientTimeout(total=request_timeout)
        ) as response:
            body = await response.read()
            status = response.status
            ack_value = response.headers.get(ACK_HEADER)
    except (aiohttp.ClientError, TimeoutError) as exc:
        error = f"{type(exc).__name__}: {exc}"
    latency = time.perf_counter() - start
    if kind != EXPERIMENT:
        # JSON expectations describe the experiment's (degraded) answer; an untouched request
        # is judged on answering, in time.
        expect = attrs.evolve(expect, json={}, json_present=())
    broken = check(expect, status, latency, body, error)
    return Sample(kind, status, latency, broken, decode_ack(ack_value) if headers else None)


def _matches(pattern: str, names: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for name in names)


async def check_dependencies(
    session: aiohttp.ClientSession,
    recipe: Recipe,
    urls: list[str],
    tag: dict[str, str],
    request_timeout: float,
) -> list[str]:
    """Before the run: every fault must match a dependency one of the services lists.

    Raises ``ConfigError`` (exit 2) naming the fault whose pattern matches nothing, or the URL
    that did not answer; returns the dependencies found.
    """
    found: list[str] = []
    for url in urls:
        try:
            async with session.get(
                url, headers=tag, timeout=aiohttp.ClientTimeout(total=request_timeout)
            ) as response:
                status = response.status
                listing: Any = await response.json() if status == 200 else None
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise ConfigError("dependencies_url", f"{url}: {type(exc).__name__}: {exc}") from exc
        if status != 200 or not isinstance(listing, dict):
            raise ConfigError(
                "dependencies_url",
                f"{url} answered {status}: is FIT enabled there with this secret and key id, "
                "and its dependency route served (a server integration serves it)? "
                "--no-dependency-check skips this check",
            )
        found += [str(d) for d in listing.get("dependencies", [])]
    for i, fault in enumerate(recipe.faults):
        if not _matches(fault.dependency, found):
            raise ConfigError(
                f"faults[{i}].dependency",
                f"{fault.dependency!r} matches no dependency of the service "
                f"(it has: {', '.join(sorted(set(found))) or 'none'}); a dependency of a "
                "service further down the chain needs its route (--dependencies-url)",
            )
    return found


def _invalid(report: RunReport) -> list[str]:
    """After the run: why it proves nothing, if it does not."""
    answered = [s for s in report.experiment if s.status is not None]
    acked = [s for s in answered if s.ack is not None]
    if answered and not acked:
        return [
            f"none of the {len(answered)} tagged responses carried {ACK_HEADER}: the service "
            "did not run them under the recipe (FIT not enabled, no server integration, "
            "another secret or key id, or a recipe it refused: see resilience_fit_tags_total)"
        ]
    reasons = [
        f"a response acknowledged recipe {s.ack.recipe!r}, not {report.recipe.name!r}"
        for s in acked[:1]
        if s.ack is not None and s.ack.recipe != report.recipe.name
    ]
    if not acked:
        return reasons
    names = [dep for dep, _ in report.injections()]
    for i, fault in enumerate(report.recipe.faults):
        if not _matches(fault.dependency, names):
            reasons.append(
                f"faults[{i}] (dependency {fault.dependency!r}) matched no dependency call "
                "in any acknowledged request"
            )
    return reasons


async def run(
    recipe: Recipe,
    target: str,
    *,
    secret: str | bytes,
    key_id: str = DEFAULT_KEY_ID,
    requests: int = DEFAULT_REQUESTS,
    concurrency: int = DEFAULT_CONCURRENCY,
    tagged_share: float = DEFAULT_TAGGED_SHARE,
    baseline_requests: int = DEFAULT_BASELINE_REQUESTS,
    leak: LeakCheck | None = None,
    request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
    ttl: float = DEFAULT_TTL,
    method: str = "GET",
    by_id: bool = False,
    toxiproxy: ToxiproxyClient | None = None,
    allow_global_faults: bool = False,
    dependencies_urls: list[str] | None = None,
    check_dependency_list: bool = True,
    progress: Callable[[Progress], None] | None = None,
) -> RunReport:
    """Run one experiment against ``target``; whatever happens, toxics applied are removed.

    Args:
        requests: tagged requests to send; untagged control requests are interleaved so that
            tagged ones are ``tagged_share`` of the traffic.
        baseline_requests: untagged requests sent before anything is injected; control traffic
            is judged against them (``leak`` holds the tolerances).
        concurrency: requests in flight at once.
        request_timeout: seconds one request may take before it counts as no response.
        by_id: tag with the recipe's name instead of the recipe (services must know it).
        toxiproxy: the server to apply the recipe's proxies and toxics on; needed if it has any.
        allow_global_faults: run a recipe with toxics, which slow every request through their
            proxy (not only tagged ones); the report then says control traffic was affected.
        dependencies_urls: the services' dependency routes, checked before the run; by
            default the target host's ``/_resilience/fit/dependencies``.
        check_dependency_list: False skips that check (services without the route).
    """
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise ConfigError("concurrency", f"must be an integer >= 1, got {concurrency!r}")
    if isinstance(baseline_requests, bool) or not isinstance(baseline_requests, int):
        raise ConfigError("baseline_requests", f"must be an integer, got {baseline_requests!r}")
    if recipe.toxics and not allow_global_faults:
        raise ConfigError(
            "toxics",
            f"recipe {recipe.name!r} has toxics: a toxic slows every request through its proxy, "
            "untagged and real traffic included, not only the experiment's. Use a "
            "request-scoped fault (latency, error, timeout) in production, or pass "
            "--allow-global-faults (staging)",
        )
    if (recipe.toxics or recipe.proxies) and toxiproxy is None:
        raise ConfigError("toxiproxy", f"recipe {recipe.name!r} has toxics: give a server")
    plan = Plan(requests, control_ratio(tagged_share), recipe.error_budget)
    report = RunReport(
        recipe,
        target,
        requests,
        allowed_failures=plan.allowed_failures,
        started=time.time(),
        global_faults=bool(recipe.toxics),
        leak_check=leak if leak is not None else LeakCheck(),
    )
    tagger = Tagger(recipe.name if by_id else recipe, secret=secret, key_id=key_id, ttl=ttl)
    counts = {EXPERIMENT: [0, 0], CONTROL: [0, 0]}  # kind -> [responses, broken]
    injection: Injection | None = None
    connector = aiohttp.TCPConnector(limit=concurrency)

    async def worker(session: aiohttp.ClientSession) -> None:
        while (kind := plan.next()) is not None:
            headers = tagger.headers() if kind == EXPERIMENT else {}
            sample = await send(
                session, method, target, headers, recipe.expect, kind, request_timeout
            )
            report.samples.append(sample)
            plan.record(sample)
            counts[kind][0] += 1
            counts[kind][1] += 0 if sample.ok else 1
            if progress is not None:
                (exp, exp_failed), (ctl, ctl_failed) = counts[EXPERIMENT], counts[CONTROL]
                progress(Progress(exp, exp_failed, ctl, ctl_failed, requests))

    async def baseline(session: aiohttp.ClientSession, n: int) -> None:
        while n > 0:
            n -= 1
            report.samples.append(
                await send(session, method, target, {}, recipe.expect, BASELINE, request_timeout)
            )

    async with aiohttp.ClientSession(connector=connector) as session:
        if check_dependency_list:
            urls = dependencies_urls or [
                str(yarl.URL(target).with_path(DEPENDENCIES_PATH).with_query(None))
            ]
            await check_dependencies(session, recipe, urls, tagger.headers(), request_timeout)
        started = time.perf_counter()
        share = [baseline_requests // concurrency + (i < baseline_requests % concurrency)
                 for i in range(concurrency)]  # fmt: skip
        await asyncio.gather(*(baseline(session, n) for n in share))
        report.baseline_duration = time.perf_counter() - started
        started = time.perf_counter()
        try:
            if toxiproxy is not None and (recipe.toxics or recipe.proxies):
                injection = Injection.apply(toxiproxy, recipe)
                report.toxics = injection.applied
            await asyncio.gather(*(worker(session) for _ in range(concurrency)))
        finally:
            # Runs on errors, on cancellation and on Ctrl-C (asyncio.run cancels the main task).
            if injection is not None:
                report.leftovers = injection.remove()
            report.aborted = plan.aborted
            report.duration = time.perf_counter() - started
    report.invalid = _invalid(report)
    return report
