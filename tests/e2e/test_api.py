"""The HTTP API: cancelling, idempotent registration, validation problems, listing, OpenAPI."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

import pytest

from service import config
from service.app import create_app
from tests.e2e.harness import Bridge, Receiver, Upstream, unique, wait_until

PROBLEM = "application/problem+json"


def assert_problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body: dict[str, Any] = response.json()
    assert {"type", "title", "status", "detail"} <= set(body)
    assert body["status"] == status
    return body


@pytest.mark.e2e
def test_delete_stops_polling_and_every_delivery(
    bridge: Bridge, upstream: Upstream, receiver: Receiver
) -> None:
    """A cancelled watch is polled no more and gets no webhook, whether active or delivering."""
    endless = upstream.create_job(queue_positions=1000)
    ending = upstream.create_job(queue_positions=0, processing_s=2.0)  # ends after the DELETE
    refusing = upstream.create_job(queue_positions=0, processing_s=0)
    names = {key: unique(f"cancel_{key}") for key in ("endless", "ending", "refusing")}
    endless_watch = bridge.register(
        job_id=endless, callback_url=receiver.callback(names["endless"])
    )
    ending_watch = bridge.register(job_id=ending, callback_url=receiver.callback(names["ending"]))
    refusing_watch = bridge.register(
        job_id=refusing, callback_url=receiver.callback(names["refusing"], respond="500")
    )
    wait_until(lambda: upstream.polls(endless) >= 2, what="two polls of the endless job")
    wait_until(lambda: upstream.polls(ending) >= 1, what="a poll of the ending job")
    receiver.wait_for(names["refusing"], 1)
    assert bridge.watch(refusing_watch["id"])["status"] == "delivering"

    cancelled = {}
    for watch in (endless_watch, ending_watch, refusing_watch):
        response = bridge.client.delete(f"/v1/watches/{watch['id']}")
        assert response.status_code == 200, response.text
        assert response.json()["status"] == "cancelled"
        cancelled[watch["id"]] = response.json()
    polls_then = {job: upstream.polls(job) for job in (endless, ending)}
    hooks_then = len(receiver.hooks(names["refusing"]))
    attempts_then = len(bridge.deliveries(refusing_watch["id"]))

    # A sentinel watch registered now, ending after the cancelled job would have ended, and
    # polled many times meanwhile: proof that the poller kept running all along.
    sentinel_job = upstream.create_job(queue_positions=0, processing_s=3.0)
    sentinel_path = unique("cancel_sentinel")
    sentinel = bridge.register(job_id=sentinel_job, callback_url=receiver.callback(sentinel_path))
    bridge.wait_for_status(sentinel["id"], "delivered")
    receiver.wait_for(sentinel_path, 1)
    assert upstream.polls(sentinel_job) >= 5
    assert upstream.job(ending)["status"] == "succeeded"

    # At most one poll (in flight at the DELETE) is made afterwards.
    for job, before in polls_then.items():
        assert upstream.polls(job) <= before + 1, job
    assert receiver.hooks(names["endless"]) == []
    assert receiver.hooks(names["ending"]) == []
    assert len(receiver.hooks(names["refusing"])) <= hooks_then + 1
    assert len(bridge.deliveries(refusing_watch["id"])) <= attempts_then + 1
    for watch_id in cancelled:
        assert bridge.watch(watch_id)["status"] == "cancelled"
        # DELETE is idempotent.
        again = bridge.client.delete(f"/v1/watches/{watch_id}")
        assert again.status_code == 200
        assert again.json()["status"] == "cancelled"
    # A finished watch stays as it is.
    response = bridge.client.delete(f"/v1/watches/{sentinel['id']}")
    assert (response.status_code, response.json()["status"]) == (200, "delivered")
    assert_problem(bridge.client.delete("/v1/watches/wch_nosuchwatch"), 404)
    assert_problem(bridge.client.get("/v1/watches/wch_nosuchwatch"), 404)


@pytest.mark.e2e
def test_idempotency_key_replays_the_registration(
    bridge: Bridge, upstream: Upstream, receiver: Receiver
) -> None:
    """Same key and body answer the first response (200); the same key with another body, 409."""
    job = upstream.create_job(queue_positions=1000)
    body = {"job_id": job, "callback_url": receiver.callback(unique("idem")), "metadata": {"a": 1}}
    key = {"Idempotency-Key": unique("key")}
    first = bridge.client.post("/v1/watches", json=body, headers=key)
    assert first.status_code == 201, first.text
    replay = bridge.client.post("/v1/watches", json=body, headers=key)
    assert replay.status_code == 200, replay.text
    assert replay.json() == first.json()
    assert replay.json()["secret"] == first.json()["secret"]

    other = bridge.client.post("/v1/watches", json={**body, "metadata": {"a": 2}}, headers=key)
    problem = assert_problem(other, 409)
    assert "Idempotency-Key" in problem["detail"]

    assert [w["id"] for w in bridge.watches(job_id=job)] == [first.json()["id"]]
    # Another key is another registration.
    second = bridge.client.post("/v1/watches", json=body, headers={"Idempotency-Key": unique("k")})
    assert second.status_code == 201
    assert second.json()["id"] != first.json()["id"]
    assert len(bridge.watches(job_id=job)) == 2
    too_long = bridge.client.post("/v1/watches", json=body, headers={"Idempotency-Key": "k" * 256})
    assert [e["field"] for e in assert_problem(too_long, 422)["errors"]] == ["Idempotency-Key"]
    for watch in (first.json(), second.json()):
        bridge.client.delete(f"/v1/watches/{watch['id']}")


INVALID: list[tuple[str, dict[str, Any], str]] = [
    ("unknown-field", {"colour": "blue"}, "colour"),
    ("job-id-charset", {"job_id": "job with spaces"}, "job_id"),
    ("job-id-length", {"job_id": "j" * 129}, "job_id"),
    ("job-id-missing", {"job_id": None}, "job_id"),
    ("callback-ftp", {"callback_url": "ftp://example.com/hook"}, "callback_url"),
    ("callback-relative", {"callback_url": "/relative/hook"}, "callback_url"),
    ("callback-too-long", {"callback_url": "https://example.com/" + "x" * 2048}, "callback_url"),
    ("secret-prefix", {"secret": "not-a-secret"}, "secret"),
    ("secret-base64", {"secret": "whsec_***"}, "secret"),
    ("secret-short", {"secret": "whsec_c2hvcnQ="}, "secret"),
    ("header-webhook-id", {"callback_headers": {"webhook-id": "mine"}}, "callback_headers"),
    ("header-content-length", {"callback_headers": {"Content-Length": "1"}}, "callback_headers"),
    ("header-host", {"callback_headers": {"Host": "evil.example"}}, "callback_headers"),
    ("method-get", {"callback_method": "GET"}, "callback_method"),
    ("events-without-final", {"events": ["job.queued"]}, "events"),
    ("events-unknown", {"events": ["job.exploded", "job.succeeded", "job.failed"]}, "events"),
    ("format-xml", {"payload_format": "xml"}, "payload_format"),
    ("metadata-too-big", {"metadata": {"blob": "x" * 5000}}, "metadata"),
    ("metadata-not-object", {"metadata": [1, 2]}, "metadata"),
    ("interval-too-small", {"poll_interval_s": 0.01}, "poll_interval_s"),
    ("timeout-too-big", {"timeout_s": 10**9}, "timeout_s"),
    ("api-key-empty", {"upstream_api_key": ""}, "upstream_api_key"),
    # Zero is a value, not "use the default".
    ("interval-zero", {"poll_interval_s": 0}, "poll_interval_s"),
    ("timeout-zero", {"timeout_s": 0}, "timeout_s"),
    # A key that cannot be sent in an Authorization header.
    ("api-key-not-ascii", {"upstream_api_key": "bw_caf\u00e9"}, "upstream_api_key"),
]


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("change", "field"), [(c, f) for _, c, f in INVALID], ids=[name for name, _, _ in INVALID]
)
def test_invalid_registration_is_a_422_problem_naming_the_field(
    bridge: Bridge, receiver: Receiver, change: dict[str, Any], field: str
) -> None:
    """Each invalid field gets 422 application/problem+json whose errors name that field."""
    body = {"job_id": "job_valid", "callback_url": receiver.callback(unique("invalid")), **change}
    body = {key: value for key, value in body.items() if value is not None}
    response = bridge.client.post("/v1/watches", json=body)
    if response.status_code == 201:  # wrongly accepted: do not leave it running
        bridge.client.delete(f"/v1/watches/{response.json()['id']}")
    problem = assert_problem(response, 422)
    fields = [error["field"] for error in problem["errors"]]
    assert fields, problem
    assert all(f == field or f.startswith(f"{field}.") for f in fields), problem
    assert field in problem["detail"]
    assert all(error["message"] for error in problem["errors"])


@pytest.mark.e2e
def test_unparseable_bodies_are_problems(bridge: Bridge) -> None:
    """Invalid JSON and JSON that is not an object are 400 problems saying so."""
    response = bridge.client.post(
        "/v1/watches", content=b'{"job_id": "x",', headers={"content-type": "application/json"}
    )
    assert "JSON" in assert_problem(response, 400)["detail"]
    listed = assert_problem(bridge.client.post("/v1/watches", json=["job_x"]), 400)
    assert "must be a JSON object, not an array" in listed["detail"]
    json_type = {"content-type": "application/json"}
    null = assert_problem(
        bridge.client.post("/v1/watches", content=b"null", headers=json_type), 400
    )
    assert null["detail"].endswith("must be a JSON object, not null")
    assert_problem(bridge.client.post("/v1/watches", content=b"", headers=json_type), 400)


@pytest.mark.e2e
def test_listing_is_newest_first_filtered_and_paginated(
    bridge: Bridge, upstream: Upstream, receiver: Receiver
) -> None:
    """GET /v1/watches filters by job and status and pages newest first with a cursor."""
    job = upstream.create_job(queue_positions=1000)
    ids = [
        bridge.register(job_id=job, callback_url=receiver.callback(unique("list")))["id"]
        for _ in range(5)
    ]
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {
            "job_id": job,
            "limit": 2,
            **({"cursor": cursor} if cursor else {}),
        }
        page = bridge.client.get("/v1/watches", params=params).json()
        assert len(page["data"]) <= 2
        seen += [w["id"] for w in page["data"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ids[::-1]
    bridge.client.delete(f"/v1/watches/{ids[0]}")
    assert [w["id"] for w in bridge.watches(job_id=job, status="cancelled")] == [ids[0]]
    assert ids[0] not in [w["id"] for w in bridge.watches(job_id=job, status="active")]
    assert_problem(bridge.client.get("/v1/watches", params={"status": "sleeping"}), 422)
    assert_problem(bridge.client.get("/v1/watches", params={"limit": "0"}), 422)
    for watch_id in ids[1:]:
        bridge.client.delete(f"/v1/watches/{watch_id}")


# OpenAPI.


def _resolve(schema: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        target: Any = root
        for part in schema["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        schema = target
    return schema


_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,), "array": (list,), "string": (str,), "integer": (int,),
    "number": (int, float), "boolean": (bool,), "null": (type(None),),
}  # fmt: skip


def schema_errors(
    value: Any, schema: dict[str, Any], root: dict[str, Any], at: str = ""
) -> list[str]:
    """Where `value` breaks `schema`: the subset of JSON Schema the bridge's spec uses."""
    schema = _resolve(schema, root)
    errors: list[str] = []
    for part in schema.get("allOf", []):
        errors += schema_errors(value, part, root, at)
    choices = [schema_errors(value, part, root, at) for part in schema.get("anyOf", [])]
    if choices and all(choices):
        errors.append(f"{at}: {value!r} matches none of {schema['anyOf']}: {choices}")
    if "type" in schema:
        names = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        ok = any(
            isinstance(value, _TYPES[name]) and not (isinstance(value, bool) and name != "boolean")
            for name in names
        )
        if not ok:
            return [*errors, f"{at or '/'}: {value!r} is not {names}"]
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{at}: {value!r} not in {schema['enum']}")
    if isinstance(value, str):
        if "pattern" in schema and not re.search(schema["pattern"], value):
            errors.append(f"{at}: {value!r} does not match {schema['pattern']}")
        if schema.get("format") == "date-time":
            try:
                datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                errors.append(f"{at}: {value!r} is not a date-time")
    if isinstance(value, dict):
        errors += [
            f"{at}/{key}: required" for key in schema.get("required", []) if key not in value
        ]
        properties = schema.get("properties", {})
        extra = schema.get("additionalProperties", True)
        for key, item in value.items():
            if key in properties:
                errors += schema_errors(item, properties[key], root, f"{at}/{key}")
            elif extra is False:
                errors.append(f"{at}/{key}: not allowed")
            elif isinstance(extra, dict):
                errors += schema_errors(item, extra, root, f"{at}/{key}")
    if isinstance(value, list) and "items" in schema:
        for index, item in enumerate(value):
            errors += schema_errors(item, schema["items"], root, f"{at}/{index}")
    return errors


