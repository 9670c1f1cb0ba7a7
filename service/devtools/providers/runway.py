"""Runway's task API, as its reference documents it.

`GET /v1/tasks/{id}` with `Authorization: Bearer <key>` and the required header
`X-Runway-Version: 2024-11-06` answers the task by its `status`: `PENDING` (waiting; the
simulator never answers `THROTTLED`, the other waiting word, which depends on an account's
concurrency), `RUNNING` with `progress` from 0 to 1, `SUCCEEDED` with `output` (URLs) or
`FAILED` with `failure` (a sentence) and `failureCode`. An unknown id is a 404 `{"error": ...}`.
`POST /v1/image_to_video` starts a task and answers `{"id": ...}`.
"""

from __future__ import annotations

import re
from typing import Any

from service.devtools.providers import Answer, Provider, Request, View, authorization_key, iso_utc

VERSION = "2024-11-06"
# The reference lists the failure codes' families, not which failure gets which; this one is
# a documented code.
FAILURE_CODE = "INPUT_PREPROCESSING.INTERNAL"
_WORDS = {"queued": "PENDING", "processing": "RUNNING", "succeeded": "SUCCEEDED"}


def _render(view: View) -> dict[str, Any]:
    task: dict[str, Any] = {"id": view.job_id, "status": _WORDS.get(view.phase, "FAILED")}
    # As the reference writes it: 2024-06-27T19:49:32.334Z
    task["createdAt"] = iso_utc(view.created_at, "milliseconds")
    if view.phase == "processing":
        task["progress"] = view.progress
    elif view.phase == "succeeded":
        task["output"] = list(view.output_urls)
    elif view.phase == "failed":
        task["failure"] = view.error
        task["failureCode"] = FAILURE_CODE
    return task


def _refuse(request: Request) -> Answer | None:
    """The version header is required; a 400 carries an `error` member (its wording is not
    documented)."""
    if request.headers.get("x-runway-version") == VERSION:
        return None
    return 400, {"error": f"The X-Runway-Version header must be {VERSION}."}


PROVIDER = Provider(
    reference="https://docs.dev.runwayml.com/api/#tag/Task-management (Get task detail, from "
    "https://github.com/runwayml/openapi openapi.json); "
    "https://docs.dev.runwayml.com/api-details/errors; "
    "https://docs.dev.runwayml.com/api-details/task-failures",
    status_route=re.compile(r"/v1/tasks/([^/]+)"),
    presented_key=authorization_key("Bearer"),
    render=_render,
    # The 404's body is documented as {"error": string}; its wording is not.
    not_found=lambda job_id: (404, {"error": "Task not found"}),
    # A 401 means "the provided API key is not valid"; its body is not documented.
    unauthorized=(401, {"error": "The provided API key is not valid."}),
    create_path="/v1/image_to_video",
    created=lambda job_id: {"id": job_id},
    refuse=_refuse,
)
