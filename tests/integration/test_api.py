"""The HTTP API in process, on a real SQLite store: validation, errors, paging, idempotency."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncGenerator, AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog
from aiohttp import web
from starlette.types import Receive, Scope, Send

from service import config
from service.answers import JOB_ID_RULE
from service.api.models import WatchRequest
from service.app import create_app, create_health_app
from service.clock import FakeClock
from service.watches import canonical
from tests.loopback import loopback_server
from tests.outage import fill, small_disk

GOOD = {"job_id": "job_abc123def", "callback_url": "https://93.184.215.14/hooks/gen"}
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
AUTHORIZATION = {"Authorization": "Bearer t0k3n"}


async def serve(
    tmp_path: Path, clock: FakeClock | None = None, **environ: str
) -> AsyncGenerator[httpx.AsyncClient]:
    settings = config.load(
        environ={
            "BRIDGE_STORE__URL": f"sqlite:///{tmp_path}/bridge.db",
            # Nothing listens there: polls fail quietly, which these tests don't look at.
            "BRIDGE_UPSTREAM__BASE_URL": "http://127.0.0.1:9",
            "BRIDGE_CONFIG": str(Path(__file__).parents[2] / "config" / "bridge.toml"),
            **environ,
        },
    )
    app = create_app(settings, clock)
    async with app.router.lifespan_context(app) as state:

        async def with_state(scope: Scope, receive: Receive, send: Send) -> None:
            # What the server does with the lifespan's state: hand a copy to each request.
            scope["state"] = dict(state or {})
            await app(scope, receive, send)

        transport = httpx.ASGITransport(app=with_state)
        # A loopback name: without tokens the bridge answers no other host.
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
            client.app = app  # type: ignore[attr-defined]
            yield client


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    async for served in serve(tmp_path):
        yield served


TOKENS = '[{"name": "acme", "token": "acme-token"}, {"name": "globex", "token": "globex-token"}]'
ACME = {"Authorization": "Bearer acme-token"}
GLOBEX = {"X-API-Key": "globex-token"}


@pytest.fixture
async def authed(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """A bridge with two tenants' tokens and a small registration burst."""
    async for served in serve(
        tmp_path,
        FakeClock(),  # the rate limit must not refill while a test runs
        BRIDGE_AUTH__TOKENS=TOKENS,
        BRIDGE_AUTH__REGISTRATION_BURST="3",
        BRIDGE_AUTH__REGISTRATIONS_PER_S="0.5",
    ):
        yield served


async def register(client: httpx.AsyncClient, **changes: Any) -> Any:
    return await client.post("/v1/watches", json={**GOOD, **changes})


@pytest.mark.parametrize(
    ("changes", "field", "words"),
    [
        ({"job_id": "has space"}, "job_id", "A-Z a-z 0-9"),  # outside the allowed characters
        ({"job_id": "x" * 129}, "job_id", "1 to 128"),  # too long
        ({"job_id": ""}, "job_id", "1 to 128"),  # empty
        ({"job_id": "job_1\n"}, "job_id", "1 to 128"),  # a trailing newline is not allowed
        # Dots only, or a leading dot: the upstream would read another path.
        ({"job_id": "."}, "job_id", f"must be {JOB_ID_RULE}"),
        ({"job_id": ".."}, "job_id", f"must be {JOB_ID_RULE}"),
        ({"job_id": ".job_1"}, "job_id", f"must be {JOB_ID_RULE}"),
        ({"callback_headers": {"X-A\n": "v"}}, "callback_headers", "valid header name"),
        # The API's own bounds, said as bounds.
        ({"callback_headers": {"X-" + "a" * 63: "v"}}, "callback_headers", "longer than 64"),
        ({"callback_headers": {"X-A": "v" * 4097}}, "callback_headers", "longer than 4096"),
        ({"callback_url": "ftp://x/y"}, "callback_url", "http"),  # not http(s)
        ({"callback_url": "/relative"}, "callback_url", "http"),  # not absolute
        ({"callback_url": "https://x/" + "a" * 2048}, "callback_url", "2048"),  # too long
        # Port 0 parses, and no connection can be made to it: every attempt failed.
        ({"callback_url": "https://93.184.215.14:0/h"}, "callback_url", "invalid port"),
        ({"callback_url": "https://93.184.215.14:65536/h"}, "callback_url", "invalid port"),
        # A host the HTTP client cannot encode (IDNA 2008 has no emoji): every attempt failed.
        ({"callback_url": "https://i\u2764.ws/hook"}, "callback_url", "cannot be requested"),
        ({"callback_url": "https://xn--ls8h.la/hook"}, "callback_url", "cannot be requested"),
        ({"callback_method": "PATCH"}, "callback_method", "POST"),  # only POST or PUT
        ({"callback_headers": {"webhook-id": "x"}}, "callback_headers", "set by the bridge"),
        ({"callback_headers": {"Host": "x"}}, "callback_headers", "set by the bridge"),
        # Content-* headers describe the body the bridge makes.
        ({"callback_headers": {"Content-Encoding": "gzip"}}, "callback_headers", "set by the"),
        ({"callback_headers": {"content-md5": "x"}}, "callback_headers", "set by the bridge"),
        # Control characters parse, then fail every attempt for three days.
        ({"callback_url": "https://x.example/a\x01b"}, "callback_url", "control characters"),
        ({"callback_url": "https://x.example/a\x7fb"}, "callback_url", "control characters"),
        ({"callback_url": "https://x.example/a\x1bb"}, "callback_url", "control characters"),
        ({"callback_url": "https://x.example/a\u2028b"}, "callback_url", "control characters"),
        ({"callback_headers": {"X-A": "a\r\nb"}}, "callback_headers", "one line"),
        # Names ignore case: both went out as one header, "x-token: a, b", which no receiver takes.
        ({"callback_headers": {"X-Token": "a", "x-token": "b"}}, "callback_headers", "twice"),
        # The URL's credentials are sent as Authorization: with another, both went in one.
        (
            {"callback_url": "https://u:p@93.184.215.14/h", "callback_headers": AUTHORIZATION},
            "callback_headers",
            "credentials",
        ),
        ({"metadata": {"k": "v" * 5000}}, "metadata", "4096"),  # over 4 KiB
        ({"metadata": [1]}, "metadata", "dictionary"),  # not an object
        ({"events": ["job.succeeded"]}, "events", "must include"),  # final events are always on
        ({"events": [*("job.succeeded", "job.failed"), "job.done"]}, "events", "unknown event"),
        ({"payload_format": "xml"}, "payload_format", "envelope"),
        ({"secret": "nope"}, "secret", "whsec_"),  # wrong prefix
        ({"secret": "whsec_c2hvcnQ="}, "secret", "24 to 64"),  # too short a key
        ({"poll_interval_s": 0.5}, "poll_interval_s", "between 2"),  # below poll.min_interval_s
        ({"timeout_s": 10**9}, "timeout_s", "at most"),  # above poll.max_timeout_s
        ({"colour": "blue"}, "colour", "unknown field"),  # unknown fields are refused
        ({"callback_url": "http://10.0.0.5/x"}, "callback_url", "private"),  # SSRF guard
        ({"callback_url": "http://169.254.169.254/x"}, "callback_url", "link-local"),
        # Without a callback there is nothing to sign or to send headers with.
        ({"callback_url": None, "secret": SECRET}, "secret", "set callback_url"),
        ({"callback_url": None, "callback_headers": {"X-A": "b"}}, "callback_headers", "only"),
        ({"final_statuses": [200]}, "final_statuses", "300 to 599"),  # a 2xx is a success
        ({"final_statuses": [410]}, "final_statuses", "already ends"),  # 410 means gone
        ({"final_statuses": [404, 404]}, "final_statuses", "twice"),
        ({"final_statuses": list(range(400, 411))}, "final_statuses", "at most 10"),
        ({"final_statuses": ["404"]}, "final_statuses.0", "integer"),  # numbers, not strings
    ],
)
async def test_invalid_registrations_name_the_field(
    client: httpx.AsyncClient, changes: dict[str, Any], field: str, words: str
) -> None:
    """Each invalid field gets a 422 problem whose `errors` names it and says what to fix."""
    response = await register(client, **changes)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["status"] == 422
    named = {e["field"]: e["message"] for e in problem["errors"]}
    assert field in named, problem
    assert words in named[field]


