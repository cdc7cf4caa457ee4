from __future__ import annotations

import json
from pathlib import Path

import pytest

import resilience.fit as fit
from resilience.errors import ConfigError, RecipeError
from resilience.fit import Expectation, FaultSpec, Recipe

YAML = """\
name: ratings-down
faults:
  - dependency: ratings        # a key or a glob
    error: RuntimeError
    probability: 1.0
  - dependency: "cache.profile.*"
    status: 503
  - dependency: search
    latency: 0.2
    jitter: 0.1
  - dependency: payments
    timeout: true
critical: [catalog, profile]
isolate_critical: false
expect: {status: [200], max_latency: 1.0, json: {title: Dune}, json_present: [price]}
error_budget: 0.1
proxies:
  - {name: recommendations, listen: "127.0.0.1:22000", upstream: "127.0.0.1:8080"}
toxics:
  - {proxy: recommendations, type: latency, attributes: {latency: 1500}}
  - {proxy: recommendations, type: down}
"""


def test_exports_are_sorted_and_complete() -> None:
    public = {n for n in dir(fit) if not n.startswith("_")}
    modules = {"annotations"} | {n for n in public if type(getattr(fit, n)).__name__ == "module"}
    assert set(fit.__all__) == public - modules
    consts = [n for n in fit.__all__ if n.isupper()]
    rest = [n for n in fit.__all__ if not n.isupper()]
    assert fit.__all__ == sorted(consts) + sorted(rest, key=lambda n: (n[0].islower(), n))


def test_yaml_recipe_loads_every_part() -> None:
    recipe = Recipe.loads(YAML)
    assert [f.kind for f in recipe.faults] == ["error", "status", "latency", "timeout"]
    assert recipe.faults[0].error == "RuntimeError"
    assert recipe.faults[1].status == 503
    assert (recipe.faults[2].latency, recipe.faults[2].jitter) == (0.2, 0.1)
    assert recipe.critical == ("catalog", "profile")
    assert recipe.expect == Expectation(
        status=(200,), max_latency=1.0, json={"title": "Dune"}, json_present=("price",)
    )
    assert recipe.error_budget == 0.1
    assert recipe.proxies[0].upstream == "127.0.0.1:8080"
    assert [t.type for t in recipe.toxics] == ["latency", "down"]
    assert recipe.toxics[0].toxic_name == "fit_latency_downstream"


def test_json_file_and_dict_round_trip(tmp_path: Path) -> None:
    recipe = Recipe.loads(YAML)
    path = tmp_path / "r.json"
    path.write_text(json.dumps(recipe.to_dict()))
    assert Recipe.load(path) == recipe
    assert Recipe.from_dict(json.loads(recipe.to_json())) == recipe


def test_to_dict_leaves_out_defaults() -> None:
    assert Recipe(name="x").to_dict() == {"name": "x"}
    assert Recipe(name="x", faults=(FaultSpec(dependency="a", error=True),)).to_dict() == {
        "name": "x",
        "faults": [{"dependency": "a", "error": True}],
    }


@pytest.mark.parametrize(
    ("text", "field", "line"),
    [
        (
            "name: x\nfaults:\n  - dependency: a\n    error: true\n    probability: 2\n",
            "faults[0].probability",
            5,
        ),
        ("name: x\nfaults:\n  - dependency: a\n", "faults[0].error", 3),
        (
            "name: x\nfaults:\n  - dependency: a\n    error: true\n    latency: 1\n",
            "faults[0].error",
            4,
        ),
        ("name: x\nfaults:\n  - dependency: a\n    status: 42\n", "faults[0].status", 4),
        ("name: x\nfaults:\n  - dependency: a\n    latency: -1\n", "faults[0].latency", 4),
        ("name: x\nexpect:\n  status: [200]\n  max_latncy: 3\n", "expect.max_latncy", 4),
        ("name: x\nexpect:\n  status: []\n", "expect.status", 3),
        (
            "name: x\ntoxics:\n  - proxy: p\n    type: latency\n    attributes: {latency: -5}\n",
            "toxics[0].attributes.latency",
            5,
        ),
        ("name: x\ntoxics:\n  - proxy: p\n    type: explode\n", "toxics[0].type", 4),
        (
            "name: x\nproxies:\n  - {name: p, listen: nowhere, upstream: 'h:1'}\n",
            "proxies[0].listen",
            3,
        ),
        ('{"name": "x",\n "critical": "catalog"}', "critical", 2),
        ('{"name": "x",\n "isolate_critical": "yes"}', "isolate_critical", 2),
        ("name: 'has space'\n", "name", 1),
        ("faults: []\n", "name", 1),
        ("- 1\n", "recipe", 1),
        ("name: x\ncritical: [a,\n", "recipe", 3),
    ],
)
def test_invalid_recipes_name_field_and_line(text: str, field: str, line: int) -> None:
    with pytest.raises(RecipeError) as info:
        Recipe.loads(text)
    assert info.value.field == field
    assert info.value.line == line
    assert f"(line {line})" in str(info.value)
    assert isinstance(info.value, ConfigError)


def test_from_dict_errors_name_the_field_without_line() -> None:
    with pytest.raises(RecipeError) as info:
        Recipe.from_dict({"name": "x", "faults": [{"dependency": "a", "error": 3}]})
    assert info.value.field == "faults[0].error"
    assert info.value.line is None


def test_error_name_must_look_like_a_class_name() -> None:
    with pytest.raises(ConfigError, match="exception class name"):
        FaultSpec(dependency="a", error="os.system('x')")


def test_exception_names_must_resolve() -> None:
    for name, needle in (
        ("ConectionError", "unknown exception 'ConectionError'"),
        ("not_a_module_xyz.Boom", "cannot import 'not_a_module_xyz'"),
        ("json.NoSuchError", "unknown exception"),
        ("os.path", "not an exception class"),
        ("json.dumps", "not an exception class"),
        ("json.JSONDecodeError", "cannot be raised with a single message"),
    ):
        with pytest.raises(RecipeError, match=needle) as info:
            Recipe.loads(f"name: r\nfaults:\n  - dependency: a\n    error: {name}\n")
        assert info.value.field == "faults[0].error" and info.value.line == 4, name
    recipe = Recipe.from_dict(
        {"name": "r", "faults": [{"dependency": "a", "error": "aiohttp.ClientConnectionError"}]}
    )
    assert recipe.faults[0].error == "aiohttp.ClientConnectionError"


def test_a_tag_never_imports_a_module() -> None:
    import sys

    data = {"name": "r", "faults": [{"dependency": "a", "error": "xml.dom.minidom.Node"}]}
    sys.modules.pop("xml.dom.minidom", None)
    with pytest.raises(RecipeError, match="not imported here"):
        Recipe.from_dict(data, imports=False)
    assert "xml.dom.minidom" not in sys.modules


def test_one_status_needs_no_list_and_a_missing_name_is_named() -> None:
    recipe = Recipe.loads("name: r\nexpect:\n  status: 200\n")
    assert recipe.expect.status == (200,)
    with pytest.raises(RecipeError) as info:
        Recipe.loads("faults: []\nexpect: {status: [200]}\n")
    assert info.value.field == "name" and "is required" in str(info.value)
    with pytest.raises(RecipeError) as info:
        Recipe.from_dict({"name": "r", "faults": [{"error": True}]})
    assert info.value.field == "faults[0].dependency"
    with pytest.raises(RecipeError, match="status"):
        Recipe.from_dict({"name": "r", "expect": {"status": "200"}})
