"""The API's answers, built through their models, are byte for byte what clients got before the
models existed; the envelope `service.events` writes is what the Event model describes."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import orjson
import pytest

from service import errors, events
from service.answers import read_answer
from service.api import responses
from service.api.problems import from_error
from service.store import base as store
from service.watches import Registration

WATCH = store.Watch(
    id="wch_1", tenant="acme", job_id="job_1",
    callback_url="https://user:pw@hooks.example/in?x=é", callback_method="PUT",
    callback_headers={"X-Team": "sealed"}, metadata={"order": 7, "note": "é\n", "f": 1.5},
    events=("job.succeeded", "job.failed", "job.queued"), payload_format="raw", secret="s",
    poll_interval_s=5.0, timeout_s=600.0, upstream_api_key=None, created_at=1_700_000_000.123,
    status="delivered", job_status="succeeded", queue_position=3, attempts=2,
    last_error="HTTP 500", updated_at=1_700_000_010.5, completed_at=1_700_000_009.25,
    final_statuses=(404, 409), outcome="succeeded",
)  # fmt: skip
BARE = store.Watch(
    id="wch_2", tenant="", job_id="job_2", callback_url=None, callback_method="POST",
    callback_headers={}, metadata=None, events=("job.succeeded", "job.failed"),
    payload_format="envelope", secret="", poll_interval_s=2.5, timeout_s=300.0,
    upstream_api_key=None, created_at=1_700_000_000.0,
)  # fmt: skip
SUBSCRIPTION = store.Subscription(
    id="sub_1", tenant="acme", url="https://u:p@sub.example/x",
    events=("job.succeeded", "job.queued"), secret="x", headers={"A": "b"},
    final_statuses=(404,), status="active", created_at=1_700_000_000.0,
    updated_at=1_700_000_000.0,
)  # fmt: skip
ATTEMPTS = [
    store.Attempt(
        delivery_id="msg_1", event_type="job.succeeded", number=1, started_at=1_700_000_001.5,
        duration_s=0.01234, status_code=500, error=None, next_attempt_at=1_700_000_006.5,
        verdict="retry", response=store.ResponseStart('{"e": "é"}', 11, True, "text/plain"),
    ),
    store.Attempt(
        delivery_id="msg_2", event_type="job.failed", number=2, started_at=1_700_000_002.0,
        duration_s=3.0, status_code=None, error="timed out", subscription_id="sub_1",
        series=2,
    ),
]  # fmt: skip
DELIVERY = store.DeliveryRecord(
    id="msg_1", event_type="job.succeeded", final=True, status="pending", attempts=1,
    body=b"{}", created_at=1_700_000_001.0, next_attempt_at=1_700_000_006.5, series=3,
)  # fmt: skip
# The answers as the hand-written views serialized them (orjson on dicts), before the models;
# since then, query values are masked too, and outcomes, deliveries, answers, the upstream and
# series were added.
SHOWN = (
    b'{"id":"wch_1","job_id":"job_1","upstream":"default","callback_url":"https://hooks.example/in?x=********",'
    b'"callback_method":"PUT","callback_headers":{"X-Team":"********"},'
    b'"events":["job.succeeded","job.failed","job.queued"],"payload_format":"raw",'
    b'"metadata":{"order":7,"note":"\xc3\xa9\\n","f":1.5},"poll_interval_s":5.0,'
    b'"timeout_s":600.0,"final_statuses":[404,409],"status":"delivered",'
    b'"outcome":"succeeded","delivery":"delivered","job_status":"succeeded",'
    b'"queue_position":3,"attempts":2,"last_error":"HTTP 500",'
    b'"created_at":"2023-11-14T22:13:20.123Z","updated_at":"2023-11-14T22:13:30.500Z",'
    b'"completed_at":"2023-11-14T22:13:29.250Z","expires_at":"2023-11-14T22:23:20.123Z"'
)
BARE_SHOWN = (
    b'{"id":"wch_2","job_id":"job_2","upstream":"default","callback_url":null,'
    b'"callback_method":"POST",'
    b'"callback_headers":{},"events":["job.succeeded","job.failed"],'
    b'"payload_format":"envelope","metadata":null,"poll_interval_s":2.5,"timeout_s":300.0,'
    b'"final_statuses":[],"status":"active","outcome":"in_progress","delivery":"none",'
    b'"job_status":null,"queue_position":null,'
    b'"attempts":0,"last_error":null,"created_at":"2023-11-14T22:13:20.000Z",'
    b'"updated_at":"1970-01-01T00:00:00.000Z","completed_at":null,'
    b'"expires_at":"2023-11-14T22:18:20.000Z"'
)
SUBSCRIPTION_SHOWN = (
    b'{"id":"sub_1","url":"https://sub.example/x","events":["job.succeeded","job.queued"],'
    b'"headers":{"A":"********"},"final_statuses":[404],"status":"active",'
    b'"created_at":"2023-11-14T22:13:20.000Z","previous_secret_expires_at":null'
)


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (responses.Watch.of(WATCH), SHOWN + b"}"),
        (
            responses.WatchPage(data=[responses.Watch.of(BARE)], next_cursor="wch_2"),
            b'{"data":[%s}],"next_cursor":"wch_2"}' % BARE_SHOWN,
        ),
        (
            responses.Pending(status="pending", watch=responses.Watch.of(BARE)),
            b'{"status":"pending","watch":%s}}' % BARE_SHOWN,
        ),
        (
            responses.AttemptList(
                data=[responses.Attempt.of(a, 10) for a in ATTEMPTS],
                deliveries=[responses.Delivery.of(DELIVERY, 10)],
            ),
            b'{"data":[{"webhook_id":"msg_1","subscription_id":null,"event":"job.succeeded",'
            b'"series":1,"attempt":1,"max_attempts":10,'
            b'"attempted_at":"2023-11-14T22:13:21.500Z",'
            b'"duration_ms":12.3,"status_code":500,"error":null,"verdict":"retry",'
            b'"next_attempt_at":"2023-11-14T22:13:26.500Z","response":{"body":"{\\"e\\": '
            b'\\"\xc3\xa9\\"}","size":11,"truncated":true,"content_type":"text/plain"}},'
            b'{"webhook_id":"msg_2","subscription_id":"sub_1","event":"job.failed","series":2,'
            b'"attempt":2,"max_attempts":10,"attempted_at":"2023-11-14T22:13:22.000Z","duration_ms":3000.0,'
            b'"status_code":null,"error":"timed out","verdict":null,"next_attempt_at":null,'
            b'"response":null}],'
            b'"deliveries":[{"webhook_id":"msg_1","subscription_id":null,'
            b'"event":"job.succeeded","status":"pending","series":3,"attempts":1,"max_attempts":10,'
            b'"next_attempt_at":"2023-11-14T22:13:26.500Z",'
            b'"created_at":"2023-11-14T22:13:21.000Z"}]}',
        ),
        (
            responses.SubscriptionList(data=[responses.Subscription.of(SUBSCRIPTION)]),
            b'{"data":[%s}]}' % SUBSCRIPTION_SHOWN,
        ),
        (
            responses.CreatedSubscription.of(SUBSCRIPTION, secret=None),
            SUBSCRIPTION_SHOWN + b',"secret":null}',
        ),
        (
            responses.RotatedSubscription.of(
                replace(SUBSCRIPTION, previous_secret_until=1_700_086_400.0), secret="whsec_x"
            ),
            SUBSCRIPTION_SHOWN.replace(
                b'"previous_secret_expires_at":null',
                b'"previous_secret_expires_at":"2023-11-15T22:13:20.000Z"',
            )
            + b',"secret":"whsec_x"}',
        ),
        (
            responses.Caller(tenant="acme", authenticated=True, role="viewer"),
            b'{"tenant":"acme","authenticated":true,"role":"viewer"}',
        ),
        (responses.Health(status="ok"), b'{"status":"ok"}'),
        (
            responses.Unready(status="unavailable", reason="draining"),
            b'{"status":"unavailable","reason":"draining"}',
        ),
    ],
)
def test_an_answer_keeps_its_bytes(answer: responses.Answer, expected: bytes) -> None:
    """Keys, their order, null rather than absent, numbers and text: as clients got them."""
    assert answer.dump() == expected


@pytest.mark.parametrize(
    ("stored", "shown"),
    [
        # An n8n 2.x resume URL: its signature is the secret that lets a caller resume.
        (
            "https://n8n.example/webhook-waiting/77/b1c?signature=5f3e9a",
            "https://n8n.example/webhook-waiting/77/b1c?signature=********",
        ),
        # Every value, names kept, an empty one too: as header values are masked.
        (
            "https://h.example/in?a=1&b=&c=x%3Dy",
            "https://h.example/in?a=********&b=********&c=********",
        ),
        # A part without `=` may be a bare token: masked whole; empty parts stay empty.
        ("https://h.example/in?tok_123&&z=2", "https://h.example/in?********&&z=********"),
        # Credentials go, and the query is masked all the same.
        ("https://u:pw@h.example:8443/p?k=v#frag", "https://h.example:8443/p?k=********#frag"),
        ("https://tok@h.example/p", "https://h.example/p"),
        # Nothing to hide: the URL exactly as stored.
        ("https://h.example/p/%7Euser", "https://h.example/p/%7Euser"),
        ("https://h.example/p?", "https://h.example/p?"),
    ],
)
def test_a_shown_url_hides_credentials_and_query_values(stored: str, shown: str) -> None:
    """What answers and pages show of a callback or subscription URL."""
    assert responses.public_url(stored) == shown


def test_a_registration_answer_keeps_its_bytes() -> None:
    """The stored registration answers (with the secret; of generate, nested) are unchanged."""
    assert responses.registration_body(Registration(WATCH, "whsec_abc")) == (
        SHOWN + b',"secret":"whsec_abc"}'
    )
    generated = Registration(BARE, None, {"id": "job_2", "status": "queued"})
    assert responses.registration_body(generated) == (
        b'{"job_id":"job_2","upstream":{"id":"job_2","status":"queued"},"watch":%s,'
        b'"secret":null}}' % BARE_SHOWN
    )


def test_a_problem_lists_errors_only_when_there_are_some() -> None:
    """`errors` follows the detail when a field is named, and is absent otherwise."""
    assert from_error(errors.InvalidRequest.field("limit", "too big")).body == (
        b'{"type":"/problems/invalid-request","title":"Invalid request","status":422,'
        b'"detail":"limit: too big","errors":[{"field":"limit","message":"too big"}]}'
    )
    assert from_error(errors.NotFound("no watch wch_1")).body == (
        b'{"type":"/problems/not-found","title":"Not found","status":404,"detail":"no watch wch_1"}'
    )


SUBJECT = events.Subject("wch_1", "job_1", {"order": 7}, "raw", "default")
SUCCEEDED = (
    b'{"id": "job_1", "status": "succeeded", "output": {"images": '
    b'[{"url": "https://images.example/a.webp"}, {"url": "javascript:alert(1)"}]}}'
)
QUEUED = b'{"id": "job_1", "status": "queued", "queue_position": 4}'


@pytest.mark.parametrize(
    "event",
    [
        events.terminal_event(read_answer(200, {}, SUCCEEDED)),
        events.Event(events.QUEUED, "queued", QUEUED, orjson.loads(QUEUED)),
        # Decided by the bridge: no upstream answer, every key still there.
        events.bridge_failure(events.TIMEOUT, "no terminal status within 300 s", None),
    ],
    ids=["succeeded", "queued", "timeout"],
)
def test_an_envelope_is_what_the_event_model_describes(event: events.Event) -> None:
    """A real envelope validates against the Event model, which writes it back byte for byte:
    no key it lacks, none it adds, in the same order, null where the envelope has null."""
    body = events.envelope(SUBJECT, event, 1_700_000_000.5, "evt_1")
    model = responses.Event.model_validate_json(body)
    assert model.dump() == body
    assert list(orjson.loads(body)) == list(responses.Event.model_fields)


def test_the_readme_shows_a_registration_answer_as_the_bridge_writes_it() -> None:
    """The README's example answer to a registration is the one its model writes, byte for
    byte once compacted: `timeout_s` is a number written 300.0, as in every answer and as
    /openapi.json's `number` has it."""
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    blocks = re.findall(r"```json\n(.*?)```", readme, re.DOTALL)
    [example] = [block for block in blocks if block.startswith('{"id": "wch_')]
    written = responses.CreatedWatch.model_validate_json(example).dump()
    assert written == orjson.dumps(orjson.loads(example))
