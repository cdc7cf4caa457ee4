from __future__ import annotations

from collections.abc import Iterator

import pytest

from . import fakes


@pytest.fixture(autouse=True)
def fresh_servers() -> Iterator[None]:
    fakes.SERVERS.clear()
    fakes.EVENTS.clear()
    yield
    fakes.SERVERS.clear()
    fakes.EVENTS.clear()