async def test_the_configured_interval_bounds_are_served_and_enforced(tmp_path: Path) -> None:
    """With poll.max_interval_s lowered, /openapi.json says so, and a slower poll is refused."""
    async for client in serve(tmp_path, BRIDGE_POLL__MAX_INTERVAL_S="60"):
        spec = (await client.get("/openapi.json")).json()
        bound = spec["components"]["schemas"]["WatchRequest"]["properties"]["poll_interval_s"]
        assert bound["anyOf"][0]["maximum"] == 60
        assert (await register(client, poll_interval_s=60)).status_code == 201
        refused = await register(client, poll_interval_s=61)
        assert refused.status_code == 422, refused.text
        assert refused.json()["errors"] == [
            {"field": "poll_interval_s", "message": "must be between 2 and 60 seconds"}
        ]


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        # true was read as 1: a one-second timeout, from a checkbox mapped into a number field.
        ("/v1/watches", {**GOOD, "timeout_s": True}, "timeout_s"),
        ("/v1/watches", {**GOOD, "timeout_s": False}, "timeout_s"),
        ("/v1/watches", {**GOOD, "poll_interval_s": True}, "poll_interval_s"),
        ("/v1/generate", {"input": {}, "timeout_s": True}, "timeout_s"),
        ("/v1/generate", {"input": {}, "poll_interval_s": True}, "poll_interval_s"),
    ],
)
async def test_a_boolean_is_not_a_number(
    client: httpx.AsyncClient, path: str, body: dict[str, Any], field: str
) -> None:
    """true or false where a body takes a number is a 422 naming the field; nothing is
    registered (or sent upstream)."""
    response = await client.post(path, json=body)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    value = str(body[field]).lower()
    assert response.json()["errors"] == [{"field": field, "message": f"{value} is not a number"}]
    assert (await client.get("/v1/watches")).json()["data"] == []


async def test_a_number_field_takes_a_json_integer_or_a_number_as_text(
    client: httpx.AsyncClient,
) -> None:
    """A whole number in a fractional field is that number of seconds, and so is a number
    written as text, as no-code tools send every value they map."""
    created = await register(client, timeout_s=60, poll_interval_s="5")
    assert created.status_code == 201, created.text
    assert (created.json()["timeout_s"], created.json()["poll_interval_s"]) == (60, 5)


async def test_missing_fields_are_listed(client: httpx.AsyncClient) -> None:
    """An empty object names the one required field (a callback is optional)."""
    problem = (await client.post("/v1/watches", json={})).json()
    assert {(e["field"], e["message"]) for e in problem["errors"]} == {("job_id", "required")}


