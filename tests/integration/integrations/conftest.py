"""FIT state is process-wide: every test starts and ends with it off; servers are stopped."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from resilience import fit

from .servers import servers  # noqa: F401  (the fixture)

SECRET = "integrations-secret"


@pytest.fixture(autouse=True)
def fit_off() -> Iterator[None]:
    fit.disable()
    fit.stats.reset()
    yield
    fit.disable()
    fit.stats.reset()
