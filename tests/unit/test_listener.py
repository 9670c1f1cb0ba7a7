"""The webhook listener, driven in-process: verification, scripted answers and the record file."""

from __future__ import annotations

import argparse
import base64
import json
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from standardwebhooks.webhooks import Webhook

from service.devtools import listener
from tests.unit.doubles import Sleeps

SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()
OTHER_SECRET = "whsec_" + base64.b64encode(b"another secret of 32 bytes here!").decode()
EVENT = {
    "type": "job.succeeded",
    "data": {
        "job_id": "job_abc123def456",
        "status": "succeeded",
        "output": {"images": [{"url": "https://images.betterwaifu.com/a/b.webp", "id": "x"}]},
    },
}


Make = Callable[..., httpx.AsyncClient]


@pytest.fixture
def record(tmp_path: Path) -> Path:
    return tmp_path / "hooks.jsonl"


@pytest.fixture
async def make(sleeps: Sleeps, record: Path) -> AsyncIterator[Make]:
    clients: list[httpx.AsyncClient] = []

    def factory(secret: str | None = SECRET, quiet: bool = False) -> httpx.AsyncClient:
        app = listener.build_app(secret, record, quiet, lambda: 1_700_000_000.5, sleep=sleeps)
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://rx")
        clients.append(client)
        return client

    yield factory
    for client in clients:
        await client.aclose()


def signed(
    payload: Any, secret: str = SECRET, msg_id: str = "msg_1"
) -> tuple[bytes, dict[str, str]]:
    """A body and its Standard Webhooks headers, signed now."""
    body = json.dumps(payload).encode()
    now = datetime.now(UTC)
    signature = Webhook(secret).sign(msg_id, now, body.decode())
    headers = {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": signature,
        "content-type": "application/json",
    }
    return body, headers


def lines(record: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in record.read_text().splitlines()]