async def test_invalid_json_is_a_400_problem(client: httpx.AsyncClient) -> None:
    """A body that is not JSON is refused with a problem that says so."""
    response = await client.post(
        "/v1/watches", content=b"{nope", headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert "not valid JSON" in response.json()["detail"]


async def test_oversized_body_is_refused(client: httpx.AsyncClient) -> None:
    """Bodies past 64 KiB are refused with 413 before being parsed."""
    response = await client.post(
        "/v1/watches", content=b" " * (65 * 1024), headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 413


async def test_created_watch_shows_the_secret_once(client: httpx.AsyncClient) -> None:
    """201 returns the secret; reading the watch later never does, nor header values."""
    created = await register(client, secret=SECRET, callback_headers={"X-Token": "t0ps3cret"})
    assert created.status_code == 201
    assert created.json()["secret"] == SECRET
    shown = await client.get(f"/v1/watches/{created.json()['id']}")
    assert shown.status_code == 200
    assert "secret" not in shown.json()
    assert "t0ps3cret" not in shown.text
    assert shown.json()["callback_headers"] == {"X-Token": "********"}


async def test_a_carried_traceparent_is_not_shown_as_a_callback_header(
    client: httpx.AsyncClient,
) -> None:
    """The `traceparent` of a registration's request goes with the webhooks (the stored
    headers keep it) but no answer lists it among the caller's masked `callback_headers`."""
    trace = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    headers = {"traceparent": trace, "Idempotency-Key": "traced"}
    changes = {"callback_headers": {"X-Token": "t0ps3cret"}}
    created = await client.post("/v1/watches", json={**GOOD, **changes}, headers=headers)
    replayed = await client.post("/v1/watches", json={**GOOD, **changes}, headers=headers)
    watch_id = created.json()["id"]
    listed = await client.get("/v1/watches")
    shown = [
        created.json(),
        replayed.json(),
        (await client.get(f"/v1/watches/{watch_id}")).json(),
        listed.json()["data"][0],
        (await client.delete(f"/v1/watches/{watch_id}")).json(),
    ]
    assert [answer["callback_headers"] for answer in shown] == [{"X-Token": "********"}] * 5
    bridge = client.app.state.bridge  # type: ignore[attr-defined]
    stored = await bridge.store.get_watch("", watch_id)
    assert stored.callback_headers == {"X-Token": "t0ps3cret", "traceparent": trace}


async def test_query_values_of_a_callback_are_masked_in_every_answer(
    client: httpx.AsyncClient,
) -> None:
    """A resume URL's `?signature=` (n8n 2.x) is a secret: no answer shows it back (the
    registration and its replay, the watch, the list, a long-poll, a cancel), the store keeps
    the URL whole for the deliveries."""
    stored = "https://93.184.215.14/webhook-waiting/77/wait?signature=5f3e9a7c&x="
    shown = "https://93.184.215.14/webhook-waiting/77/wait?signature=********&x=********"
    headers = {"Idempotency-Key": "resume-77"}
    created = await client.post(
        "/v1/watches", json={**GOOD, "callback_url": stored}, headers=headers
    )
    replayed = await client.post(
        "/v1/watches", json={**GOOD, "callback_url": stored}, headers=headers
    )
    watch_id = created.json()["id"]
    answers = [
        created,
        replayed,
        await client.get(f"/v1/watches/{watch_id}"),
        await client.get("/v1/watches"),
        await client.get(f"/v1/watches/{watch_id}/wait", params={"timeout_s": 0}),
        await client.delete(f"/v1/watches/{watch_id}"),
    ]
    assert [a.status_code for a in answers] == [201, 200, 200, 200, 202, 200]
    for answer in answers:
        assert "5f3e9a7c" not in answer.text, answer.request.url
        assert f'"callback_url":"{shown}"' in answer.text, answer.text
    bridge = client.app.state.bridge  # type: ignore[attr-defined]
    assert (await bridge.store.get_watch("", watch_id)).callback_url == stored


async def test_query_values_of_a_subscription_url_are_masked(client: httpx.AsyncClient) -> None:
    """A subscription URL's query values are masked in its answers too; stored whole."""
    created = await client.post("/v1/subscriptions", json={"url": f"{HOOK}?token=t0ps3cret"})
    listed = await client.get("/v1/subscriptions")
    assert created.json()["url"] == listed.json()["data"][0]["url"] == f"{HOOK}?token=********"
    bridge = client.app.state.bridge  # type: ignore[attr-defined]
    [subscription] = await bridge.store.list_subscriptions("")
    assert subscription.url == f"{HOOK}?token=t0ps3cret"


async def test_generated_secrets_are_distinct_and_valid(client: httpx.AsyncClient) -> None:
    """Without a secret, each watch gets its own whsec_ key of 32 random bytes."""
    first, second = (
        (await register(client)).json()["secret"],
        (await register(client)).json()["secret"],
    )
    assert first != second
    assert first.startswith("whsec_")


async def test_idempotency_key_replays_and_conflicts(client: httpx.AsyncClient) -> None:
    """Same key and body: 200 with the original answer; same key, other body: 409."""
    headers = {"Idempotency-Key": "order-42"}
    first = await client.post("/v1/watches", json=GOOD, headers=headers)
    again = await client.post("/v1/watches", json=GOOD, headers=headers)
    other = await client.post("/v1/watches", json={**GOOD, "job_id": "job_other"}, headers=headers)
    assert (first.status_code, again.status_code, other.status_code) == (201, 200, 409)
    assert again.json() == first.json()
    assert other.headers["content-type"] == "application/problem+json"
    assert len((await client.get("/v1/watches")).json()["data"]) == 1


async def test_an_idempotent_request_is_recorded_by_a_keyed_fingerprint(tmp_path: Path) -> None:
    """With an encryption key, the stored record of a request (which carries its secret) is an
    HMAC under that key, not a hash anyone could recompute from guesses; replays still work."""
    key = "pVQm2cl3y3ZTOQ0xq0Ht8xKSodUSlsXaZBRiSPVzFjw="
    async for client in serve(tmp_path, BRIDGE_SECURITY__ENCRYPTION_KEY=key):
        body = {**GOOD, "secret": SECRET}
        headers = {"Idempotency-Key": "order-7"}
        first = await client.post("/v1/watches", json=body, headers=headers)
        assert (await client.post("/v1/watches", json=body, headers=headers)).json() == first.json()
        bridge = client.app.state.bridge  # type: ignore[attr-defined]
        recorded = await bridge.store.find_idempotency("", "order-7")
        request = WatchRequest.model_validate(body)
        plain = hashlib.sha256(canonical(request.options(), job_id=request.job_id)).hexdigest()
        assert recorded.request_hash != plain
        assert SECRET.encode() not in recorded.response  # the stored answer is sealed too


async def test_listing_pages_newest_first(client: httpx.AsyncClient) -> None:
    """The list is newest first, filtered, and the cursor walks every page once."""
    ids = [(await register(client, job_id=f"job_{i}")).json()["id"] for i in range(5)]
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": "2", **({"cursor": cursor} if cursor else {})}
        page = (await client.get("/v1/watches", params=params)).json()
        seen += [w["id"] for w in page["data"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(ids))
    by_job = (await client.get("/v1/watches", params={"job_id": "job_3"})).json()["data"]
    assert [w["id"] for w in by_job] == [ids[3]]


async def test_listing_searches_job_id_prefix_metadata_and_time(
    client: httpx.AsyncClient,
) -> None:
    """job_id_prefix, metadata_key with metadata_value, created_from and created_to narrow
    the list, and combine."""
    order = (await register(client, job_id="ord-1", metadata={"order": 1234})).json()
    text = (await register(client, job_id="ord-2", metadata={"order": "1234"})).json()
    other = (await register(client, job_id="img-1", metadata={"order": "99"})).json()

    async def found(**params: str) -> list[str]:
        response = await client.get("/v1/watches", params=params)
        assert response.status_code == 200, response.text
        return [w["id"] for w in response.json()["data"]]

    assert await found(job_id_prefix="ord-") == [text["id"], order["id"]]
    assert await found(metadata_key="order", metadata_value="1234") == [text["id"], order["id"]]
    assert await found(job_id_prefix="img", metadata_key="order", metadata_value="99") == [
        other["id"]
    ]
    created = order["created_at"]
    assert await found(created_from=created) == [other["id"], text["id"], order["id"]]
    assert await found(created_to=created) == []
    assert await found(created_from="2999-01-01", job_id_prefix="ord") == []


async def listed(client: httpx.AsyncClient, **params: str) -> list[str]:
    """The ids `GET /v1/watches` lists with these filters."""
    response = await client.get("/v1/watches", params=params)
    assert response.status_code == 200, response.text
    return [w["id"] for w in response.json()["data"]]


async def test_watches_name_their_upstream_and_the_list_filters_by_it(tmp_path: Path) -> None:
    """A watch names the upstream it was registered on (`default` when none was named); the
    same job id on two upstreams is two watches; the list filters by upstream; an upstream the
    settings do not name is a 422 listing the ones they do."""
    async for client in serve(tmp_path, BRIDGE_UPSTREAMS__RUNWAY__BASE_URL="http://127.0.0.1:9"):
        here = (await register(client)).json()
        there = (await register(client, upstream="runway")).json()
        assert (here["upstream"], there["upstream"]) == ("default", "runway")
        assert here["job_id"] == there["job_id"]
        shown = await client.get(f"/v1/watches/{there['id']}")
        assert shown.json()["upstream"] == "runway"
        assert await listed(client, upstream="runway") == [there["id"]]
        assert await listed(client, upstream="default") == [here["id"]]
        assert await listed(client, upstream="fal") == []  # not configured: no watch of its
        assert await listed(client) == [there["id"], here["id"]]

        refused = await register(client, upstream="fal")
        assert refused.status_code == 422
        (error,) = refused.json()["errors"]
        assert error["field"] == "upstream"
        assert "the configured ones are default, runway" in error["message"]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("job_id_prefix=%23123", "job_id_prefix"),
        ("upstream=Runway", "upstream"),
        ("upstream=" + "x" * 33, "upstream"),
        ("metadata_key=order", "metadata_value"),
        ("metadata_value=1", "metadata_key"),
        ("metadata_key=a%22b&metadata_value=1", "metadata_key"),
        # PostgreSQL cannot compare a string holding NUL: the search failed (500) there.
        ("metadata_key=order&metadata_value=a%00b", "metadata_value"),
        ("created_from=yesterday", "created_from"),
        ("created_from=2026-01-02&created_to=2026-01-01", "created_to"),
        ("status=finished", "status"),
        ("outcome=finished", "outcome"),
        ("delivery=sent", "delivery"),
        ("limit=0", "limit"),
        ("limit=abc", "limit"),
        ("job_id=..", "job_id"),
    ],
)
async def test_bad_list_queries(client: httpx.AsyncClient, query: str, field: str) -> None:
    """Bad filters are 422 problems naming the parameter."""
    response = await client.get(f"/v1/watches?{query}")
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == field


async def test_cancel_is_idempotent(client: httpx.AsyncClient) -> None:
    """DELETE cancels, and cancelling again answers the same watch."""
    watch_id = (await register(client)).json()["id"]
    first = await client.delete(f"/v1/watches/{watch_id}")
    second = await client.delete(f"/v1/watches/{watch_id}")
    assert first.status_code == second.status_code == 200
    assert first.json()["status"] == second.json()["status"] == "cancelled"


async def test_redeliver_refuses_an_active_watch(client: httpx.AsyncClient) -> None:
    """Only delivered, failed, gone and completed watches can be redelivered."""
    watch_id = (await register(client)).json()["id"]
    response = await client.post(f"/v1/watches/{watch_id}/redeliver")
    assert response.status_code == 409
    assert "active" in response.json()["detail"]


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/v1/watches/wch_missing", 404),
        ("DELETE", "/v1/watches/wch_missing", 404),
        ("GET", "/v1/watches/wch_missing/deliveries", 404),
        ("POST", "/v1/watches/wch_missing/redeliver", 404),
        ("POST", "/v1/watches/wch_missing/deliveries/msg_missing/retry", 404),
        ("POST", "/v1/watches/wch_missing/deliveries/not-an-id/retry", 404),
        ("GET", "/v1/watches/wch_missing/wait?timeout_s=0", 404),
        ("GET", "/v1/watches/wch_missing/events", 404),
        ("DELETE", "/v1/subscriptions/sub_missing", 404),
        ("DELETE", "/v1/subscriptions/not-an-id", 404),
        ("POST", "/v1/subscriptions/sub_missing/disable", 404),
        ("POST", "/v1/subscriptions/sub_missing/enable", 404),
        ("POST", "/v1/subscriptions/sub_missing/secret/rotate", 404),
        ("POST", "/v1/subscriptions/not-an-id/test", 404),
        ("GET", "/v1/nothing", 404),
        ("PUT", "/v1/watches", 405),
    ],
)
async def test_errors_are_problems(
    client: httpx.AsyncClient, method: str, path: str, status: int
) -> None:
    """Unknown watches, routes and methods answer problem documents too."""
    response = await client.request(method, path)
    assert response.status_code == status
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["status"] == status


