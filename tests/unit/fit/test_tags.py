from __future__ import annotations

import base64
import json
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resilience import fit
from resilience.errors import ConfigError
from resilience.fit import HEADER, Recipe, sign_tag, tag_headers, verify_tag

NOW = 1_700_000_000.0
KEYS = {"k1": b"secret-one", "k2": b"secret-two"}
RECIPE = Recipe.from_dict({"name": "db-down", "faults": [{"dependency": "db", "status": 503}]})


def tag(**kw: object) -> str:
    args: dict[str, object] = {"secret": "secret-one", "key_id": "k1", "now": NOW}
    args.update(kw)
    return sign_tag(kw.pop("recipe", RECIPE), **{k: v for k, v in args.items() if k != "recipe"})  # type: ignore[arg-type]


def verify(t: str, now: float = NOW, **kw: object) -> fit.Verdict:
    return verify_tag(t, keys=KEYS, now=now, **kw)  # type: ignore[arg-type]


def test_round_trip_carries_the_recipe_and_stays_valid_until_expiry() -> None:
    t = tag(ttl=60)
    for now in (NOW, NOW + 30, NOW + 59.9):  # reusable for the request's hops and fan-out
        verdict = verify(t, now)
        assert verdict.result == "accepted"
        assert verdict.recipe == RECIPE
        assert verdict.expires == NOW + 60
    assert verify(t, NOW + 60).result == "expired"


def test_tag_headers_uses_the_header_name() -> None:
    headers = tag_headers(RECIPE, secret="s", ttl=5)
    assert list(headers) == [HEADER] == ["X-Resilience-FIT"]
    keys = {"default": b"s"}
    now = time.time()
    assert verify_tag(headers[HEADER], keys=keys, now=now).result == "accepted"
    assert verify_tag(headers[HEADER], keys=keys, now=now + 10).result == "expired"


@pytest.mark.parametrize(
    ("make", "result"),
    [
        (lambda: tag(secret="wrong"), "bad_signature"),
        (lambda: tag(key_id="k3"), "unknown_key"),
        (lambda: tag().rsplit(".", 1)[0], "unsigned"),
        (lambda: tag().rsplit(".", 1)[0] + ".", "unsigned"),
        (lambda: tag(now=NOW - 61), "expired"),
        (lambda: tag(ttl=3600), "ttl_too_long"),
        (lambda: "garbage", "malformed"),
        (lambda: "", "malformed"),
        (lambda: "v2" + tag()[2:], "malformed"),
        (lambda: "v1.k1.!!.abc", "malformed"),
        (lambda: "x" * 9000, "malformed"),
        (lambda: tag(recipe="unknown-id"), "unknown_recipe"),
    ],
)
def test_rejections_are_named(make: object, result: str) -> None:
    assert verify(make()).result == result  # type: ignore[operator]


def test_tampered_payload_is_rejected() -> None:
    version, kid, body, sig = tag().split(".")
    payload = json.loads(base64.urlsafe_b64decode(body + "=="))
    payload["recipe"]["faults"][0]["dependency"] = "everything"
    forged = base64.urlsafe_b64encode(json.dumps(payload).encode()).rstrip(b"=").decode()
    assert verify(f"{version}.{kid}.{forged}.{sig}").result == "bad_signature"
    # Moving a valid signature under another key id does not work either.
    assert verify(f"{version}.k2.{body}.{sig}").result == "bad_signature"


def test_signed_but_inconsistent_payloads_are_refused() -> None:
    import hashlib
    import hmac

    def signed(payload: object, kid: str = "k1") -> str:
        text = payload if isinstance(payload, str) else json.dumps(payload)
        body = base64.urlsafe_b64encode(text.encode()).rstrip(b"=").decode()
        mac = hmac.new(KEYS[kid], f"v1.{kid}.{body}".encode(), hashlib.sha256).digest()
        return f"v1.{kid}.{body}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"

    good = {"exp": NOW + 10, "kid": "k1", "nonce": "n", "recipe": RECIPE.to_dict()}
    assert verify(signed(good)).result == "accepted"
    assert verify(signed({**good, "kid": "k2"})).result == "malformed"
    assert verify(signed({**good, "exp": "soon"})).result == "malformed"
    assert verify(signed({**good, "exp": float("inf")})).result == "malformed"
    assert verify(signed([1, 2])).result == "malformed"
    assert verify(signed({**good, "recipe": {"name": "x", "faults": 3}})).result == "invalid_recipe"
    assert verify(signed({**good, "recipe": None})).result == "invalid_recipe"
    deep = json.dumps({**good, "recipe": "X"}).replace('"X"', '{"a":' * 5000 + "1" + "}" * 5000)
    assert verify(signed(deep)).result == "malformed"  # too deep for the JSON parser


def test_recipe_by_id_and_key_rotation() -> None:
    t = sign_tag("db-down", secret="secret-two", key_id="k2", now=NOW)
    assert verify(t).result == "unknown_recipe"
    verdict = verify(t, recipes={"db-down": RECIPE})
    assert (verdict.result, verdict.recipe) == ("accepted", RECIPE)


def test_enable_activate_counts_every_present_tag() -> None:
    t = sign_tag(RECIPE, secret="new", key_id="new")
    old = sign_tag(RECIPE, secret="old", key_id="old")
    assert fit.activate(t) is None  # off: ignored
    fit.enable(secret="new", key_id="new", previous_keys={"old": "old"})
    assert fit.activate(None) is None
    context = fit.activate(t)
    assert context is not None and context.recipe == RECIPE and context.tag == t
    assert fit.activate(old) is not None  # the previous key still verifies during rotation
    assert fit.activate(old[:-3] + "abc") is None
    fit.disable()
    assert fit.activate(t) is None
    assert fit.tag_counts() == {"disabled": 2, "accepted": 2, "bad_signature": 1}


def test_signing_validates_its_arguments() -> None:
    with pytest.raises(ConfigError, match="secret"):
        sign_tag(RECIPE, secret="")
    with pytest.raises(ConfigError, match="key_id"):
        sign_tag(RECIPE, secret="s", key_id="has.dot")
    with pytest.raises(ConfigError, match="ttl"):
        sign_tag(RECIPE, secret="s", ttl=0)
    with pytest.raises(ConfigError, match="recipe"):
        sign_tag("", secret="s")
    with pytest.raises(ConfigError, match="max_ttl"):
        fit.enable(secret="s", max_ttl=-1)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=400))
def test_fuzzed_text_is_never_accepted_and_never_raises(text: str) -> None:
    assert verify(text).result != "accepted"


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_any_change_to_a_valid_tag_is_rejected(data: st.DataObject) -> None:
    original = tag(nonce="fixed")  # the same tag every run: hypothesis replays its draws
    i = data.draw(st.integers(0, len(original) - 1))
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_."
    replacement = data.draw(st.sampled_from(alphabet).filter(lambda c: c != original[i]))
    changed = original[:i] + replacement + original[i + 1 :]
    assert verify(changed).result != "accepted"
    extra = data.draw(st.text(alphabet, min_size=1, max_size=5))
    assert verify(original + extra).result != "accepted"