def _response_schema(spec: dict[str, Any], path: str, method: str, status: int) -> dict[str, Any]:
    answer = spec["paths"][path][method]["responses"][str(status)]
    media = "application/problem+json" if status >= 400 else "application/json"
    schema: dict[str, Any] = answer["content"][media]["schema"]
    return schema


@pytest.mark.e2e
def test_openapi_lists_every_route_and_describes_the_answers(
    bridge: Bridge, upstream: Upstream, receiver: Receiver
) -> None:
    """/openapi.json names every route the app serves, and real answers match its schemas."""
    response = bridge.client.get("/openapi.json")
    assert response.status_code == 200
    spec = response.json()
    assert spec["openapi"].startswith("3.")
    documented = {
        (path, method.upper())
        for path, operations in spec["paths"].items()
        for method in operations
    }
    app = create_app(config.load(environ={}))
    served = {
        (getattr(route, "path", None), method)
        for route in app.routes
        for method in getattr(route, "methods", None) or ()
        if method != "HEAD"
    }
    assert served == documented

    job = upstream.create_job(queue_positions=0, processing_s=0)
    created = bridge.client.post(
        "/v1/watches", json={"job_id": job, "callback_url": receiver.callback(unique("spec"))}
    )
    assert created.status_code == 201
    watch = created.json()
    assert schema_errors(watch, _response_schema(spec, "/v1/watches", "post", 201), spec) == []
    # The Watch schema has no `secret`; only the registration answer carries it.
    assert "secret" in watch
    bridge.wait_for_status(watch["id"], "delivered")

    # Every documented operation is really served (no 404 "no route", no 405), and answers match.
    checks = {
        ("/v1/watches/{watch_id}", "get", 200): bridge.client.get(f"/v1/watches/{watch['id']}"),
        ("/v1/watches", "get", 200): bridge.client.get("/v1/watches", params={"limit": 3}),
        ("/v1/watches/{watch_id}/deliveries", "get", 200): bridge.client.get(
            f"/v1/watches/{watch['id']}/deliveries"
        ),
        ("/v1/watches/{watch_id}/redeliver", "post", 202): bridge.client.post(
            f"/v1/watches/{watch['id']}/redeliver"
        ),
        ("/v1/watches/{watch_id}", "delete", 200): bridge.client.delete(
            f"/v1/watches/{watch['id']}"
        ),
        ("/v1/watches", "post", 422): bridge.client.post("/v1/watches", json={}),
        ("/v1/watches/{watch_id}", "get", 404): bridge.client.get("/v1/watches/wch_missing"),
    }
    for (path, method, status), answer in checks.items():
        assert answer.status_code == status, (path, method, answer.text)
        schema = _response_schema(spec, path, method, status)
        assert schema_errors(answer.json(), schema, spec) == [], (path, method)
    for path, method in (("/livez", "get"), ("/readyz", "get"), ("/openapi.json", "get")):
        assert bridge.client.request(method, path).status_code == 200
        assert "200" in spec["paths"][path][method]["responses"]
    # The request schema refuses what the server refuses: unknown fields.
    request = spec["paths"]["/v1/watches"]["post"]["requestBody"]["content"]["application/json"]
    request_schema = _resolve(request["schema"], spec)
    assert request_schema.get("additionalProperties") is False
    assert set(request_schema["required"]) == {"job_id"}  # a callback is optional