async def test_health(client: httpx.AsyncClient) -> None:
    """livez and readyz answer ok once the bridge runs."""
    assert (await client.get("/livez")).json() == {"status": "ok"}
    assert (await client.get("/readyz")).json() == {"status": "ok"}


async def test_openapi_describes_every_route(client: httpx.AsyncClient) -> None:
    """Every route the app serves is in /openapi.json, with the same methods (the dashboard's,
    mounted at /ui, are pages, not API)."""
    spec = (await client.get("/openapi.json")).json()
    served: dict[str, set[str]] = {}
    for route in client.app.routes:  # type: ignore[attr-defined]
        if route.path == "/ui":
            continue
        served.setdefault(route.path, set()).update(m.lower() for m in route.methods - {"HEAD"})
    documented = {path: set(ops) for path, ops in spec["paths"].items()}
    assert documented == served


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v1/watches"),
        ("GET", "/v1/watches"),
        ("GET", "/v1/watches/wch_x"),
        ("DELETE", "/v1/watches/wch_x"),
        ("GET", "/v1/watches/wch_x/deliveries"),
        ("POST", "/v1/watches/wch_x/redeliver"),
        ("POST", "/v1/watches/wch_x/deliveries/msg_x/retry"),
        ("GET", "/v1/watches/wch_x/wait"),
        ("GET", "/v1/watches/wch_x/events"),
        ("GET", "/v1/events"),
        ("POST", "/v1/subscriptions"),
        ("GET", "/v1/subscriptions"),
        ("DELETE", "/v1/subscriptions/sub_x"),
        ("POST", "/v1/subscriptions/sub_x/disable"),
        ("POST", "/v1/subscriptions/sub_x/enable"),
        ("POST", "/v1/subscriptions/sub_x/secret/rotate"),
        ("POST", "/v1/subscriptions/sub_x/test"),
        ("GET", "/v1/me"),
    ],
)
@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer nope"}, {"X-API-Key": "nope"}])
async def test_every_api_route_needs_a_token(
    authed: httpx.AsyncClient, method: str, path: str, headers: dict[str, str]
) -> None:
    """Without a valid token every /v1 route answers a 401 problem naming both headers."""
    response = await authed.request(method, path, headers=headers, json=GOOD)
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert "X-API-Key" in response.json()["detail"]


