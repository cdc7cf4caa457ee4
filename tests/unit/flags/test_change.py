"""The core both admin faces share: reading a change request, where a change goes, refusals."""

from __future__ import annotations

from typing import Any

import pytest

from resilience.circuit import Registry
from resilience.flags import Flags, InMemorySource
from resilience.flags._change import (
    Change,
    ChangeRequest,
    Refusal,
    actor_name,
    change_flag,
    clear_flag,
    read_request,
)


@pytest.mark.parametrize(
    ("body", "query", "words"),
    [
        ([1], {}, "body must be"),
        ({}, {}, "body must be"),
        ({"value": 1, "flag": {}}, {}, "body must be"),
        ({"value": 1, "who": "me"}, {}, "only"),
        ({"flag": [1]}, {}, "flag must be an object"),
        ({"value": 1, "revision": True}, {}, "revision"),
        ({"value": 1, "revision": -1}, {}, "revision"),
        ({"value": 1, "revision": "3"}, {}, "revision"),
        ({"value": 1}, {"revision": "x"}, "revision"),
        ({"value": 1}, {"target": "fleet"}, "target"),
        (None, {"revision": "1.5"}, "revision"),
    ],
)
def test_bad_requests_are_refused_as_invalid(body: Any, query: dict[str, str], words: str) -> None:
    refused = read_request(body, query)
    assert isinstance(refused, Refusal)
    assert (refused.kind, refused.status) == ("invalid", 400) and words in refused.message
    assert refused.body() == {"error": refused.message, "status": 400}


def test_requests_read_from_body_and_query() -> None:
    asked = read_request({"value": False, "create": True, "revision": 7}, {"target": "source"})
    assert asked == ChangeRequest(
        has_value=True, value=False, target="source", create=True, revision=7
    )
    asked = read_request({"flag": {"on": True}}, {"create": "1"})
    assert asked == ChangeRequest(spec={"on": True}, create=True)
    assert read_request(None, {"revision": "12", "target": "override"}) == ChangeRequest(
        target="override", revision=12
    )


def test_actor_names_are_bounded_and_always_encodable() -> None:
    assert actor_name(None, "admin") == "admin"
    assert actor_name("  ", "admin") == "admin"
    assert actor_name(" alice ", "admin") == "alice"
    assert len(actor_name("x" * 1000, "admin")) == 200
    # header bytes that were not UTF-8 arrive as lone surrogates
    assert actor_name("b\udcffob", "admin").encode() == b"b?ob"


def test_without_a_writable_source_changes_are_overrides(fresh_registry: Registry) -> None:
    with Flags(InMemorySource({"kill": {"on": False}}), registry=fresh_registry) as flags:
        done = change_flag(flags, "kill", ChangeRequest(has_value=True, value=True), actor="a")
        assert done == Change(
            name="kill", action="set", target="override", revision=None,
            old={"on": False}, new={"on": True},
        )  # fmt: skip
        assert flags.enabled("kill") is True
        missing = change_flag(flags, "kil", ChangeRequest(has_value=True, value=True), actor="a")
        assert isinstance(missing, Refusal) and missing.status == 404
        bad = change_flag(flags, "kill", ChangeRequest(has_value=True, value="yes"), actor="a")
        assert isinstance(bad, Refusal) and bad.status == 400 and flags.enabled("kill")
        source = change_flag(
            flags, "kill", ChangeRequest(has_value=True, value=False, target="source"), actor="a"
        )
        assert isinstance(source, Refusal) and "writable" in source.message
        cleared = clear_flag(flags, "kill", ChangeRequest(), actor="a")
        assert isinstance(cleared, Change) and (cleared.action, cleared.changed) == ("clear", True)
        again = clear_flag(flags, "kill", ChangeRequest(), actor="a")
        assert isinstance(again, Change) and again.changed is False
        unknown = clear_flag(flags, "kil", ChangeRequest(), actor="a")
        assert isinstance(unknown, Refusal) and unknown.status == 404
        assert flags.enabled("kill") is False
