"""serve_admin: the admin app on a background thread for sync services."""

from __future__ import annotations

import json
import socket
import urllib.request

import pytest

from resilience.circuit import Registry
from resilience.errors import ConfigError
from resilience.web import serve_admin


def test_serves_on_a_chosen_port_and_stops(fresh_registry: Registry) -> None:
    fresh_registry.dependency("ratings")
    server = serve_admin(port=0, interval=0.05)
    assert server.url == f"http://127.0.0.1:{server.port}/" and server.port > 0
    with urllib.request.urlopen(server.url + "dependencies", timeout=5) as resp:
        assert json.load(resp) == {"dependencies": ["ratings"]}
    stream = urllib.request.urlopen(server.url + "stream", timeout=5)
    assert stream.readline() == b"retry: 2000\n"
    server.stop()  # an open stream does not hold the shutdown up
    stream.close()
    with pytest.raises(OSError):
        urllib.request.urlopen(server.url + "dependencies", timeout=2)


def test_port_in_use_raises_in_the_caller() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(OSError):
            serve_admin(port=taken.getsockname()[1])


def test_bad_port() -> None:
    with pytest.raises(ConfigError) as info:
        serve_admin(port=70000)
    assert info.value.field == "port"
