"""The simulator and the listener as real processes on loopback ports."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from standardwebhooks.webhooks import Webhook

ROOT = Path(__file__).resolve().parents[2]
DEADLINE_S = 15.0
AUTH = {"Authorization": "Bearer bw_e2e_key"}
START = re.compile(rb"listening on (http://\S+)")
SECRET = "whsec_" + base64.b64encode(b"e2e-secret-e2e-secret-e2e-secret").decode()


@asynccontextmanager
async def running(module: str, *args: str) -> AsyncIterator[tuple[asyncio.subprocess.Process, str]]:
    """Start `python -m module --port 0 ...`, yield it and the URL from its start line, stop it."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        module,
        "--port",
        "0",
        *args,
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert proc.stdout is not None
    try:
        head = await read_until(proc.stdout, b"listening on ")
        match = START.search(head)
        assert match is not None, head
        yield proc, match.group(1).decode()
        proc.send_signal(signal.SIGINT)
        async with asyncio.timeout(DEADLINE_S):
            assert await proc.wait() == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def read_until(stream: asyncio.StreamReader, needle: bytes) -> bytes:
    """Output up to the line holding `needle`, within the deadline."""
    seen = b""
    async with asyncio.timeout(DEADLINE_S):
        while needle not in seen:
            line = await stream.readline()
            assert line, f"output ended before {needle!r}: {seen!r}"
            seen += line
    return seen


@pytest.mark.e2e
async def test_fake_upstream_process_serves_jobs_and_drops() -> None:
    """The simulator process answers jobs, and a drop fault leaves the client without a reply."""
    async with (
        running(
            "service.devtools.fake_upstream", "--api-key", "bw_e2e_key", "--processing-s", "0"
        ) as (_, url),
        httpx.AsyncClient(base_url=url) as client,
    ):
        created = await client.post(
            "/api/v1/generate", json={"sim": {"queue_positions": 0}}, headers=AUTH
        )
        job_id = created.json()["id"]
        polled = await client.get(f"/api/v1/generate/{job_id}", headers=AUTH)
        assert polled.status_code == 200
        assert polled.json()["status"] == "succeeded"
        await client.post("/_sim/jobs", json={"id": "job_drop", "faults": [{"kind": "drop"}]})
        with pytest.raises(httpx.RemoteProtocolError, match="without sending a response"):
            await client.get("/api/v1/generate/job_drop", headers=AUTH)
        again = await client.get("/api/v1/generate/job_drop", headers=AUTH)
        assert again.json()["status"] == "queued"
        stats = (await client.get("/_sim/stats")).json()
        assert (stats["requests_total"], stats["dropped_total"]) == (4, 1)


@pytest.mark.e2e
async def test_listener_process_verifies_records_and_prints(tmp_path: Path) -> None:
    """The listener process verifies a signed webhook, records it and prints the verdict."""
    record = tmp_path / "hooks.jsonl"
    body = json.dumps({"type": "job.succeeded", "data": {"job_id": "job_e2e"}})
    now = datetime.now(UTC)
    headers = {
        "webhook-id": "msg_e2e",
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": Webhook(SECRET).sign("msg_e2e", now, body),
    }
    async with (
        running("service.devtools.listener", "--secret", SECRET, "--record", str(record)) as (
            proc,
            url,
        ),
        httpx.AsyncClient(base_url=url) as client,
    ):
        response = await client.post("/hooks?respond=200", content=body, headers=headers)
        assert response.status_code == 200
        assert proc.stdout is not None
        printed = await read_until(proc.stdout, "verified    ✓".encode())
        assert b"job_e2e" in printed
    [line] = [json.loads(text) for text in record.read_text().splitlines()]
    assert (line["verified"], line["path"], line["query"]) == (True, "/hooks", "respond=200")
