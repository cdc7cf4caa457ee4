"""A real watched file: write, atomic rename, corrupt, fix; and pollers restarting after fork."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from resilience.flags import FileSource, Flags

from .waiting import wait_for


def doc(on: bool, timeout: float = 0.5) -> str:
    return json.dumps({"flags": {"a": {"on": on}, "ratings.timeout": {"value": timeout}}})


@pytest.fixture
def watched(tmp_path: Path) -> Iterator[tuple[Flags, Path]]:
    path = tmp_path / "flags.json"
    path.write_text(doc(False))
    flags = Flags(FileSource(path, interval=0.02))
    yield flags, path
    flags.close()


def bump_mtime(path: Path) -> None:
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10_000_000))


def test_write_rename_corrupt_fix(watched: tuple[Flags, Path]) -> None:
    flags, path = watched
    changes: list[str] = []
    flags.on_change("a", lambda c: changes.append(str(c.new.on if c.new else None)))
    assert flags.enabled("a") is False

    path.write_text(doc(True))  # rewrite in place
    bump_mtime(path)
    assert wait_for(lambda: flags.enabled("a"))

    tmp = path.with_suffix(".tmp")  # atomic replace: a new inode
    tmp.write_text(doc(False, timeout=0.25))
    os.replace(tmp, path)
    assert wait_for(lambda: flags.value("ratings.timeout", 1.0) == 0.25)
    assert flags.enabled("a") is False

    path.write_text('{"flags": {"a": {"on": tru')  # corrupt: the last good state stays
    bump_mtime(path)
    assert wait_for(lambda: flags.status()["sources"][0]["errors"].get("parse") == 1)
    assert flags.enabled("a") is False and flags.value("ratings.timeout", 1.0) == 0.25

    path.write_text(doc(True))  # fixed
    bump_mtime(path)
    assert wait_for(lambda: flags.enabled("a"))
    # listeners are called after the new state is in force: wait for the last call as well
    assert wait_for(lambda: len(changes) >= 3)
    assert changes == ["True", "False", "True"]
    assert flags.status()["sources"][0]["updates"] == 4


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_the_poller_restarts_in_a_forked_child(watched: tuple[Flags, Path]) -> None:
    flags, path = watched
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: only this thread survived the fork; the watcher must be back
        code = 1
        try:
            os.close(read_end)
            path.write_text(doc(True))
            bump_mtime(path)
            code = 0 if wait_for(lambda: flags.enabled("a")) else 2
        finally:
            os.write(write_end, str(code).encode())
            os._exit(code)
    os.close(write_end)
    _, status = os.waitpid(pid, 0)
    reported = os.read(read_end, 10)
    os.close(read_end)
    assert reported == b"0" and os.waitstatus_to_exitcode(status) == 0
    assert wait_for(lambda: flags.enabled("a"))  # the parent's watcher sees it too
