"""Policy validation: every bad value is a ConfigError naming its field."""

from __future__ import annotations

from typing import Any

import pytest

from resilience import ConfigError, Policy, Retry, protect, registry


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("timeout", -1),
        ("timeout", 0),
        ("timeout", float("nan")),
        ("timeout", "1s"),
        ("failure_rate", 1.5),
        ("failure_rate", -0.1),
        ("slow_call_rate", 2.0),
        ("pool_size", 0),
        ("max_concurrent", 0),
        ("queue_size", -1),
        ("buckets", 0),
        ("min_calls", 0),
        ("half_open_calls", 0),
        ("window", 0),
        ("isolation", "process"),
        ("pool_size", True),
    ],
)
def test_invalid_values_name_the_field(field: str, value: Any) -> None:
    with pytest.raises(ConfigError) as info:
        Policy(**{field: value})
    assert info.value.field == field
    assert field in str(info.value)


def test_defaults_follow_hystrix() -> None:
    p = Policy()
    assert (p.timeout, p.window, p.buckets, p.min_calls, p.failure_rate) == (1.0, 10.0, 10, 20, 0.5)
    assert (p.open_duration, p.half_open_calls, p.pool_size, p.queue_size) == (5.0, 1, 10, 5)
    assert p.max_concurrent == 10 and p.isolation == "thread"


def test_slow_call_fields_go_together() -> None:
    with pytest.raises(ConfigError) as info:
        Policy(slow_call_duration=0.5)
    assert info.value.field == "slow_call_rate"


def test_zero_is_kept_not_replaced_by_a_default() -> None:
    assert Policy(failure_rate=0.0).failure_rate == 0.0
    assert Policy(open_duration=0.0).open_duration == 0.0


def test_unknown_option_is_named() -> None:
    with pytest.raises(ConfigError) as info:
        protect("x", timeoot=1.0)
    assert info.value.field == "timeoot"


@pytest.mark.parametrize(
    ("keyword", "value", "advice"),
    [
        ("timout", 0.5, "did you mean 'timeout' (a Policy field)?"),
        ("fallbak", [], "did you mean 'fallback' (a protect keyword)?"),
        ("retries", 3, "retry=Retry(attempts=3)"),
        ("igonre", KeyError, "did you mean 'ignore' (a protect keyword)?"),
        ("max_concurrency", 4, "did you mean 'max_concurrent' (a Policy field)?"),
    ],
)
def test_unknown_keywords_get_a_suggestion(keyword: str, value: Any, advice: str) -> None:
    with pytest.raises(ConfigError) as info:
        protect("x", **{keyword: value})
    assert info.value.field == keyword
    assert advice in str(info.value)
    assert len(registry()) == 0  # nothing registered by a refused decorator


def test_unknown_policy_field_in_a_lookup_gets_a_suggestion() -> None:
    with pytest.raises(ConfigError) as info:
        registry().dependency("x", min_call=3)
    assert info.value.field == "min_call" and "did you mean 'min_calls'?" in str(info.value)


@pytest.mark.parametrize("value", ["ValueError", ("ValueError",), [KeyError, "x"], 3])
def test_ignore_wants_exception_types(value: Any) -> None:
    with pytest.raises(ConfigError) as info:
        protect("x", ignore=value)
    assert info.value.field == "ignore"
    message = str(info.value)
    assert "exception types" in message and "('V', 'a'" not in message
    if value == "ValueError":
        assert "ignore=ValueError" in message and "not the string 'ValueError'" in message


def test_ignore_takes_a_type_a_tuple_or_a_list() -> None:
    for value in (KeyError, (KeyError, ValueError), [KeyError]):
        guard = protect("x", isolation="semaphore", ignore=value)(lambda: 1).__resilience_guard__
        assert KeyError in guard.ignore


def test_two_registrations_with_different_policies_name_the_fields() -> None:
    protect("ratings", timeout=0.5, pool_size=4)
    with pytest.raises(ConfigError) as info:
        protect("ratings", timeout=0.7, pool_size=5)
    assert "timeout" in str(info.value) and "pool_size" in str(info.value)
    # the same policy, or none stated, reuses the one dependency
    protect("ratings", timeout=0.5, pool_size=4)
    protect("ratings", fallback=[])
    assert len(registry()) == 1


def test_retry_validation() -> None:
    with pytest.raises(ConfigError) as info:
        Retry(attempts=0)
    assert info.value.field == "attempts"
    with pytest.raises(ConfigError) as info:
        Retry(on=(int,))  # type: ignore[arg-type]
    assert info.value.field == "on"
    assert Retry(on=ConnectionError).on == (ConnectionError,)


def test_policy_is_frozen() -> None:
    import attrs

    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        Policy().timeout = 3  # type: ignore[misc]


def test_a_bare_lookup_does_not_lock_in_the_default_policy() -> None:
    looked_up = registry().dependency("svc")  # e.g. a flag binding made before the decorator
    protect("svc", timeout=0.25, isolation="semaphore", max_concurrent=3)
    assert registry().dependency("svc") is looked_up
    assert looked_up.policy.timeout == 0.25 and looked_up.policy.isolation == "semaphore"
    assert looked_up.permits.limit == 3
    with pytest.raises(ConfigError):
        protect("svc", timeout=0.5)  # now declared: a different policy is an error
