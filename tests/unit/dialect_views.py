"""Views and requests to hand a simulator dialect, and the bridge reading its answers through
a built-in profile."""

from __future__ import annotations

from typing import Any, NamedTuple

import orjson

from service import profiles
from service.answers import read_answer
from service.devtools.providers import Answer, Phase, Request, View
from service.profile import Reader

# 2024-06-01T12:00:00Z
CREATED_AT = 1717243200.0
URLS = ("https://cdn.example.com/a.mp4", "https://cdn.example.com/b.mp4")


def view(phase: Phase, job_id: str = "job-1", **fields: Any) -> View:
    """A job's view in `phase`, with the fields a job in that phase has unless given."""
    defaults: dict[str, Any] = {
        "queue_position": 3 if phase == "queued" else None,
        "progress": 0.4 if phase == "processing" else None,
        "eta_s": 12.0 if phase == "processing" else None,
        "output_urls": URLS if phase == "succeeded" else (),
        "error": "The prompt was refused by moderation" if phase == "failed" else None,
    }
    return View(job_id=job_id, phase=phase, created_at=CREATED_AT, **(defaults | fields))


def request(path: str, headers: dict[str, str] | None = None, method: str = "GET") -> Request:
    return Request(method=method, path=path, query={}, headers=headers or {})


class Reading(NamedTuple):
    """What the bridge made of an answer: the kind of observation, the job's status or the
    refusal's code, the error text and the outputs."""

    kind: str
    status: str | None
    message: str | None
    outputs: tuple[str, ...] | None


def read(profile: str, answer: Answer) -> Reading:
    """How the bridge reads `answer` (status, JSON body) through the built-in `profile`."""
    status, body = answer
    reader = Reader.of(profiles.builtin(profile))
    seen = read_answer(status, {}, orjson.dumps(body), reader=reader)
    return Reading(
        seen.kind, seen.job_status or seen.error_code, seen.message or seen.error, seen.outputs
    )