async def test_health_and_spec_need_no_token(authed: httpx.AsyncClient) -> None:
    """Probes and the API description stay reachable without a token."""
    for path in ("/livez", "/readyz", "/openapi.json"):
        assert (await authed.get(path)).status_code == 200


async def test_me_names_the_tenant(authed: httpx.AsyncClient) -> None:
    """GET /v1/me tells a no-code tool whose token it holds."""
    assert (await authed.get("/v1/me", headers=GLOBEX)).json() == {
        "tenant": "globex",
        "authenticated": True,
        "role": "full",
    }


async def test_tenants_see_only_their_own_watches(authed: httpx.AsyncClient) -> None:
    """Another tenant's watch is a 404 for every operation, and absent from lists."""
    mine = (await authed.post("/v1/watches", json=GOOD, headers=ACME)).json()["id"]
    for method, path in (
        ("GET", f"/v1/watches/{mine}"),
        ("DELETE", f"/v1/watches/{mine}"),
        ("GET", f"/v1/watches/{mine}/deliveries"),
        ("POST", f"/v1/watches/{mine}/redeliver"),
    ):
        assert (await authed.request(method, path, headers=GLOBEX)).status_code == 404, path
    assert (await authed.get("/v1/watches", headers=GLOBEX)).json()["data"] == []
    listed = (await authed.get("/v1/watches", headers=ACME)).json()["data"]
    assert [w["id"] for w in listed] == [mine]
    assert (await authed.get(f"/v1/watches/{mine}", headers=ACME)).json()["status"] == "active"


async def test_idempotency_keys_are_per_tenant(authed: httpx.AsyncClient) -> None:
    """Two tenants using the same Idempotency-Key get two watches, not each other's."""
    key = {"Idempotency-Key": "same"}
    first = await authed.post("/v1/watches", json=GOOD, headers={**ACME, **key})
    second = await authed.post("/v1/watches", json=GOOD, headers={**GLOBEX, **key})
    assert (first.status_code, second.status_code) == (201, 201)
    assert first.json()["id"] != second.json()["id"]


async def test_registrations_are_rate_limited_per_token(authed: httpx.AsyncClient) -> None:
    """Past the burst a token gets 429 with Retry-After; another token is unaffected."""
    codes = [
        (await authed.post("/v1/watches", json=GOOD, headers=ACME)).status_code for _ in range(4)
    ]
    assert codes == [201, 201, 201, 429]
    limited = await authed.post("/v1/watches", json=GOOD, headers=ACME)
    assert limited.status_code == 429
    assert limited.headers["content-type"] == "application/problem+json"
    assert int(limited.headers["retry-after"]) >= 1
    assert (await authed.post("/v1/watches", json=GOOD, headers=GLOBEX)).status_code == 201
    assert (await authed.get("/v1/watches", headers=ACME)).status_code == 200  # reads are not


async def test_failed_authentications_lock_the_address_out(tmp_path: Path) -> None:
    """Past `auth.failed_auth_burst` failures an address gets 429 with Retry-After, even with a
    valid token, so tokens cannot be guessed quickly; the failures are counted per address."""
    async for client in serve(
        tmp_path, FakeClock(), BRIDGE_AUTH__TOKENS=TOKENS, BRIDGE_AUTH__FAILED_AUTH_BURST="3"
    ):
        codes = [
            (await client.get("/v1/watches", headers={"X-API-Key": f"guess-{n}"})).status_code
            for n in range(3)
        ]
        assert codes == [401, 401, 401]
        locked = await client.get("/v1/watches", headers=ACME)
        assert locked.status_code == 429
        assert "failed authentications" in locked.json()["detail"]
        assert int(locked.headers["retry-after"]) >= 1
        assert (await client.get("/livez")).status_code == 200  # what needs no token still works


async def test_with_tokens_metrics_are_on_the_health_port_only(tmp_path: Path) -> None:
    """/metrics counts every tenant's work: with tokens the API port answers a 404 saying where
    it is, and the health port's app serves it."""
    async for client in serve(tmp_path, BRIDGE_AUTH__TOKENS=TOKENS):
        response = await client.get("/metrics", headers=ACME)
        assert response.status_code == 404
        assert "server.health_port" in response.json()["detail"]
        health = create_health_app(client.app)  # type: ignore[attr-defined]
        transport = httpx.ASGITransport(app=health)
        async with httpx.AsyncClient(transport=transport, base_url="http://health") as probe:
            assert "bridge_watches" in (await probe.get("/metrics")).text


async def test_the_gauges_job_sees_a_full_disk_end_with_nothing_else_to_write(
    tmp_path: Path,
) -> None:
    """On a full disk a registration is a 503 and bridge_store_up drops to 0; once space is
    freed, the gauges job (which tries a write while writes are refused) brings it back to 1
    with no registration or poll to write: the end of an outage shows without traffic."""
    with small_disk(tmp_path / "disk") as disk:
        async for client in serve(disk):
            bridge = client.app.state.bridge  # type: ignore[attr-defined]
            filler = fill(disk)
            refused = await client.post("/v1/watches", json=GOOD)
            assert (refused.status_code, refused.headers["retry-after"]) == (503, "5")
            await bridge.refresh_gauges()
            assert "\nbridge_store_up 0.0\n" in (await client.get("/metrics")).text

            filler.unlink()
            await bridge.refresh_gauges()
            assert "\nbridge_store_up 1.0\n" in (await client.get("/metrics")).text
            assert (await client.post("/v1/watches", json=GOOD)).status_code == 201


async def test_without_tokens_metrics_are_on_the_api_port(client: httpx.AsyncClient) -> None:
    """A loopback bridge without tokens serves /metrics on its only port."""
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert "bridge_watches" in response.text


@pytest.mark.parametrize("key", [None, "pVQm2cl3y3ZTOQ0xq0Ht8xKSodUSlsXaZBRiSPVzFjw="])
async def test_start_up_warns_when_secrets_are_kept_in_clear(
    tmp_path: Path, key: str | None
) -> None:
    """Without security.encryption_key the bridge says, once, at start-up, that secrets are
    stored in clear and how to set a key; with one it says nothing of the kind."""
    environ = {} if key is None else {"BRIDGE_SECURITY__ENCRYPTION_KEY": key}
    with structlog.testing.capture_logs() as logs:
        async for _ in serve(tmp_path, None, **environ):
            pass
    warned = [entry for entry in logs if entry["event"] == "bridge.secrets_in_clear"]
    if key is None:
        [warning] = warned
        assert warning["log_level"] == "warning"
        assert "new-encryption-key" in warning["detail"]
    else:
        assert warned == []


