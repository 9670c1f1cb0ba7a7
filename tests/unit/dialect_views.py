"""Views and requests to hand a simulator dialect, and the built-in profile that reads it."""

from __future__ import annotations

from typing import Any

from service import profiles
from service.devtools.providers import Phase, Request, View
from service.profile import compiled, search

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


def read(profile: str, answer: dict[str, Any]) -> dict[str, Any]:
    """What the built-in `profile` reads in a 200 answer: target status, error and outputs."""
    read = profiles.builtin(profile).read
    word = search(compiled(read.status), answer)
    return {
        "status": profiles.builtin(profile).statuses.get(word) if isinstance(word, str) else None,
        "error": search(compiled(read.error), answer),
        "outputs": search(compiled(read.outputs), answer),
    }
