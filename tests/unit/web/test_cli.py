"""``observe alerts|grafana APP_MODULE`` through an argparse parser built by register()."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from resilience.web._cli import register


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="resilience")
    register(parser.add_subparsers(dest="command", required=True))
    return parser


@pytest.fixture
def app_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    (tmp_path / "web_cli_service.py").write_text(
        "import resilience\n"
        "@resilience.protect('profile', timeout=0.2)\n"
        "def profile(user):\n"
        "    return user\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "web_cli_service"
    sys.modules.pop("web_cli_service", None)


def test_alerts_for_the_module_dependencies(
    app_module: str, capsys: pytest.CaptureFixture[str]
) -> None:
    args = _parser().parse_args(["observe", "alerts", app_module, "--selector", 'job="svc"'])
    assert args.handler(args) == 0
    rules = yaml.safe_load(capsys.readouterr().out)["groups"][0]["rules"]
    deps = {r["labels"].get("dependency") for r in rules}
    assert "profile" in deps
    assert all('job="svc"' in r["expr"] for r in rules)


def test_grafana_to_a_file(app_module: str, tmp_path: Path) -> None:
    out = tmp_path / "dash.json"
    args = _parser().parse_args(["observe", "grafana", app_module, "--uid", "svc", "-o", str(out)])
    assert args.handler(args) == 0
    dash = json.loads(out.read_text())
    assert dash["uid"] == "svc"
    assert any(p["title"] == "profile: circuit open" for p in dash["panels"])


def test_bad_module_and_bad_option(capsys: pytest.CaptureFixture[str]) -> None:
    args = _parser().parse_args(["observe", "alerts", "no_such_module_here"])
    assert args.handler(args) == 2
    args = _parser().parse_args(["observe", "alerts", "json", "--selector", "nonsense"])
    assert args.handler(args) == 2
    assert "selector" in capsys.readouterr().err


def test_bad_uid_is_a_clear_error_before_importing(capsys: pytest.CaptureFixture[str]) -> None:
    # the module does not exist: the option is refused first, naming the option
    args = _parser().parse_args(["observe", "grafana", "no_such_module_here", "--uid", "a/b"])
    assert args.handler(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("resilience observe: --uid: ") and "40 characters" in err


def test_runbook_url_option(app_module: str, capsys: pytest.CaptureFixture[str]) -> None:
    args = _parser().parse_args(
        ["observe", "alerts", app_module, "--json", "--runbook-url", "https://rb.example/{alert}"]
    )
    assert args.handler(args) == 0
    rules = json.loads(capsys.readouterr().out)["groups"][0]["rules"]
    assert rules[0]["annotations"]["runbook_url"] == f"https://rb.example/{rules[0]['alert']}"
