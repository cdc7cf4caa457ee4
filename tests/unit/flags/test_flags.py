"""Flags: layering, overrides, callbacks, the switch decorator, sources, status and metrics."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

import resilience.flags
from resilience.circuit import Registry
from resilience.errors import ConfigError
from resilience.flags import (
    EnvSource,
    FileSource,
    FlagChange,
    Flags,
    HttpSource,
    InMemorySource,
)
from resilience.metrics import ResilienceCollector


def test_all_is_sorted_and_complete() -> None:
    names = resilience.flags.__all__
    # isort order, as ruff's RUF022 keeps it: CONSTANTS, then Classes, then functions
    assert names == sorted(names, key=lambda n: (not n.isupper(), n[0].islower(), n))
    public = {n for n in dir(resilience.flags) if not n.startswith("_")}
    assert public - {"annotations"} == set(names)


def test_later_sources_override_earlier_and_overrides_sit_on_top() -> None:
    base = InMemorySource({"a": {"on": False}, "b": {"value": 1}}, name="base")
    top = InMemorySource({"a": {"on": True}}, name="top")
    flags = Flags(base, top)
    assert flags.enabled("a") is True and flags.source_of("a") == "top"
    assert flags.value("b", 0) == 1 and flags.source_of("b") == "base"
    flags.set("a", False)
    assert flags.enabled("a") is False and flags.source_of("a") == "override"
    top.update({"a": {"on": True}, "c": {"on": True}})
    assert flags.enabled("a") is False  # still overridden
    assert flags.clear("a") is True and flags.clear("a") is False
    assert flags.enabled("a") is True
    top.update({})
    assert flags.enabled("a") is False and flags.source_of("a") == "base"
    assert "c" not in flags


def test_set_keeps_the_flags_type_and_changes_nothing_on_a_bad_value() -> None:
    flags = Flags(InMemorySource({"s": {"on": True}, "t": {"value": 0.5}, "n": {"value": 3}}))
    with pytest.raises(ConfigError):
        flags.set("s", "off")
    with pytest.raises(ConfigError):
        flags.set("t", "fast")
    with pytest.raises(ConfigError):
        flags.set("n", 2.5)
    assert flags.overrides() == {}
    flags.set("t", 2)  # an int is a float
    assert flags.value("t", 0.0) == 2.0
    flags.set("new", "x")
    assert flags.value("new", "") == "x"
    flags.set("new-switch", True)
    assert flags.enabled("new-switch") is True


def test_overridden_restores_the_overrides_before_it() -> None:
    flags = Flags(InMemorySource({"s": {"on": True}}))
    flags.set("t", 1)
    with flags.overridden({"s": False, "t": 5}):
        assert flags.enabled("s") is False and flags.value("t", 0) == 5
    assert flags.enabled("s") is True and flags.value("t", 0) == 1
    assert set(flags.overrides()) == {"t"}


def test_a_bad_flag_keeps_its_last_good_spec_and_never_costs_the_others() -> None:
    src = InMemorySource({"s": {"on": True}, "t": {"value": 1}})
    flags = Flags(src)
    assert src.update({"s": {"on": "maybe"}, "t": {"value": 2}, "u": {"on": True}}) is False
    assert flags.enabled("s") is True  # last good spec
    assert flags.value("t", 0) == 2 and flags.enabled("u") is True  # the valid ones went in
    st = flags.status()["sources"][0]
    assert st["errors"] == {"invalid": 1}
    assert "flags.s.on" in st["last_error"]
    assert "flags.s.on" in st["flag_errors"]["s"]
    assert st["health"] == "stale" and flags.health().value == "stale"
    assert src.update({"s": {"on": False}, "t": {"value": 2}}) is True
    assert flags.enabled("s") is False and "u" not in flags
    assert flags.status()["sources"][0]["flag_errors"] == {}
    assert flags.health().value == "ok"


def test_an_invalid_flag_at_startup_is_absent_and_reported_the_rest_serve() -> None:
    src = InMemorySource({"kill": {"on": "yes"}, "new-ranking": {"on": True}})
    flags = Flags(src)
    assert "kill" not in flags and flags.enabled("new-ranking") is True
    assert flags.enabled("kill", default=True) is True  # the author chose how it fails
    assert set(flags.status()["sources"][0]["flag_errors"]) == {"kill"}


def test_on_change_reports_old_and_new_after_the_change_is_in_force() -> None:
    src = InMemorySource({"s": {"on": False}, "x": {"on": True}})
    flags = Flags(src)
    seen: list[tuple[FlagChange, bool]] = []
    everything: list[str] = []
    stop = flags.on_change("s", lambda c: seen.append((c, flags.enabled("s"))))
    flags.on_change(None, lambda c: everything.append(c.name))
    src.update({"s": {"on": True}, "x": {"on": True}})  # x unchanged: no event
    assert [(c.old.on if c.old else None, c.new.on if c.new else None, now) for c, now in seen] == [
        (False, True, True)
    ]
    flags.set("s", True)  # same flag, other source: the value did not change
    assert len(seen) == 1
    stop()
    flags.clear("s")
    src.update({})
    assert len(seen) == 1
    assert everything == ["s", "s", "x"]


def test_a_failing_callback_does_not_stop_the_others() -> None:
    flags = Flags(InMemorySource({}))
    got = []

    def boom(c: FlagChange) -> None:
        raise RuntimeError("boom")

    flags.on_change("s", boom)
    flags.on_change("s", lambda c: got.append(c.name))
    flags.set("s", True)
    assert got == ["s"]


def test_switch_decorator_sync_and_async() -> None:
    flags = Flags(InMemorySource({"recs": {"on": True}}))

    @flags.switch("recs", off=lambda user: [])
    def recs(user: str) -> list[str]:
        return [f"for {user}"]

    @flags.switch("recs", off="static off")
    async def arecs(user: str) -> str:
        return f"for {user}"

    async def aoff(user: str) -> str:
        return "async off"

    @flags.switch("recs", off=aoff)
    async def arecs2(user: str) -> str:
        return f"for {user}"

    import asyncio
    import inspect

    assert inspect.iscoroutinefunction(arecs) and recs.__name__ == "recs"
    assert recs("u") == ["for u"]
    assert asyncio.run(arecs("u")) == "for u"
    flags.set("recs", False)
    assert recs("u") == []
    assert asyncio.run(arecs("u")) == "static off"
    assert asyncio.run(arecs2("u")) == "async off"


def test_switch_decorator_rolls_out_by_a_key_from_the_arguments() -> None:
    flags = Flags(InMemorySource({"r": {"on": True, "rollout": 0.5}}))

    @flags.switch("r", off=False, key=lambda user: user)
    def new_path(user: str) -> bool:
        return True

    got = {u: new_path(u) for u in map(str, range(2000))}
    assert 800 < sum(got.values()) < 1200
    assert all(new_path(u) == on for u, on in got.items())


def test_env_source_maps_names_and_values() -> None:
    env = {
        "RESILIENCE_FLAG_KILL_RECOMMENDATIONS": "true",
        "RESILIENCE_FLAG_RATINGS__TIMEOUT": "0.25",
        "RESILIENCE_FLAG_GREETING": "hello",
        "RESILIENCE_FLAG_NEW_RANKING": '{"on": true, "rollout": 0.0}',
        "OTHER": "1",
    }
    flags = Flags(EnvSource(environ=env))
    assert flags.enabled("kill-recommendations") is True
    assert flags.value("ratings.timeout", 1.0) == 0.25
    assert flags.value("greeting", "") == "hello"
    assert flags.enabled("new-ranking", key="u") is False
    assert flags.names() == ["greeting", "kill-recommendations", "new-ranking", "ratings.timeout"]


def write(path: Path, text: str) -> None:
    path.write_text(text)
    st = path.stat()  # make sure the watcher sees a new mtime even on coarse clocks
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))


@pytest.mark.parametrize(
    ("suffix", "text"),
    [
        (".json", json.dumps({"flags": {"a": {"on": True}, "t": {"value": 0.5}}})),
        # YAML 1.1 would read the key `on` as a bool; flag files read it as the string "on"
        (".yaml", "flags:\n  a: {on: true}\n  t: {value: 0.5}\n  y: {value: yes}\n"),
        (".toml", "[flags.a]\non = true\n[flags.t]\nvalue = 0.5\n"),
    ],
)
def test_file_source_reads_json_yaml_and_toml(tmp_path: Path, suffix: str, text: str) -> None:
    path = tmp_path / f"flags{suffix}"
    write(path, text)
    flags = Flags(FileSource(path, watch=False))
    assert flags.enabled("a") is True and flags.value("t", 1.0) == 0.5
    if suffix == ".yaml":
        assert flags.value("y", "") == "yes"


def test_file_source_keeps_the_last_good_flags_through_bad_files(tmp_path: Path) -> None:
    path = tmp_path / "flags.json"
    write(path, '{"flags": {"a": {"on": true}}}')
    src = FileSource(path, watch=False)
    flags = Flags(src)
    write(path, '{"flags": {"a": {"on": tr')
    assert src.refresh() is False
    write(path, '{"flags": {"a": {"on": 3}}}')
    assert src.refresh() is False
    path.unlink()
    assert src.refresh() is False
    assert flags.enabled("a") is True
    errors = flags.status()["sources"][0]["errors"]
    assert errors == {"parse": 1, "invalid": 1, "read": 1}
    write(path, '{"flags": {"a": {"on": false}}}')
    assert src.refresh() is True
    assert flags.enabled("a") is False
    assert src.refresh() is False  # unchanged file: nothing to do


def test_file_source_needs_a_known_format(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        FileSource(tmp_path / "flags.ini")


def test_http_backoff_doubles_up_to_the_cap_with_bounded_jitter() -> None:
    src = HttpSource("http://127.0.0.1:1/flags", interval=2.0, max_backoff=20.0, random=lambda: 0.0)
    assert src.next_delay() == 2.0
    delays = []
    for n in range(1, 6):
        src.failures = n
        delays.append(src.next_delay())
    assert delays == [4.0, 8.0, 16.0, 20.0, 20.0]
    src._random = lambda: 0.999
    assert 16.0 <= src.next_delay() < 20.0


def test_status_is_json_and_metrics_come_from_the_flags_own_counters(
    fresh_registry: Registry,
) -> None:
    src = InMemorySource({"s": {"on": True}, "r": {"on": True, "rollout": 0.5}}, name="mem")
    flags = Flags(src, wall=lambda: 1234.0)
    for i in range(10):
        flags.enabled("s")
        flags.enabled("r", key=str(i))
    flags.enabled("missing")
    src.update({"s": {"on": 1}})
    status = json.loads(json.dumps(flags.status()))
    assert status["flags"]["s"]["evaluations"] == {"static": 10}
    assert status["sources"][0]["last_update"] == 1234.0

    prom = CollectorRegistry()
    prom.register(ResilienceCollector(fresh_registry))
    families = {f.name: f for f in text_string_to_metric_families(generate_latest(prom).decode())}
    evals = {
        (s.labels["flag"], s.labels["reason"]): s.value
        for s in families["resilience_flag_evaluations"].samples
        if s.name.endswith("_total")
    }
    assert evals[("s", "static")] == 10
    assert evals[("r", "split")] == 10
    assert evals[("missing", "error")] == 1
    errors = families["resilience_flag_source_errors"].samples
    assert [(s.labels, s.value) for s in errors if s.name.endswith("_total")] == [
        ({"source": "mem", "kind": "invalid"}, 1.0)
    ]
    last = families["resilience_flag_last_update_timestamp_seconds"].samples
    assert [(s.labels, s.value) for s in last] == [({"source": "mem"}, 1234.0)]
    flags.close()
    assert flags not in fresh_registry.metrics_sources


def test_sources_must_be_sources() -> None:
    bad: Any = {"a": {"on": True}}
    with pytest.raises(ConfigError):
        Flags(bad)


def test_switch_default_chooses_how_a_missing_flag_behaves(
    caplog: pytest.LogCaptureFixture,
) -> None:
    flags = Flags(InMemorySource({}))

    @flags.switch("recommendations", off="off", default=True)
    def fail_open() -> str:
        return "on"

    @flags.switch("recommendations", off="off")
    def fail_closed() -> str:
        return "on"

    assert fail_open() == "on" and fail_closed() == "off"
    assert fail_open() == "on"
    unknown = [r for r in caplog.records if "recommendations" in r.getMessage()]
    assert len(unknown) == 1 and "not defined" in unknown[0].getMessage()  # logged once


def test_require_refuses_to_start_blind(tmp_path: Path) -> None:
    broken = tmp_path / "flags.json"
    broken.write_text("{not json")
    with pytest.raises(ConfigError, match="no source produced a good document"):
        Flags(FileSource(broken, watch=False), require=True, ready_timeout=0.05)
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"flags": {"kill": {"on": "bad"}, "ok": {"on": True}}}))
    flags = Flags(FileSource(good, watch=False), require=True)  # one bad flag: still a document
    assert flags.enabled("ok") is True
    with pytest.raises(ConfigError):
        Flags(FileSource(broken, watch=False), start=True).ready(0.05, require=True)


def test_last_success_moves_on_a_check_that_changed_nothing(tmp_path: Path) -> None:
    path = tmp_path / "flags.json"
    path.write_text(json.dumps({"flags": {"kill": {"on": False}}}))
    now = [1000.0]
    src = FileSource(path, watch=False)
    flags = Flags(src, wall=lambda: now[0])  # the test's own default registry
    now[0] = 2000.0
    assert src.refresh() is False  # unchanged
    prom = CollectorRegistry()
    prom.register(ResilienceCollector())
    samples = {
        (s.name, s.labels.get("source")): s.value
        for fam in text_string_to_metric_families(generate_latest(prom).decode())
        for s in fam.samples
    }
    name = f"file:{path}"
    assert samples[("resilience_flag_source_last_success_timestamp_seconds", name)] == 2000.0
    assert samples[("resilience_flag_last_update_timestamp_seconds", name)] == 1000.0
    assert flags.status()["sources"][0]["last_success"] == 2000.0