async def test_request_ids_are_echoed_or_made(client: httpx.AsyncClient) -> None:
    """A caller's X-Request-ID comes back as it was; without one (or a bad one) one is made."""
    kept = await client.get("/livez", headers={"X-Request-ID": "trace-42.a:b"})
    assert kept.headers["x-request-id"] == "trace-42.a:b"
    made = await client.get("/v1/watches")
    assert made.headers["x-request-id"].startswith("req_")
    odd = await client.get("/v1/watches", headers={"X-Request-ID": "a b\\tc"})
    assert odd.headers["x-request-id"].startswith("req_")
    problem = await client.get("/v1/watches/wch_missing", headers={"X-Request-ID": "r-1"})
    assert problem.headers["x-request-id"] == "r-1"  # errors carry it too


HOOK = "https://93.184.215.14/hooks/all"


async def test_a_watch_without_a_callback(client: httpx.AsyncClient) -> None:
    """No callback_url: registered, nothing to sign (secret null), shown with a null callback."""
    created = await client.post("/v1/watches", json={"job_id": "job_1", "final_statuses": [409]})
    assert created.status_code == 201, created.text
    assert created.json()["secret"] is None
    shown = (await client.get(f"/v1/watches/{created.json()['id']}")).json()
    assert (shown["callback_url"], shown["final_statuses"], shown["status"]) == (
        None,
        [409],
        "active",
    )
    with_callback = (await register(client, final_statuses=[409, 404])).json()
    assert with_callback["final_statuses"] == [404, 409]


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({}, "url", "required"),
        ({"url": "ftp://x/y"}, "url", "http"),
        ({"url": "http://10.0.0.5/x"}, "url", "private"),  # SSRF guard, as for callbacks
        ({"url": HOOK, "events": []}, "events", "at least one"),
        ({"url": HOOK, "events": ["job.done"]}, "events", "unknown event"),
        ({"url": HOOK, "headers": {"webhook-signature": "x"}}, "headers", "set by the bridge"),
        (
            {"url": "https://u@93.184.215.14/h", "headers": {"authorization": "t"}},
            "headers",
            "credentials",
        ),
        ({"url": HOOK, "secret": "nope"}, "secret", "whsec_"),
        ({"url": HOOK, "final_statuses": [410]}, "final_statuses", "already ends"),
        ({"url": HOOK, "callback_url": HOOK}, "callback_url", "unknown field"),
    ],
)
async def test_invalid_subscriptions_name_the_field(
    client: httpx.AsyncClient, body: dict[str, Any], field: str, words: str
) -> None:
    """Each invalid subscription field gets a 422 problem naming it."""
    response = await client.post("/v1/subscriptions", json=body)
    assert response.status_code == 422, response.text
    named = {e["field"]: e["message"] for e in response.json()["errors"]}
    assert words in named[field], named


async def test_subscriptions_are_created_listed_and_deleted(client: httpx.AsyncClient) -> None:
    """201 shows the secret once; the list hides it, URL credentials and header values; a
    deleted subscription leaves the list and cannot be deleted twice."""
    created = await client.post(
        "/v1/subscriptions",
        json={"url": "https://user:pw@93.184.215.14/h", "headers": {"X-Token": "t0ps3cret"}},
    )
    assert created.status_code == 201, created.text
    view = created.json()
    assert view["secret"].startswith("whsec_")
    assert (view["url"], view["events"], view["status"]) == (
        "https://93.184.215.14/h", ["job.succeeded", "job.failed"], "active",
    )  # fmt: skip
    own = await client.post("/v1/subscriptions", json={"url": HOOK, "secret": SECRET})
    assert own.json()["secret"] == SECRET
    listed = await client.get("/v1/subscriptions")
    assert [s["id"] for s in listed.json()["data"]] == [view["id"], own.json()["id"]]
    for secret in (view["secret"], SECRET, "t0ps3cret", "user:pw"):
        assert secret not in listed.text
    assert listed.json()["data"][0]["headers"] == {"X-Token": "********"}
    assert (await client.delete(f"/v1/subscriptions/{view['id']}")).status_code == 204
    assert (await client.delete(f"/v1/subscriptions/{view['id']}")).status_code == 404
    listed = await client.get("/v1/subscriptions")
    assert [s["id"] for s in listed.json()["data"]] == [own.json()["id"]]


async def test_at_most_100_active_subscriptions(tmp_path: Path) -> None:
    """The 101st active subscription is a 409; deleting one makes room again."""
    async for client in serve(tmp_path, BRIDGE_AUTH__SUBSCRIPTION_CHANGE_BURST="200"):
        ids = []
        for _ in range(100):
            created = await client.post("/v1/subscriptions", json={"url": HOOK})
            assert created.status_code == 201
            ids.append(created.json()["id"])
        refused = await client.post("/v1/subscriptions", json={"url": HOOK})
        assert refused.status_code == 409
        assert "100" in refused.json()["detail"]
        await client.delete(f"/v1/subscriptions/{ids[0]}")
        assert (await client.post("/v1/subscriptions", json={"url": HOOK})).status_code == 201


async def test_subscription_changes_are_rate_limited_per_token(tmp_path: Path) -> None:
    """Past the burst, creating or deleting a subscription gets 429 with Retry-After until the
    rate refills; another token is unaffected, and reading is not limited."""
    clock = FakeClock()
    async for authed in serve(
        tmp_path, clock, BRIDGE_AUTH__TOKENS=TOKENS,
        BRIDGE_AUTH__SUBSCRIPTION_CHANGE_BURST="3", BRIDGE_AUTH__SUBSCRIPTION_CHANGES_PER_MIN="6",
    ):  # fmt: skip
        first = await authed.post("/v1/subscriptions", json={"url": HOOK}, headers=ACME)
        second = await authed.post("/v1/subscriptions", json={"url": HOOK}, headers=ACME)
        deleted = await authed.delete(f"/v1/subscriptions/{first.json()['id']}", headers=ACME)
        assert [r.status_code for r in (first, second, deleted)] == [201, 201, 204]

        limited = await authed.post("/v1/subscriptions", json={"url": HOOK}, headers=ACME)
        assert limited.status_code == 429
        assert limited.headers["content-type"] == "application/problem+json"
        assert "subscription changes" in limited.json()["detail"]
        assert limited.headers["retry-after"] == "10"  # one change every 10 s
        gone = await authed.delete(f"/v1/subscriptions/{second.json()['id']}", headers=ACME)
        assert gone.status_code == 429
        theirs = await authed.post("/v1/subscriptions", json={"url": HOOK}, headers=GLOBEX)
        assert theirs.status_code == 201
        listed = await authed.get("/v1/subscriptions", headers=ACME)
        assert [s["id"] for s in listed.json()["data"]] == [second.json()["id"]]

        clock.advance(10)
        again = await authed.delete(f"/v1/subscriptions/{second.json()['id']}", headers=ACME)
        assert again.status_code == 204


