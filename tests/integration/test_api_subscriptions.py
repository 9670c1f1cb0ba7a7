"""Disabling, enabling, rotating the secret of and testing a subscription through the API."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import standardwebhooks
from aiohttp import web

from service.clock import FakeClock
from service.events import iso8601
from tests.integration.test_api import ACME, GLOBEX, TOKENS, serve
from tests.loopback import loopback_server

HOOK = "https://93.184.215.14/hooks"


async def test_a_subscription_is_disabled_and_enabled_by_its_tenant_only(tmp_path: Path) -> None:
    """disable and enable answer the subscription with its new status, still listed; another
    tenant's token gets 404 and changes nothing; a deleted one cannot be enabled."""
    async for client in serve(tmp_path, FakeClock(), BRIDGE_AUTH__TOKENS=TOKENS):
        created = (await client.post("/v1/subscriptions", json={"url": HOOK}, headers=ACME)).json()
        path = f"/v1/subscriptions/{created['id']}"

        theirs = await client.post(f"{path}/disable", headers=GLOBEX)
        disabled = await client.post(f"{path}/disable", headers=ACME)

        assert theirs.status_code == 404
        assert disabled.status_code == 200, disabled.text
        assert disabled.json()["status"] == "disabled"
        listed = (await client.get("/v1/subscriptions", headers=ACME)).json()["data"]
        assert [(s["id"], s["status"]) for s in listed] == [(created["id"], "disabled")]
        enabled = await client.post(f"{path}/enable", headers=ACME)
        assert enabled.json()["status"] == "active"
        assert (await client.delete(path, headers=ACME)).status_code == 204
        assert (await client.post(f"{path}/enable", headers=ACME)).status_code == 404


async def test_a_rotation_shows_the_new_secret_once_and_when_the_old_one_stops(
    tmp_path: Path,
) -> None:
    """The rotation's answer has a new whsec_ secret and the old one's end, 24 h on; the list
    shows that end but never a secret."""
    clock = FakeClock()
    async for client in serve(tmp_path, clock):
        created = (await client.post("/v1/subscriptions", json={"url": HOOK})).json()

        rotated = await client.post(f"/v1/subscriptions/{created['id']}/secret/rotate")

        assert rotated.status_code == 200, rotated.text
        view = rotated.json()
        assert view["secret"].startswith("whsec_")
        assert view["secret"] != created["secret"]
        until = clock.now() + 24 * 3600
        assert view["previous_secret_expires_at"] == iso8601(until)
        listed = await client.get("/v1/subscriptions")
        assert listed.json()["data"][0]["previous_secret_expires_at"] == iso8601(until)
        assert view["secret"] not in listed.text
        assert created["secret"] not in listed.text


async def test_a_test_event_is_signed_with_both_secrets_during_a_rotation(
    tmp_path: Path,
) -> None:
    """POST .../test sends one webhook.test event, whatever the events subscribed to, that a
    standardwebhooks receiver verifies with the old secret and with the new one after a
    rotation; the answer says how the receiver answered."""
    got: list[tuple[bytes, dict[str, str]]] = []

    async def receive(request: web.Request) -> web.Response:
        got.append((await request.read(), dict(request.headers)))
        return web.Response(status=204 if len(got) == 1 else 500)

    async with loopback_server(receive) as base:
        async for client in serve(tmp_path, BRIDGE_SECURITY__ALLOW_PRIVATE_CALLBACKS="true"):
            created = (
                await client.post("/v1/subscriptions", json={"url": f"{base}/in?k=v"})
            ).json()
            path = f"/v1/subscriptions/{created['id']}"
            first = (await client.post(f"{path}/test")).json()
            new_secret = (await client.post(f"{path}/secret/rotate")).json()["secret"]
            second = (await client.post(f"{path}/test")).json()

    assert (first["succeeded"], first["status_code"], first["error"]) == (True, 204, None)
    assert (second["succeeded"], second["status_code"]) == (False, 500)
    body, headers = got[0]
    assert headers["webhook-id"] == first["webhook_id"]
    verified: Any = standardwebhooks.Webhook(created["secret"]).verify(body, headers)
    assert verified["type"] == "webhook.test"
    assert verified["data"] == {"subscription_id": created["id"]}
    assert list(orjson.loads(body)) == [
        "id",
        "type",
        "timestamp",
        "watch_id",
        "job_id",
        "upstream",
        "status",
        "image_urls",
        "error",
        "error_code",
        "metadata",
        "data",
    ]  # fmt: skip: the envelope's keys, in its order
    body, headers = got[1]
    assert len(headers["webhook-signature"].split(" ")) == 2
    for secret in (created["secret"], new_secret):
        assert standardwebhooks.Webhook(secret).verify(body, headers)["type"] == "webhook.test"
