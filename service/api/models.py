"""Request bodies and how watches and attempts are shown to API clients."""

from __future__ import annotations

import re
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator

from service import events, signing
from service.events import iso8601
from service.store.base import Attempt, Watch

JOB_ID = re.compile(r"^[A-Za-z0-9_.:\-]{1,128}$")
HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,64}$")
# Headers the bridge sets itself, or that would corrupt the request if a client set them.
RESERVED_HEADERS = frozenset(
    {
        "host", "content-length", "content-type", "transfer-encoding", "connection",
        "keep-alive", "upgrade", "te", "trailer", "user-agent", "expect", "proxy-authorization",
    }
)  # fmt: skip
MAX_HEADERS = 20
MAX_METADATA_BYTES = 4096


class WatchRequest(BaseModel):
    """The body of `POST /v1/watches`."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)

    job_id: str = Field(description="The upstream job id: 1-128 characters of A-Za-z0-9_.:-")
    callback_url: str = Field(max_length=2048, description="Absolute http(s) URL to deliver to.")
    callback_method: Literal["POST", "PUT"] = "POST"
    callback_headers: dict[str, str] = Field(
        default_factory=dict, description="Sent with every delivery (at most 20)."
    )
    metadata: dict[str, Any] | None = Field(
        None, description="Echoed in every webhook; a JSON object of at most 4 KiB."
    )
    events: list[str] = Field(
        default_factory=lambda: list(events.FINAL_EVENTS),
        description="job.succeeded and job.failed always; add job.queued, job.processing.",
    )
    payload_format: Literal["envelope", "raw"] = "envelope"
    secret: str | None = Field(None, description="A whsec_ signing key; generated when absent.")
    poll_interval_s: float | None = Field(None, description="Overrides poll.interval_s.")
    timeout_s: float | None = Field(None, description="Overrides poll.timeout_s.")
    upstream_api_key: str | None = Field(
        None, min_length=1, max_length=512, description="Else the configured key is used."
    )

    @field_validator("job_id")
    @classmethod
    def _job_id(cls, job_id: str) -> str:
        if not JOB_ID.fullmatch(job_id):
            raise ValueError("must be 1 to 128 characters among A-Z a-z 0-9 _ . : -")
        return job_id

    @field_validator("callback_url")
    @classmethod
    def _absolute_http(cls, url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https"):
            raise ValueError("must be an absolute http:// or https:// URL")
        if not parts.hostname:
            raise ValueError("must name a host")
        if any(ch in url for ch in "\r\n\t "):
            raise ValueError("must not contain whitespace")
        try:
            parts.port  # noqa: B018 - raises on an invalid port
        except ValueError:
            raise ValueError("has an invalid port") from None
        return url

    @field_validator("callback_headers")
    @classmethod
    def _headers(cls, headers: dict[str, str]) -> dict[str, str]:
        if len(headers) > MAX_HEADERS:
            raise ValueError(f"at most {MAX_HEADERS} headers")
        for name, value in headers.items():
            lower = name.lower()
            if not HEADER_NAME.fullmatch(name):
                raise ValueError(f"{name!r} is not a valid header name")
            if lower in RESERVED_HEADERS or lower.startswith("webhook-"):
                raise ValueError(f"{name!r} is set by the bridge and cannot be overridden")
            if len(value) > 4096 or not value.isascii() or not value.isprintable():
                raise ValueError(
                    f"the value of {name!r} must be one line of at most 4096 printable ASCII "
                    "characters"
                )
        return headers

    @field_validator("metadata")
    @classmethod
    def _small(cls, metadata: dict[str, Any] | None) -> dict[str, Any] | None:
        try:
            size = len(orjson.dumps(metadata)) if metadata is not None else 0
        except orjson.JSONEncodeError:
            raise ValueError("must be a JSON object nested at most 32 levels deep") from None
        if size > MAX_METADATA_BYTES:
            raise ValueError(f"must serialize to at most {MAX_METADATA_BYTES} bytes of JSON")
        return metadata

    @field_validator("events")
    @classmethod
    def _known_events(cls, chosen: list[str]) -> list[str]:
        unknown = [name for name in chosen if name not in events.ALL_EVENTS]
        if unknown:
            raise ValueError(
                f"unknown event {unknown[0]!r}; choose among {', '.join(events.ALL_EVENTS)}"
            )
        missing = [name for name in events.FINAL_EVENTS if name not in chosen]
        if missing:
            raise ValueError(
                f"must include {' and '.join(events.FINAL_EVENTS)}: the final event is always "
                "delivered (add job.queued or job.processing for progress)"
            )
        return [name for name in events.ALL_EVENTS if name in chosen]

    @field_validator("secret")
    @classmethod
    def _whsec(cls, secret: str | None) -> str | None:
        return None if secret is None else signing.check_secret(secret)

    @field_validator("upstream_api_key")
    @classmethod
    def _printable(cls, key: str | None) -> str | None:
        if key is not None and not (key.isascii() and key.isprintable()):
            raise ValueError("must be printable ASCII characters only")
        return key


def public_url(url: str) -> str:
    """The URL with any userinfo (credentials) removed, for showing back."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


def _time(value: float | None) -> str | None:
    return None if value is None else iso8601(value)


def watch_view(watch: Watch) -> dict[str, Any]:
    """A watch as clients see it: never its secret or API key; header values masked."""
    return {
        "id": watch.id,
        "job_id": watch.job_id,
        "callback_url": public_url(watch.callback_url),
        "callback_method": watch.callback_method,
        "callback_headers": dict.fromkeys(watch.callback_headers, "********"),
        "events": list(watch.events),
        "payload_format": watch.payload_format,
        "metadata": watch.metadata,
        "poll_interval_s": watch.poll_interval_s,
        "timeout_s": watch.timeout_s,
        "status": watch.status,
        "job_status": watch.job_status,
        "queue_position": watch.queue_position,
        "attempts": watch.attempts,
        "last_error": watch.last_error,
        "created_at": _time(watch.created_at),
        "updated_at": _time(watch.updated_at),
        "completed_at": _time(watch.completed_at),
        "expires_at": _time(watch.deadline_at),
    }


def attempt_view(attempt: Attempt) -> dict[str, Any]:
    return {
        "webhook_id": attempt.delivery_id,
        "event": attempt.event_type,
        "attempt": attempt.number,
        "attempted_at": _time(attempt.started_at),
        "duration_ms": round(attempt.duration_s * 1000, 1),
        "status_code": attempt.status_code,
        "error": attempt.error,
        "next_attempt_at": _time(attempt.next_attempt_at),
    }