async def test_subscriptions_are_per_tenant(authed: httpx.AsyncClient) -> None:
    """Another tenant's subscription is neither listed nor deletable."""
    mine = await authed.post("/v1/subscriptions", json={"url": HOOK}, headers=ACME)
    assert (await authed.get("/v1/subscriptions", headers=GLOBEX)).json()["data"] == []
    deleted = await authed.delete(f"/v1/subscriptions/{mine.json()['id']}", headers=GLOBEX)
    assert deleted.status_code == 404
    assert len((await authed.get("/v1/subscriptions", headers=ACME)).json()["data"]) == 1


@pytest.mark.parametrize(
    ("query", "field"),
    [("timeout_s=61", "timeout_s"), ("timeout_s=-1", "timeout_s"), ("timeout_s=1.5", "timeout_s")],
)
async def test_bad_wait_queries(client: httpx.AsyncClient, query: str, field: str) -> None:
    """timeout_s is a whole number of seconds from 0 to 60."""
    watch_id = (await register(client)).json()["id"]
    response = await client.get(f"/v1/watches/{watch_id}/wait?{query}")
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == field


async def test_wait_answers_not_yet_then_conflict_once_cancelled(
    client: httpx.AsyncClient,
) -> None:
    """An active watch at timeout: 202, the watch, Retry-After 0. Cancelled before its job
    ended: 409, there will never be a final event."""
    watch_id = (await register(client)).json()["id"]
    pending = await client.get(f"/v1/watches/{watch_id}/wait?timeout_s=0")
    assert pending.status_code == 202
    assert pending.headers["retry-after"] == "0"
    assert pending.json()["status"] == "pending"
    assert pending.json()["watch"]["id"] == watch_id
    await client.delete(f"/v1/watches/{watch_id}")
    cancelled = await client.get(f"/v1/watches/{watch_id}/wait?timeout_s=5")
    assert cancelled.status_code == 409
    assert "cancelled" in cancelled.json()["detail"]


async def test_the_stream_of_a_cancelled_watch_ends_at_once(client: httpx.AsyncClient) -> None:
    """A watch cancelled before any event has nothing to stream: 204, which tells an
    EventSource not to reconnect."""
    watch_id = (await register(client)).json()["id"]
    await client.delete(f"/v1/watches/{watch_id}")
    streamed = await client.get(f"/v1/watches/{watch_id}/events")
    assert streamed.status_code == 204
    assert streamed.content == b""


@pytest.mark.parametrize(
    ("headers", "query", "field"),
    [
        ({"Last-Event-ID": "42"}, "", "Last-Event-ID"),
        ({}, "?last_event_id=evt_%00", "last_event_id"),
    ],
)
async def test_bad_last_event_ids(
    client: httpx.AsyncClient, headers: dict[str, str], query: str, field: str
) -> None:
    """A Last-Event-ID that is no event id is a 422 naming where it came from."""
    watch_id = (await register(client)).json()["id"]
    response = await client.get(f"/v1/watches/{watch_id}/events{query}", headers=headers)
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == field


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("type=job.done", "type"),
        ("type=job.failed,nope", "type"),
        ("type=job.failed,,job.succeeded", "type"),  # an empty type between the commas
        ("type=job.failed&type=job.succeeded;job.queued", "type"),
        ("limit=0", "limit"),
        ("limit=101", "limit"),
    ],
)
async def test_bad_event_queries(client: httpx.AsyncClient, query: str, field: str) -> None:
    """Unknown types and limits outside 1-100 are 422 problems naming the parameter."""
    response = await client.get(f"/v1/events?{query}")
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == field


async def test_no_events_yet_is_an_empty_list(client: httpx.AsyncClient) -> None:
    """Polling tools get a JSON array even before anything happened."""
    response = await client.get("/v1/events?type=job.succeeded&type=job.failed&limit=5")
    assert response.status_code == 200
    assert response.json() == []


# POST /v1/generate. The upstream is a closed port here: a request that reaches it is a 502.


@pytest.mark.parametrize(
    ("changes", "field", "words"),
    [
        ({"input": None}, "input", "dictionary"),  # input is required, and an object
        ({"input": "a cat"}, "input", "dictionary"),
        ({"job_id": "job_1"}, "job_id", "unknown field"),  # the upstream names the job
        ({"callback_url": "http://10.0.0.5/x"}, "callback_url", "private"),  # SSRF guard
        ({"poll_interval_s": 0.5}, "poll_interval_s", "between 2"),
        # Per-watch keys are stored encrypted; no encryption key is configured here.
        ({"upstream_api_key": "bw_own"}, "upstream_api_key", "encryption_key"),
    ],
)
async def test_generate_checks_everything_before_calling_the_upstream(
    client: httpx.AsyncClient, changes: dict[str, Any], field: str, words: str
) -> None:
    """An invalid generate call is a 422 naming the field, never the 502 of an upstream call."""
    body = {"input": {"prompt": "a cat"}, **changes}
    response = await client.post("/v1/generate", json=body)
    assert response.status_code == 422, response.text
    named = {e["field"]: e["message"] for e in response.json()["errors"]}
    assert words in named[field], named


async def test_generate_without_an_upstream_is_a_502_and_registers_nothing(
    client: httpx.AsyncClient,
) -> None:
    """An unreachable upstream is a 502 problem saying why; no watch is registered and the
    Idempotency-Key is not used up; no lock outlives the calls."""
    for _ in range(2):  # the second call is not a replay of the first failure
        response = await client.post(
            "/v1/generate", json={"input": {"prompt": "a cat"}}, headers={"Idempotency-Key": "k"}
        )
        assert response.status_code == 502, response.text
        assert response.headers["content-type"] == "application/problem+json"
        problem = response.json()
        assert problem["type"] == "/problems/upstream-failed"
        assert problem["detail"].startswith("upstream request failed"), problem
    assert (await client.get("/v1/watches")).json()["data"] == []
    bridge = client.app.state.bridge  # type: ignore[attr-defined]
    assert bridge.generation.pending_keys == 0


