from __future__ import annotations

import asyncio
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import xmlschema

from resilience import cli
from resilience.errors import ConfigError
from resilience.fit import (
    Ack,
    Expectation,
    Plan,
    Recipe,
    RunReport,
    Sample,
    check,
    run,
    verify_tag,
)
from resilience.fit._report import LeakCheck, percentile
from resilience.fit._runner import Tagger, _invalid, control_ratio
from resilience.testing import FakeClock

JUNIT_XSD = Path(__file__).parent / "schemas" / "junit-10.xsd"

EXPECT = Expectation(
    status=(200,), max_latency=0.5, json={"items.0.id": 3, "title": "Dune"}, json_present=("price",)
)


def test_check_names_each_broken_expectation() -> None:
    good = json.dumps({"items": [{"id": 3}], "title": "Dune", "price": 1}).encode()
    assert check(EXPECT, 200, 0.1, good) == ()
    broken = dict(check(EXPECT, 503, 0.9, b'{"items": [], "title": "Other"}'))
    assert broken == {
        "status": "got 503, expected one of [200]",
        "max_latency": "took 0.900s > 0.5s",
        "json:items.0.id": "missing",
        "json:title": "got 'Other', expected 'Dune'",
        "json:price": "missing",
    }
    assert dict(check(EXPECT, 200, 0.1, b"not json"))["json:title"] == "missing"
    assert check(EXPECT, None, 0.1, None, "ClientConnectorError: refused") == (
        ("status", "no response: ClientConnectorError: refused"),
    )


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert (percentile(values, 50), percentile(values, 99), percentile(values, 100)) == (
        50,
        99,
        100,
    )
    assert percentile([], 50) is None


def test_plan_interleaves_control_requests() -> None:
    def kinds(plan: Plan) -> str:
        out = ""
        while (kind := plan.next()) is not None:
            out += kind[0]
        return out

    assert kinds(Plan(4, 1.0, 0.0)) == "cececece"
    assert kinds(Plan(4, 0.5, 0.0)) == "eceece"
    assert kinds(Plan(3, 0.0, 0.0)) == "eee"
    with pytest.raises(ConfigError, match="requests"):
        Plan(0, 1.0, 0.0)


def test_plan_stops_once_the_error_budget_is_spent() -> None:
    plan = Plan(10, 0.0, 0.2)  # two broken tagged requests allowed
    bad = Sample("experiment", 503, 0.1, (("status", "got 503"),))
    for _ in range(2):
        assert plan.next() == "experiment"
        plan.record(bad)
    plan.record(Sample("control", 503, 0.1, (("status", "got 503"),)))  # control: not counted
    assert plan.aborted is None
    plan.record(bad)
    assert plan.aborted is not None and "budget allows 2 of 10" in plan.aborted
    assert plan.next() is None


def report(samples: list[Sample], aborted: str | None = None, **kw: object) -> RunReport:
    recipe = Recipe(name="r", expect=EXPECT)
    return RunReport(recipe, "http://t/", 3, samples, aborted=aborted, duration=1.5, **kw)  # type: ignore[arg-type]


ACK = Ack("r", {("db", "error"): 1})


def ok(kind: str = "experiment", latency: float = 0.1) -> Sample:
    return Sample(kind, 200, latency, (), ACK if kind == "experiment" else None)  # type: ignore[arg-type]


def test_report_says_which_expectation_broke_in_every_format() -> None:
    bad = Sample("experiment", 503, 0.2, (("status", "got 503, expected one of [200]"),), ACK)
    r = report([ok(), bad, ok("control", 0.05)], aborted="error budget spent")
    assert not r.passed and r.verdict == "failed"
    text = r.to_text()
    assert "FAILED" in text
    assert "expect status: BROKEN by 1 request(s): got 503" in text
    assert "expect max_latency: ok" in text
    assert "injected (acknowledged): db error x2" in text
    data = json.loads(r.to_json())
    assert data["expectations"][0] == {
        "name": "status",
        "passed": False,
        "broken_requests": 1,
        "example": "got 503, expected one of [200]",
    }
    assert data["tagged"]["requests"] == 2 and data["control"]["error_ratio"] == 0.0
    assert data["injections"] == [{"dependency": "db", "kind": "error", "applied": 2}]
    suite = ET.fromstring(r.to_junit()).find("testsuite")
    assert suite is not None and suite.get("failures") == "2" and suite.get("errors") == "0"
    failed = {c.get("name"): c.find("failure") for c in suite.iter("testcase")}
    assert failed["expect status"] is not None
    assert failed["expect max_latency"] is None
    assert failed["error budget"] is not None
    assert failed["cleanup"] is None


