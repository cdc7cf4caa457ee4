"""EtcdSource against real etcd: watch, bad values, deletes, writes with CAS and audit, compaction,
a backup file, separate processes, and members killed under a stream of writes."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from resilience.errors import ConfigError, FlagConflictError, FlagStoreError
from resilience.flags import EtcdSource, FlagChange, Flags, InMemorySource
from resilience.flags._etcd_client import EtcdClient, b64

from .etcd_support import CuttableProxy, EtcdCluster, cluster
from .waiting import wait_for

PREFIX = "/test/flags/"
pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def etcd() -> Iterator[EtcdCluster]:
    with cluster(1) as c:
        yield c


@pytest.fixture
def prefix(request: pytest.FixtureRequest) -> str:
    # one prefix per test: the module shares one etcd server
    return f"/t/{request.node.name}/{time.monotonic_ns()}/flags/"


def raw_put(client: EtcdClient, key: str, value: str | bytes) -> int:
    answer = client.call("/v3/kv/put", {"key": b64(key), "value": b64(value)})
    return int(answer["header"]["revision"])


def source(etcd: EtcdCluster, prefix: str, **options: Any) -> EtcdSource:
    options.setdefault("check_interval", 0.2)
    return EtcdSource(etcd.endpoints, prefix, **options)


def test_first_read_then_watch_bad_values_deletes_and_versions(
    etcd: EtcdCluster, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    client = etcd.client()
    raw_put(client, prefix + "kill", json.dumps({"on": False}))
    raw_put(client, prefix + "timeout", json.dumps({"value": 0.5}))
    raw_put(client, prefix + "broken", "{not json")
    base = InMemorySource({"timeout": {"value": 1.5}}, name="defaults")
    src = source(etcd, prefix)
    flags = Flags(base, src)
    try:
        assert flags.ready(10)
        assert flags.enabled("kill", default=True) is False
        assert flags.value("timeout", 0.0) == 0.5 and flags.source_of("timeout") == src.name
        assert "broken" not in flags  # unparsable at start: absent, and reported
        st = flags.status()["sources"][1]
        assert "broken" in st["flag_errors"] and st["errors"] == {"parse": 1}
        assert st["revision"] >= 3
        assert wait_for(lambda: flags.status()["sources"][1]["connected"])

        rev = raw_put(client, prefix + "kill", json.dumps({"on": True}))
        assert wait_for(lambda: flags.enabled("kill"))
        d = flags.details("kill", default=False)
        assert (d.source, d.version) == (src.name, rev)

        raw_put(client, prefix + "kill", json.dumps({"on": "maybe"}))  # invalid spec
        raw_put(client, prefix + "timeout", "[[[")  # not JSON
        raw_put(client, prefix + "fresh", json.dumps({"on": True}))  # the others still update
        assert wait_for(lambda: "fresh" in flags)
        assert flags.enabled("kill") is True and flags.value("timeout", 0.0) == 0.5
        st = flags.status()["sources"][1]
        assert set(st["flag_errors"]) == {"broken", "kill", "timeout"}
        assert st["errors"] == {"parse": 2, "invalid": 1}
        assert st["health"] == "stale"
        assert any("flag kill" in r.getMessage() for r in caplog.records)

        client.call("/v3/kv/deleterange", {"key": b64(prefix + "timeout")})
        assert wait_for(lambda: flags.source_of("timeout") == "defaults")
        assert flags.value("timeout", 0.0) == 1.5  # the earlier source shows through
        assert "timeout" not in flags.status()["sources"][1]["flag_errors"]
    finally:
        flags.close()


def test_write_validates_then_swaps_with_an_audit_trail(etcd: EtcdCluster, prefix: str) -> None:
    src = source(etcd, prefix)
    flags = Flags(src)
    try:
        assert flags.ready(10)
        with pytest.raises(ConfigError):
            flags.write("kill", {"on": "yes"}, actor="alice")
        assert src.get("kill") == (None, 0)  # nothing written

        first = flags.write("kill", {"on": True}, actor="alice")
        assert first.old is None and first.new == {"on": True} and first.target == src.name
        assert src.wait_revision(first.revision, 10) and flags.enabled("kill")
        second = flags.write_value("kill", False, actor="bob", revision=first.revision)
        with pytest.raises(FlagConflictError) as info:
            flags.write("kill", {"on": True}, actor="carol", revision=first.revision)
        assert (info.value.expected, info.value.actual) == (first.revision, second.revision)
        with pytest.raises(FlagConflictError):
            flags.write("new", {"on": True}, revision=5)  # 0 would mean "must not exist"
        gone = flags.remove("kill", actor="dave")
        assert gone is not None and gone.old == {"on": False}
        assert flags.remove("kill", actor="dave") is None
        assert wait_for(lambda: "kill" not in flags)

        history = src.history("kill")
        assert [(h.who, h.action, h.old, h.new) for h in history] == [
            ("alice", "write", None, {"on": True}),
            ("bob", "write", {"on": True}, {"on": False}),
            ("dave", "delete", {"on": False}, None),
        ]
        assert [h.revision for h in history] == [first.revision, second.revision, gone.revision]
        assert src.read_all() == {}
        # the audit trail lives beside the flags, never under their prefix
        assert not src.audit_prefix.startswith(prefix)
    finally:
        flags.close()


def test_a_compacted_revision_triggers_a_full_reload(etcd: EtcdCluster, prefix: str) -> None:
    proxy = CuttableProxy(etcd.nodes[0].client_port)
    client = etcd.client()
    raw_put(client, prefix + "a", json.dumps({"value": 1}))
    src = EtcdSource([proxy.url], prefix, check_interval=0.2, min_backoff=0.05, max_backoff=0.2)
    flags = Flags(src)
    seen: list[FlagChange] = []
    flags.on_change(None, seen.append)
    try:
        assert flags.ready(10) and flags.value("a", 0) == 1
        # ready() comes after the first read, before the watch is open: wait for it, so the cut
        # breaks a live watch, then until the source knows it lost it, so no write can reach it
        assert wait_for(lambda: src.connected)
        broken = src.reconnects
        proxy.cut()  # the watcher is cut off while the fleet moves on
        assert wait_for(lambda: src.reconnects > broken and not src.connected)
        raw_put(client, prefix + "a", json.dumps({"value": 2}))
        raw_put(client, prefix + "b", json.dumps({"on": True}))
        last = raw_put(client, prefix + "other", json.dumps({"on": True}))
        client.call("/v3/kv/deleterange", {"key": b64(prefix + "other")})
        client.compact(last + 1)
        proxy.restore()
        assert wait_for(lambda: flags.value("a", 0) == 2 and "b" in flags)
        assert "other" not in flags
        assert src.reloads >= 1  # only a compacted watch reloads

        # the listeners hear what the reload changed ("other" came and went unseen); they are
        # called after the new state is in force, so wait for them too
        def heard() -> set[tuple[str, Any, bool]]:
            return {(c.name, c.new and c.new.value, c.old is None) for c in seen}

        assert wait_for(lambda: {("a", 2, False), ("b", None, True)} <= heard())
        assert "other" not in {c.name for c in seen}
        assert wait_for(lambda: flags.status()["sources"][0]["connected"])
    finally:
        flags.close()
        proxy.close()


def test_a_backup_file_serves_the_last_good_state_marked_stale(
    etcd: EtcdCluster, prefix: str, tmp_path: Path
) -> None:
    backup = tmp_path / "flags-backup.json"
    src = source(etcd, prefix, backup_path=backup)
    flags = Flags(src)
    try:
        assert flags.ready(10)
        result = flags.write("kill", {"on": True}, actor="ops")
        assert src.wait_revision(result.revision, 10)
    finally:
        flags.close()  # writes what is pending
    assert json.loads(backup.read_text())["flags"] == {"kill": {"on": True}}

    dead = EtcdSource(["http://127.0.0.1:9"], prefix, backup_path=backup, min_backoff=0.05)
    offline = Flags(dead, ready_timeout=0.2, require=True)  # the backup counts as good
    try:
        assert offline.enabled("kill") is True
        assert offline.ready(0.2) is False  # no fresh read yet
        st = offline.status()
        assert st["sources"][0]["stale"] is True and st["health"] == "stale"
        assert wait_for(lambda: offline.status()["sources"][0]["errors"].get("unreachable", 0) > 0)
    finally:
        offline.close()


def test_etcd_down_at_start_does_not_block_and_require_refuses_to_run_blind() -> None:
    t0 = time.monotonic()
    flags = Flags(EtcdSource(["http://127.0.0.1:9"], PREFIX, min_backoff=0.05))
    try:
        assert time.monotonic() - t0 < 1.0
        assert flags.ready(0.3) is False
        assert flags.enabled("kill", default=True) is True
        with pytest.raises(ConfigError, match="no source produced a good document"):
            flags.ready(0.1, require=True)
    finally:
        flags.close()
    with pytest.raises(ConfigError):
        Flags(EtcdSource(["http://127.0.0.1:9"], PREFIX), require=True, ready_timeout=0.3)


def test_a_write_reaches_flags_in_separate_processes(etcd: EtcdCluster, prefix: str) -> None:
    cmd = [sys.executable, "-m", "tests.integration.flags.etcd_watcher", prefix, *etcd.endpoints]
    procs = [
        subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    try:
        for p in procs:
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        writer = EtcdSource(etcd.endpoints, prefix)
        writer.write("kill-recommendations", {"on": True}, actor="test")
        for p in procs:
            assert p.stdout is not None
            assert p.stdout.readline().split(" ", 1) == ["kill-recommendations", '{"on": true}\n']
    finally:
        for p in procs:
            assert p.stdin is not None
            p.stdin.close()
            p.wait(10)


class Writer:
    """Writes seq-0, seq-1, ... through every endpoint, retrying while the cluster elects."""

    def __init__(self, etcd: EtcdCluster, prefix: str) -> None:
        self.src = EtcdSource(etcd.endpoints, prefix, timeout=1.0)
        self.written: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        i = 0
        while not self.stop.is_set() and i < 400:
            name = f"seq-{i}"
            try:
                self.src.write(name, {"value": i}, actor="writer", revision=0)
            except FlagConflictError:
                pass  # an earlier try went through before its answer was lost
            except FlagStoreError:
                time.sleep(0.02)
                continue
            self.written.append(name)
            i += 1
            time.sleep(0.005)


def _writes_survive(etcd: EtcdCluster, prefix: str, disrupt: Any, endpoints: list[str]) -> None:
    src = EtcdSource(endpoints, prefix, check_interval=0.2, max_backoff=0.5)
    flags = Flags(src)
    writer = Writer(etcd, prefix)
    try:
        assert flags.ready(10)
        assert wait_for(lambda: src.connected)
        watched = src.status()["endpoint"]
        writer.thread.start()
        assert wait_for(lambda: len(writer.written) >= 20, 20)
        disrupt()
        count = len(writer.written)
        assert wait_for(lambda: len(writer.written) >= count + 30, 30)
        writer.stop.set()
        writer.thread.join(10)
        assert wait_for(lambda: all(n in flags for n in writer.written), 20), [
            n for n in writer.written if n not in flags
        ]
        assert src.reconnects >= 1
        if len(endpoints) > 1:  # the watch moved on to a member still alive
            assert src.status()["endpoint"] != watched
        assert src.status()["revision"] >= flags.details(writer.written[-1]).version
    finally:
        writer.stop.set()
        flags.close()


def test_killing_the_leader_of_three_loses_no_update() -> None:
    with cluster(3) as etcd:
        prefix = "/leader/flags/"

        leader = etcd.leader()
        # the watch starts on the leader, so killing it cuts the watch for sure
        endpoints = [leader.url] + [n.url for n in etcd.nodes if n is not leader]
        _writes_survive(etcd, prefix, leader.kill, endpoints)


def test_a_single_node_going_away_and_coming_back_loses_no_update(prefix: str) -> None:
    with cluster(1) as etcd:

        def bounce() -> None:
            node = etcd.nodes[0]
            node.kill()
            time.sleep(0.3)
            node.start()
            etcd.wait_healthy()

        _writes_survive(etcd, prefix, bounce, etcd.endpoints)


def test_secrets_never_reach_logs_status_or_errors(
    caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert_file, key_file, ca_file = tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "ca.pem"
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    ca.cert_pem.write_to_path(str(ca_file))
    password = "pa55-w0rd-xyzzy"
    caplog.set_level(logging.DEBUG)
    etcd = EtcdCluster(1, tls=(str(cert_file), str(key_file)))
    etcd.ca = str(ca_file)
    try:
        etcd.start()
        admin = etcd.client()
        for path, body in (
            ("/v3/auth/user/add", {"name": "root", "password": password}),
            ("/v3/auth/role/add", {"name": "root"}),
            ("/v3/auth/user/grant", {"user": "root", "role": "root"}),
            ("/v3/auth/enable", {}),
        ):
            admin.call(path, body)
        src = EtcdSource(etcd.endpoints, PREFIX, username="root", password=password,
                         ca_file=str(ca_file), check_interval=0.2)  # fmt: skip
        flags = Flags(src)
        try:
            assert flags.ready(10)
            flags.write("kill", {"on": True}, actor="ops")
            assert wait_for(lambda: flags.enabled("kill"))
            token = src.client._token
            assert token
            wrong = EtcdSource(etcd.endpoints, PREFIX, username="root", password=password + "!",
                               ca_file=str(ca_file))  # fmt: skip
            with pytest.raises(FlagStoreError) as info:
                wrong.write("kill", {"on": False})
            texts = [str(info.value), repr(src), repr(wrong), json.dumps(flags.status())]
        finally:
            flags.close()
        texts += [r.getMessage() for r in caplog.records]
        for text in texts:
            assert password not in text and token not in text
    finally:
        etcd.stop()