@pytest.mark.parametrize("job_id", [".", "..", ".hidden"])
async def test_generate_does_not_watch_a_job_id_that_could_change_the_path(
    tmp_path: Path, job_id: str
) -> None:
    """An upstream that starts a job named ".." (polled, it would be the API root) gets a 502
    saying what a job id is; nothing is registered."""

    async def handle(request: web.Request) -> web.StreamResponse:
        return web.json_response({"id": job_id, "status": "queued"})

    async with loopback_server(handle) as upstream:
        async for client in serve(tmp_path, BRIDGE_UPSTREAM__BASE_URL=upstream):
            response = await client.post("/v1/generate", json={"input": {"prompt": "a cat"}})
            assert response.status_code == 502, response.text
            assert f"(a job id is {JOB_ID_RULE})" in response.json()["detail"]
            assert (await client.get("/v1/watches")).json()["data"] == []


# Keys the upstream echoes are never relayed to tenants.

BRIDGE_KEY = "bw_bridge_0123456789abcdef"
OWN_KEY = "bw_own_fedcba9876543210"


@contextlib.asynccontextmanager
async def echoing(tmp_path: Path, status: int) -> AsyncIterator[httpx.AsyncClient]:
    """A bridge (with its own upstream key and an encryption key) on an upstream that refuses
    every request with `status`, quoting the key it received and the bridge's own."""

    async def handle(request: web.Request) -> web.StreamResponse:
        words = f"refused {request.headers.get('Authorization')} (not {BRIDGE_KEY} either)"
        return web.json_response({"error": words}, status=status)

    async with loopback_server(handle) as upstream:
        served = serve(
            tmp_path,
            BRIDGE_UPSTREAM__BASE_URL=upstream,
            BRIDGE_UPSTREAM__API_KEY=BRIDGE_KEY,
            BRIDGE_SECURITY__ENCRYPTION_KEY="pVQm2cl3y3ZTOQ0xq0Ht8xKSodUSlsXaZBRiSPVzFjw=",
        )
        async with contextlib.aclosing(served):
            async for client in served:
                yield client


async def _ended(client: httpx.AsyncClient, watch_id: str) -> Any:
    """The watch once it is no longer active (its first poll ends it), within 10 s."""
    async with asyncio.timeout(10):
        while True:
            watch = (await client.get(f"/v1/watches/{watch_id}")).json()
            if watch["status"] != "active":
                return watch
            await asyncio.sleep(0.02)


@pytest.mark.parametrize(
    ("status", "own_key", "error"),
    [
        # The bridge's own key refused: said so, nothing of the answer relayed.
        (401, None, "the upstream refused the bridge's key (401)"),
        (403, None, "the upstream refused the bridge's key (403)"),
        # A watch's own key refused: the upstream's words, both keys masked.
        (401, OWN_KEY, "the upstream refused the API key (401): refused Bearer ******** (not "
         "******** either)"),
    ],
)  # fmt: skip
async def test_a_refused_watch_relays_no_key(
    tmp_path: Path, status: int, own_key: str | None, error: str
) -> None:
    """The watch's last_error and its job.failed event (error and data) show no key."""
    async with echoing(tmp_path, status) as client:
        response = await client.post(
            "/v1/watches", json={"job_id": "job_1", "upstream_api_key": own_key}
        )
        assert response.status_code == 201, response.text
        watch = await _ended(client, response.json()["id"])
        [event] = (await client.get("/v1/events")).json()
    assert (watch["status"], watch["last_error"]) == ("completed", error)
    assert (event["type"], event["error_code"], event["error"]) == (
        "job.failed",
        "unauthorized",
        error,
    )
    if own_key is None:
        assert event["data"] is None
    else:
        assert event["data"] == {"error": error.split(": ", 1)[1]}
    for key in (BRIDGE_KEY, OWN_KEY):
        assert key not in str(watch) + str(event)


@pytest.mark.parametrize(
    ("status", "own_key", "answered", "detail"),
    [
        # The bridge's own key refused: the operator's to fix, not a 401 of the caller's token
        # (a Zapier connection would be asked to sign in again).
        (401, None, 502, "the upstream refused the bridge's key (401); nothing was registered"),
        (403, None, 502, "the upstream refused the bridge's key (403); nothing was registered"),
        (401, OWN_KEY, 401, "the upstream refused the generation: refused Bearer ******** (not "
         "******** either)"),
        (402, None, 402, "the upstream refused the generation: refused Bearer ******** (not "
         "******** either)"),
    ],
)  # fmt: skip
async def test_a_refused_generation_relays_no_key(
    tmp_path: Path, status: int, own_key: str | None, answered: int, detail: str
) -> None:
    """The 4xx of POST /v1/generate shows no key; the bridge's own key's refusal says so."""
    async with echoing(tmp_path, status) as client:
        response = await client.post(
            "/v1/generate", json={"input": {"prompt": "a cat"}, "upstream_api_key": own_key}
        )
    assert response.status_code == answered, response.text
    assert response.json()["detail"] == detail
    for key in (BRIDGE_KEY, OWN_KEY):
        assert key not in response.text


async def test_an_unwatchable_job_id_is_quoted_without_a_key(tmp_path: Path) -> None:
    """The 502 of a started job whose id the bridge cannot watch quotes that id, keys masked."""

    async def handle(request: web.Request) -> web.StreamResponse:
        return web.json_response({"id": f"/{BRIDGE_KEY}", "status": "queued"})

    async with loopback_server(handle) as upstream:
        served = serve(
            tmp_path, BRIDGE_UPSTREAM__BASE_URL=upstream, BRIDGE_UPSTREAM__API_KEY=BRIDGE_KEY
        )
        async with contextlib.aclosing(served):
            async for client in served:
                response = await client.post("/v1/generate", json={"input": {"prompt": "a cat"}})
    assert response.status_code == 502, response.text
    assert response.json()["detail"].startswith("the upstream started job '/********', whose id")


@pytest.mark.parametrize("headers", [{}, {"Content-Type": "application/json"}])
async def test_a_body_that_may_be_left_out_may_be_empty_whatever_its_type(
    client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    """No-code tools send `Content-Type: application/json` with every request, an empty body
    included: where a body is optional, an empty one is none."""
    answer = await client.post("/v1/watches/failed/redeliver", content=b"", headers=headers)
    assert answer.status_code == 202, answer.text
    assert answer.json()["matched"] == 0
