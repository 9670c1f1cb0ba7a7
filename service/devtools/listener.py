"""A webhook receiver that checks signatures and prints what arrives: `webhook-bridge listen`.

For a first callback, for end-to-end tests and for benchmarks. Every POST or PUT, on any path, is
verified with the Standard Webhooks secret (when one is given), printed as a short block and, with
`--record`, appended to a JSON-lines file (written and flushed per request, so tests can tail it).

The query string scripts the answer, so a test picks the receiver's behaviour per callback URL:

```
?respond=500,500,200       1st request to this exact path and query: 500, 2nd: 500, then 200
?respond=302               302 with Location: /elsewhere (any 3xx does)
?respond=429&retry_after=1 a Retry-After header on the answer
?delay_s=0.5               wait before answering
```

A script decides the status even when the signature is wrong; the record and the printout still
say so. Without one the answer is 200 `{"ok": true}`, or 400 with the reason when a secret is set
and verification fails. Other methods get 405.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import orjson
from standardwebhooks.webhooks import EmptyWebhookSecretError, Webhook, WebhookVerificationError
from starlette.types import Receive, Scope, Send

from service.devtools import asgi

__all__ = ["build_app", "command", "configure_parser"]

MAX_DELAY_S = 600.0
NO_BODY = (204, 304)


class ScriptError(ValueError):
    """The query string's script is invalid."""


@dataclass(frozen=True)
class Script:
    """The answer a query string asks for: statuses in turn, Retry-After and a delay."""

    statuses: tuple[int, ...] = ()
    retry_after: str | None = None
    delay_s: float = 0.0

    @classmethod
    def parse(cls, query: str) -> Script:
        """Read `respond`, `retry_after` and `delay_s`; ScriptError names a bad one."""
        params = {name: values[-1] for name, values in parse_qs(query).items()}
        statuses: list[int] = []
        for item in params.get("respond", "").split(","):
            if not item:
                continue
            if not item.isdigit() or not 200 <= int(item) <= 599:
                raise ScriptError(f"respond must list status codes from 200 to 599, not {item!r}")
            statuses.append(int(item))
        retry_after = params.get("retry_after")
        if retry_after is not None and not retry_after.isdigit():
            raise ScriptError("retry_after must be a whole number of seconds")
        try:
            delay_s = float(params.get("delay_s", "0"))
        except ValueError:
            raise ScriptError("delay_s must be a number of seconds") from None
        if not 0 <= delay_s <= MAX_DELAY_S:
            raise ScriptError(f"delay_s must be from 0 to {MAX_DELAY_S:g}")
        return cls(tuple(statuses), retry_after, delay_s)


def _choose(
    query: str, turn: int, verified: bool | None, error: str | None
) -> tuple[Script, int, dict[str, object]]:
    """The script, status and JSON answer for the `turn`-th request (from 0) to one URL."""
    try:
        script = Script.parse(query)
    except ScriptError as exc:
        return Script(), 400, {"error": str(exc)}
    if script.statuses:
        status = script.statuses[min(turn, len(script.statuses) - 1)]
        return script, status, {"ok": True} if status < 300 else {"error": f"scripted {status}"}
    if verified is False:
        return script, 400, {"error": error}
    return script, 200, {"ok": True}


def _headers(scope: Scope) -> dict[str, str]:
    headers: dict[str, str] = {}
    for raw_name, raw_value in scope["headers"]:
        name = raw_name.decode("latin-1").lower()
        value = raw_value.decode("latin-1")
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return headers


def _summary(body: bytes) -> dict[str, Any]:
    """type, job_id, status and image_urls, wherever the webhook body keeps them."""
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        return {}
    if not isinstance(payload, dict):
        return {}
    if "watch_id" in payload:
        # The bridge's envelope says it in its own words, whatever the upstream's `data` holds.
        urls = payload.get("image_urls")
        return {
            "type": payload.get("type"),
            "job_id": payload.get("job_id"),
            "status": payload.get("status"),
            "image_urls": ", ".join(str(url) for url in urls or [] if url) or None,
        }
    data = payload.get("data")
    event = data if isinstance(data, dict) else payload
    output = event.get("output")
    images = output.get("images") if isinstance(output, dict) else event.get("images")
    urls = [image.get("url") for image in images or [] if isinstance(image, dict)]
    return {
        "type": payload.get("type"),
        "job_id": event.get("job_id") or event.get("id"),
        "status": event.get("status"),
        "image_urls": ", ".join(str(url) for url in urls if url) or None,
    }


