"""The experiment runner: tagged requests, interleaved control requests, checks and reports.

The decisions (what to send next, what a response broke, whether the error budget is spent,
what the report says) are plain code in :class:`Plan`, :func:`check` and :class:`RunReport`;
:func:`run` only sends requests and waits.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from typing import Any, Literal

import aiohttp
import attrs

from ..errors import ConfigError
from ._recipe import Expectation, Recipe
from ._tags import DEFAULT_KEY_ID, DEFAULT_TTL, HEADER, sign_tag
from ._toxiproxy import Injection, ToxiproxyClient

__all__ = [
    "Plan",
    "Progress",
    "RunReport",
    "Sample",
    "Tagger",
    "check",
    "percentile",
    "run",
    "send",
]

Kind = Literal["experiment", "control"]
EXPERIMENT: Kind = "experiment"
CONTROL: Kind = "control"

DEFAULT_REQUESTS = 100
DEFAULT_CONCURRENCY = 4
DEFAULT_CONTROL_RATIO = 1.0
DEFAULT_REQUEST_TIMEOUT = 10.0
# Re-sign the run's tag this long before it expires, so no request leaves with a stale one.
_REFRESH_MARGIN = 10.0
_MISSING = object()


@attrs.frozen
class Sample:
    """One response: its kind, status (None when none came), latency, and what it broke."""

    kind: Kind
    status: int | None
    latency: float
    broken: tuple[tuple[str, str], ...] = ()

    @property
    def ok(self) -> bool:
        return not self.broken


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


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (``q`` in 0..100), None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


class Plan:
    """What to send next and when to stop: ``requests`` tagged requests with control requests
    interleaved (``control_ratio`` per tagged one), stopping once the failures exceed what the
    recipe's error budget allows for the whole run.
    """

    def __init__(self, requests: int, control_ratio: float, error_budget: float) -> None:
        if isinstance(requests, bool) or not isinstance(requests, int) or requests < 1:
            raise ConfigError("requests", f"must be an integer >= 1, got {requests!r}")
        if not 0 <= control_ratio <= 10:
            raise ConfigError("control_ratio", f"must be in 0..10, got {control_ratio!r}")
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


def _group(samples: list[Sample]) -> dict[str, Any]:
    latencies = [s.latency for s in samples]
    ok = sum(1 for s in samples if s.ok)
    return {
        "requests": len(samples),
        "ok": ok,
        "success_rate": ok / len(samples) if samples else None,
        "p50": percentile(latencies, 50),
        "p99": percentile(latencies, 99),
    }


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.1f} ms"


@attrs.define
class RunReport:
    """The outcome of one run: samples of both kinds, what broke, what was injected and undone."""

    recipe: Recipe
    target: str
    planned: int
    samples: list[Sample] = attrs.Factory(list)
    aborted: str | None = None
    allowed_failures: int = 0
    toxics: list[str] = attrs.Factory(list)
    leftovers: list[str] = attrs.Factory(list)
    duration: float = 0.0

    @property
    def experiment(self) -> list[Sample]:
        return [s for s in self.samples if s.kind == EXPERIMENT]

    @property
    def control(self) -> list[Sample]:
        return [s for s in self.samples if s.kind == CONTROL]

    def broken(self) -> dict[str, tuple[int, str]]:
        """Expectation -> (tagged requests that broke it, the first detail seen)."""
        out: dict[str, tuple[int, str]] = {}
        for sample in self.experiment:
            for name, detail in sample.broken:
                count, first = out.get(name, (0, detail))
                out[name] = (count + 1, first)
        return out

    @property
    def failed_requests(self) -> int:
        return sum(1 for s in self.experiment if not s.ok)

    @property
    def passed(self) -> bool:
        return (
            self.aborted is None
            and bool(self.experiment)
            and self.failed_requests <= self.allowed_failures
            and not self.leftovers
        )

    def expectation_names(self) -> list[str]:
        expect = self.recipe.expect
        names = ["status"]
        if expect.max_latency is not None:
            names.append("max_latency")
        names += [f"json:{p}" for p in (*expect.json, *expect.json_present)]
        return names

    def to_dict(self) -> dict[str, Any]:
        broken = self.broken()
        return {
            "recipe": self.recipe.name,
            "target": self.target,
            "passed": self.passed,
            "planned": self.planned,
            "aborted": self.aborted,
            "duration": self.duration,
            "error_budget": {
                "allowed_failures": self.allowed_failures,
                "failures": self.failed_requests,
            },
            "experiment": _group(self.experiment),
            "control": _group(self.control),
            "expectations": {
                name: {
                    "passed": name not in broken,
                    "broken": broken.get(name, (0, ""))[0],
                    "example": broken.get(name, (0, None))[1],
                }
                for name in self.expectation_names()
            },
            "toxics": list(self.toxics),
            "cleanup_leftovers": list(self.leftovers),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    def to_junit(self) -> str:
        """JUnit XML: one test case per expectation, the error budget and the cleanup."""
        broken = self.broken()
        suite = ET.Element("testsuite", name=f"fit.{self.recipe.name}", time=f"{self.duration:.3f}")
        cases = 0
        failures = 0

        def case(name: str, failure: str | None) -> None:
            nonlocal cases, failures
            cases += 1
            element = ET.SubElement(
                suite, "testcase", classname=f"fit.{self.recipe.name}", name=name
            )
            if failure is not None:
                failures += 1
                ET.SubElement(element, "failure", message=failure).text = failure

        for name in self.expectation_names():
            count, detail = broken.get(name, (0, ""))
            case(
                f"expect {name}",
                f"{count} of {len(self.experiment)} tagged requests: {detail}" if count else None,
            )
        budget_failure = self.aborted
        if budget_failure is None and self.failed_requests > self.allowed_failures:
            budget_failure = f"{self.failed_requests} failures > {self.allowed_failures} allowed"
        if budget_failure is None and not self.experiment:
            budget_failure = "no tagged request completed"
        case("error budget", budget_failure)
        case("cleanup", f"not undone: {', '.join(self.leftovers)}" if self.leftovers else None)
        suite.set("tests", str(cases))
        suite.set("failures", str(failures))
        suites = ET.Element("testsuites")
        suites.append(suite)
        return ET.tostring(suites, encoding="unicode", xml_declaration=True)

    def to_text(self) -> str:
        exp, ctl = _group(self.experiment), _group(self.control)
        lines = [
            f"FIT run {self.recipe.name!r} against {self.target}: "
            + ("PASSED" if self.passed else "FAILED"),
            f"  {'':<11}{'requests':>9}{'ok':>7}{'success':>9}{'p50':>12}{'p99':>12}",
        ]
        for label, group in (("tagged", exp), ("control", ctl)):
            rate = "-" if group["success_rate"] is None else f"{group['success_rate']:.1%}"
            lines.append(
                f"  {label:<11}{group['requests']:>9}{group['ok']:>7}{rate:>9}"
                f"{_seconds(group['p50']):>12}{_seconds(group['p99']):>12}"
            )
        broken = self.broken()
        for name in self.expectation_names():
            count, detail = broken.get(name, (0, ""))
            verdict = "ok" if not count else f"BROKEN by {count} request(s): {detail}"
            lines.append(f"  expect {name}: {verdict}")
        lines.append(
            f"  error budget: {self.failed_requests} failed, {self.allowed_failures} allowed"
            + (f" - ABORTED: {self.aborted}" if self.aborted else "")
        )
        if self.toxics:
            lines.append(f"  toxics applied: {', '.join(self.toxics)}")
            lines.append(
                "  toxics removed" if not self.leftovers else f"  NOT REMOVED: {self.leftovers}"
            )
        return "\n".join(lines)


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
    """One request, measured and checked."""
    start = time.perf_counter()
    status: int | None = None
    body: bytes | None = None
    error = ""
    try:
        async with session.request(
            method, url, headers=headers, timeout=aiohttp.ClientTimeout(total=request_timeout)
        ) as response:
            body = await response.read()
            status = response.status
    except (aiohttp.ClientError, TimeoutError) as exc:
        error = f"{type(exc).__name__}: {exc}"
    latency = time.perf_counter() - start
    if kind == CONTROL:
        # JSON expectations describe the experiment's (degraded) answer; an untouched control
        # request is judged on answering, in time.
        expect = attrs.evolve(expect, json={}, json_present=())
    return Sample(kind, status, latency, check(expect, status, latency, body, error))


async def run(
    recipe: Recipe,
    target: str,
    *,
    secret: str | bytes,
    key_id: str = DEFAULT_KEY_ID,
    requests: int = DEFAULT_REQUESTS,
    concurrency: int = DEFAULT_CONCURRENCY,
    control_ratio: float = DEFAULT_CONTROL_RATIO,
    request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
    ttl: float = DEFAULT_TTL,
    method: str = "GET",
    by_id: bool = False,
    toxiproxy: ToxiproxyClient | None = None,
    progress: Callable[[Progress], None] | None = None,
) -> RunReport:
    """Run one experiment against ``target``; whatever happens, toxics applied are removed.

    Args:
        requests: tagged requests to send; ``control_ratio`` untagged ones per tagged one are
            interleaved with them.
        concurrency: requests in flight at once.
        request_timeout: seconds one request may take before it counts as no response.
        by_id: tag with the recipe's name instead of the recipe (services must know it).
        toxiproxy: the server to apply the recipe's proxies and toxics on; needed if it has any.
    """
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise ConfigError("concurrency", f"must be an integer >= 1, got {concurrency!r}")
    if (recipe.toxics or recipe.proxies) and toxiproxy is None:
        raise ConfigError("toxiproxy", f"recipe {recipe.name!r} has toxics: give a server")
    plan = Plan(requests, control_ratio, recipe.error_budget)
    report = RunReport(recipe, target, requests, allowed_failures=plan.allowed_failures)
    tagger = Tagger(recipe.name if by_id else recipe, secret=secret, key_id=key_id, ttl=ttl)
    counts = {EXPERIMENT: [0, 0], CONTROL: [0, 0]}  # kind -> [responses, broken]
    started = time.perf_counter()
    injection: Injection | None = None

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

    try:
        if toxiproxy is not None and (recipe.toxics or recipe.proxies):
            injection = Injection.apply(toxiproxy, recipe)
            report.toxics = injection.applied
        connector = aiohttp.TCPConnector(limit=concurrency)
        async with aiohttp.ClientSession(connector=connector) as session:
            await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    finally:
        # Runs on errors, on cancellation and on Ctrl-C (asyncio.run cancels the main task).
        if injection is not None:
            report.leftovers = injection.remove()
        report.aborted = plan.aborted
        report.duration = time.perf_counter() - started
    return report