def test_json_report_has_fixed_keys_and_units_in_names() -> None:
    small = report([ok()])
    other = RunReport(
        Recipe.from_dict(
            {"name": "other", "expect": {"json": {"a.b": 1, "c": 2}, "json_present": ["d"]}}
        ),
        "http://x/",
        9,
        [ok(), ok("control"), ok("baseline")],
    )

    def keys(value: object, prefix: str = "") -> set[str]:
        if isinstance(value, dict):
            return {f"{prefix}{k}" for k in value} | {
                key for k, v in value.items() for key in keys(v, f"{prefix}{k}.")
            }
        if isinstance(value, list):
            return {key for v in value for key in keys(v, f"{prefix}[].")}
        return set()

    a, b = keys(small.to_dict()), keys(other.to_dict())
    assert a == b  # recipe-dependent names are values, never keys
    assert small.to_dict()["schema_version"] == 1
    for key in a:
        leaf = key.rsplit(".", 1)[-1]
        assert not any(leaf == bare for bare in ("duration", "p50", "p99", "latency")), key
    assert {"duration_seconds", "tagged.p50_seconds", "control.p99_seconds"} <= a


def test_junit_validates_against_jenkins_xunit_schema() -> None:
    schema = xmlschema.XMLSchema(str(JUNIT_XSD))
    bad = Sample("experiment", 503, 0.2, (("status", "got 503"),), ACK)
    for r in (
        report([ok(), ok("control"), ok("baseline")]),
        report([ok(), bad], aborted="error budget spent", leftovers=["toxic p/x"]),
        report([ok()], invalid=["no acknowledgement"]),
    ):
        xml = r.to_junit()
        schema.validate(xml)
        suite = ET.fromstring(xml).find("testsuite")
        assert suite is not None
        for attribute in (
            "name", "tests", "failures", "errors", "skipped", "time", "timestamp", "hostname"
        ):  # fmt: skip
            assert suite.get(attribute), attribute
        cases = list(suite.iter("testcase"))
        assert int(suite.get("tests") or 0) == len(cases)
        assert all(c.get("time") is not None for c in cases)
        for outcome in (*suite.iter("failure"), *suite.iter("error")):
            assert outcome.get("type") and outcome.get("message")
    # the schema is a real check: a suite without its required attributes is refused
    with pytest.raises(xmlschema.XMLSchemaValidationError):
        schema.validate("<testsuites><testsuite name='x'/></testsuites>")


def test_invalid_runs_name_why_and_fail() -> None:
    recipe = Recipe.from_dict(
        {"name": "r", "faults": [{"dependency": "recomendations", "error": True}]}
    )
    unacked = RunReport(recipe, "t", 2, [Sample("experiment", 200, 0.1)])
    (reason,) = _invalid(unacked)
    assert "X-Resilience-FIT-Ack" in reason and "FIT not enabled" in reason
    acked = RunReport(
        recipe, "t", 2, [Sample("experiment", 200, 0.1, (), Ack("r", {("ratings", "error"): 2}))]
    )
    (reason,) = _invalid(acked)
    assert "faults[0] (dependency 'recomendations') matched no dependency" in reason
    unacked.invalid = [reason]
    assert not unacked.passed and unacked.verdict == "invalid"
    assert "INVALID" in unacked.to_text()
    # a response that never came is no missing acknowledgement
    assert _invalid(RunReport(recipe, "t", 1, [Sample("experiment", None, 0.1)])) == []
    # matched with zero applications (short-circuited, probability) still proves the match
    zero = Sample("experiment", 200, 0.1, (), Ack("r", {("recomendations", "error"): 0}))
    assert _invalid(RunReport(recipe, "t", 1, [zero])) == []


def test_some_unacknowledged_responses_fail_the_run() -> None:
    r = report([ok(), Sample("experiment", 200, 0.1)])
    assert r.unacknowledged == 1 and not r.passed and r.verdict == "failed"
    assert "NOT ACKNOWLEDGED: 1 of 2" in r.to_text()


