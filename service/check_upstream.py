"""`webhook-bridge check-upstream NAME JOB_ID`: one status request through an upstream's
profile, printing the raw answer and how the bridge reads it, so that a profile can be checked
against the real API before watches depend on it.

The request is the one a poll makes (same URL, headers, key, timeout and body cap); a job that
succeeded also gets the profile's result request. Keys are masked in what is printed. The exit
status is 0 when the answer was read (whatever it says of the job), 1 when it could not be.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
import httpx

from service import config, http_clients
from service.answers import JOB_ID, JOB_ID_RULE, Secrets, network_failure
from service.errors import ConfigError
from service.observation import Observation
from service.upstream import DEFAULT_MAX_BODY_BYTES, Unread, UpstreamClient, get_capped

_SHOWN_BODY = 4000  # characters of an answer printed


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", help="the upstream's name (default is [upstream])")
    parser.add_argument("job_id", help="a job id at that upstream")
    parser.add_argument(
        "--key", default=None, help="the API key to send (default: the upstream's api_key)"
    )
    parser.add_argument("--config", type=Path, default=None, help="TOML file (as for serve)")


def command(args: argparse.Namespace) -> int:
    settings = config.load(args.config)
    if args.name not in settings.upstream_names:
        names = ", ".join(settings.upstream_names)
        raise ConfigError(f"no upstream is named {args.name!r}; the configured ones are {names}")
    if not JOB_ID.fullmatch(args.job_id):
        raise ConfigError(f"{args.job_id[:40]!r} is not a job id the bridge polls: {JOB_ID_RULE}")
    return asyncio.run(check(settings, args.name, args.job_id, args.key))


async def check(settings: config.Settings, name: str, job_id: str, key: str | None) -> int:
    limits = settings.upstream_named(name)[0]
    api_key = key or limits.bridge_key
    transport = http_clients.transport(aiohttp.TCPConnector(limit=2))
    client = UpstreamClient(
        transport, limits.root, limits.request_timeout_s, bridge_key=limits.bridge_key,
        reader=limits.reader(),
    )  # fmt: skip
    secrets = client.secrets(api_key)
    timeout_s = limits.request_timeout_s
    try:
        answer = await _exchange(transport, client.request(job_id, api_key), secrets, timeout_s)
        if answer is None:
            return 1
        seen = client.read(answer, api_key)
        result = client.result_request(job_id, api_key)
        if result is not None and seen.job_status == "succeeded":
            _print_reading("status answer", seen, secrets)
            answer = await _exchange(transport, result, secrets, timeout_s)
            if answer is None:
                return 1
            seen = client.read_result(answer, api_key, seen)
        _print_reading("answer", seen, secrets)
        return 1 if seen.kind == "transient" else 0
    finally:
        await transport.aclose()


async def _exchange(
    transport: httpx.AsyncBaseTransport, request: httpx.Request, secrets: Secrets, timeout_s: float
) -> tuple[int, httpx.Headers, bytes] | None:
    """Send `request` and print it and its raw answer, or why there is none (None), the
    `secrets` masked."""
    print(f"{request.method} {secrets.redact(str(request.url))}")
    try:
        answer = await get_capped(transport, request, timeout_s, DEFAULT_MAX_BODY_BYTES)
    except Unread as unread:
        print(unread.error(secrets))
        return None
    except Exception as error:  # whatever the client raised: say why
        print(f"no answer: {network_failure(error, secrets).error}")
        return None
    status, headers, body = answer
    kind = headers.get("content-type", "no content type")
    print(f"HTTP {status}, {len(body)} bytes, {kind}")
    print(secrets.redact(body.decode(errors="replace"))[:_SHOWN_BODY])
    print()
    return answer


def _print_reading(what: str, seen: Observation, secrets: Secrets) -> None:
    """How the bridge reads an answer; the `secrets` masked, as in the raw answer printed (a
    job's own words, which a webhook relays as they are, may quote a key)."""
    reading: dict[str, Any] = {
        "kind": seen.kind,
        "status": seen.job_status,
        "queue_position": seen.queue_position,
        "progress": seen.progress,
        "eta_s": seen.eta_s,
        "outputs": list(seen.outputs) if seen.outputs else None,
        "error_code": seen.error_code,
        "error": seen.error or seen.message,
    }
    print(f"How the bridge reads the {what}:")
    print(json.dumps(secrets.redact_json(reading), indent=2))
