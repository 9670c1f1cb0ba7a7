"""Luma's Dream Machine generations, as its reference documents them.

`GET /dream-machine/v1/generations/{id}` with `Authorization: Bearer <key>` answers the
Generation object by its `state`: `queued`, `dreaming`, `completed` with `assets` (a video
generation's `video` URL) or `failed` with `failure_reason` (a sentence). Every error is
`{"detail": <message>}`. `POST /dream-machine/v1/generations/video` starts a generation and
answers the Generation, `queued`. The API gives no queue position, progress or ETA.
"""

from __future__ import annotations

import re
from typing import Any

from service.devtools.providers import Provider, View, authorization_key, iso_utc

MODEL = "ray-2"
_STATES = {"queued": "queued", "processing": "dreaming", "succeeded": "completed"}


def _generation(job_id: str, state: str) -> dict[str, Any]:
    return {
        "id": job_id, "generation_type": "video", "state": state, "failure_reason": None,
        "assets": None, "model": MODEL,
    }  # fmt: skip


def _render(view: View) -> dict[str, Any]:
    generation = _generation(view.job_id, _STATES.get(view.phase, "failed"))
    # As the reference writes it: 2023-06-01T12:00:00Z
    generation["created_at"] = iso_utc(view.created_at, "seconds")
    if view.phase == "succeeded":
        # A generation is one video: the job's first output.
        generation["assets"] = {"video": view.output_urls[0]} if view.output_urls else {}
    elif view.phase == "failed":
        generation["failure_reason"] = view.error
    return generation


PROVIDER = Provider(
    reference="https://docs.lumalabs.ai/docs/api; https://docs.lumalabs.ai/docs/errors; "
    "https://github.com/lumalabs/lumaai-api/blob/main/openapi.yaml (getGeneration, Generation, "
    "State, Assets, Error)",
    status_route=re.compile(r"/dream-machine/v1/generations/([^/]+)"),
    presented_key=authorization_key("Bearer"),
    render=_render,
    # The reference documents errors' {"detail"} shape only, not their statuses or this
    # wording: a 404 is assumed.
    not_found=lambda job_id: (404, {"detail": "Generation not found"}),
    # The wording is the reference's example of an Error; its status (401) is assumed.
    unauthorized=(401, {"detail": "Invalid API key is provided"}),
    create_path="/dream-machine/v1/generations/video",
    # Without `created_at`: the simulator tells a dialect no time at creation.
    created=lambda job_id: _generation(job_id, "queued"),
)