def test_leak_check_compares_control_with_the_baseline() -> None:
    check = LeakCheck(error_ratio=0.05, p99_factor=2.0, p99_slack_seconds=0.1, min_requests=10)
    base = [ok("baseline", 0.01)] * 20
    assert check.judge(base, [ok("control", 0.015)] * 20)["leaked"] is False
    slow = check.judge(base, [ok("control", 0.5)] * 20)
    assert slow["leaked"] and "p99" in slow["reasons"][0]
    failing = [Sample("control", 503, 0.01, (("status", "503"),))] * 2 + [ok("control")] * 18
    errors = check.judge(base, failing)
    assert errors["leaked"] and "error ratio 10.0%" in errors["reasons"][0]
    few = check.judge(base[:3], failing)
    assert few["judged"] is False and few["leaked"] is False
    leaked = report([ok(), *base, *[ok("control", 0.5)] * 20])
    assert leaked.leaked and not leaked.passed
    assert "LEAKED into control traffic" in leaked.to_text()
    allowed = report([ok(), *base, *[ok("control", 0.5)] * 20], global_faults=True)
    assert allowed.passed and "control (and any real) traffic was affected" in allowed.to_text()


def test_tagged_share_sets_the_control_ratio() -> None:
    assert control_ratio(0.1) == pytest.approx(9.0)
    assert control_ratio(1.0) == 0.0
    with pytest.raises(ConfigError, match="tagged_share"):
        control_ratio(0.0)


def test_recipes_with_toxics_are_refused_unless_global_faults_are_allowed() -> None:
    recipe = Recipe.from_dict(
        {"name": "slow", "toxics": [{"proxy": "p", "type": "latency", "attributes": {}}]}
    )
    with pytest.raises(ConfigError, match="allow-global-faults") as info:
        asyncio.run(run(recipe, "http://127.0.0.1:9/", secret="s"))
    assert info.value.field == "toxics"


def test_report_passes_and_flags_leftover_toxics() -> None:
    r = report([ok()])
    assert r.passed and "PASSED" in r.to_text()
    r.toxics, r.leftovers = ["p/fit_latency_downstream"], ["toxic p/fit_latency_downstream"]
    assert not r.passed
    assert "NOT REMOVED" in r.to_text()


def test_tagger_resigns_before_expiry() -> None:
    clock = FakeClock(1_000_000.0)
    tagger = Tagger(Recipe(name="r"), secret="s", key_id="default", ttl=60, clock=clock)
    first = tagger.headers()
    assert tagger.headers() == first
    clock.advance(45)
    assert tagger.headers() == first
    clock.advance(6)  # within 10 s of expiry
    second = tagger.headers()
    assert second != first
    verdict = verify_tag(second["X-Resilience-FIT"], keys={"default": b"s"}, now=clock())
    assert verdict.result == "accepted" and verdict.expires == clock() + 60


def test_cli_reports_configuration_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RESILIENCE_FIT_SECRET", raising=False)
    path = tmp_path / "r.yaml"
    path.write_text("name: r\nfaults:\n  - dependency: a\n    probability: 3\n")
    assert cli.main(["fit", "run", str(path), "--target", "http://127.0.0.1:1/"]) == 2
    assert "faults[0].probability" in capsys.readouterr().err
    path.write_text("name: r\n")
    assert cli.main(["fit", "run", str(path), "--target", "http://127.0.0.1:1/"]) == 2
    assert "RESILIENCE_FIT_SECRET" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["fit", "run"])


def test_run_help_shows_every_default(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["fit", "run", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    options = [
        "--timeout", "--requests", "--tagged-share", "--baseline", "--leak-error-ratio",
        "--leak-p99-factor", "--leak-p99-slack", "--concurrency", "--by-id",
        "--dependencies-url", "--no-dependency-check", "--allow-global-faults", "--toxiproxy",
        "--report-json", "--junit", "--quiet", "--secret", "--key-id",
    ]  # fmt: skip
    for option in options:
        after = text.split(option, 2)[-1]
        assert "default" in after.split(" --", 1)[0], option
    assert "(default: 0.1)" in text  # the tagged share is small by default


def test_one_pause_of_the_machine_is_not_a_leak_but_a_slow_few_percent_is() -> None:
    check = LeakCheck(error_ratio=0.05, p99_factor=2.0, p99_slack_seconds=0.1, min_requests=10)
    base = [ok("baseline", 0.01)] * 20
    # 90 control requests, one of them caught behind a 120 ms pause: its p99 is that sample.
    paused = [ok("control", 0.011)] * 89 + [ok("control", 0.124)]
    assert check.judge(base, paused)["leaked"] is False
    # The same 90 with 6 slowed by the experiment (about 7%): more than noise explains.
    leaking = [ok("control", 0.011)] * 84 + [ok("control", 0.5)] * 6
    verdict = check.judge(base, leaking)
    assert verdict["leaked"] and "6 of 90 control requests slower" in verdict["reasons"][0]
