"""The OpenAPI 3.1 description of the v1 API, served at /openapi.json."""

from __future__ import annotations

from typing import Any

from service import __version__, events
from service.api.handlers import (
    EVENT_ID_PATTERN,
    MAX_EVENTS,
    MAX_PAGE,
    MAX_WAIT_S,
    SUBSCRIPTION_ID_PATTERN,
    WATCH_ID_PATTERN,
)
from service.api.models import (
    HEADER_NAME,
    MAX_FINAL_STATUSES,
    MAX_HEADERS,
    GenerateRequest,
    SubscriptionRequest,
    WatchRequest,
)
from service.store.base import WATCH_STATUSES
from service.upstream import JOB_ID

_TIME = {"type": ["string", "null"], "format": "date-time"}
_WATCH: dict[str, Any] = {
    "type": "object",
    "required": ["id", "job_id", "callback_url", "status", "attempts", "created_at"],
    "properties": {
        "id": {"type": "string", "pattern": "^wch_"},
        "job_id": {"type": "string"},
        "callback_url": {
            "type": ["string", "null"],
            "description": "Without any credentials; null: the watch has no callback.",
        },
        "callback_method": {"enum": ["POST", "PUT"]},
        "callback_headers": {
            "type": "object",
            "additionalProperties": {"type": "string"},
            "description": "Header names; values are masked.",
        },
        "events": {"type": "array", "items": {"type": "string"}},
        "payload_format": {"enum": ["envelope", "raw"]},
        "metadata": {"type": ["object", "null"]},
        "poll_interval_s": {"type": "number"},
        "timeout_s": {"type": "number"},
        "final_statuses": {"type": "array", "items": {"type": "integer"}},
        "status": {
            "enum": list(WATCH_STATUSES),
            "description": "`completed`: the job ended and the watch has no callback.",
        },
        "job_status": {"type": ["string", "null"]},
        "queue_position": {"type": ["integer", "null"]},
        "attempts": {"type": "integer"},
        "last_error": {"type": ["string", "null"]},
        "created_at": _TIME,
        "updated_at": _TIME,
        "completed_at": _TIME,
        "expires_at": _TIME,
    },
}
_CREATED = {
    "allOf": [
        {"$ref": "#/components/schemas/Watch"},
        {
            "type": "object",
            "required": ["secret"],
            "properties": {
                "secret": {
                    "type": ["string", "null"],
                    "description": "Only in this answer; null when the watch is signed with "
                    "the configured delivery.signing_secrets, or has no callback.",
                }
            },
        },
    ]
}
_ATTEMPT = {
    "type": "object",
    "properties": {
        "webhook_id": {"type": "string"},
        "subscription_id": {
            "type": ["string", "null"],
            "description": "The subscription addressed; null: the watch's own callback.",
        },
        "event": {"type": "string"},
        "attempt": {"type": "integer"},
        "attempted_at": _TIME,
        "duration_ms": {"type": "number"},
        "status_code": {"type": ["integer", "null"]},
        "error": {"type": ["string", "null"]},
        "next_attempt_at": _TIME,
    },
}
_SUBSCRIPTION: dict[str, Any] = {
    "type": "object",
    "required": ["id", "url", "events", "headers", "final_statuses", "status", "created_at"],
    "properties": {
        "id": {"type": "string", "pattern": "^sub_"},
        "url": {"type": "string", "description": "Without any credentials."},
        "events": {"type": "array", "items": {"enum": list(events.ALL_EVENTS)}},
        "headers": {
            "type": "object",
            "additionalProperties": {"type": "string"},
            "description": "Header names; values are masked.",
        },
        "final_statuses": {"type": "array", "items": {"type": "integer"}},
        "status": {"enum": ["active", "deleted", "gone"]},
        "created_at": _TIME,
    },
}
_SUBSCRIPTION_CREATED = {
    "allOf": [
        {"$ref": "#/components/schemas/Subscription"},
        {
            "type": "object",
            "required": ["secret"],
            "properties": {
                "secret": {
                    "type": ["string", "null"],
                    "description": "Only in this answer; null when the configured "
                    "delivery.signing_secrets sign for it.",
                }
            },
        },
    ]
}
# The envelope: the body of every webhook to a subscription (and of envelope-format callbacks).
_EVENT: dict[str, Any] = {
    "type": "object",
    "required": [
        "id", "type", "timestamp", "watch_id", "job_id", "status", "image_urls", "error",
        "error_code", "metadata", "data",
    ],
    "properties": {
        "id": {"type": "string", "pattern": "^evt_", "description": "The same for every endpoint."},
        "type": {"enum": list(events.ALL_EVENTS)},
        "timestamp": {"type": "string", "format": "date-time"},
        "watch_id": {"type": "string"},
        "job_id": {"type": "string"},
        "status": {"enum": [name.removeprefix("job.") for name in events.ALL_EVENTS]},
        "image_urls": {"type": ["array", "null"], "items": {"type": "string"}},
        "error": {"type": ["string", "null"]},
        "error_code": {"type": ["string", "null"]},
        "metadata": {"type": ["object", "null"]},
        "data": {"type": ["object", "null"], "description": "The upstream's answer."},
    },
}  # fmt: skip
_FINAL_STATUSES = {
    "type": "array",
    "maxItems": MAX_FINAL_STATUSES,
    "uniqueItems": True,
    "items": {"type": "integer", "minimum": 300, "maximum": 599, "not": {"const": 410}},
}
_PROBLEM = {
    "type": "object",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"field": {"type": "string"}, "message": {"type": "string"}},
            },
        },
    },
}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _problem(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    ref = {"$ref": "#/components/schemas/Problem"}
    answer = {"description": description, "content": {"application/problem+json": {"schema": ref}}}
    if headers:
        answer["headers"] = headers
    return answer


def _header(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "required": True, "schema": schema}


def _rate_limited(description: str) -> dict[str, Any]:
    """A 429 with the Retry-After the bridge's own rate limits send."""
    wait = _header("Whole seconds to wait.", {"type": "string", "pattern": "^[0-9]+$"})
    return _problem(description, {"Retry-After": wait})


_WATCH_REF = {"$ref": "#/components/schemas/Watch"}
_ID = {
    "name": "watch_id",
    "in": "path",
    "required": True,
    "description": "Any other form names no watch (404).",
    "schema": {"type": "string", "pattern": WATCH_ID_PATTERN},
}
_EVENT_REF = {"$ref": "#/components/schemas/Event"}
_SUBSCRIPTION_REF = {"$ref": "#/components/schemas/Subscription"}
_NOT_FOUND = _problem("No such watch (or another tenant's).")
_UNAUTHORIZED = _problem(
    "No valid API token (when tokens are configured).",
    {"WWW-Authenticate": _header("The scheme to use: Bearer.", {"type": "string"})},
)
_CRASHED = _problem("The bridge failed; its logs say why.")
_HOST_NOT_ALLOWED = _problem(
    "Addressed to a host the bridge does not serve (without tokens: only loopback names and "
    "server.allowed_hosts)."
)
_TOO_MANY_HEADERS = _problem("More header fields than server.max_headers.")
_CROSS_SITE = _problem("A browser says another site sent the request (Origin, Sec-Fetch-Site).")


_LOCKED_OUT = _rate_limited(
    "Too many failed authentications from this address (auth.failed_auth_burst)."
)
_STORE_UNAVAILABLE = _problem(
    "The bridge's store is unavailable (unreachable, or refusing writes: a full disk), type "
    "/problems/store-unavailable; retry after Retry-After. A registration retried with the same "
    "Idempotency-Key is registered once, even if the first one was committed after all.",
    {"Retry-After": _header("Seconds to wait.", {"type": "string", "pattern": "^[0-9]+$"})},
)
_NOT_JSON = _problem("The body was not sent as Content-Type: application/json.")
_TOO_MANY_STREAMS = _problem(
    "The token holds api.max_streams_per_tenant open streams (event streams, long-polls, "
    "dashboard live updates) already."
)


_STATUS = {
    "type": "object",
    "required": ["status"],
    "properties": {"status": {"const": "ok"}},
}
_UNREADY = {
    "type": "object",
    "required": ["status", "reason"],
    "properties": {"status": {"const": "unavailable"}, "reason": {"type": "string"}},
}
_NUMBER = {"type": "number"}


_URL_PATTERN = "^[Hh][Tt][Tt][Pp][Ss]?://[^/?#\\s]+"


def _subscription_request() -> dict[str, Any]:
    """The subscription request schema from the model, its validators' rules spelled out."""
    request_schema = SubscriptionRequest.model_json_schema()
    fields = request_schema["properties"]
    fields["url"].update(pattern=_URL_PATTERN)
    fields["headers"].update(
        maxProperties=MAX_HEADERS,
        propertyNames={"pattern": HEADER_NAME.pattern},
        additionalProperties={"type": "string", "maxLength": 4096},
    )
    fields["events"].update(items={"enum": list(events.ALL_EVENTS)}, minItems=1)
    fields["secret"]["anyOf"][0].update(pattern="^whsec_[A-Za-z0-9+/]+={0,2}$")
    fields["final_statuses"].update(_FINAL_STATUSES)
    return request_schema


def _refine(request_schema: dict[str, Any]) -> dict[str, Any]:
    """The request schema from the model, with the rules its validators enforce spelled out
    (so that clients, and generated tests, know them)."""
    fields = request_schema["properties"]
    fields["job_id"].update(pattern=JOB_ID.pattern)
    fields["callback_url"]["anyOf"][0].update(pattern=_URL_PATTERN)
    fields["callback_url"]["description"] += (
        " callback_headers and secret need it: without a callback, they are refused."
    )
    fields["final_statuses"].update(_FINAL_STATUSES)
    fields["callback_headers"].update(
        maxProperties=MAX_HEADERS,
        propertyNames={"pattern": HEADER_NAME.pattern},
        additionalProperties={"type": "string", "maxLength": 4096},
    )
    fields["events"].update(
        items={"enum": list(events.ALL_EVENTS)},
        allOf=[{"contains": {"const": name}} for name in events.FINAL_EVENTS],
    )
    fields["secret"]["anyOf"][0].update(pattern="^whsec_[A-Za-z0-9+/]+={0,2}$")
    bounds: dict[str, dict[str, Any]] = {
        # poll.min_interval_s (at least 0.1) is the floor in force.
        "poll_interval_s": {"minimum": 0.1, "maximum": 3600},
        # poll.max_timeout_s (at most 30 days) is the ceiling in force.
        "timeout_s": {"exclusiveMinimum": 0, "maximum": 30 * 86400},
    }
    for name, bound in bounds.items():
        fields[name]["anyOf"][0] = {**_NUMBER, **bound}
    return request_schema


def _generate_schema(watch_schema: dict[str, Any]) -> dict[str, Any]:
    """The body of `POST /v1/generate`: the (refined) watch request without `job_id`, with
    `input`."""
    options = {name: rule for name, rule in watch_schema["properties"].items() if name != "job_id"}
    own = GenerateRequest.model_json_schema()["properties"]["input"]
    return {
        **watch_schema,
        "title": GenerateRequest.__name__,
        "description": GenerateRequest.__doc__,
        "properties": {"input": own, **options},
        "required": ["input"],
    }


def _generated(created: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["job_id", "upstream", "watch"],
        "properties": {
            "job_id": {"type": "string"},
            "upstream": {"type": "object", "description": "The upstream's answer, as sent."},
            "watch": created,
        },
    }


def spec() -> dict[str, Any]:
    request_schema = _refine(
        WatchRequest.model_json_schema(ref_template="#/components/schemas/{model}")
    )
    defs = request_schema.pop("$defs", {})
    generate_schema = _generate_schema(request_schema)
    page = {
        "type": "object",
        "properties": {
            "data": {"type": "array", "items": _WATCH_REF},
            "next_cursor": {"type": ["string", "null"]},
        },
    }
    query = [
        {"name": "status", "in": "query", "schema": {"enum": list(WATCH_STATUSES)}},
        {"name": "job_id", "in": "query", "schema": {"type": "string", "pattern": JOB_ID.pattern}},
        {
            "name": "limit",
            "in": "query",
            "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE},
        },
        {
            "name": "cursor",
            "in": "query",
            "description": "The next_cursor of the previous page.",
            "schema": {"type": "string", "pattern": WATCH_ID_PATTERN},
        },
    ]
    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": "Webhook Bridge", "version": __version__},
        "paths": {
            "/v1/watches": {
                "post": {
                    "summary": "Register a job and a callback",
                    "parameters": [
                        {
                            "name": "Idempotency-Key",
                            "in": "header",
                            "description": "A retry with the same key and body replays the answer.",
                            "schema": {"type": "string", "minLength": 1, "maxLength": 255},
                        }
                    ],
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": request_schema}},
                    },
                    "responses": {
                        "201": _json(_CREATED, "Committed; polling has started."),
                        "200": _json(_CREATED, "A replay of an earlier call with the same key."),
                        "400": _problem(
                            "The body is not JSON, not an object, or nested too deeply."
                        ),
                        "401": _UNAUTHORIZED,
                        "404": _problem(
                            "No job `job_id` for this token: another token started it through "
                            "POST /v1/generate with the bridge's upstream key, which this watch "
                            "would use too."
                        ),
                        "409": _problem("The Idempotency-Key was used with another body."),
                        "413": _problem("The body is larger than 64 KiB."),
                        "422": _problem("A field is invalid; `errors` names each."),
                        "429": _rate_limited("Too many registrations for this token."),
                    },
                },
                "get": {
                    "summary": "List watches, newest first",
                    "parameters": query,
                    "responses": {
                        "200": _json(page, "A page of watches."),
                        "401": _UNAUTHORIZED,
                        "422": _problem("A query parameter is invalid."),
                    },
                },
            },
            "/v1/generate": {
                "post": {
                    "summary": "Start an upstream job and watch it, in one call",
                    "description": "Sends `input` to the upstream's POST /api/v1/generate (with "
                    "upstream_api_key, else the configured key), then registers a watch of the "
                    "job it started, as POST /v1/watches does. Every field is checked before "
                    "the upstream is called; when the upstream refuses or fails, nothing is "
                    "registered.",
                    "parameters": [
                        {
                            "name": "Idempotency-Key",
                            "in": "header",
                            "description": "A retry with the same key and body replays the "
                            "answer (200) without calling the upstream again; the upstream gets "
                            "a key derived from it.",
                            "schema": {"type": "string", "minLength": 1, "maxLength": 255},
                        }
                    ],
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": generate_schema}},
                    },
                    "responses": {
                        "201": _json(_generated(_CREATED), "Started and watched."),
                        "200": _json(
                            _generated(_CREATED), "A replay of an earlier call with the same key."
                        ),
                        "400": _problem(
                            "The body is not JSON, not an object, or nested too deeply; or "
                            "the upstream answered 400 (see 4XX)."
                        ),
                        "401": _UNAUTHORIZED,
                        "409": _problem("The Idempotency-Key was used with another body."),
                        "413": _problem("The body is larger than 64 KiB."),
                        "422": _problem("A field is invalid; `errors` names each."),
                        "429": _problem(
                            "Too many registrations for this token, or the upstream's own 429.",
                            {
                                "Retry-After": {
                                    "description": "Whole seconds to wait.",
                                    "schema": {"type": "string"},
                                }
                            },
                        ),
                        "4XX": _problem(
                            "The upstream refused the generation: its own status, and its "
                            "message in `detail` (type /problems/upstream-refused)."
                        ),
                        "502": _problem(
                            "The upstream failed, answered something unreadable, or did not "
                            "answer in time."
                        ),
                    },
                },
            },
            "/v1/watches/{watch_id}": {
                "get": {
                    "summary": "Read a watch",
                    "parameters": [_ID],
                    "responses": {
                        "200": _json(_WATCH_REF, "The watch."),
                        "401": _UNAUTHORIZED,
                        "404": _NOT_FOUND,
                    },
                },
                "delete": {
                    "summary": "Cancel polling and pending deliveries (idempotent)",
                    "parameters": [_ID],
                    "responses": {
                        "200": _json(_WATCH_REF, "The watch."),
                        "401": _UNAUTHORIZED,
                        "404": _NOT_FOUND,
                    },
                },
            },
            "/v1/watches/{watch_id}/deliveries": {
                "get": {
                    "summary": "Every delivery attempt, oldest first",
                    "parameters": [_ID],
                    "responses": {
                        "200": _json(
                            {
                                "type": "object",
                                "properties": {
                                    "data": {
                                        "type": "array",
                                        "items": {"$ref": "#/components/schemas/Attempt"},
                                    }
                                },
                            },
                            "The attempts.",
                        ),
                        "401": _UNAUTHORIZED,
                        "404": _NOT_FOUND,
                    },
                }
            },
            "/v1/watches/{watch_id}/redeliver": {
                "post": {
                    "summary": "Send the final event again (same webhook-id)",
                    "parameters": [_ID],
                    "responses": {
                        "202": _json(_WATCH_REF, "A new series of attempts has started."),
                        "401": _UNAUTHORIZED,
                        "404": _NOT_FOUND,
                        "409": _problem("The watch is not delivered, failed, gone or completed."),
                    },
                }
            },
            "/v1/watches/{watch_id}/wait": {
                "get": {
                    "summary": "Long-poll: the final event as soon as there is one",
                    "parameters": [
                        _ID,
                        {
                            "name": "timeout_s",
                            "in": "query",
                            "description": "Seconds to wait at most (api.max_wait_s may cut it).",
                            "schema": {"type": "integer", "minimum": 0, "maximum": MAX_WAIT_S},
                        },
                    ],
                    "responses": {
                        "200": _json(_EVENT_REF, "The final event: the body a webhook carries."),
                        "202": {
                            **_json(
                                {
                                    "type": "object",
                                    "required": ["status", "watch"],
                                    "properties": {
                                        "status": {"const": "pending"},
                                        "watch": _WATCH_REF,
                                    },
                                },
                                "Not yet: the watch as it stands. Ask again.",
                            ),
                            "headers": {"Retry-After": _header("0", {"const": "0"})},
                        },
                        "401": _UNAUTHORIZED,
                        "404": _NOT_FOUND,
                        "409": _problem(
                            "The watch ended without a final event (cancelled), or its events "
                            "were purged."
                        ),
                        "422": _problem("timeout_s is invalid."),
                        "429": _TOO_MANY_STREAMS,
                    },
                }
            },
            "/v1/watches/{watch_id}/events": {
                "get": {
                    "summary": "Server-Sent Events of the watch, ending after the final one",
                    "description": "`retry: 2000` first, then per event `id: evt_...`, "
                    "`event: <type>`, `data: <envelope>`; a `: keep-alive` comment every "
                    "api.sse_keepalive_s. The stream ends after the final event, or when the "
                    "watch was cancelled. `Last-Event-ID` resumes after that event.",
                    "parameters": [
                        _ID,
                        {
                            "name": "Last-Event-ID",
                            "in": "header",
                            "description": "Resume after this event (EventSource sends it).",
                            "schema": {"type": "string", "pattern": EVENT_ID_PATTERN},
                        },
                        {
                            "name": "last_event_id",
                            "in": "query",
                            "description": "The same, for clients that cannot set headers.",
                            "schema": {"type": "string", "pattern": EVENT_ID_PATTERN},
                        },
                    ],
                    "responses": {
                        "200": {
                            "description": "The event stream.",
                            "content": {"text/event-stream": {"schema": {"type": "string"}}},
                        },
                        "401": _UNAUTHORIZED,
                        "404": _NOT_FOUND,
                        "422": _problem("Last-Event-ID is not an event id."),
                        "429": _TOO_MANY_STREAMS,
                    },
                }
            },
            "/v1/events": {
                "get": {
                    "summary": "Recent events of every watch, newest first (for polling)",
                    "parameters": [
                        {
                            "name": "type",
                            "in": "query",
                            "description": "Only these types: repeat it, or separate with commas.",
                            "style": "form",
                            "explode": True,
                            "schema": {"type": "array", "items": {"enum": list(events.ALL_EVENTS)}},
                        },
                        {
                            "name": "limit",
                            "in": "query",
                            "schema": {"type": "integer", "minimum": 1, "maximum": MAX_EVENTS},
                        },
                    ],
                    "responses": {
                        "200": _json(
                            {"type": "array", "items": _EVENT_REF},
                            "The envelopes, each the body its webhooks carry.",
                        ),
                        "401": _UNAUTHORIZED,
                        "422": _problem("A query parameter is invalid."),
                    },
                }
            },
            "/v1/subscriptions": {
                "post": {
                    "summary": "Subscribe an endpoint to every event of the tenant's watches",
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": _subscription_request()}},
                    },
                    "responses": {
                        "201": _json(
                            _SUBSCRIPTION_CREATED, "Subscribed; the secret is shown once."
                        ),
                        "400": _problem(
                            "The body is not JSON, not an object, or nested too deeply."
                        ),
                        "401": _UNAUTHORIZED,
                        "409": _problem("The tenant already has 100 active subscriptions."),
                        "413": _problem("The body is larger than 64 KiB."),
                        "422": _problem("A field is invalid; `errors` names each."),
                        "429": _rate_limited("Too many subscription changes for this token."),
                    },
                },
                "get": {
                    "summary": "The active subscriptions, oldest first",
                    "responses": {
                        "200": _json(
                            {
                                "type": "object",
                                "required": ["data"],
                                "properties": {
                                    "data": {"type": "array", "items": _SUBSCRIPTION_REF}
                                },
                            },
                            "The subscriptions.",
                        ),
                        "401": _UNAUTHORIZED,
                    },
                },
            },
            "/v1/subscriptions/{subscription_id}": {
                "delete": {
                    "summary": "Unsubscribe: nothing more is sent, pending deliveries included",
                    "parameters": [
                        {
                            "name": "subscription_id",
                            "in": "path",
                            "required": True,
                            "description": "Any other form names no subscription (404).",
                            "schema": {"type": "string", "pattern": SUBSCRIPTION_ID_PATTERN},
                        }
                    ],
                    "responses": {
                        "204": {"description": "Unsubscribed."},
                        "401": _UNAUTHORIZED,
                        "404": _problem("No such active subscription (or another tenant's)."),
                        "429": _rate_limited("Too many subscription changes for this token."),
                    },
                }
            },
            "/v1/me": {
                "get": {
                    "summary": "Who the token belongs to (to test a connection)",
                    "responses": {
                        "200": _json(
                            {
                                "type": "object",
                                "required": ["tenant", "authenticated"],
                                "properties": {
                                    "tenant": {"type": "string"},
                                    "authenticated": {"type": "boolean"},
                                },
                            },
                            "The caller.",
                        ),
                        "401": _UNAUTHORIZED,
                    },
                }
            },
            "/livez": {
                "get": {
                    "summary": "Alive",
                    "security": [],
                    "responses": {"200": _json(_STATUS, "Alive.")},
                }
            },
            "/readyz": {
                "get": {
                    "summary": "Store reachable and scheduler running",
                    "security": [],
                    "responses": {
                        "200": _json(_STATUS, "Ready."),
                        "503": _json(_UNREADY, "Not ready, and why."),
                    },
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics (aggregate, no per-tenant or per-job labels)",
                    "security": [],
                    "responses": {
                        "200": {
                            "description": "The Prometheus text format.",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        },
                        "404": _problem(
                            "With auth.tokens, served only on the health port (server.health_port)."
                        ),
                    },
                }
            },
            "/openapi.json": {
                "get": {
                    "summary": "This document",
                    "security": [],
                    "responses": {"200": _json({"type": "object"}, "This document.")},
                }
            },
        },
        "security": [{"bearer": []}, {"apiKey": []}],
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            },
            "schemas": {
                "Watch": _WATCH,
                "Attempt": _ATTEMPT,
                "Subscription": _SUBSCRIPTION,
                "Event": _EVENT,
                "Problem": _PROBLEM,
                **defs,
            },
        },
    }
    for path, operations in document["paths"].items():
        for operation in operations.values():
            # What `service.api.guard` and the JSON body check answer on any route they cover.
            answers = operation["responses"]
            answers["421"] = _HOST_NOT_ALLOWED
            answers["431"] = _TOO_MANY_HEADERS
            if path.startswith("/v1/"):
                answers["403"] = _CROSS_SITE
                answers["503"] = _STORE_UNAVAILABLE
            if "requestBody" in operation:
                answers["415"] = _NOT_JSON
            if "401" in answers:
                answers.setdefault("429", _LOCKED_OUT)
            answers["500"] = _CRASHED
    return document