def _block(record: dict[str, Any], body: bytes, answered: int) -> str:
    stamp = datetime.fromtimestamp(record["received_at"], UTC).isoformat(timespec="milliseconds")
    target = record["path"] + (f"?{record['query']}" if record["query"] else "")
    if record["verified"] is None:
        verdict = "- (no secret)"
    elif record["verified"]:
        verdict = "✓"
    else:
        verdict = f"✗ {record['error']}"
    fields = {
        "webhook-id": record["headers"].get("webhook-id"),
        **_summary(body),
        "verified": verdict,
    }
    lines = [f"{stamp}  {record['method']} {target}  -> {answered}"]
    lines += [f"  {name:<11} {value}" for name, value in fields.items() if value is not None]
    return "\n".join(lines) + "\n"


def _append(path: Path, line: bytes) -> None:
    with path.open("ab") as file:
        file.write(line)
        file.flush()


class Listener:
    """The receiving endpoint as an ASGI app; counts requests per exact path and query.
    `clock` stamps `received_at`, `sleep` serves `delay_s`."""

    def __init__(
        self,
        secret: str | None,
        record: Path | None,
        quiet: bool,
        clock: Callable[[], float] = time.time,
        *,
        sleep: asgi.Sleep = asyncio.sleep,
    ) -> None:
        try:
            self._webhook = Webhook(secret) if secret else None
        except (ValueError, EmptyWebhookSecretError) as exc:
            raise ValueError(f"the secret is not a valid whsec_ base64 secret: {exc}") from None
        self._record = record
        self._quiet = quiet
        self._clock = clock
        self._sleep = sleep
        self._seen: dict[str, int] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        if scope["method"] not in ("POST", "PUT"):
            error = {"error": "send webhooks with POST or PUT"}
            await asgi.send_json(send, 405, error, extra=[(b"allow", b"POST, PUT")])
        else:
            await self._receive(scope, receive, send)

    def _verify(self, body: bytes, headers: dict[str, str]) -> tuple[bool | None, str | None]:
        if self._webhook is None:
            return None, None
        try:
            self._webhook.verify(body, headers, json_parse=False)
        except WebhookVerificationError as exc:
            return False, str(exc)
        except ValueError as exc:  # a malformed signature header, a body that is not UTF-8
            return False, f"Malformed webhook: {exc}"
        return True, None

    async def _receive(self, scope: Scope, receive: Receive, send: Send) -> None:
        received_at = self._clock()
        try:
            body = await asgi.read_body(receive)
        except asgi.BodyTooLarge:
            await asgi.send_json(send, 413, {"error": "body too large"})
            return
        headers = _headers(scope)
        verified, error = self._verify(body, headers)
        query = scope["query_string"].decode("latin-1")
        target = f"{scope['path']}?{query}"
        turn = self._seen.get(target, 0)
        self._seen[target] = turn + 1
        script, status, answer = _choose(query, turn, verified, error)
        record = {
            "received_at": received_at,
            "method": scope["method"],
            "path": scope["path"],
            "query": query,
            "headers": headers,
            "body": body.decode("utf-8", errors="replace"),
            "verified": verified,
            "error": error,
        }
        if self._record is not None:
            _append(self._record, orjson.dumps(record) + b"\n")
        if not self._quiet:
            print(_block(record, body, status), flush=True)
        extra = []
        if 300 <= status < 400:
            extra.append((b"location", b"/elsewhere"))
        if script.retry_after is not None:
            extra.append((b"retry-after", script.retry_after.encode()))
        if script.delay_s:
            await self._sleep(script.delay_s)
        body_out = b"" if status in NO_BODY else orjson.dumps(answer)
        await asgi.send_bytes(send, status, body_out, extra=extra)


# Named as `fake_upstream.build_app`, which builds the simulator.
build_app = Listener


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add --host, --port, --secret, --record and --quiet."""
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=9000, help="port to listen on (0: any)")
    parser.add_argument("--secret", help="whsec_ secret to verify with (default: do not verify)")
    parser.add_argument("--record", type=Path, help="append one JSON line per request to PATH")
    parser.add_argument("--quiet", action="store_true", help="print nothing per request")


def banner(url: str, secret: str | None) -> str:
    """The start line: the address, and the secret's first characters only."""
    if secret:
        return f"listening on {url} (verifying with {secret[:8]}…)"
    return f"listening on {url} (not verifying: no --secret)"


def command(args: argparse.Namespace) -> int:
    """Receive webhooks until SIGINT or SIGTERM."""
    try:
        app = build_app(args.secret, args.record, args.quiet)
    except ValueError as exc:
        print(f"listen: {exc}", file=sys.stderr)
        return 2
    return asgi.serve(app, args.host, args.port, lambda url: banner(url, args.secret))


def main(argv: list[str] | None = None) -> int:
    """`python -m service.devtools.listener [flags]`."""
    parser = argparse.ArgumentParser(prog="listen", description="Receive and check webhooks.")
    configure_parser(parser)
    return command(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
