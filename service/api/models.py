"""Request bodies, turned into the services' records. Each field's schema spells out what its
validator enforces, so that /openapi.json tells clients (and generated tests) the same rules."""

from __future__ import annotations

import dataclasses
import re
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import httpx
import orjson
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    ValidationInfo,
    field_validator,
)
from typing_extensions import TypeAliasType

from service import events, header_fields, number_fields, signing
from service.answers import JOB_ID, JOB_ID_RULE
from service.api import watch_query
from service.config import DEFAULT_UPSTREAM, UPSTREAM_NAME
from service.store import base as store
from service.subscriptions import MAX_ACTIVE
from service.watches import WatchOptions

# Headers the bridge sets itself, or that would corrupt the request if a client set them.
RESERVED_HEADERS = frozenset(
    {
        "host", "content-length", "content-type", "transfer-encoding", "connection",
        "keep-alive", "upgrade", "te", "trailer", "user-agent", "expect", "proxy-authorization",
        "accept-encoding",
    }
)  # fmt: skip
MAX_HEADERS = 20
MAX_HEADER_NAME = 64
MAX_HEADER_VALUE = 4096
MAX_METADATA_BYTES = 4096


MAX_FINAL_STATUSES = 10


def check_url(url: str) -> str:
    """An absolute http(s) URL naming a host (where it points is checked later: SSRF)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ValueError("must be an absolute http:// or https:// URL")
    if not parts.hostname:
        raise ValueError("must name a host")
    # A control character passes the parsing but fails every delivery attempt.
    if any(ch.isspace() or not ch.isprintable() for ch in url):
        raise ValueError("must not contain whitespace or control characters")
    try:
        port = parts.port  # raises when out of range
    except ValueError:
        port = 0
    if port == 0:  # parses, but nothing can be connected to on it
        raise ValueError("has an invalid port: give one from 1 to 65535")
    try:
        httpx.Request("POST", url)  # as webhooks are sent: one it refuses fails every attempt
    except (httpx.InvalidURL, ValueError) as refused:
        raise ValueError(f"cannot be requested: {refused}") from None
    return url


def check_headers(headers: dict[str, str]) -> dict[str, str]:
    if len(headers) > MAX_HEADERS:
        raise ValueError(f"at most {MAX_HEADERS} headers")
    header_fields.check_fields(headers)
    for name, value in headers.items():
        lower = name.lower()
        if len(name) > MAX_HEADER_NAME:
            raise ValueError(f"{name!r} is longer than {MAX_HEADER_NAME} characters")
        # Content-* headers describe the body, which the bridge makes.
        if lower in RESERVED_HEADERS or lower.startswith(("webhook-", "content-")):
            raise ValueError(f"{name!r} is set by the bridge and cannot be overridden")
        if len(value) > MAX_HEADER_VALUE:
            raise ValueError(f"the value of {name!r} is longer than {MAX_HEADER_VALUE} characters")
    return headers


def check_credentials_once(url: str | None, headers: dict[str, str]) -> dict[str, str]:
    """Refuse an Authorization header beside credentials in the URL, which are sent as one
    (`service.endpoints`): both went out in a single header that receivers refuse."""
    authorization = any(name.lower() == "authorization" for name in headers)
    if authorization and url is not None and urlsplit(url).username is not None:
        raise ValueError(
            "has an Authorization header and the URL has credentials (user:password@), which "
            "are sent as Authorization too: give them once, in the URL or in the header"
        )
    return headers


def check_final_statuses(statuses: list[int]) -> list[int]:
    if len(statuses) > MAX_FINAL_STATUSES:
        raise ValueError(f"at most {MAX_FINAL_STATUSES} statuses")
    for status in statuses:
        if not 300 <= status <= 599:
            raise ValueError(f"{status} is not a status from 300 to 599 (2xx is a success)")
        if status == 410:
            raise ValueError("410 already ends retries (the receiver is gone); leave it out")
    if len(set(statuses)) != len(statuses):
        raise ValueError("lists a status twice")
    return sorted(statuses)


# The rules of the checks above and of the validators below, as JSON Schema.
Url = Annotated[str, Field(json_schema_extra={"pattern": "^[Hh][Tt][Tt][Pp][Ss]?://[^/?#\\s]+"})]
Secret = Annotated[str, Field(json_schema_extra={"pattern": "^whsec_[A-Za-z0-9+/]+={0,2}$"})]
FinalStatus = Annotated[
    StrictInt, Field(json_schema_extra={"minimum": 300, "maximum": 599, "not": {"const": 410}})
]
# The types that requests and answers share, each named: /openapi.json describes it once, as a
# component, and generated clients have one class for it wherever it appears.
EventName = TypeAliasType(
    "EventName", Annotated[str, Field(json_schema_extra={"enum": list(events.ALL_EVENTS)})]
)
CallbackMethod = TypeAliasType("CallbackMethod", Literal["POST", "PUT"])
JobOutcome = TypeAliasType("JobOutcome", store.JobOutcome)
PayloadFormat = TypeAliasType("PayloadFormat", Literal["envelope", "raw"])
Metadata = TypeAliasType(
    "Metadata",
    Annotated[dict[str, Any], Field(description="The client's own JSON object, echoed back.")],
)
JsonObject = TypeAliasType(
    "JsonObject", Annotated[dict[str, Any], Field(description="Any JSON object.")]
)
Headers = TypeAliasType(
    "Headers",
    Annotated[
        dict[str, str],
        Field(
            description=f"Header fields sent with every delivery (at most {MAX_HEADERS}), by name.",
            json_schema_extra={
                "maxProperties": MAX_HEADERS,
                "propertyNames": {
                    "pattern": f"^[{header_fields.NAME_CHARACTERS}]{{1,{MAX_HEADER_NAME}}}$"
                },
                "additionalProperties": {"type": "string", "maxLength": MAX_HEADER_VALUE},
            },
        ),
    ],
)
# The final_statuses of a watch and of a subscription: one rule, one check, one schema.
FinalStatuses = Annotated[
    list[FinalStatus],
    AfterValidator(check_final_statuses),
    Field(
        description="Receiver statuses (300-599, at most 10) that end retries as failed, as 410 "
        "ends them as gone; e.g. [404, 409] for a resume URL whose execution is over.",
        json_schema_extra={"maxItems": MAX_FINAL_STATUSES, "uniqueItems": True},
    ),
]


def _only_with_callback(info: ValidationInfo, field: str) -> None:
    # Fields validate in declaration order, so callback_url's outcome is known here; when it
    # was invalid it is missing from info.data and its own error is enough.
    if "callback_url" in info.data and info.data["callback_url"] is None:
        raise ValueError(
            f"{field} is only used to deliver to a callback_url; set callback_url or leave "
            f"{field} out (subscriptions have their own)"
        )


# The fields of a body that are the watch's options (`service.watches.WatchOptions`).
_OPTIONS = tuple(option.name for option in dataclasses.fields(WatchOptions))


class WatchOptionsBody(BaseModel):
    """What a watch can be asked to do, whatever names its job (`POST /v1/watches` gives a
    job id, `POST /v1/generate` starts the job)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)

    callback_url: Url | None = Field(
        None,
        max_length=2048,
        description="Absolute http(s) URL to deliver to; none: events reach the tenant's "
        "subscriptions and the event endpoints only. callback_headers and secret need it: "
        "without a callback, they are refused.",
    )
    callback_method: CallbackMethod = "POST"
    callback_headers: Headers = Field(default_factory=dict)
    metadata: Metadata | None = Field(
        None, description="Echoed in every webhook; a JSON object of at most 4 KiB."
    )
    events: list[EventName] = Field(
        default_factory=lambda: list(events.FINAL_EVENTS),
        description="job.succeeded and job.failed always; add job.queued, job.processing.",
        json_schema_extra={
            "allOf": [{"contains": {"const": name}} for name in events.FINAL_EVENTS]
        },
    )
    payload_format: PayloadFormat = "envelope"
    secret: Secret | None = Field(None, description="A whsec_ signing key; generated when absent.")
    # Their bounds are settings: /openapi.json shows those in force (`service.api.openapi`).
    poll_interval_s: number_fields.Float | None = Field(
        None, description="Overrides the upstream's poll.interval_s."
    )
    timeout_s: number_fields.Float | None = Field(
        None, description="Overrides the upstream's poll.timeout_s."
    )
    upstream_api_key: str | None = Field(
        None,
        min_length=1,
        max_length=512,
        description="Else the upstream's configured key (its api_key setting) is used.",
    )
    final_statuses: FinalStatuses = Field(default_factory=list)
    upstream: str = Field(
        DEFAULT_UPSTREAM,
        min_length=1,
        max_length=32,
        description="The upstream the job runs at, by its name in the bridge's settings "
        "(`[upstreams.<name>]`; `default`, the `[upstream]` section, when absent): the job is "
        "polled there with that upstream's key, pacing and profile, and its webhooks name it "
        "(`upstream`). A job id on another upstream is another job. A name the bridge does not "
        "know is refused (422) with the ones it knows.",
    )

    @field_validator("callback_url")
    @classmethod
    def _absolute_http(cls, url: str | None) -> str | None:
        return None if url is None else check_url(url)

    @field_validator("callback_headers")
    @classmethod
    def _headers(cls, headers: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        if headers:
            _only_with_callback(info, "callback_headers")
        return check_credentials_once(info.data.get("callback_url"), check_headers(headers))

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
        chosen = _known(chosen)
        missing = [name for name in events.FINAL_EVENTS if name not in chosen]
        if missing:
            raise ValueError(
                f"must include {' and '.join(events.FINAL_EVENTS)}: the final event is always "
                "delivered (add job.queued or job.processing for progress)"
            )
        return chosen

    @field_validator("secret")
    @classmethod
    def _whsec(cls, secret: str | None, info: ValidationInfo) -> str | None:
        if secret is None:
            return None
        _only_with_callback(info, "secret")
        return signing.check_secret(secret)

    @field_validator("upstream_api_key")
    @classmethod
    def _printable(cls, key: str | None) -> str | None:
        if key is not None and not (key.isascii() and key.isprintable()):
            raise ValueError("must be printable ASCII characters only")
        return key

    def options(self) -> WatchOptions:
        """The options as the service layer takes them."""
        return WatchOptions(**{name: getattr(self, name) for name in _OPTIONS})


class WatchRequest(WatchOptionsBody):
    """The body of `POST /v1/watches`."""

    job_id: str = Field(
        description=f"The upstream job id: {JOB_ID_RULE}.",
        json_schema_extra={"pattern": JOB_ID.pattern},
    )

    @field_validator("job_id")
    @classmethod
    def _job_id(cls, job_id: str) -> str:
        if not JOB_ID.fullmatch(job_id):
            raise ValueError(f"must be {JOB_ID_RULE}")
        return job_id


class GenerateRequest(WatchOptionsBody):
    """The body of `POST /v1/generate`: the upstream's request, and how to watch its job."""

    input: JsonObject = Field(
        description="The JSON object sent unchanged as the body of the upstream's "
        "POST /api/v1/generate."
    )


def _known(chosen: list[str]) -> list[str]:
    """The chosen event types in their canonical order; an unknown one is an error."""
    unknown = [name for name in chosen if name not in events.ALL_EVENTS]
    if unknown:
        raise ValueError(
            f"unknown event {unknown[0]!r}; choose among {', '.join(events.ALL_EVENTS)}"
        )
    return [name for name in events.ALL_EVENTS if name in chosen]


class SubscriptionRequest(BaseModel):
    """The body of `POST /v1/subscriptions`."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)

    url: Annotated[Url, AfterValidator(check_url)] = Field(
        max_length=2048, description="Absolute http(s) URL to deliver to."
    )
    events: list[EventName] = Field(
        default_factory=lambda: list(events.FINAL_EVENTS),
        description="Any of job.queued, job.processing, job.succeeded, job.failed; by default "
        "the two final ones.",
        json_schema_extra={"minItems": 1},
    )
    secret: Annotated[Secret, AfterValidator(signing.check_secret)] | None = Field(
        None, description="A whsec_ signing key; generated when absent."
    )
    headers: Annotated[Headers, AfterValidator(check_headers)] = Field(default_factory=dict)
    final_statuses: FinalStatuses = Field(default_factory=list)

    @field_validator("headers")
    @classmethod
    def _credentials_once(cls, headers: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        return check_credentials_once(info.data.get("url"), headers)

    @field_validator("events")
    @classmethod
    def _some_events(cls, chosen: list[str]) -> list[str]:
        chosen = _known(chosen)
        if not chosen:
            raise ValueError(f"choose at least one of {', '.join(events.ALL_EVENTS)}")
        return chosen


# An endpoint of a watch's final event, as a redelivery names it.
ENDPOINT = re.compile(r"^(callback|sub_[0-9A-Za-z]{1,64})$")
Endpoint = TypeAliasType(
    "Endpoint",
    Annotated[
        str,
        Field(
            description="`callback` (the watch's own), or a subscription's id.",
            json_schema_extra={"pattern": ENDPOINT.pattern},
        ),
    ],
)


class RedeliverRequest(BaseModel):
    """The body of `POST /v1/watches/{watch_id}/redeliver`, which may be left out."""

    model_config = ConfigDict(extra="forbid")

    endpoints: list[Endpoint] | None = Field(
        None,
        description="The endpoints that get the final event again, each in a new series: "
        "`callback` and subscription ids among those the event was addressed to (its "
        "`deliveries`), those that accepted it included when named. null or left out: every "
        "one that can still get it.",
        json_schema_extra={"maxItems": 1 + MAX_ACTIVE},
    )

    @field_validator("endpoints")
    @classmethod
    def _endpoints(cls, endpoints: list[str] | None) -> list[str] | None:
        if endpoints is None:
            return None
        if len(endpoints) > 1 + MAX_ACTIVE:
            raise ValueError(f"at most {1 + MAX_ACTIVE}: the callback and the subscriptions")
        for endpoint in endpoints:
            if not ENDPOINT.fullmatch(endpoint):
                raise ValueError(f"{endpoint[:80]!r} is neither callback nor a subscription id")
        return list(dict.fromkeys(endpoints))


class RecoverRequest(BaseModel):
    """The body of `POST /v1/watches/failed/redeliver`: which watches whose delivery failed, by the
    filters of `GET /v1/watches` (each may be left out; none: every failed watch)."""

    model_config = ConfigDict(extra="forbid")

    outcome: JobOutcome | None = Field(None, description="Only the watches whose job ended so.")
    upstream: str | None = Field(
        None,
        description="Only the watches of this upstream, by its name in the settings.",
        json_schema_extra={"pattern": UPSTREAM_NAME.pattern},
    )
    job_id_prefix: str | None = Field(
        None,
        description="Only the watches whose job id starts with this (case included).",
        json_schema_extra={"pattern": JOB_ID.pattern},
    )
    metadata_key: str | None = Field(
        None,
        description="With metadata_value: only the watches whose metadata has this top-level "
        f"key; {watch_query.METADATA_KEY_RULE}.",
        json_schema_extra={"pattern": f"^{watch_query.METADATA_KEY.pattern}$"},
    )
    metadata_value: str | None = Field(
        None,
        description="With metadata_key: the key's value, a string equal to this or a number it "
        "writes (exact match).",
        json_schema_extra={"minLength": 1, "maxLength": watch_query.MAX_METADATA_VALUE},
    )
    created_from: str | None = Field(
        None,
        description='Only the watches created at or after this time ("since"; UTC without an '
        "offset).",
        json_schema_extra={"format": "date-time"},
    )
    created_to: str | None = Field(
        None,
        description="Only the watches created before this time (UTC without an offset).",
        json_schema_extra={"format": "date-time"},
    )

    def query(self) -> dict[str, str]:
        """The filters given, as the query of a listing names them (`watch_query.parse`)."""
        return {name: value for name, value in self.model_dump().items() if value is not None}
