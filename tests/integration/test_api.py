"""The HTTP API in process, on a real SQLite store: validation, errors, paging, idempotency."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.types import Receive, Scope, Send

from service import config
from service.app import create_app
from service.clock import FakeClock

GOOD = {"job_id": "job_abc123def", "callback_url": "https://93.184.215.14/hooks/gen"}
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


async def serve(
    tmp_path: Path, clock: FakeClock | None = None, **environ: str
) -> AsyncIterator[httpx.AsyncClient]:
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
        async with httpx.AsyncClient(transport=transport, base_url="http://bridge") as client:
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
        ({"callback_headers": {"X-A\n": "v"}}, "callback_headers", "valid header name"),
        ({"callback_url": "ftp://x/y"}, "callback_url", "http"),  # not http(s)
        ({"callback_url": "/relative"}, "callback_url", "http"),  # not absolute
        ({"callback_url": "https://x/" + "a" * 2048}, "callback_url", "2048"),  # too long
        ({"callback_method": "PATCH"}, "callback_method", "POST"),  # only POST or PUT
        ({"callback_headers": {"webhook-id": "x"}}, "callback_headers", "set by the bridge"),
        ({"callback_headers": {"Host": "x"}}, "callback_headers", "set by the bridge"),
        ({"callback_headers": {"X-A": "a\r\nb"}}, "callback_headers", "one line"),
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


async def test_missing_fields_are_listed(client: httpx.AsyncClient) -> None:
    """An empty object names both required fields."""
    problem = (await client.post("/v1/watches", json={})).json()
    assert {(e["field"], e["message"]) for e in problem["errors"]} == {
        ("job_id", "required"),
        ("callback_url", "required"),
    }


async def test_invalid_json_is_a_400_problem(client: httpx.AsyncClient) -> None:
    """A body that is not JSON is refused with a problem that says so."""
    response = await client.post(
        "/v1/watches", content=b"{nope", headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert "not valid JSON" in response.json()["detail"]


async def test_oversized_body_is_refused(client: httpx.AsyncClient) -> None:
    """Bodies past 64 KiB are refused with 413 before being parsed."""
    response = await client.post("/v1/watches", content=b" " * (65 * 1024))
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


@pytest.mark.parametrize(
    ("query", "field"),
    [("status=finished", "status"), ("limit=0", "limit"), ("limit=abc", "limit")],
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
    """Only delivered, failed and gone watches can be redelivered."""
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
    """Every route the app serves is in /openapi.json, with the same methods."""
    spec = (await client.get("/openapi.json")).json()
    served: dict[str, set[str]] = {}
    for route in client.app.routes:  # type: ignore[attr-defined]
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
