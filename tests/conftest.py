"""Shared fixtures: a fresh default registry per test, and finding real servers.

``RESILIENCE_REQUIRE_SERVICES=1`` (set by .ci/run) turns "server not found, skip" into a failure,
so CI can never go green by skipping the integration tests.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings

from resilience import testing
from resilience.circuit import Registry
from tests.support import REQUIRE_SERVICES  # noqa: F401  (re-exported for plugins)

# Property tests judge behaviour, not speed: a loaded CI machine must not fail them for being
# slow to generate examples.
settings.register_profile("resilience", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("resilience")


@pytest.fixture(autouse=True)
def fresh_registry() -> Iterator[Registry]:
    """Every test gets its own default registry, so dependency names never leak across tests."""
    with testing.isolated_registry() as reg:
        yield reg
