"""Request bodies become the service layer's records without losing a field, and what an
Idempotency-Key records of a request stays byte for byte what stored keys hold."""

from __future__ import annotations

import dataclasses
from typing import Any

import orjson

from service.api import responses
from service.api.models import GenerateRequest, WatchRequest
from service.generate import recorded_request
from service.store.base import Watch
from service.watches import Registration, WatchOptions, canonical

EVERY_OPTION: dict[str, Any] = {
    "callback_url": "https://hooks.example/in",
    "callback_method": "PUT",
    "callback_headers": {"X-Team": "a"},
    "metadata": {"order": 7, "tags": ["x"]},
    "events": ["job.failed", "job.queued", "job.succeeded"],
    "payload_format": "raw",
    "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    "poll_interval_s": 5,
    "timeout_s": 600,
    "upstream_api_key": "bw_key",
    "final_statuses": [409, 404],
    "upstream": "default",
}


def earlier_record(body: WatchRequest | GenerateRequest, namespace: bytes = b"") -> bytes:
    """How earlier versions recorded a request: its model dumped as JSON, keys sorted (they had
    no upstream field: every job was the default upstream's)."""
    fields = body.model_dump(mode="json", exclude={"upstream"})
    return namespace + orjson.dumps(fields, option=orjson.OPT_SORT_KEYS)


def test_the_options_of_a_body_are_every_option_field() -> None:
    """The service's record has exactly the body's option fields, with their values."""
    body = WatchRequest.model_validate({"job_id": "job_1", **EVERY_OPTION})
    options = body.options()
    assert {field.name for field in dataclasses.fields(WatchOptions)} == set(EVERY_OPTION)
    assert dataclasses.asdict(options) == body.model_dump(exclude={"job_id"})


def test_a_watch_request_is_recorded_as_before() -> None:
    """`POST /v1/watches`: the recorded bytes are those earlier versions stored a digest of."""
    minimal = WatchRequest.model_validate({"job_id": "job_1", "poll_interval_s": 5})
    assert canonical(minimal.options(), job_id=minimal.job_id) == (
        b'{"callback_headers":{},"callback_method":"POST","callback_url":null,'
        b'"events":["job.succeeded","job.failed"],"final_statuses":[],"job_id":"job_1",'
        b'"metadata":null,"payload_format":"envelope","poll_interval_s":5.0,"secret":null,'
        b'"timeout_s":null,"upstream_api_key":null}'
    )
    full = WatchRequest.model_validate({"job_id": "job_1", **EVERY_OPTION})
    assert canonical(full.options(), job_id=full.job_id) == earlier_record(full)


def test_a_named_upstream_is_part_of_the_record() -> None:
    """The same job id on another upstream is another request: a key reused for it conflicts."""
    on_default = WatchRequest.model_validate({"job_id": "job_1"})
    elsewhere = WatchRequest.model_validate({"job_id": "job_1", "upstream": "runway"})
    recorded = canonical(elsewhere.options(), job_id=elsewhere.job_id)
    assert b'"upstream":"runway"' in recorded
    assert recorded != canonical(on_default.options(), job_id=on_default.job_id)


def test_a_generate_request_is_recorded_as_before() -> None:
    """`POST /v1/generate`: its namespace, its input and its options, as before."""
    body = GenerateRequest.model_validate({"input": {"prompt": "a cat", "n": 2}, **EVERY_OPTION})
    namespace = b"POST /v1/generate\n"
    assert recorded_request(body.input, body.options()) == earlier_record(body, namespace)


def test_a_generate_answer_nests_the_created_watch() -> None:
    """The answer of `POST /v1/generate` is the job id, the upstream's answer and the created
    watch exactly as `POST /v1/watches` would answer it."""
    watch = Watch(
        id="wch_1", tenant="", job_id="job_1", callback_url=None, callback_method="POST",
        callback_headers={}, metadata=None, events=("job.succeeded", "job.failed"),
        payload_format="envelope", secret="", poll_interval_s=5.0, timeout_s=600.0,
        upstream_api_key=None, created_at=1_700_000_000.0,
    )  # fmt: skip
    created = responses.registration_body(Registration(watch, None))
    assert orjson.loads(created) == {
        **orjson.loads(responses.Watch.of(watch).dump()),
        "secret": None,
    }
    started = responses.registration_body(
        Registration(watch, None, {"id": "job_1", "status": "queued"})
    )
    assert (
        started
        == b'{"job_id":"job_1","upstream":{"id":"job_1","status":"queued"},"watch":%s}' % (created)
    )
