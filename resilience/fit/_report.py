"""What one experiment run found, and its three forms: text, JSON and JUnit XML.

The JSON report (``schema_version`` 1) has fixed keys: anything that depends on the recipe
(expectation names, dependency names) is a value in a list, never a key, and every quantity
names its unit (``p99_seconds``, ``duration_seconds``, ``error_ratio``). The JUnit XML follows
Jenkins xUnit's ``junit-10.xsd``.
"""

from __future__ import annotations

import datetime
import json
import math
import socket
import xml.etree.ElementTree as ET
from typing import Any, Literal

import attrs

from ._ack import Ack
from ._recipe import Recipe

__all__ = ["SCHEMA_VERSION", "LeakCheck", "RunReport", "Sample", "percentile"]

SCHEMA_VERSION = 1

Kind = Literal["experiment", "control", "baseline"]
EXPERIMENT: Kind = "experiment"
CONTROL: Kind = "control"
BASELINE: Kind = "baseline"


@attrs.frozen
class Sample:
    """One response: its kind, status (None when none came), latency, what it broke, and the
    acknowledgement it carried (tagged requests)."""

    kind: Kind
    status: int | None
    latency: float
    broken: tuple[tuple[str, str], ...] = ()
    ack: Ack | None = attrs.field(default=None, eq=False)

    @property
    def ok(self) -> bool:
        return not self.broken


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (``q`` in 0..100), None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def group(samples: list[Sample]) -> dict[str, Any]:
    latencies = [s.latency for s in samples]
    ok = sum(1 for s in samples if s.ok)
    return {
        "requests": len(samples),
        "ok": ok,
        "error_ratio": (len(samples) - ok) / len(samples) if samples else None,
        "p50_seconds": percentile(latencies, 50),
        "p99_seconds": percentile(latencies, 99),
    }


@attrs.frozen
class LeakCheck:
    """How control traffic compared with the baseline taken before the experiment.

    Control leaks when its error ratio exceeds the baseline's by more than ``error_ratio``, or
    its p99 exceeds both ``p99_factor`` times the baseline's and the baseline's plus
    ``p99_slack_seconds`` (the slack keeps millisecond noise on fast endpoints from counting).

    "Its p99 exceeds the limit" is judged on counts, not on the one sample a p99 of a hundred
    requests is: control leaks when more of its requests are slower than the limit than the 1%
    a p99 allows, plus three standard deviations of that count (binomial), so a single pause of
    the machine does not fail a run while an experiment that slows even a few percent of control
    requests does.
    """

    error_ratio: float = 0.05
    p99_factor: float = 2.0
    p99_slack_seconds: float = 0.1
    min_requests: int = 10

    def judge(self, baseline: list[Sample], control: list[Sample]) -> dict[str, Any]:
        base, ctl = group(baseline), group(control)
        result: dict[str, Any] = {
            "judged": False,
            "leaked": False,
            "reasons": [],
            "tolerance": {
                "error_ratio": self.error_ratio,
                "p99_factor": self.p99_factor,
                "p99_slack_seconds": self.p99_slack_seconds,
            },
        }
        if base["requests"] < self.min_requests or ctl["requests"] < self.min_requests:
            result["reasons"].append(
                f"too few requests to judge (baseline {base['requests']}, control "
                f"{ctl['requests']}, at least {self.min_requests} each)"
            )
            return result
        result["judged"] = True
        increase = ctl["error_ratio"] - base["error_ratio"]
        if increase > self.error_ratio + 1e-12:
            result["reasons"].append(
                f"control error ratio {ctl['error_ratio']:.1%} vs baseline "
                f"{base['error_ratio']:.1%} (tolerance +{self.error_ratio:.1%})"
            )
        base_p99, ctl_p99 = base["p99_seconds"], ctl["p99_seconds"]
        limit = max(base_p99 * self.p99_factor, base_p99 + self.p99_slack_seconds)
        n = ctl["requests"]
        slow = sum(1 for s in control if s.latency > limit)
        allowed = int(0.01 * n + 3.0 * math.sqrt(n * 0.01 * 0.99))
        if slow > allowed:
            result["reasons"].append(
                f"control p99 {ctl_p99 * 1000:.1f} ms vs baseline {base_p99 * 1000:.1f} ms: "
                f"{slow} of {n} control requests slower than {limit * 1000:.1f} ms "
                f"(noise allows {allowed})"
            )
        result["leaked"] = bool(result["reasons"])
        return result


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.1f} ms"


