"""The OpenAPI 3.1 description of the v1 API, served at /openapi.json."""

from __future__ import annotations

from typing import Any

from service import __version__, events
from service.api.handlers import MAX_PAGE, WATCH_ID_PATTERN
from service.api.models import HEADER_NAME, JOB_ID, MAX_HEADERS, WatchRequest
from service.store.base import WATCH_STATUSES

_TIME = {"type": ["string", "null"], "format": "date-time"}
_WATCH: dict[str, Any] = {
    "type": "object",
    "required": ["id", "job_id", "callback_url", "status", "attempts", "created_at"],
    "properties": {
        "id": {"type": "string", "pattern": "^wch_"},
        "job_id": {"type": "string"},
        "callback_url": {"type": "string", "description": "Without any credentials."},
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
        "status": {"enum": list(WATCH_STATUSES)},
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
                    "the configured delivery.signing_secrets.",
                }
            },
        },
    ]
}
_ATTEMPT = {
    "type": "object",
    "properties": {
        "webhook_id": {"type": "string"},
        "event": {"type": "string"},
        "attempt": {"type": "integer"},
        "attempted_at": _TIME,
        "duration_ms": {"type": "number"},
        "status_code": {"type": ["integer", "null"]},
        "error": {"type": ["string", "null"]},
        "next_attempt_at": _TIME,
    },
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


_WATCH_REF = {"$ref": "#/components/schemas/Watch"}
_ID = {
    "name": "watch_id",
    "in": "path",
    "required": True,
    "description": "Any other form names no watch (404).",
    "schema": {"type": "string", "pattern": WATCH_ID_PATTERN},
}
_NOT_FOUND = _problem("No such watch (or another tenant's).")
_UNAUTHORIZED = _problem(
    "No valid API token (when tokens are configured).",
    {"WWW-Authenticate": _header("The scheme to use: Bearer.", {"type": "string"})},
)
_CRASHED = _problem("The bridge failed; its logs say why.")
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


def _refine(request_schema: dict[str, Any]) -> dict[str, Any]:
    """The request schema from the model, with the rules its validators enforce spelled out
    (so that clients, and generated tests, know them)."""
    fields = request_schema["properties"]
    fields["job_id"].update(pattern=JOB_ID.pattern)
    fields["callback_url"].update(pattern="^[Hh][Tt][Tt][Pp][Ss]?://[^/?#\\s]+")
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


def spec() -> dict[str, Any]:
    request_schema = _refine(
        WatchRequest.model_json_schema(ref_template="#/components/schemas/{model}")
    )
    defs = request_schema.pop("$defs", {})
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
                        "409": _problem("The Idempotency-Key was used with another body."),
                        "413": _problem("The body is larger than 64 KiB."),
                        "422": _problem("A field is invalid; `errors` names each."),
                        "429": _problem(
                            "Too many registrations for this token.",
                            {
                                "Retry-After": _header(
                                    "Whole seconds to wait.",
                                    {"type": "string", "pattern": "^[0-9]+$"},
                                )
                            },
                        ),
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
                        "409": _problem("The watch is not delivered, failed or gone."),
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
                        }
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
                "Problem": _PROBLEM,
                **defs,
            },
        },
    }
    for operations in document["paths"].values():
        for operation in operations.values():
            operation["responses"]["500"] = _CRASHED
    return document
