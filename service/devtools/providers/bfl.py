"""Black Forest Labs' result API, as its reference documents it.

`GET /v1/get_result?id={id}` with the key in the `x-key` header answers `{"id", "status",
"result", "progress", ...}` with `status` one of `Task not found`, `Pending` (queued or
generating: the API does not tell them apart), `Request Moderated`, `Content Moderated`, `Ready`
(then `result.sample` is the image's URL) or `Error`. An unknown id is answered 200 with
`Task not found`. `POST /v1/flux-2-pro` (one of the models' endpoints) answers
`{"id", "polling_url"}`.

The reference gives `progress` as "number or null" without its scale, so the simulator
answers null; and it names no error field, while BFL's own examples show `"error"` on an
`Error` answer, which the simulator follows. `polling_url` is an absolute URL on the host that
holds the job; the simulator, not knowing the host it is reached at, answers only the `id`.
"""

from __future__ import annotations

import re
from typing import Any

from service.devtools.providers import Provider, View

_WORDS = {"queued": "Pending", "processing": "Pending", "succeeded": "Ready", "failed": "Error"}


def _task(job_id: str, status: str) -> dict[str, Any]:
    return {"id": job_id, "status": status, "result": None, "progress": None}


def _render(view: View) -> dict[str, Any]:
    answer = _task(view.job_id, _WORDS[view.phase])
    if view.phase == "succeeded":
        # One image per task: the first URL is the sample.
        answer["result"] = {"sample": view.output_urls[0] if view.output_urls else None}
    elif view.phase == "failed":
        answer["error"] = view.error
    return answer


PROVIDER = Provider(
    reference="https://docs.bfl.ai/api-reference/utility/get-result; "
    "https://docs.bfl.ai/quick_start/generating_images; "
    "https://github.com/black-forest-labs/skills (skills/bfl-api/references/endpoints.md)",
    status_route=re.compile(r"/v1/get_result"),
    presented_key=lambda request: request.headers.get("x-key") or None,
    render=_render,
    not_found=lambda job_id: (200, _task(job_id, "Task not found")),
    # BFL's examples call a missing or wrong key "Not authenticated"; the body's shape is not
    # documented.
    unauthorized=(401, {"detail": "Not authenticated"}),
    job_id=lambda request: request.query.get("id"),
    create_path="/v1/flux-2-pro",
    created=lambda job_id: {"id": job_id},
)