@attrs.define
class RunReport:
    """The outcome of one run: samples of each kind, what broke, what was injected and undone.

    ``invalid`` lists why the run proves nothing (no acknowledgement, a fault that matched no
    dependency): such a run fails, and the command exits 2 instead of 1.
    """

    recipe: Recipe
    target: str
    planned: int
    samples: list[Sample] = attrs.Factory(list)
    aborted: str | None = None
    allowed_failures: int = 0
    toxics: list[str] = attrs.Factory(list)
    leftovers: list[str] = attrs.Factory(list)
    duration: float = 0.0
    baseline_duration: float = 0.0
    started: float = 0.0
    invalid: list[str] = attrs.Factory(list)
    global_faults: bool = False
    leak_check: LeakCheck = attrs.Factory(LeakCheck)

    def of(self, kind: Kind) -> list[Sample]:
        return [s for s in self.samples if s.kind == kind]

    @property
    def experiment(self) -> list[Sample]:
        return self.of(EXPERIMENT)

    @property
    def control(self) -> list[Sample]:
        return self.of(CONTROL)

    @property
    def baseline(self) -> list[Sample]:
        return self.of(BASELINE)

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
    def unacknowledged(self) -> int:
        """Tagged requests that got a response without an acknowledgement."""
        return sum(1 for s in self.experiment if s.status is not None and s.ack is None)

    def injections(self) -> dict[tuple[str, str], int]:
        """(dependency, kind) -> applied, summed over every acknowledgement."""
        total: dict[tuple[str, str], int] = {}
        for sample in self.experiment:
            if sample.ack is not None:
                for key, n in sample.ack.record.items():
                    total[key] = total.get(key, 0) + n
        return total

    def leak(self) -> dict[str, Any]:
        return self.leak_check.judge(self.baseline, self.control)

    @property
    def leaked(self) -> bool:
        """Control traffic degraded: the experiment reached untagged requests."""
        return bool(self.leak()["leaked"])

    @property
    def passed(self) -> bool:
        return (
            self.aborted is None
            and not self.invalid
            and bool(self.experiment)
            and self.failed_requests <= self.allowed_failures
            and self.unacknowledged == 0
            and not self.leftovers
            and (self.global_faults or not self.leaked)
        )

    @property
    def verdict(self) -> str:
        return "invalid" if self.invalid else ("passed" if self.passed else "failed")

    def expectation_names(self) -> list[str]:
        expect = self.recipe.expect
        names = ["status"]
        if expect.max_latency is not None:
            names.append("max_latency")
        names += [f"json:{p}" for p in (*expect.json, *expect.json_present)]
        return names

    def _budget_failure(self) -> str | None:
        if self.aborted is not None:
            return self.aborted
        if self.failed_requests > self.allowed_failures:
            return f"{self.failed_requests} failures > {self.allowed_failures} allowed"
        if not self.experiment:
            return "no tagged request completed"
        return None

    def _leak_failure(self, leak: dict[str, Any]) -> str | None:
        if not leak["leaked"]:
            return None
        reasons = "; ".join(leak["reasons"])
        if self.global_faults:
            return None  # expected and reported: the operator allowed global faults
        return f"the experiment leaked into control traffic: {reasons}"

    def to_dict(self) -> dict[str, Any]:
        broken = self.broken()
        leak = self.leak()
        return {
            "schema_version": SCHEMA_VERSION,
            "recipe": self.recipe.name,
            "target": self.target,
            "verdict": self.verdict,
            "passed": self.passed,
            "started_at": _iso(self.started),
            "duration_seconds": self.duration,
            "baseline_duration_seconds": self.baseline_duration,
            "planned_tagged_requests": self.planned,
            "aborted_reason": self.aborted,
            "invalid_reasons": list(self.invalid),
            "error_budget": {
                "allowed_failures": self.allowed_failures,
                "failures": self.failed_requests,
            },
            "tagged": {**group(self.experiment), "unacknowledged": self.unacknowledged},
            "control": group(self.control),
            "baseline": group(self.baseline),
            "leak": {**leak, "control_affected_by_global_faults": self.global_faults},
            "expectations": [
                {
                    "name": name,
                    "passed": name not in broken,
                    "broken_requests": broken.get(name, (0, ""))[0],
                    "example": broken.get(name, (0, None))[1],
                }
                for name in self.expectation_names()
            ],
            "injections": [
                {"dependency": dep, "kind": kind, "applied": n}
                for (dep, kind), n in sorted(self.injections().items())
            ],
            "global_faults": {"allowed": self.global_faults, "toxics": list(self.toxics)},
            "cleanup_leftovers": list(self.leftovers),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    def to_junit(self) -> str:
        """JUnit XML (Jenkins xUnit junit-10.xsd): one test case per check of the run."""
        name = f"fit.{self.recipe.name}"
        suite = ET.Element("testsuite", name=name)
        counts = {"tests": 0, "failures": 0, "errors": 0}

        def case(
            title: str, problem: str | None, *, error: bool = False, time: float = 0.0
        ) -> None:
            counts["tests"] += 1
            element = ET.SubElement(
                suite, "testcase", classname=name, name=title, time=f"{time:.3f}"
            )
            if problem is not None:
                tag = "error" if error else "failure"
                counts["errors" if error else "failures"] += 1
                kind = "FitRunInvalid" if error else "FitExpectationFailed"
                ET.SubElement(element, tag, type=kind, message=problem).text = problem

        case("baseline", None, time=self.baseline_duration)
        acked = None
        if self.invalid:
            acked = "; ".join(self.invalid)
        case("experiment acknowledged", acked, error=acked is not None, time=self.duration)
        if not self.invalid and self.unacknowledged:
            case(
                "every tagged request acknowledged",
                f"{self.unacknowledged} of {len(self.experiment)} tagged responses carried no "
                "acknowledgement",
            )
        broken = self.broken()
        for expectation in self.expectation_names():
            count, detail = broken.get(expectation, (0, ""))
            case(
                f"expect {expectation}",
                f"{count} of {len(self.experiment)} tagged requests: {detail}" if count else None,
            )
        case("error budget", self._budget_failure())
        case("control traffic not degraded", self._leak_failure(self.leak()))
        case("cleanup", f"not undone: {', '.join(self.leftovers)}" if self.leftovers else None)
        for key, value in counts.items():
            suite.set(key, str(value))
        suite.set("skipped", "0")
        suite.set("time", f"{self.duration + self.baseline_duration:.3f}")
        suite.set("timestamp", _iso(self.started, seconds=True))
        suite.set("hostname", socket.gethostname() or "localhost")
        suites = ET.Element("testsuites", name="resilience fit")
        suites.append(suite)
        return ET.tostring(suites, encoding="unicode", xml_declaration=True)

    def to_text(self) -> str:
        verdict = {"passed": "PASSED", "failed": "FAILED", "invalid": "INVALID (exit 2)"}
        lines = [
            f"FIT run {self.recipe.name!r} against {self.target}: {verdict[self.verdict]}",
            f"  {'':<11}{'requests':>9}{'ok':>7}{'errors':>9}{'p50':>12}{'p99':>12}",
        ]
        for label, samples in (
            ("baseline", self.baseline),
            ("tagged", self.experiment),
            ("control", self.control),
        ):
            g = group(samples)
            rate = "-" if g["error_ratio"] is None else f"{g['error_ratio']:.1%}"
            lines.append(
                f"  {label:<11}{g['requests']:>9}{g['ok']:>7}{rate:>9}"
                f"{_ms(g['p50_seconds']):>12}{_ms(g['p99_seconds']):>12}"
            )
        for reason in self.invalid:
            lines.append(f"  INVALID: {reason}")
        if not self.invalid and self.unacknowledged:
            lines.append(
                f"  NOT ACKNOWLEDGED: {self.unacknowledged} of {len(self.experiment)} tagged "
                "responses (the service ran them untagged: over max_active, or an instance "
                "without FIT)"
            )
        injected = self.injections()
        if injected:
            shown = ", ".join(f"{d} {k} x{n}" for (d, k), n in sorted(injected.items()))
            lines.append(f"  injected (acknowledged): {shown}")
        broken = self.broken()
        for name in self.expectation_names():
            count, detail = broken.get(name, (0, ""))
            verdict_text = "ok" if not count else f"BROKEN by {count} request(s): {detail}"
            lines.append(f"  expect {name}: {verdict_text}")
        lines.append(
            f"  error budget: {self.failed_requests} failed, {self.allowed_failures} allowed"
            + (f" - ABORTED: {self.aborted}" if self.aborted else "")
        )
        leak = self.leak()
        if self.global_faults:
            lines.append(
                "  GLOBAL FAULTS: toxics act on every request through their proxy: control "
                "(and any real) traffic was affected"
                + (f" ({'; '.join(leak['reasons'])})" if leak["leaked"] else "")
            )
        elif leak["leaked"]:
            lines.append(f"  LEAKED into control traffic: {'; '.join(leak['reasons'])}")
        elif leak["judged"]:
            lines.append("  control traffic: no worse than the baseline")
        else:
            lines.append(f"  control traffic: not judged, {leak['reasons'][0]}")
        if self.toxics:
            lines.append(f"  toxics applied: {', '.join(self.toxics)}")
            lines.append(
                "  toxics removed" if not self.leftovers else f"  NOT REMOVED: {self.leftovers}"
            )
        return "\n".join(lines)


def _iso(timestamp: float, *, seconds: bool = False) -> str:
    moment = datetime.datetime.fromtimestamp(timestamp, datetime.UTC)
    if seconds:  # JUnit's timestamp: ISO 8601 without a zone, as Ant and Maven write it
        return moment.strftime("%Y-%m-%dT%H:%M:%S")
    return moment.isoformat()
