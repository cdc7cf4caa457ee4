"""The OpenFeature provider, exercised through the real openfeature-sdk client."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from openfeature import api
from openfeature.evaluation_context import EvaluationContext
from openfeature.event import EventDetails, ProviderEvent
from openfeature.exception import ErrorCode
from openfeature.flag_evaluation import Reason

from resilience.flags import Flags, InMemorySource, openfeature_provider
from tests.integration.flags.waiting import wait_for

DOC = {
    "new-ranking": {
        "on": True,
        "rollout": 0.0,
        "rules": [{"attr": "country", "in": ["KR", "JP"], "on": True}],
    },
    "ratings.timeout": {"value": 0.5},
    "page.size": {"value": 20},
    "greeting": {"value": "hi"},
    "layout": {"value": {"cols": 3}},
    "theme": {"variants": [{"name": "dark", "weight": 1, "value": "dark"}]},
}


@pytest.fixture
def flags() -> Iterator[Flags]:
    flags = Flags(InMemorySource(DOC))
    api.set_provider(openfeature_provider(flags), domain="resilience-test")
    yield flags
    api.clear_providers()


def test_typed_values_and_reasons_through_the_client(flags: Flags) -> None:
    client = api.get_client(domain="resilience-test")
    kr = EvaluationContext(targeting_key="user-1", attributes={"country": "KR"})
    us = EvaluationContext(targeting_key="user-1", attributes={"country": "US"})
    d = client.get_boolean_details("new-ranking", False, kr)
    assert (d.value, d.reason) == (True, Reason.TARGETING_MATCH)
    d = client.get_boolean_details("new-ranking", True, us)
    assert (d.value, d.reason) == (False, Reason.SPLIT)
    assert client.get_float_value("ratings.timeout", 1.0) == 0.5
    assert client.get_integer_value("page.size", 10) == 20
    assert client.get_string_value("greeting", "") == "hi"
    assert client.get_object_value("layout", {}) == {"cols": 3}
    d = client.get_string_details("theme", "light", us)
    assert (d.value, d.variant, d.reason) == ("dark", "dark", Reason.SPLIT)


def test_errors_return_the_default_with_an_error_code(flags: Flags) -> None:
    client = api.get_client(domain="resilience-test")
    d = client.get_boolean_details("missing", True)
    assert (d.value, d.reason, d.error_code) == (True, Reason.ERROR, ErrorCode.FLAG_NOT_FOUND)
    d = client.get_integer_details("greeting", 7)
    assert (d.value, d.error_code) == (7, ErrorCode.TYPE_MISMATCH)
    d = client.get_boolean_details("new-ranking", True)  # a split without a targeting key
    assert (d.value, d.error_code) == (True, ErrorCode.TARGETING_KEY_MISSING)


def test_changes_are_emitted_as_configuration_changed(flags: Flags) -> None:
    client = api.get_client(domain="resilience-test")
    seen: list[list[str] | None] = []

    def handler(details: EventDetails) -> None:
        seen.append(details.flags_changed)

    client.add_handler(ProviderEvent.PROVIDER_CONFIGURATION_CHANGED, handler)
    flags.set("greeting", "hello")
    assert client.get_string_value("greeting", "") == "hello"
    assert wait_for(lambda: seen == [["greeting"]])  # handlers run on the SDK's threads


def test_disabled_default_and_metadata_reasons() -> None:
    src = InMemorySource(
        {
            "kill": {"on": False},
            "ranked": {"on": True, "rules": [{"attr": "country", "in": ["KR"], "on": False}]},
        },
        name="mem",
    )
    flags = Flags(src)
    api.set_provider(openfeature_provider(flags), domain="reasons")
    try:
        client = api.get_client(domain="reasons")
        d = client.get_boolean_details("kill", True)
        assert (d.value, d.reason) == (False, Reason.DISABLED)
        assert d.flag_metadata == {"source": "mem"}
        d = client.get_boolean_details("ranked", False, EvaluationContext("u", {"country": "US"}))
        assert (d.value, d.reason) == (True, Reason.DEFAULT)
        d = client.get_boolean_details("ranked", True, EvaluationContext("u", {"country": "KR"}))
        assert (d.value, d.reason) == (False, Reason.TARGETING_MATCH)
    finally:
        api.clear_providers()


def test_a_failing_source_emits_error_then_stale_then_ready() -> None:
    src = InMemorySource({"kill": {"on": False}}, name="mem")
    flags = Flags(src)
    provider = openfeature_provider(flags)
    api.set_provider(provider, domain="health")
    client = api.get_client(domain="health")
    events: list[str] = []
    for event in (
        ProviderEvent.PROVIDER_ERROR,
        ProviderEvent.PROVIDER_STALE,
        ProviderEvent.PROVIDER_READY,
    ):
        client.add_handler(event, lambda d, e=event: events.append(e.value))
    # a handler added to a ready provider hears READY at once, from the SDK's own thread
    assert wait_for(lambda: events == ["PROVIDER_READY"])
    events.clear()
    try:
        heard: list[object] = []
        flags.on_health(heard.append)
        src._error("unreachable", "connection refused")  # what a failing fetch reports
        # the SDK runs handlers on its own threads: wait for them
        assert wait_for(lambda: events == ["PROVIDER_ERROR", "PROVIDER_STALE"])
        assert client.get_boolean_value("kill", True) is False  # last good state still served
        src._error("unreachable", "connection refused")  # the same outage: nothing new
        assert len(heard) == 1
        src.refresh()  # a good check again
        assert wait_for(lambda: events == ["PROVIDER_ERROR", "PROVIDER_STALE", "PROVIDER_READY"])
    finally:
        api.clear_providers()


def test_a_source_that_never_loaded_is_an_error_not_stale() -> None:
    src = InMemorySource({}, name="mem")
    flags = Flags(src, start=False)
    provider = openfeature_provider(flags)
    api.set_provider(provider, domain="never")
    client = api.get_client(domain="never")
    events: list[str] = []
    client.add_handler(ProviderEvent.PROVIDER_ERROR, lambda d: events.append("error"))
    client.add_handler(ProviderEvent.PROVIDER_STALE, lambda d: events.append("stale"))
    events.clear()
    try:
        flags._source_error(0, "unreachable", "down")  # before it ever delivered anything
        assert wait_for(lambda: events == ["error"])
        assert flags.health().value == "error"
    finally:
        api.clear_providers()
