"""The flag model and evaluation core: rules, rollouts, variants, validation, sticky buckets."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from resilience.errors import ConfigError
from resilience.flags import BUCKETS, Flag, Flags, InMemorySource, Reason, bucket, parse_document

KR_RULE = {"attr": "country", "in": ["KR", "JP"], "on": True}


def make(flags: dict[str, Any]) -> Flags:
    return Flags(InMemorySource(flags))


@pytest.mark.parametrize(
    ("spec", "key", "attrs", "expected", "reason"),
    [
        ({"on": True}, None, None, True, Reason.STATIC),
        ({"on": False}, "u1", {"country": "KR"}, False, Reason.DISABLED),
        ({"on": False, "rules": [KR_RULE]}, "u1", {"country": "KR"}, False, Reason.DISABLED),
        (
            {"on": True, "rules": [KR_RULE], "rollout": 0.0},
            "u1",
            {"country": "KR"},
            True,
            Reason.TARGETING_MATCH,
        ),
        (
            {"on": True, "rules": [KR_RULE], "rollout": 0.0},
            "u1",
            {"country": "US"},
            False,
            Reason.SPLIT,
        ),
        ({"on": True, "rules": [KR_RULE], "rollout": 1.0}, "u1", {}, True, Reason.SPLIT),
        ({"on": True, "rules": [KR_RULE]}, "u1", {"country": "DE"}, True, Reason.DEFAULT),
        (
            {"on": True, "rules": [{"attr": "country", "not_in": ["KR"], "on": False}]},
            None,
            {"country": "DE"},
            False,
            Reason.TARGETING_MATCH,
        ),
        (
            {"on": True, "rules": [{"attr": "country", "not_in": ["KR"], "on": False}]},
            None,
            {},
            True,
            Reason.DEFAULT,
        ),  # a missing attribute matches no rule, not even not_in
        (
            {"on": True, "rules": [{"attr": "plan", "eq": "pro", "on": False}]},
            None,
            {"plan": "pro"},
            False,
            Reason.TARGETING_MATCH,
        ),
        (
            {"on": True, "rules": [{"attr": "plan", "ne": "pro", "on": False}]},
            None,
            {"plan": "pro"},
            True,
            Reason.DEFAULT,
        ),
        (
            {"on": True, "rollout": 0.0, "rules": [{"attr": "age", "gte": 18}]},
            "k",
            {"age": 18},
            True,
            Reason.TARGETING_MATCH,
        ),
        (
            {"on": True, "rollout": 0.0, "rules": [{"attr": "age", "gt": 18}]},
            "k",
            {"age": 18},
            False,
            Reason.SPLIT,
        ),
        (
            {"on": True, "rollout": 0.0, "rules": [{"attr": "age", "lt": 18}]},
            "k",
            {"age": 17.5},
            True,
            Reason.TARGETING_MATCH,
        ),
        (
            {"on": True, "rollout": 0.0, "rules": [{"attr": "age", "lte": 18}]},
            "k",
            {"age": "17"},
            False,
            Reason.SPLIT,
        ),  # a string is not a number
        (
            {"on": True, "rollout": 0.0, "rules": [{"attr": "age", "lt": 18}]},
            "k",
            {"age": True},
            False,
            Reason.SPLIT,
        ),  # nor is a bool
        (
            {"on": True, "rollout": 0.0, "rules": [{"attr": "email", "regex": r"@corp\.com$"}]},
            "k",
            {"email": "a@corp.com"},
            True,
            Reason.TARGETING_MATCH,
        ),
        (
            {"on": True, "rollout": 0.0, "rules": [{"attr": "email", "regex": r"@corp\.com$"}]},
            "k",
            {"email": "a@corp.com.evil"},
            False,
            Reason.SPLIT,
        ),
        # first match wins
        (
            {"on": True, "rules": [{"attr": "c", "eq": 1, "on": False}, {"attr": "c", "gte": 0}]},
            None,
            {"c": 1},
            False,
            Reason.TARGETING_MATCH,
        ),
    ],
)
def test_switch_evaluation_table(
    spec: dict[str, Any],
    key: str | None,
    attrs: dict[str, Any] | None,
    expected: bool,
    reason: Reason,
) -> None:
    flags = make({"f": spec})
    d = flags.details("f", key, attrs, default=not expected)
    assert (d.value, d.reason) == (expected, reason)
    assert flags.enabled("f", key, attrs, default=not expected) is expected


@pytest.mark.parametrize(
    ("spec", "default", "key", "attrs", "expected", "reason", "variant"),
    [
        ({"value": 0.5}, 1.0, None, None, 0.5, Reason.STATIC, None),
        ({"value": 2}, 1.0, None, None, 2.0, Reason.STATIC, None),  # an int serves a float
        ({"value": 2}, 1, None, None, 2, Reason.STATIC, None),
        ({"value": "a"}, 1.0, None, None, 1.0, Reason.ERROR, None),  # type mismatch
        ({"value": 1.5}, 1, None, None, 1, Reason.ERROR, None),
        ({"value": True}, 1, None, None, 1, Reason.ERROR, None),  # a bool is not an int
        ({"value": {"a": 1}}, {}, None, None, {"a": 1}, Reason.STATIC, None),
        (
            {"value": "x", "rules": [{"attr": "c", "eq": "KR", "value": "y"}]},
            "d",
            None,
            {"c": "KR"},
            "y",
            Reason.TARGETING_MATCH,
            None,
        ),
        (
            {"variants": [{"name": "a", "weight": 1, "value": "A"}]},
            "d",
            "k",
            None,
            "A",
            Reason.SPLIT,
            "a",
        ),
        (
            {"variants": [{"name": "a", "weight": 1, "value": "A"}]},
            "d",
            None,
            None,
            "d",
            Reason.ERROR,
            None,
        ),  # a split needs a key
        (
            {"value": "V", "variants": [{"name": "a", "weight": 1, "value": "A"}]},
            "d",
            None,
            None,
            "V",
            Reason.DEFAULT,
            None,
        ),
        (
            {
                "variants": [
                    {"name": "a", "weight": 1, "value": "A"},
                    {"name": "b", "weight": 1, "value": "B"},
                ],
                "rules": [{"attr": "beta", "eq": True, "variant": "b"}],
            },
            "d",
            "k",
            {"beta": True},
            "B",
            Reason.TARGETING_MATCH,
            "b",
        ),
    ],
)
def test_value_evaluation_table(
    spec: dict[str, Any],
    default: Any,
    key: str | None,
    attrs: dict[str, Any] | None,
    expected: Any,
    reason: Reason,
    variant: str | None,
) -> None:
    flags = make({"f": spec})
    d = flags.details("f", key, attrs, default=default)
    assert (d.value, d.reason, d.variant) == (expected, reason, variant)
    assert type(d.value) is type(expected)
    assert flags.value("f", default, key, attrs) == expected


def test_unknown_flag_and_wrong_kind_give_the_default_with_reason_error() -> None:
    flags = make({"v": {"value": "x"}, "r": {"on": True, "rollout": 0.5}})
    assert flags.enabled("nope") is False
    assert flags.enabled("nope", default=True) is True
    assert flags.enabled("v", default=True) is True  # a string is not a switch
    assert flags.enabled("r", key=None, default=True) is True  # a rollout needs a key
    d = flags.details("nope", default=3)
    assert (d.value, d.reason, d.error_code) == (3, Reason.ERROR, "flag_not_found")
    assert flags.details("r").error_code == "targeting_key_missing"
    assert flags.details("v", default=1).error_code == "type_mismatch"
    assert flags.status()["unknown"] == {"nope": 3}


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"on": "yes"}, "flags.f.on"),
        ({"on": True, "rollout": 1.5}, "flags.f.rollout"),
        ({"on": True, "rollout": True}, "flags.f.rollout"),
        ({"on": True, "value": 1}, "flags.f.on"),
        ({}, "flags.f"),
        ({"on": True, "colour": "red"}, "flags.f.colour"),
        ({"on": True, "rules": [{"attr": "a"}]}, "flags.f.rules[0].rule"),
        ({"on": True, "rules": [{"attr": "a", "in": "KR"}]}, "flags.f.rules[0].in"),
        ({"on": True, "rules": [{"attr": "a", "gt": "3"}]}, "flags.f.rules[0].gt"),
        ({"on": True, "rules": [{"attr": "a", "regex": "("}]}, "flags.f.rules[0].regex"),
        ({"on": True, "rules": [{"attr": "a", "eq": 1, "value": 3}]}, "flags.f.rules[0]"),
        ({"value": 0.5, "rules": [{"attr": "a", "eq": 1, "value": "x"}]}, "flags.f.rules[0].value"),
        ({"value": 1, "type": "str"}, "flags.f.value"),
        ({"value": 1, "type": "decimal"}, "flags.f.type"),
        ({"value": float("nan")}, "flags.f.value"),
        ({"variants": [{"name": "a", "weight": -1, "value": 1}]}, "flags.f.variants[0].weight"),
        ({"variants": [{"name": "a", "weight": 0, "value": 1}]}, "flags.f.variants"),
        ({"variants": [{"name": "a", "value": 1}, {"name": "a", "value": 2}]}, "flags.f.variants"),
        (
            {"value": 1, "rules": [{"attr": "a", "eq": 1, "variant": "zz"}]},
            "flags.f.rules[0].variant",
        ),
    ],
)
def test_invalid_flags_name_the_field(spec: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as info:
        Flag.from_dict("f", spec)
    assert info.value.field == field


def test_document_shape_is_checked_and_round_trips() -> None:
    with pytest.raises(ConfigError):
        parse_document({"flag": {}})
    with pytest.raises(ConfigError):
        parse_document({"flags": [1]})
    doc = {
        "flags": {
            "kill-recommendations": {"on": False},
            "new-ranking": {"on": True, "rollout": 0.3, "rules": [KR_RULE]},
            "ratings.timeout": {"value": 0.5},
        }
    }
    flags = parse_document(doc)
    again = parse_document({"flags": {n: f.to_dict() for n, f in flags.items()}})
    assert again == flags


def test_bucket_is_pinned_so_it_never_changes_between_versions() -> None:
    # blake2b-64("new-ranking:user-1") mod 10000, computed once; a change here would move users.
    import hashlib

    raw = hashlib.blake2b(b"new-ranking:user-1", digest_size=8).digest()
    assert bucket("new-ranking", "user-1") == int.from_bytes(raw, "big") % BUCKETS
    assert [bucket("f", str(k)) for k in range(5)] == PINNED


PINNED = [2832, 6993, 7030, 9023, 8456]


def test_rollout_distribution_and_stickiness_over_100k_keys() -> None:
    flags = make({"r": {"on": True, "rollout": 0.3}})
    keys = [f"user-{i}" for i in range(100_000)]
    at30 = {k for k in keys if flags.enabled("r", k)}
    assert 29_000 <= len(at30) <= 31_000
    assert at30 == {k for k in keys if flags.enabled("r", k)}  # same answer every time
    flags.set_flag("r", {"on": True, "rollout": 0.4})
    at40 = {k for k in keys if flags.enabled("r", k)}
    assert 39_000 <= len(at40) <= 41_000
    assert at30 <= at40  # raising the rollout keeps every key that was in


def test_variants_split_by_weight() -> None:
    flags = make(
        {
            "v": {
                "variants": [
                    {"name": "a", "weight": 1, "value": "A"},
                    {"name": "b", "weight": 3, "value": "B"},
                ]
            }
        }
    )
    got = [flags.value("v", "", key=str(i)) for i in range(20_000)]
    assert 4_600 <= got.count("A") <= 5_400


def test_buckets_agree_across_separate_processes() -> None:
    code = (
        "from resilience.flags import bucket\n"
        "print(','.join(str(bucket('new-ranking', f'u{i}')) for i in range(2000)))"
    )
    runs = [
        subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            env={"PYTHONHASHSEED": seed, "PATH": ""},
        ).stdout.strip()
        for seed in ("1", "2")
    ]
    assert runs[0] == runs[1] == ",".join(str(bucket("new-ranking", f"u{i}")) for i in range(2000))
