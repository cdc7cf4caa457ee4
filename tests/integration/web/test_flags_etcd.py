"""The admin app's /flags routes over a real etcd: a change goes to the fleet and says so.

The admin app is served on loopback (``serve_admin``), driven over real HTTP; the fleet is a real
etcd (the flag tests' servers) and another process watching the same prefix.
"""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from resilience.circuit import Registry
from resilience.flags import EtcdSource, Flags, InMemorySource
from resilience.web import AdminServer, serve_admin
from tests.integration.flags.etcd_support import CuttableProxy, EtcdCluster, cluster
from tests.support import free_port

pytestmark = pytest.mark.integration

TOKEN = "web2-token"
KILL = "kill-recommendations"


@pytest.fixture(scope="module")
def etcd() -> Iterator[EtcdCluster]:
    with cluster(1) as c:
        yield c


@pytest.fixture
def prefix() -> str:
    return f"/web2-{uuid.uuid4().hex[:12]}/flags/"


def call(
    server: AdminServer,
    method: str,
    path: str,
    body: Any = None,
    actor: str | None = None,
) -> tuple[int, Any]:
    """One request to the admin app with the token: (status, JSON answer)."""
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    if actor is not None:
        headers["X-Resilience-Actor"] = actor
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(server.url + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=15) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


@pytest.fixture
def fleet(
    etcd: EtcdCluster, prefix: str, fresh_registry: Registry
) -> Iterator[tuple[AdminServer, Flags, EtcdSource]]:
    """A service whose flags come from a built-in default, then etcd; its admin app served."""
    src = EtcdSource(etcd.endpoints, prefix, check_interval=0.2)
    flags = Flags(InMemorySource({KILL: {"on": False}}), src, registry=fresh_registry)
    assert flags.ready(10)
    with serve_admin(port=free_port(), flags=flags, token=TOKEN, interval=0.2) as server:
        yield server, flags, src
    flags.close()


class Watcher:
    """Another process of the fleet: a Flags watching the prefix, printing what it sees."""

    def __init__(self, etcd: EtcdCluster, prefix: str) -> None:
        cmd = [sys.executable, "-m", "tests.integration.flags.etcd_watcher", prefix]
        self.proc = subprocess.Popen(
            [*cmd, *etcd.endpoints], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        assert self.next() == "ready"

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.strip())

    def next(self, timeout: float = 15.0) -> str:
        """The next line the process printed (a test waiting on it never hangs)."""
        try:
            return self.lines.get(timeout=timeout)
        except queue.Empty:
            return "(nothing)"

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(10)


def test_a_write_through_the_admin_app_reaches_another_process(
    fleet: tuple[AdminServer, Flags, EtcdSource], etcd: EtcdCluster, prefix: str
) -> None:
    server, flags, src = fleet
    watcher = Watcher(etcd, prefix)
    try:
        status, answer = call(server, "POST", f"flags/{KILL}", {"value": True}, actor="alice")
        assert status == 200, answer
        # the answer says where it went: the store, at which revision
        assert (answer["target"], answer["action"]) == (src.name, "write")
        assert answer["writes_to"] == src.name
        assert answer["revision"] == src.get(KILL)[1] > 0
        assert src.get(KILL)[0] == {"on": True}
        # ...and answers once this process sees it too
        here = answer["flags"][KILL]
        assert (here["value"], here["source"], here["version"]) == (
            True,
            src.name,
            answer["revision"],
        )
        assert flags.enabled(KILL) is True
        assert watcher.next() == f'{KILL} {{"on": true}}'  # another process sees it
        assert [(h.who, h.action) for h in src.history(KILL)] == [("alice", "write")]

        # a name no source knows is a typo until the caller says to create it
        status, answer = call(server, "POST", "flags/ratings.timeout", {"value": 0.4})
        assert status == 404 and "create" in answer["error"]
        assert src.get("ratings.timeout") == (None, 0)
        body = {"value": 0.4, "create": True}
        status, answer = call(server, "POST", "flags/ratings.timeout", body)
        assert status == 200 and answer["target"] == src.name
        assert watcher.next() == 'ratings.timeout {"type": "float", "value": 0.4}'
        # the actor defaults to "admin" when the caller does not name one
        assert src.history("ratings.timeout")[0].who == "admin"

        # DELETE removes it fleet-wide: the built-in default shows through again
        status, answer = call(server, "DELETE", f"flags/{KILL}", actor="alice")
        assert status == 200, answer
        assert (answer["target"], answer["action"]) == (src.name, "delete")
        assert answer["flags"][KILL]["source"] == "memory"
        assert src.get(KILL) == (None, 0) and flags.enabled(KILL) is False
        assert watcher.next() == f"{KILL} null"
        status, answer = call(server, "DELETE", f"flags/{KILL}")  # not in etcd any more
        assert status == 404 and src.name in answer["error"]
    finally:
        watcher.close()


