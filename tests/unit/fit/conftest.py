"""FIT state is process-wide (enabled keys, counters): every test starts and ends with it off."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from resilience import fit


@pytest.fixture(autouse=True)
def fit_off() -> Iterator[None]:
    fit.disable()
    fit.stats.reset()
    yield
    fit.disable()
    fit.stats.reset()
