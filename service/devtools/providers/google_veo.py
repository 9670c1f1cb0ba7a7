"""Google's Gemini API long-running operations of Veo video generation, as documented.

`POST /v1beta/models/{model}:predictLongRunning` starts a generation and answers the operation
`{"name": "models/{model}/operations/{id}"}`; `GET /v1beta/models/{model}/operations/{id}`
with `x-goog-api-key: <key>` answers it: without `done` while it runs (a false boolean is left
out of Google's JSON, as the Operation type allows), then `"done": true` with
`response.generateVideoResponse.generatedSamples[].video.uri`, or with `error` (a
google.rpc.Status: `code`, `message`). Errors are `{"error": {"code", "message", "status"}}`.
The API gives no queue position, progress or ETA: a queued job answers as a running one.
"""

from __future__ import annotations

import re
from typing import Any

from service.devtools.providers import Answer, Provider, View

MODEL = "veo-3.1-generate-preview"
# The reference gives no google.rpc code for a failed generation; 13 is INTERNAL.
FAILED_CODE = 13


def _name(job_id: str) -> str:
    # The model of the poll's path is not in the view; the operation is named under MODEL.
    return f"models/{MODEL}/operations/{job_id}"


def _render(view: View) -> dict[str, Any]:
    operation: dict[str, Any] = {"name": _name(view.job_id)}
    if view.phase == "succeeded":
        samples = [{"video": {"uri": url}} for url in view.output_urls]
        operation["done"] = True
        operation["response"] = {"generateVideoResponse": {"generatedSamples": samples}}
    elif view.phase == "failed":
        operation["done"] = True
        operation["error"] = {"code": FAILED_CODE, "message": view.error}
    return operation


def _error(code: int, status: str, message: str) -> Answer:
    return code, {"error": {"code": code, "message": message, "status": status}}


PROVIDER = Provider(
    reference="https://ai.google.dev/gemini-api/docs/video (REST); "
    "https://ai.google.dev/gemini-api/docs/troubleshooting; "
    "https://github.com/googleapis/python-genai (google/genai/_operations_converters.py)",
    status_route=re.compile(r"/v1beta/models/[^/:]+/operations/([^/]+)"),
    presented_key=lambda request: request.headers.get("x-goog-api-key") or None,
    render=_render,
    # NOT_FOUND is the documented status; the message's wording is assumed.
    not_found=lambda job_id: _error(404, "NOT_FOUND", f"Operation {_name(job_id)} not found."),
    # A wrong key, as the API answers it (a missing one is a 403 PERMISSION_DENIED instead).
    unauthorized=_error(400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key."),
    create_path=f"/v1beta/models/{MODEL}:predictLongRunning",
    created=lambda job_id: {"name": _name(job_id)},
)