async def test_signed_webhook_is_verified_recorded_and_printed(
    make: Make, record: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A correctly signed webhook gets 200, a verified record line and a printed block."""
    body, headers = signed(EVENT)
    response = await make().post("/hooks/a?x=1", content=body, headers=headers)
    assert response.status_code == 200
    assert response.json() == {"ok": True}
    [line] = lines(record)
    assert line == {
        "received_at": 1_700_000_000.5,
        "method": "POST",
        "path": "/hooks/a",
        "query": "x=1",
        "headers": line["headers"],
        "body": body.decode(),
        "verified": True,
        "error": None,
    }
    assert line["headers"]["webhook-id"] == "msg_1"
    assert all(name == name.lower() for name in line["headers"])
    out = capsys.readouterr().out
    for expected in ("POST /hooks/a?x=1", "msg_1", "job.succeeded", "job_abc123def456"):
        assert expected in out
    assert "https://images.betterwaifu.com/a/b.webp" in out
    assert "verified    ✓" in out


@pytest.mark.parametrize(
    ("mangle", "reason"),
    [
        (lambda h: {**h, "webhook-signature": "v1,AAAA"}, "No matching signature found"),
        (lambda h: {k: v for k, v in h.items() if k != "webhook-id"}, "Missing required headers"),
        (lambda h: {**h, "webhook-timestamp": "1000"}, "Message timestamp too old"),
        (lambda h: {**h, "webhook-signature": "garbage"}, "Malformed webhook"),
    ],
)
async def test_bad_signatures_are_400_with_the_reason(
    make: Make,
    record: Path,
    capsys: pytest.CaptureFixture[str],
    mangle: Callable[[dict[str, str]], dict[str, str]],
    reason: str,
) -> None:
    """A webhook failing verification gets 400, and the record and printout say why."""
    body, headers = signed(EVENT)
    response = await make().post("/hooks", content=body, headers=mangle(headers))
    assert response.status_code == 400
    assert reason in response.json()["error"]
    [line] = lines(record)
    assert line["verified"] is False
    assert reason in line["error"]
    assert f"✗ {line['error']}" in capsys.readouterr().out


async def test_wrong_secret_fails_verification(make: Make) -> None:
    """A body signed with another secret is refused."""
    body, headers = signed(EVENT, secret=OTHER_SECRET)
    response = await make().post("/hooks", content=body, headers=headers)
    assert response.status_code == 400


async def test_without_a_secret_everything_is_accepted_unverified(make: Make, record: Path) -> None:
    """With no secret, any POST gets 200 and verified is null."""
    response = await make(secret=None).post("/", content=b"not even json")
    assert response.status_code == 200
    [line] = lines(record)
    assert (line["verified"], line["error"], line["body"]) == (None, None, "not even json")


async def test_put_is_accepted_and_get_is_405(make: Make, record: Path) -> None:
    """PUT is received like POST; GET is 405 and not recorded."""
    client = make(secret=None)
    assert (await client.put("/hooks", content=b"{}")).status_code == 200
    response = await client.get("/hooks")
    assert response.status_code == 405
    assert response.headers["allow"] == "POST, PUT"
    assert [line["method"] for line in lines(record)] == ["PUT"]


async def test_respond_script_counts_per_path_and_query(make: Make) -> None:
    """respond=500,500,200 answers in turn, repeats the last code, and counts per exact URL."""
    client = make(secret=None)
    codes = [(await client.post("/a?respond=500,500,200")).status_code for _ in range(4)]
    assert codes == [500, 500, 200, 200]
    assert (await client.post("/b?respond=500,500,200")).status_code == 500
    assert (await client.post("/a?respond=500,500,200&n=2")).status_code == 500


async def test_scripted_status_wins_over_a_bad_signature(make: Make, record: Path) -> None:
    """A script decides the status even for an unverified webhook, still recorded as such."""
    response = await make().post("/a?respond=202", content=b"{}")
    assert response.status_code == 202
    assert lines(record)[0]["verified"] is False


async def test_redirect_and_retry_after(make: Make) -> None:
    """respond=302 adds Location /elsewhere; retry_after adds Retry-After."""
    client = make(secret=None)
    redirect = await client.post("/r?respond=302")
    assert (redirect.status_code, redirect.headers["location"]) == (302, "/elsewhere")
    limited = await client.post("/l?respond=429&retry_after=1")
    assert (limited.status_code, limited.headers["retry-after"]) == (429, "1")


async def test_no_content_answers_have_no_body(make: Make) -> None:
    """respond=204 answers with an empty body, as HTTP requires."""
    response = await make(secret=None).post("/n?respond=204")
    assert (response.status_code, response.content) == (204, b"")


async def test_delay_waits_before_answering(make: Make, sleeps: Sleeps) -> None:
    """delay_s asks the sleep for that long before the answer."""
    response = await make(secret=None).post("/d?delay_s=0.5")
    assert response.status_code == 200
    assert sleeps.asked == [0.5]


@pytest.mark.parametrize(
    "query",
    ["respond=abc", "respond=99", "respond=600", "retry_after=soon", "delay_s=x", "delay_s=-1"],
)
async def test_bad_scripts_are_400(make: Make, query: str) -> None:
    """A script the listener cannot follow is answered 400 with the reason."""
    response = await make(secret=None).post(f"/s?{query}")
    assert response.status_code == 400
    assert "must" in response.json()["error"]


async def test_quiet_prints_nothing(make: Make, capsys: pytest.CaptureFixture[str]) -> None:
    """--quiet suppresses the per-request block."""
    await make(quiet=True).post("/q", content=b"{}")
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize("secret", ["whsec_", "whsec_a"])
def test_unusable_secret_is_refused_at_start(secret: str) -> None:
    """An empty or undecodable secret is a ValueError before serving."""
    with pytest.raises(ValueError, match="secret"):
        listener.build_app(secret, None, True)


def test_banner_shows_only_the_start_of_the_secret() -> None:
    """The start line names the address and the secret's first 8 characters."""
    line = listener.banner("http://127.0.0.1:9000", SECRET)
    assert line == f"listening on http://127.0.0.1:9000 (verifying with {SECRET[:8]}…)"
    assert SECRET[8:] not in line


def test_parser_defaults() -> None:
    """configure_parser offers --host, --port, --secret, --record and --quiet with defaults."""
    parser = argparse.ArgumentParser()
    listener.configure_parser(parser)
    args = parser.parse_args([])
    assert (args.host, args.port, args.secret, args.record, args.quiet) == (
        "127.0.0.1",
        9000,
        None,
        None,
        False,
    )
    assert parser.parse_args(["--record", "r.jsonl"]).record == Path("r.jsonl")


async def test_an_envelope_is_summed_up_from_its_own_fields(
    make: Make, capsys: pytest.CaptureFixture[str]
) -> None:
    """Whatever the upstream's answer in `data` looks like, the envelope's words are printed."""
    envelope = {
        "id": "evt_1",
        "type": "job.succeeded",
        "watch_id": "wch_1",
        "job_id": "task_42",
        "upstream": "runway",
        "status": "succeeded",
        "image_urls": ["https://cdn.example/a.mp4"],
        "data": {"id": "task_42", "status": "SUCCEEDED", "output": ["https://cdn.example/a.mp4"]},
    }
    body, headers = signed(envelope)
    await make().post("/hooks/a", content=body, headers=headers)
    out = capsys.readouterr().out
    assert "job_id      task_42" in out
    assert "status      succeeded" in out
    assert "image_urls  https://cdn.example/a.mp4" in out
