"""Replicate's predictions, as its HTTP reference documents them.

`GET /v1/predictions/{id}` with `Authorization: Bearer <token>` (the older docs' `Token
<token>` is accepted too) answers the prediction by its `status`: `starting`, `processing`,
`succeeded` with `output` (here the job's URLs: one string, or a list when there are several)
or `failed` with `error` (a sentence). Errors are RFC 7807 problem details `{"title", "detail",
"status"}`. `POST /v1/predictions` starts one and answers it, `starting`. The API gives no queue
position, progress or ETA; the simulator never answers `canceled` or `aborted`, which only a
client's cancel or a deadline cause.
"""

from __future__ import annotations

import re
from typing import Any

from service.devtools.providers import Provider, View, authorization_key, iso_utc

API = "https://api.replicate.com/v1/predictions"
MODEL = "replicate/hello-world"
_STATUSES = {"queued": "starting", "processing": "processing", "succeeded": "succeeded"}


def _prediction(job_id: str, status: str) -> dict[str, Any]:
    # No started_at, completed_at or metrics: the simulated job has no such times to show.
    return {
        "id": job_id, "model": MODEL, "version": "hidden", "input": {}, "logs": "",
        "output": None, "error": None, "status": status, "data_removed": False,
        "urls": {
            "get": f"{API}/{job_id}", "cancel": f"{API}/{job_id}/cancel",
            "web": f"https://replicate.com/p/{job_id}",
        },
    }  # fmt: skip


def _render(view: View) -> dict[str, Any]:
    prediction = _prediction(view.job_id, _STATUSES.get(view.phase, "failed"))
    # As the reference writes it: 2023-09-08T16:19:34.765994Z
    prediction["created_at"] = iso_utc(view.created_at, "microseconds")
    if view.phase == "succeeded":
        urls = list(view.output_urls)
        prediction["output"] = urls[0] if len(urls) == 1 else urls
    elif view.phase == "failed":
        prediction["error"] = view.error
    return prediction


def _problem(status: int, title: str, detail: str) -> tuple[int, dict[str, Any]]:
    return status, {"title": title, "detail": detail, "status": status}


PROVIDER = Provider(
    reference="https://replicate.com/docs/reference/http#predictions.get; "
    "https://github.com/replicate/replicate-python/blob/main/replicate/exceptions.py; "
    "https://github.com/replicate/replicate-python/issues/47",
    status_route=re.compile(r"/v1/predictions/([^/]+)"),
    presented_key=authorization_key("Bearer", "Token"),
    render=_render,
    # The reference shows no 404 body: the problem-details shape is Replicate's, the wording
    # assumed.
    not_found=lambda job_id: _problem(404, "Not found", "Not found."),
    # The answer of the API to a request without a valid token (replicate-python issue #47,
    # and as clients report it).
    unauthorized=_problem(401, "Unauthenticated", "You did not pass a valid authentication token"),
    create_path="/v1/predictions",
    # Without `created_at`: the simulator tells a dialect no time at creation.
    created=lambda job_id: _prediction(job_id, "starting"),
)
