"""A bridge without tokens cannot be driven by a web page: not by a cross-site "simple"
request, not through a DNS name pointed at loopback (in process, on a real SQLite store)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import orjson
import pytest

from tests.integration.test_api import GOOD, TOKENS, serve


@pytest.fixture
async def open_bridge(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """A bridge without tokens, as `make run` and sidecars serve it."""
    async for served in serve(tmp_path):
        yield served


def problem_type(response: httpx.Response) -> str:
    assert response.headers["content-type"] == "application/problem+json"
    kind: str = response.json()["type"]
    return kind


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",  # what a cross-site form or fetch may send without asking first
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        None,
    ],
)
@pytest.mark.parametrize("path", ["/v1/watches", "/v1/subscriptions", "/v1/generate"])
async def test_a_json_endpoint_refuses_any_other_content_type(
    open_bridge: httpx.AsyncClient, path: str, content_type: str | None
) -> None:
    """A body not sent as application/json is refused with 415, before anything is made."""
    headers = {"Content-Type": content_type} if content_type else {}
    body = {**GOOD, "url": GOOD["callback_url"], "input": {"prompt": "x"}}
    response = await open_bridge.post(path, content=orjson.dumps(body), headers=headers)
    assert response.status_code == 415
    assert problem_type(response) == "/problems/unsupported-media-type"
    assert "Content-Type: application/json" in response.json()["detail"]
    assert (await open_bridge.get("/v1/watches")).json()["data"] == []
    assert (await open_bridge.get("/v1/subscriptions")).json()["data"] == []


async def test_json_with_a_charset_is_json(open_bridge: httpx.AsyncClient) -> None:
    """`application/json; charset=utf-8` is accepted."""
    response = await open_bridge.post(
        "/v1/watches",
        content=orjson.dumps(GOOD),
        headers={"Content-Type": "application/json; charset=utf-8"},
    )
    assert response.status_code == 201


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "https://evil.example"},
        {"Origin": "null"},  # a sandboxed frame or a data: page
        {"Origin": "http://localhost:9999"},  # another origin on the same machine
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
    ],
)
async def test_requests_a_browser_says_another_site_sent_are_refused(
    open_bridge: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    """A subscription, a watch, a read or a redelivery from another site is refused (403)."""
    created = await open_bridge.post(
        "/v1/subscriptions", json={"url": "https://93.184.215.14/hooks"}, headers=headers
    )
    assert created.status_code == 403
    assert problem_type(created) == "/problems/cross-site-request"
    assert (await open_bridge.post("/v1/watches", json=GOOD, headers=headers)).status_code == 403
    assert (await open_bridge.get("/v1/watches", headers=headers)).status_code == 403
    assert (await open_bridge.get("/v1/subscriptions")).json()["data"] == []


async def test_same_origin_and_user_initiated_requests_are_served(
    open_bridge: httpx.AsyncClient,
) -> None:
    """An Origin equal to the host, and `Sec-Fetch-Site: same-origin` or `none`, are served."""
    for headers in (
        {"Origin": "http://localhost"},
        {"Sec-Fetch-Site": "same-origin"},
        {"Sec-Fetch-Site": "none"},
    ):
        assert (await open_bridge.get("/v1/watches", headers=headers)).status_code == 200


@pytest.mark.parametrize("host", ["evil.example", "rebound.attacker.test:8080", "10.0.0.8"])
@pytest.mark.parametrize("path", ["/v1/watches", "/ui/", "/v1/me"])
async def test_without_tokens_only_loopback_hosts_are_served(
    open_bridge: httpx.AsyncClient, host: str, path: str
) -> None:
    """A name an attacker points at 127.0.0.1 (DNS rebinding) gets no data: 421."""
    response = await open_bridge.get(path, headers={"Host": host})
    assert response.status_code == 421
    assert problem_type(response) == "/problems/host-not-allowed"
    assert "server.allowed_hosts" in response.json()["detail"]


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1:8080", "[::1]:8080", "127.1.2.3"])
async def test_loopback_hosts_are_served(open_bridge: httpx.AsyncClient, host: str) -> None:
    """Every loopback name and address, with or without a port, is served."""
    assert (await open_bridge.get("/v1/watches", headers={"Host": host})).status_code == 200


async def test_allowed_hosts_add_names_and_subdomains(tmp_path: Path) -> None:
    """`server.allowed_hosts` names (and `*.` suffixes) are served beside loopback ones."""
    async for client in serve(
        tmp_path, BRIDGE_SERVER__ALLOWED_HOSTS='["bridge.sidecar", "*.svc.cluster.local"]'
    ):
        for host, status in (
            ("bridge.sidecar", 200),
            ("webhook-bridge.team.svc.cluster.local:8080", 200),
            ("localhost", 200),
            ("svc.cluster.local", 421),
            ("bridge.sidecar.evil.example", 421),
        ):
            response = await client.get("/v1/watches", headers={"Host": host})
            assert response.status_code == status, host


async def test_with_tokens_any_host_is_served(tmp_path: Path) -> None:
    """With tokens the token is the guard: a bridge behind a load balancer answers its names."""
    async for client in serve(tmp_path, BRIDGE_AUTH__TOKENS=TOKENS):
        response = await client.get(
            "/v1/watches", headers={"Host": "bridge.example.com", "X-API-Key": "acme-token"}
        )
        assert response.status_code == 200
