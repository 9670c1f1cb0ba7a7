"""/openapi.json is generated: each schema is its model's own, every operation is named, and
the bounds a setting decides are those of the settings the app is built with."""

from __future__ import annotations

import inspect
import json
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import BaseModel

from service import config
from service.api import models, openapi, responses

SETTINGS = config.Settings()
SPEC = openapi.spec(SETTINGS)
COMPONENTS = SPEC["components"]["schemas"]


def _models(module: object, base: type[BaseModel]) -> list[type[BaseModel]]:
    return [
        kind
        for _, kind in inspect.getmembers(module, inspect.isclass)
        if issubclass(kind, base) and kind.__module__ == getattr(module, "__name__", "")
    ]


ANSWERS = [kind for kind in _models(responses, responses.Answer) if kind is not responses.Answer]


@pytest.mark.parametrize("model", [*ANSWERS, responses.EventList], ids=lambda model: model.__name__)
def test_an_answer_is_described_by_its_model(model: type[BaseModel]) -> None:
    """Every answer model is a component, exactly the model's own JSON Schema (and so are the
    models it nests): a field added to it is in the document without a change elsewhere."""
    own = model.model_json_schema(mode="serialization", ref_template=openapi.SCHEMAS)
    nested = own.pop("$defs", {})
    assert COMPONENTS[model.__name__] == own
    for name, schema in nested.items():
        assert COMPONENTS[name] == schema


@pytest.mark.parametrize("model", ANSWERS, ids=lambda model: model.__name__)
def test_every_key_an_answer_always_has_is_required(model: type[BaseModel]) -> None:
    """A key always present in an answer is `required` in its schema (only a problem's
    `errors` may be absent)."""
    schema = COMPONENTS[model.__name__]
    optional = {"errors"} if model is responses.Problem else set()
    assert set(schema["required"]) == set(schema["properties"]) - optional


