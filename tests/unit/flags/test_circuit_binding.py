"""Circuits driven by flags: forced states and policy fields, with bad values refused."""

from __future__ import annotations

import pytest

from resilience.circuit import Registry, State
from resilience.errors import CircuitOpenError, ConfigError
from resilience.flags import Flags, InMemorySource


def ok() -> str:
    return "ok"


def test_a_flag_forces_the_circuit_open_and_auto_resets_it(fresh_registry: Registry) -> None:
    dep = fresh_registry.dependency("ratings", isolation="semaphore")
    src = InMemorySource({"circuits.ratings.forced": {"value": "open"}})
    flags = Flags(src)
    flags.bind_circuit("ratings")
    assert dep.state is State.FORCED_OPEN
    with pytest.raises(CircuitOpenError):
        dep.call(ok)
    src.update({"circuits.ratings.forced": {"value": "closed"}})
    assert dep.state is State.FORCED_CLOSED
    src.update({"circuits.ratings.forced": {"value": "auto"}})
    assert dep.state is State.CLOSED and dep.call(ok) == "ok"
    flags.set("circuits.ratings.forced", "open")
    assert dep.state is State.FORCED_OPEN
    flags.clear("circuits.ratings.forced")
    assert dep.state is State.CLOSED


def test_a_circuit_forced_by_other_means_is_left_alone(fresh_registry: Registry) -> None:
    flags = Flags(InMemorySource({}))
    flags.bind_circuit("ratings")
    dep = fresh_registry.dependency("ratings")
    dep.force_open()
    flags.set("circuits.ratings.timeout", 0.2)
    assert dep.state is State.FORCED_OPEN


def test_policy_fields_follow_flags_and_fall_back_to_the_declared_policy(
    fresh_registry: Registry,
) -> None:
    dep = fresh_registry.dependency("ratings", timeout=0.5, pool_size=4)
    src = InMemorySource({"circuits.ratings.timeout": {"value": 0.1}})
    flags = Flags(src)
    flags.bind_circuit("ratings", pool_size="ops.ratings.pool", failure_rate=None)
    assert dep.policy.timeout == 0.1
    flags.set("ops.ratings.pool", 8)
    assert dep.policy.pool_size == 8
    flags.set("circuits.ratings.failure_rate", 0.9)  # not bound
    assert dep.policy.failure_rate == 0.5
    src.update({})
    assert dep.policy.timeout == 0.5


def test_invalid_values_are_refused_and_the_last_good_policy_stays(
    fresh_registry: Registry,
) -> None:
    dep = fresh_registry.dependency("ratings")
    src = InMemorySource({"circuits.ratings.timeout": {"value": 0.3}})
    flags = Flags(src)
    binding = flags.bind_circuit("ratings")
    with pytest.raises(ConfigError):
        flags.set("circuits.ratings.timeout", -1.0)
    with pytest.raises(ConfigError):
        flags.set("circuits.ratings.forced", "sideways")
    assert src.update({"circuits.ratings.timeout": {"value": 0.0}}) is False
    assert dep.policy.timeout == 0.3
    assert flags.status()["sources"][0]["errors"] == {"invalid": 1}
    # a combination only the policy can judge: slow_call_rate needs slow_call_duration, so a
    # flag whose type the validators accept can still be refused by update_policy.
    flags.set("circuits.ratings.pool_size", 3)
    assert dep.policy.pool_size == 3
    assert binding.rejected == 0


def test_a_value_present_before_binding_that_the_policy_refuses_is_counted(
    fresh_registry: Registry,
) -> None:
    dep = fresh_registry.dependency("ratings")
    flags = Flags(
        InMemorySource(
            {
                "circuits.ratings.timeout": {"value": "fast"},
                "circuits.ratings.forced": {"value": "sideways"},
            }
        )
    )
    binding = flags.bind_circuit("ratings")
    assert binding.rejected == 2
    assert dep.policy.timeout == 1.0 and dep.state is State.CLOSED
    assert flags.status()["bindings"][0]["rejected"] == 2
    binding.close()
    assert flags.bindings == []
