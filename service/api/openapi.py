"""The OpenAPI 3.1 description of the v1 API, served at /openapi.json."""

from __future__ import annotations

from typing import Any

from service import __version__
from service.api.models import WatchRequest
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
            "properties": {"secret": {"type": "string", "description": "Only in this answer."}},
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


def _problem(description: str) -> dict[str, Any]:
    ref = {"$ref": "#/components/schemas/Problem"}
    return {"description": description, "content": {"application/problem+json": {"schema": ref}}}


_WATCH_REF = {"$ref": "#/components/schemas/Watch"}
_ID = {"name": "watch_id", "in": "path", "required": True, "schema": {"type": "string"}}
_NOT_FOUND = _problem("No such watch.")
_UNAUTHORIZED = _problem("No valid API token (when tokens are configured).")


def spec() -> dict[str, Any]:
    request_schema = WatchRequest.model_json_schema(ref_template="#/components/schemas/{model}")
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
        {"name": "job_id", "in": "query", "schema": {"type": "string"}},
        {
            "name": "limit",
            "in": "query",
            "schema": {"type": "integer", "minimum": 1, "maximum": 200},
        },
        {"name": "cursor", "in": "query", "schema": {"type": "string"}},
    ]
    return {
        "openapi": "3.1.0",
        "info": {"title": "Webhook Bridge", "version": __version__},
        "paths": {
            "/v1/watches": {
                "post": {
                    "summary": "Register a job and a callback",
                    "parameters": [
                        {"name": "Idempotency-Key", "in": "header", "schema": {"type": "string"}}
                    ],
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": request_schema}},
                    },
                    "responses": {
                        "201": _json(_CREATED, "Committed; polling has started."),
                        "200": _json(_CREATED, "A replay of an earlier call with the same key."),
                        "400": _problem("The body is not a JSON object."),
                        "401": _UNAUTHORIZED,
                        "409": _problem("The Idempotency-Key was used with another body."),
                        "413": _problem("The body is larger than 64 KiB."),
                        "422": _problem("A field is invalid; `errors` names each."),
                        "429": _problem("Too many registrations; see Retry-After."),
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
                    "responses": {"200": {"description": "ok"}},
                }
            },
            "/readyz": {
                "get": {
                    "summary": "Store reachable and scheduler running",
                    "security": [],
                    "responses": {
                        "200": {"description": "ready"},
                        "503": {"description": "not ready, with the reason"},
                    },
                }
            },
            "/openapi.json": {
                "get": {
                    "summary": "This document",
                    "security": [],
                    "responses": {"200": {"description": "ok"}},
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
