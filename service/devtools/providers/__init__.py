"""The simulator's dialects: how each provider whose profile the bridge ships answers, as its
API reference documents it (paths, auth, status words, JSON shapes, errors).

Each provider module defines one `PROVIDER`, named by the module (`openai_videos.py` speaks
`openai-videos`: `fake_upstream.profile_names`). They are written from the providers'
documentation, not from the bridge's profiles, so that a test through the simulator
checks a profile against an independent reading of the same pages.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

Phase = Literal["queued", "processing", "succeeded", "failed"]


@dataclass(frozen=True, slots=True)
class View:
    """A simulated job at one moment, whatever the provider: what a dialect renders."""

    job_id: str
    phase: Phase
    queue_position: int | None  # while queued
    progress: float | None  # 0..1 while processing
    eta_s: float | None  # seconds left while processing
    output_urls: tuple[str, ...]  # of a succeeded job
    error: str | None  # of a failed job
    created_at: float  # wall clock


@dataclass(frozen=True, slots=True)
class Request:
    """What a dialect reads of a request: its method, path, query and headers (lower-case)."""

    method: str
    path: str
    query: Mapping[str, str]
    headers: Mapping[str, str]


Answer = tuple[int, dict[str, Any]]


@dataclass(frozen=True, slots=True)
class Provider:
    # The reference pages the dialect follows.
    reference: str
    # The status request's path; its one group is the job id. The query, if the API puts the
    # id there, is read by `job_id`.
    status_route: re.Pattern[str]
    # The API key a request presented, as the provider reads it (None: none presented).
    presented_key: Callable[[Request], str | None]
    # The 200 answer of the status request.
    render: Callable[[View], dict[str, Any]]
    # The answers to an unknown job and to a missing or wrong key.
    not_found: Callable[[str], Answer]
    unauthorized: Answer
    # How to find the job id when it is in the query, not the path (else the route's group).
    job_id: Callable[[Request], str | None] | None = None
    # Optional: the result request (fal) and its 200 answer.
    result_route: re.Pattern[str] | None = None
    render_result: Callable[[View], dict[str, Any]] | None = None
    # Optional: the create request's path and its answer for a new job id (without `created`,
    # the new job's status answer, as OpenAI's videos API answers).
    create_path: str | None = None
    created: Callable[[str], dict[str, Any]] | None = None
    # Optional: the answer to a request refused before its key is read (Runway refuses a
    # request without its version header), or None to go on.
    refuse: Callable[[Request], Answer | None] | None = None
    # Optional: the result request's answer when it is not render_result's 200 (fal answers a
    # failed request's error with an HTTP error status), or None for render_result.
    result_error: Callable[[View], Answer | None] | None = None
    # Optional: the HTTP status of a status answer in each phase, when not always 200 (fal
    # answers 202 until a request completes).
    status_code: Callable[[Phase], int] | None = None

    def answer(self, view: View) -> Answer:
        """The status request's answer of a job seen as `view`."""
        status = self.status_code(view.phase) if self.status_code else 200
        return status, self.render(view)


def authorization_key(*schemes: str) -> Callable[[Request], str | None]:
    """A `presented_key`: the key of an `Authorization: <scheme> <key>` header, for one of
    `schemes`."""

    def presented_key(request: Request) -> str | None:
        scheme, _, key = request.headers.get("authorization", "").partition(" ")
        return key if scheme in schemes and key else None

    return presented_key


def iso_utc(epoch: float, timespec: str) -> str:
    """A time as the APIs write theirs: ISO 8601 in UTC to `timespec`, ending in Z."""
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec=timespec)[:-6] + "Z"