def _operations(spec: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            yield path, method, operation


def test_every_operation_has_an_id_and_a_declared_tag() -> None:
    """operationIds are unique, and each operation's tags are among the document's."""
    found = list(_operations(SPEC))
    ids = [operation["operationId"] for _, _, operation in found]
    assert len(ids) == len(set(ids)) == len(found)
    declared = {tag["name"] for tag in SPEC["tags"]}
    for path, method, operation in found:
        assert operation["tags"], (path, method)
        assert set(operation["tags"]) <= declared, (path, method)


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        if "$ref" in node:
            yield node["$ref"]
        for value in node.values():
            yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def test_every_reference_names_a_component() -> None:
    """Each `$ref` of the document names one of its component schemas."""
    prefix = "#/components/schemas/"
    refs = set(_refs(SPEC))
    assert refs
    assert all(ref.startswith(prefix) for ref in refs)
    assert {ref.removeprefix(prefix) for ref in refs} <= set(COMPONENTS)


def test_the_request_bodies_are_their_models() -> None:
    """Each request body is its model's component, which refuses unknown fields."""
    bodies = {
        ("/v1/watches", models.WatchRequest),
        ("/v1/generate", models.GenerateRequest),
        ("/v1/subscriptions", models.SubscriptionRequest),
    }
    for path, model in bodies:
        body = SPEC["paths"][path]["post"]["requestBody"]["content"]["application/json"]
        assert body["schema"] == {"$ref": openapi.SCHEMAS.format(model=model.__name__)}
        assert COMPONENTS[model.__name__]["additionalProperties"] is False


def test_the_bounds_are_the_settings_in_force() -> None:
    """The per-watch overrides' bounds and the long-poll's longest wait follow the settings."""
    settings = config.Settings.model_validate(
        {
            "poll": {"interval_s": 30, "min_interval_s": 5, "max_interval_s": 600,
                     "max_timeout_s": 7200},
            "api": {"max_wait_s": 20},
        }
    )  # fmt: skip
    spec = openapi.spec(settings)
    for name in ("WatchRequest", "GenerateRequest"):
        fields = spec["components"]["schemas"][name]["properties"]
        assert fields["poll_interval_s"]["anyOf"][0] == {
            "type": "number", "minimum": 5, "maximum": 600,
        }  # fmt: skip
        assert fields["timeout_s"]["anyOf"][0] == {
            "type": "number", "exclusiveMinimum": 0, "maximum": 7200,
        }  # fmt: skip
    wait = spec["paths"]["/v1/watches/{watch_id}/wait"]["get"]["parameters"][1]
    assert "20 s at most (api.max_wait_s)" in wait["description"]


def test_the_upstreams_are_those_configured() -> None:
    """The requests' `upstream` takes the configured names, the list filters by them, and with
    several upstreams the overrides' bounds are the widest of theirs, each one's said."""
    settings = config.Settings.model_validate(
        {
            "poll": {"min_interval_s": 2, "max_interval_s": 600, "max_timeout_s": 7200},
            "upstreams": {
                "runway": {"base_url": "https://runway.example", "poll": {
                    "interval_s": 5, "min_interval_s": 5, "max_timeout_s": 86400}},
                "fal": {"base_url": "https://fal.example", "poll": {"max_interval_s": 1200}},
            },
        }
    )  # fmt: skip
    spec = openapi.spec(settings)
    for name in ("WatchRequest", "GenerateRequest"):
        fields = spec["components"]["schemas"][name]["properties"]
        assert fields["upstream"]["enum"] == ["default", "fal", "runway"]
        assert fields["upstream"]["default"] == "default"
        assert fields["poll_interval_s"]["anyOf"][0] == {
            "type": "number", "minimum": 2, "maximum": 1200,
        }  # fmt: skip
        assert fields["timeout_s"]["anyOf"][0]["maximum"] == 86400
        assert "runway: 5 to 600 s" in fields["poll_interval_s"]["description"]
        assert "fal: at most 7200 s" in fields["timeout_s"]["description"]
    listing = spec["paths"]["/v1/watches"]["get"]["parameters"]
    (upstream,) = [parameter for parameter in listing if parameter["name"] == "upstream"]
    assert "default, fal, runway" in upstream["description"]
    assert "upstream" in COMPONENTS["Watch"]["required"]
    one = COMPONENTS["WatchRequest"]["properties"]
    assert one["upstream"]["enum"] == ["default"]
    assert "Per upstream" not in one["poll_interval_s"]["description"]


@pytest.mark.parametrize(
    ("tokens", "required"),
    [([], []), ([{"name": "acme", "token": "t"}], [{"bearer": []}, {"apiKey": []}])],
)
def test_a_token_is_required_only_where_tokens_are_configured(
    tokens: list[dict[str, str]], required: list[dict[str, list[str]]]
) -> None:
    """A bridge without tokens serves anyone: its document asks clients for no token (a
    generated client would otherwise insist on one); with tokens, every operation but the
    open ones needs one."""
    spec = openapi.spec(config.Settings.model_validate({"auth": {"tokens": tokens}}))
    assert spec["security"] == required
    assert spec["paths"]["/livez"]["get"]["security"] == []
    assert set(spec["components"]["securitySchemes"]) == {"bearer", "apiKey"}


def test_every_answer_body_is_a_named_component() -> None:
    """Each JSON answer's schema is a reference to a component: generators name its class
    after it, and make one class however many operations answer it."""
    for path, method, operation in _operations(SPEC):
        for status, answer in operation["responses"].items():
            for media, content in answer.get("content", {}).items():
                if media.endswith("json"):
                    assert set(content["schema"]) == {"$ref"}, (path, method, status)


# What a generator makes a class of: an enumeration, or an object.
def _makes_a_class(schema: dict[str, Any]) -> bool:
    return (
        len(schema.get("enum", ())) > 1
        or schema.get("type") == "object"
        or ("properties" in schema or isinstance(schema.get("additionalProperties"), dict))
    )


def _inline(node: Any, root: bool = False) -> Iterator[dict[str, Any]]:
    """Every schema in `node` written in place (not a component itself) that generators make a
    class of, without the words that do not change the class."""
    if isinstance(node, dict):
        if not root and _makes_a_class(node):
            yield {k: v for k, v in node.items() if k not in ("description", "title", "default")}
        for value in node.values():
            yield from _inline(value)
    elif isinstance(node, list):
        for value in node:
            yield from _inline(value)


def test_no_class_is_described_twice() -> None:
    """No enumeration or object is written out in two places (a property of two models, of a
    model and its subclass, a parameter): generators would make two classes of one type."""
    found = [
        *(schema for component in COMPONENTS.values() for schema in _inline(component, True)),
        *_inline(SPEC["paths"]),
    ]
    written = Counter(json.dumps(schema, sort_keys=True) for schema in found)
    assert [schema for schema, count in written.items() if count > 1] == []
