"""``resilience flags ...`` against a real etcd, as an operator would type it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from .etcd_support import EtcdCluster, cluster

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def etcd() -> Iterator[EtcdCluster]:
    with cluster(1) as c:
        yield c


def cli(etcd: EtcdCluster, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "resilience.cli", "flags", *args,
           "--etcd", etcd.endpoints[0], "--prefix", "/cli/flags/"]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, timeout=30, env=dict(os.environ))


def test_list_get_set_delete_history(etcd: EtcdCluster) -> None:
    assert json.loads(cli(etcd, "list").stdout) == {}
    assert cli(etcd, "get", "kill").returncode == 1
    bad = cli(etcd, "set", "kill", '{"on": "yes"}')
    assert bad.returncode == 2 and "flags.kill.on" in bad.stderr
    done = cli(etcd, "set", "kill", '{"on": true}', "--actor", "alice", "--revision", "0")
    assert done.returncode == 0, done.stderr
    revision = json.loads(done.stdout)["revision"]
    got = json.loads(cli(etcd, "get", "kill").stdout)
    assert got == {"name": "kill", "spec": {"on": True}, "revision": revision}
    stale = cli(etcd, "set", "kill", '{"on": false}', "--revision", "1")
    assert stale.returncode == 1 and "changed meanwhile" in stale.stderr
    assert cli(etcd, "delete", "kill", "--actor", "bob").returncode == 0
    assert cli(etcd, "delete", "kill").returncode == 1
    history = json.loads(cli(etcd, "history", "kill").stdout)
    assert [(h["who"], h["action"]) for h in history] == [("alice", "write"), ("bob", "delete")]
    down = subprocess.run(
        [sys.executable, "-m", "resilience.cli", "flags", "list", "--etcd", "http://127.0.0.1:9"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert down.returncode == 3 and "no endpoint answered" in down.stderr
