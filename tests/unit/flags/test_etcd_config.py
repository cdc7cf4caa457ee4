"""EtcdSource and its client without a server: configuration errors, key ranges, redaction."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from resilience.errors import ConfigError
from resilience.flags import EtcdSource
from resilience.flags._backup import Backup
from resilience.flags._etcd_client import EtcdClient, prefix_end
from resilience.flags._redact import Redactor, redact_url, url_secrets


def test_prefix_end_covers_exactly_the_prefix() -> None:
    assert prefix_end(b"/flags/") == b"/flags0"
    assert prefix_end(b"a\xff") == b"b"
    assert prefix_end(b"\xff\xff") == b"\0"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"endpoints": []}, "endpoints"),
        ({"endpoints": "http://127.0.0.1:2379"}, "endpoints"),
        ({"endpoints": ["ftp://host:1"]}, "endpoints"),
        ({"prefix": ""}, "prefix"),
        ({"check_interval": 0}, "check_interval"),
        ({"username": "root"}, "username"),
        ({"audit_prefix": "/resilience/flags/audit/"}, "audit_prefix"),
        ({"timeout": -1}, "timeout"),
    ],
)
def test_bad_settings_name_their_field(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError) as info:
        EtcdSource(**kwargs)  # type: ignore[arg-type]
    assert info.value.field == field


def test_the_password_never_shows_in_a_repr_or_an_endpoint_error() -> None:
    client = EtcdClient(["http://127.0.0.1:2379"], username="root", password="s3cr3t-pw")
    assert "s3cr3t-pw" not in repr(client)
    with pytest.raises(ConfigError) as info:
        EtcdClient(["gopher://root:s3cr3t-pw@host:1"])
    assert "s3cr3t-pw" not in str(info.value)


def test_urls_are_redacted_and_secrets_found() -> None:
    url = "https://ops:pw%21x@flags.example/doc?env=prod&access_token=abc123&sig=zz9"
    assert redact_url(url) == "https://ops:***@flags.example/doc?env=prod&access_token=***&sig=***"
    assert {"pw!x", "abc123", "zz9"} <= set(url_secrets(url))
    redact = Redactor(url_secrets(url))
    assert redact(f"GET {url} failed") == f"GET {redact_url(url)} failed"
    assert redact("auth as ops with pw!x refused") == "auth as ops with *** refused"


def test_the_backup_round_trips_and_ignores_a_broken_file(tmp_path: Path) -> None:
    path = tmp_path / "backup.json"
    backup = Backup(path, min_interval=0.01)
    assert backup.load() is None
    backup.save(lambda: {"flags": {"kill": {"on": True}}, "revision": 7})
    backup.stop()
    assert backup.load() == {"flags": {"kill": {"on": True}}, "revision": 7}
    path.write_text("{oops")
    assert backup.load() is None and backup.last_error is not None
    path.write_text(json.dumps({"flags": []}))
    assert backup.load() is None
