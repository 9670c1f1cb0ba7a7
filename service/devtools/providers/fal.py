"""fal's queue, as its reference documents it.

`GET {model}/requests/{request_id}/status` with `Authorization: Key <key>` answers the
request's `status`: `IN_QUEUE` with `queue_position` (the requests ahead, 0 next), `IN_PROGRESS`
or `COMPLETED`, whether the model succeeded or not. The outcome is read once, from
`GET {model}/requests/{request_id}`: the model's output (an image model's
`{"images": [{"url": ...}], ...}`), or the error it ended with, status and body: a model
error, `422 {"detail": [{"loc", "msg", "type", "url"}]}`, or a request error (the platform's:
a timeout, a runner lost), its typical status with `{"detail": <a sentence>, "error_type"}`.
A simulated job fails with a request error when its `error` is one of `REQUEST_ERRORS`'
types (`{"outcome": "failed", "error": "request_timeout"}` answers 504); with the model's
error otherwise. The status request answers 202 until the request completes, then 200. The
model id (`fal-ai/flux`) is part of the upstream's base URL; the simulator accepts any or none
before `/requests/`.

The status answers of the reference also carry `response_url`, `status_url` and `cancel_url`,
absolute URLs on the queue's host; the simulator, which renders a job without knowing the host
it is reached at, leaves them out, as it leaves out the `X-Fal-Error-Type` header that repeats
a request error's `error_type`. It has no create request: fal's is `POST` to the model's
own URL, which a profile of the queue cannot name.
"""

from __future__ import annotations

import re
from typing import Any

from service.devtools.providers import Answer, Provider, View, authorization_key

_WORDS = {"queued": "IN_QUEUE", "processing": "IN_PROGRESS"}
ERRORS_URL = "https://docs.fal.ai/errors#content_policy_violation"
# The request errors of the reference: error_type -> its typical status and a `detail` (the
# reference's example is request_timeout's "Request timed out"; the others are written here).
REQUEST_ERRORS = {
    "request_timeout": (504, "Request timed out"),
    "startup_timeout": (504, "Runner startup timed out"),
    "runner_scheduling_failure": (503, "No runner could be allocated to the request"),
    "runner_connection_timeout": (503, "Connection to the runner timed out"),
    "runner_disconnected": (503, "Runner disconnected during processing"),
    "runner_connection_refused": (503, "Runner refused the connection"),
    "runner_connection_error": (503, "Error connecting to the runner"),
    "runner_incomplete_response": (502, "Runner sent an incomplete response"),
    "runner_server_error": (500, "Runner encountered an internal server error"),
    "internal_error": (500, "Internal error"),
    "client_cancelled": (499, "Request cancelled by the client"),
    "bad_request": (400, "Bad request"),
}


def _render(view: View) -> dict[str, Any]:
    status: dict[str, Any] = {"status": _WORDS.get(view.phase, "COMPLETED")}
    status["request_id"] = view.job_id
    if view.queue_position is not None:
        status["queue_position"] = view.queue_position - 1  # the View counts 1 as next
    else:
        status["logs"] = None  # present, null, unless asked for with ?logs=1
    return status


def _result(view: View) -> dict[str, Any]:
    images = [{"url": url, "content_type": "image/jpeg"} for url in view.output_urls]
    return {"images": images, "prompt": "", "has_nsfw_concepts": [False] * len(images)}


def _result_error(view: View) -> Answer | None:
    """A failed request's result is its request error, or the model's error (422 for the
    documented content_policy_violation); an unfinished one's is not documented, hence a plain
    400."""
    if view.phase == "failed" and view.error in REQUEST_ERRORS:
        status, detail = REQUEST_ERRORS[view.error]
        return status, {"detail": detail, "error_type": view.error}
    if view.phase == "failed":
        error = {"loc": ["body"], "msg": view.error, "type": "content_policy_violation"}
        return 422, {"detail": [{**error, "url": ERRORS_URL}]}
    if view.phase != "succeeded":
        return 400, {"detail": "Request is still in progress"}
    return None


PROVIDER = Provider(
    reference="https://docs.fal.ai/model-endpoints/queue; "
    "https://fal.ai/docs/documentation/model-apis/inference/queue; "
    "https://fal.ai/docs/documentation/model-apis/errors; "
    "https://fal.ai/docs/documentation/model-apis/request-errors; "
    "https://fal.ai/docs/inference-api/queue/result; "
    "https://fal.ai/docs/api-reference/inference-api",
    status_route=re.compile(r"(?:/.+)?/requests/([^/]+)/status"),
    presented_key=authorization_key("Key"),
    render=_render,
    # The errors pages document {"detail": ...} bodies; the words of these two are not.
    not_found=lambda job_id: (404, {"detail": "Request not found"}),
    unauthorized=(401, {"detail": "Invalid API key"}),
    result_route=re.compile(r"(?:/.+)?/requests/([^/]+)"),
    render_result=_result,
    result_error=_result_error,
    status_code=lambda phase: 202 if phase in ("queued", "processing") else 200,
)