def test_an_override_when_asked_stays_in_this_process(
    fleet: tuple[AdminServer, Flags, EtcdSource],
) -> None:
    server, flags, src = fleet
    status, answer = call(server, "POST", f"flags/{KILL}?target=override", {"value": True})
    assert status == 200, answer
    assert (answer["target"], answer["revision"], answer["action"]) == ("override", None, "set")
    assert flags.enabled(KILL) is True and answer["overrides"] == [KILL]
    assert src.read_all() == {}  # nothing went to the fleet
    status, answer = call(server, "DELETE", f"flags/{KILL}?target=override")
    assert status == 200 and (answer["target"], answer["changed"]) == ("override", True)
    assert flags.enabled(KILL) is False and flags.overrides() == {}


def test_without_a_writable_source_a_write_is_an_override(fresh_registry: Registry) -> None:
    flags = Flags(InMemorySource({KILL: {"on": False}}), registry=fresh_registry)
    try:
        with serve_admin(port=free_port(), flags=flags, token=TOKEN) as server:
            status, answer = call(server, "POST", f"flags/{KILL}", {"value": True})
            assert status == 200, answer
            assert (answer["target"], answer["revision"]) == ("override", None)
            assert answer["writes_to"] is None and flags.enabled(KILL) is True
            # asking for the fleet-wide store where there is none: refused, not an override
            status, answer = call(server, "POST", f"flags/{KILL}?target=source", {"value": False})
            assert status == 400 and "writable" in answer["error"]
            assert flags.enabled(KILL) is True
            status, answer = call(server, "DELETE", f"flags/{KILL}")
            assert status == 200 and (answer["target"], answer["action"]) == ("override", "clear")
            assert flags.enabled(KILL) is False
    finally:
        flags.close()


def test_a_stale_revision_is_409_and_overwrites_nothing(
    fleet: tuple[AdminServer, Flags, EtcdSource], etcd: EtcdCluster, prefix: str
) -> None:
    server, flags, src = fleet
    status, answer = call(server, "POST", f"flags/{KILL}", {"value": True}, actor="alice")
    assert status == 200
    seen = answer["revision"]
    # another operator, through another process, changes it meanwhile
    other = EtcdSource(etcd.endpoints, prefix)
    now = other.write(KILL, {"on": False}, actor="bob").revision
    assert src.wait_revision(now, 10)

    status, answer = call(server, "POST", f"flags/{KILL}", {"value": True, "revision": seen})
    assert status == 409, answer
    # the refusal carries what is there now, so the caller can decide again
    assert answer["revision"] == now
    assert (answer["flag"]["spec"], answer["flag"]["version"]) == ({"on": False}, now)
    status, answer = call(server, "DELETE", f"flags/{KILL}?revision={seen}")
    assert status == 409 and answer["revision"] == now
    assert src.get(KILL) == ({"on": False}, now)  # bob's write stands
    assert flags.enabled(KILL) is False
    assert [h.who for h in src.history(KILL)] == ["alice", "bob"]

    status, answer = call(server, "POST", f"flags/{KILL}", {"value": True, "revision": now})
    assert status == 200 and answer["revision"] > now
    assert src.get(KILL)[0] == {"on": True}


def test_an_unreachable_store_is_503_and_changes_nothing(
    etcd: EtcdCluster, prefix: str, fresh_registry: Registry
) -> None:
    proxy = CuttableProxy(etcd.nodes[0].client_port)
    src = EtcdSource([proxy.url], prefix, timeout=1.0, check_interval=0.2, max_backoff=0.2)
    flags = Flags(InMemorySource({KILL: {"on": False}}), src, registry=fresh_registry)
    try:
        assert flags.ready(10)
        with serve_admin(port=free_port(), flags=flags, token=TOKEN) as server:
            proxy.cut()
            status, answer = call(server, "POST", f"flags/{KILL}", {"value": True})
            assert status == 503, answer
            assert answer["status"] == 503 and answer["error"]
            assert flags.enabled(KILL) is False and flags.overrides() == {}
    finally:
        flags.close()
        proxy.close()
    assert EtcdSource(etcd.endpoints, prefix).get(KILL) == (None, 0)
