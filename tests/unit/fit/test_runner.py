from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from resilience import cli
from resilience.errors import ConfigError
from resilience.fit import Expectation, Plan, Recipe, RunReport, Sample, check, verify_tag
from resilience.fit._runner import Tagger, percentile
from resilience.testing import FakeClock

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


def report(samples: list[Sample], aborted: str | None = None) -> RunReport:
    recipe = Recipe(name="r", expect=EXPECT)
    return RunReport(recipe, "http://t/", 3, samples, aborted=aborted, duration=1.5)


def test_report_says_which_expectation_broke_in_every_format() -> None:
    ok = Sample("experiment", 200, 0.1)
    bad = Sample("experiment", 503, 0.2, (("status", "got 503, expected one of [200]"),))
    r = report([ok, bad, Sample("control", 200, 0.05)], aborted="error budget spent")
    assert not r.passed
    text = r.to_text()
    assert "FAILED" in text
    assert "expect status: BROKEN by 1 request(s): got 503" in text
    assert "expect max_latency: ok" in text
    data = json.loads(r.to_json())
    assert data["expectations"]["status"] == {
        "passed": False,
        "broken": 1,
        "example": "got 503, expected one of [200]",
    }
    assert data["experiment"]["requests"] == 2 and data["control"]["success_rate"] == 1.0
    suite = ET.fromstring(r.to_junit()).find("testsuite")
    assert suite is not None and suite.get("failures") == "2"
    failed = {c.get("name"): c.find("failure") for c in suite.iter("testcase")}
    assert failed["expect status"] is not None
    assert failed["expect max_latency"] is None
    assert failed["error budget"] is not None
    assert failed["cleanup"] is None


def test_report_passes_and_flags_leftover_toxics() -> None:
    r = report([Sample("experiment", 200, 0.1)])
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
