"""Hostile documents: alias bombs, oversized and deeply nested files keep the last good state."""

from __future__ import annotations

import time
from pathlib import Path

from resilience.flags import FileSource, Flags

BOMB = """\
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
flags: {kill: {value: *i}}
"""


def test_a_yaml_alias_bomb_is_refused_fast_and_the_last_good_stays(tmp_path: Path) -> None:
    path = tmp_path / "flags.yaml"
    path.write_text("flags: {kill: {on: true}}\n")
    src = FileSource(path, watch=False)
    flags = Flags(src)
    path.write_text(BOMB)
    t0 = time.perf_counter()
    assert src.refresh() is False
    assert time.perf_counter() - t0 < 1.0
    st = flags.status()
    assert st["sources"][0]["errors"] == {"parse": 1}
    assert "aliases expand" in st["sources"][0]["last_error"]
    assert flags.enabled("kill") is True
    assert len(str(st)) < 10_000


def test_modest_aliases_are_fine(tmp_path: Path) -> None:
    path = tmp_path / "flags.yaml"
    # a document's only key is "flags": anchors live inside it
    path.write_text(
        "flags:\n  a: {on: true, rules: [&kr {attr: country, in: [KR], on: true}]}\n"
        "  b: {on: true, rules: [*kr]}\n"
    )
    flags = Flags(FileSource(path, watch=False))
    assert flags.enabled("b", attrs={"country": "KR"}) is True


def test_an_oversized_file_is_refused_without_reading_it(tmp_path: Path) -> None:
    path = tmp_path / "flags.json"
    path.write_text('{"flags": {"kill": {"on": true}}}')
    src = FileSource(path, watch=False, max_bytes=1024)
    flags = Flags(src)
    path.write_text('{"flags": {"kill": {"on": false}, "pad": {"value": "' + "x" * 2000 + '"}}}')
    assert src.refresh() is False
    assert flags.status()["sources"][0]["errors"] == {"too_large": 1}
    assert flags.enabled("kill") is True


def test_deep_nesting_is_a_parse_error(tmp_path: Path) -> None:
    path = tmp_path / "flags.json"
    path.write_text('{"flags": {"kill": {"on": true}}}')
    src = FileSource(path, watch=False)
    flags = Flags(src)
    path.write_text('{"flags": {"kill": {"value": ' + "[" * 50_000 + "]" * 50_000 + "}}}")
    assert src.refresh() is False
    assert flags.status()["sources"][0]["errors"] == {"parse": 1}
    assert flags.enabled("kill") is True
