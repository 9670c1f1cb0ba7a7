"""OpenAI's videos API, as its reference documents it.

`GET /v1/videos/{video_id}` with `Authorization: Bearer <key>` answers the video object:
`status` `queued`, `in_progress`, `completed` or `failed`, `progress` (an approximate
percentage) and, once failed, `error` `{"code", "message"}`. The video itself is binary
content at `GET /v1/videos/{video_id}/content`, so the answer holds no output URL and the
simulator renders none. Errors are OpenAI's `{"error": {"message", "type", "param", "code"}}`.
`POST /v1/videos` starts a job and answers the queued video object.
"""

from __future__ import annotations

import re
from typing import Any

from service.devtools.providers import Provider, View, authorization_key

_WORDS = {"queued": "queued", "processing": "in_progress", "succeeded": "completed"}
# The reference lists no error codes for a failed video; the simulator names one.
FAILED_CODE = "video_generation_failed"


def _render(view: View) -> dict[str, Any]:
    progress = {"processing": int(100 * (view.progress or 0.0)), "succeeded": 100}
    video: dict[str, Any] = {
        "id": view.job_id,
        "object": "video",
        "model": "sora-2",
        "status": _WORDS.get(view.phase, "failed"),
        "progress": progress.get(view.phase, 0),
        "created_at": int(view.created_at),
        # The View carries no end time, so the simulator leaves completed_at null.
        "completed_at": None,
        "expires_at": None,
        "prompt": None,
        "size": "720x1280",
        "seconds": "4",
        "remixed_from_video_id": None,
        "error": None,
    }
    if view.phase == "failed":
        video["error"] = {"code": FAILED_CODE, "message": view.error}
    return video


def _error(message: str, code: str | None) -> dict[str, Any]:
    return {"error": {"message": message, "type": "invalid_request_error", "param": None,
                      "code": code}}  # fmt: skip


PROVIDER = Provider(
    reference="https://platform.openai.com/docs/api-reference/videos/retrieve; "
    "https://platform.openai.com/docs/guides/video-generation; "
    "https://platform.openai.com/docs/guides/error-codes",
    status_route=re.compile(r"/v1/videos/([^/]+)"),
    presented_key=authorization_key("Bearer"),
    render=_render,
    # The error object is documented; the wording of a 404 is not.
    not_found=lambda job_id: (404, _error(f"Video with id '{job_id}' not found.", None)),
    unauthorized=(
        401,
        _error(
            "Incorrect API key provided. You can find your API key at "
            "https://platform.openai.com/account/api-keys.",
            "invalid_api_key",
        ),
    ),
    create_path="/v1/videos",
)
