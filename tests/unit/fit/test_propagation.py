"""The carrier core: host policy, acknowledgements, the max_active cap, the server request."""

from __future__ import annotations

import pytest

from resilience import current_scope, protect
from resilience.context import FIT
from resilience.errors import ConfigError
from resilience.fit import (
    ACK_HEADER,
    HEADER,
    PRIVATE_NETWORKS,
    HostPolicy,
    Recipe,
    absorb_ack,
    active_requests,
    current_tag,
    decode_ack,
    enable,
    encode_ack,
    inject,
    outgoing_headers,
    server_request,
    sign_tag,
    stats,
    tag_counts,
)

SECRET = "unit-secret"
RECIPE = Recipe.from_dict({"name": "db-down", "faults": [{"dependency": "db", "error": True}]})


def test_default_policy_is_the_services_own_network() -> None:
    policy = HostPolicy()
    assert policy.entries == PRIVATE_NETWORKS
    for host in (
        "127.0.0.1", "http://127.0.0.2:8080/x", "localhost", "api.localhost", "10.1.2.3",
        "172.20.0.1", "192.168.1.1:443", "[::1]:80", "http://[fd00::1]/", "::ffff:10.0.0.1",
    ):  # fmt: skip
        assert policy.allows(host), host
    for host in (
        "8.8.8.8", "https://api.third-party.example/v1", "ratings", "172.32.0.1",
        "169.254.169.254", "http://10.0.0.1@evil.example/", "http://[::1", "", None,
    ):  # fmt: skip
        assert not policy.allows(host), host


def test_policy_entries() -> None:
    policy = HostPolicy(["ratings", "*.svc.cluster.local", "203.0.113.0/24", "2001:db8::1"])
    assert policy.allows("http://ratings:8080/") and policy.allows("a.b.svc.cluster.local")
    assert policy.allows("203.0.113.7") and policy.allows("[2001:db8::1]:443")
    assert not policy.allows("svc.cluster.local.evil.example")
    assert not policy.allows("127.0.0.1")  # the default is replaced, not extended
    assert HostPolicy(["*"]).allows("anything.example")
    for bad in ("ratings", ["a b"], ["*.*.x"], [""], [3]):
        with pytest.raises(ConfigError) as info:
            HostPolicy(bad)  # type: ignore[arg-type]
        assert info.value.field == "propagate_to"


def test_ack_round_trip_and_strict_parsing() -> None:
    record = {("cache.profile:a", "isolated"): 2, ("ratings", "error"): 0}
    value = encode_ack("ratings-down", record)
    assert value == "recipe=ratings-down; injected=cache.profile%3Aa:isolated=2,ratings:error=0"
    ack = decode_ack(value)
    assert ack is not None and ack.recipe == "ratings-down" and ack.record == record
    assert decode_ack("recipe=r; injected=") is not None
    for bad in (None, "", "garbage", "recipe=r", "recipe=r; injected=a:error=x", "x" * 9000):
        assert decode_ack(bad) is None, bad


def test_server_request_scopes_a_tagged_request_and_acknowledges_it() -> None:
    enable(secret=SECRET)
    db = protect("db", isolation="semaphore", fallback="fb")(lambda: "rows")
    with server_request(sign_tag(RECIPE, secret=SECRET)) as request:
        assert current_scope() is not None and FIT.get() is request.context
        assert db() == "fb"
        assert current_tag() is not None
        assert outgoing_headers("http://127.0.0.1:1/") == {HEADER: current_tag()}
        assert outgoing_headers("https://third-party.example/") == {}
        absorb_ack("recipe=db-down; injected=next.db:status=3")
        absorb_ack("recipe=other; injected=x:error=9")  # another recipe's: ignored
        ack = decode_ack(request.ack())
        assert ack is not None and ack.record == {("db", "error"): 1, ("next.db", "status"): 3}
        assert active_requests() == 1
    assert FIT.get() is None and current_scope() is None and active_requests() == 0
    with server_request(None) as untagged:
        assert untagged.context is None and untagged.ack() is None and current_scope() is not None
        carrier: dict[str, str] = {}
        assert not inject(carrier, dict.__setitem__, "127.0.0.1") and carrier == {}
    assert tag_counts() == {"accepted": 1}


def test_max_active_caps_tagged_requests_and_counts_the_rest() -> None:
    enable(secret=SECRET, max_active=2)
    tag = sign_tag(RECIPE, secret=SECRET)
    first, second, third = server_request(tag), server_request(tag), server_request(tag)
    with first, second:
        with third:
            assert third.context is None and FIT.get() is None  # runs untagged
            assert third.ack() is None
        assert active_requests() == 2
    with server_request(tag) as again:  # slots come back when requests end
        assert again.context is not None
    assert tag_counts() == {"accepted": 3, "over_limit": 1}
    families = {f.name: f for f in stats.collect_metrics()}
    samples = {s.labels["result"]: s.value for s in families["resilience_fit_tags"].samples}
    assert samples == {"accepted": 3.0, "over_limit": 1.0}


def test_a_failing_request_gives_its_slot_back() -> None:
    enable(secret=SECRET, max_active=1)
    tag = sign_tag(RECIPE, secret=SECRET)
    with pytest.raises(KeyboardInterrupt), server_request(tag):
        raise KeyboardInterrupt
    assert active_requests() == 0


def test_enable_validates_its_arguments() -> None:
    for kwargs, field in (
        ({"max_active": 0}, "max_active"),
        ({"bulkhead_share": 0}, "bulkhead_share"),
        ({"bulkhead_share": 1.5}, "bulkhead_share"),
        ({"propagate_to": "10.0.0.0/8"}, "propagate_to"),
    ):
        with pytest.raises(ConfigError) as info:
            enable(secret=SECRET, **kwargs)  # type: ignore[arg-type]
        assert info.value.field == field
    config = enable(secret=SECRET, bulkhead_share=0.25)
    assert config.bulkhead_share == 0.25 and config.max_active == 100
    with server_request(sign_tag(RECIPE, secret=SECRET)) as request:
        assert request.context is not None and request.context.bulkhead_share == 0.25
    assert ACK_HEADER == "X-Resilience-FIT-Ack"


def test_verified_tags_are_remembered_but_still_expire_and_follow_the_keys() -> None:
    from resilience.fit import activate, disable
    from resilience.testing import FakeClock

    clock = FakeClock(1_000_000.0)
    enable(secret=SECRET, clock=clock)
    tag = sign_tag(RECIPE, secret=SECRET, ttl=60, now=clock())
    assert activate(tag) is not None and activate(tag) is not None
    enable(secret="another-secret", clock=clock)
    assert activate(tag) is None  # verified under the old key only
    enable(secret=SECRET, clock=clock)
    assert activate(tag) is not None
    clock.advance(61)
    assert activate(tag) is None  # remembered, yet expired
    disable()
    assert activate(tag) is None
    assert tag_counts() == {"accepted": 3, "expired": 1, "bad_signature": 1, "disabled": 1}
