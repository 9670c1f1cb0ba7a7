"""Judging receiver answers, and signing per Standard Webhooks."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import standardwebhooks

from service.config import DeliverySettings
from service.delivery import judge
from service.endpoints import split_credentials
from service.signing import sign
from service.store.base import Delivery

SETTINGS = DeliverySettings(retry_schedule_s=(5.0, 300.0), jitter=0.2, max_retry_after_s=600.0)
NOW = 1_767_225_600.0


@pytest.mark.parametrize(
    ("status", "retry_after", "attempts", "outcome", "next_at"),
    [
        (200, None, 1, "succeeded", None),  # 2xx succeeds
        (204, None, 3, "succeeded", None),  # any 2xx
        (410, None, 1, "gone", None),  # the receiver says it is gone for good
        (500, None, 1, "retry", NOW + 5.0),  # server error: the first wait of the schedule
        (None, None, 1, "retry", NOW + 5.0),  # no answer at all: retried the same way
        (302, None, 1, "retry", NOW + 5.0),  # a redirect is a failure, never followed
        (404, None, 2, "retry", NOW + 300.0),  # second failure: the second wait
        (500, None, 3, "failed", None),  # the schedule has run out
        (503, "60", 1, "retry", NOW + 60.0),  # Retry-After longer than the schedule wins
        (503, "1", 1, "retry", NOW + 5.0),  # but never earlier than the schedule
        (503, "99999", 1, "retry", NOW + 600.0),  # and it is capped
    ],
)
def test_judge(
    status: int | None, retry_after: str | None, attempts: int, outcome: str, next_at: float | None
) -> None:
    """Each kind of answer leads to the documented outcome and next attempt time."""
    verdict = judge(status, retry_after, attempts, SETTINGS, NOW, rand=0.5)
    assert verdict.outcome == outcome
    assert verdict.next_attempt_at == next_at


@pytest.mark.parametrize(
    ("status", "final_statuses", "outcome", "next_at"),
    [
        (404, (404, 409), "failed", None),  # listed: ends at the first attempt
        (409, (404, 409), "failed", None),  # any listed status
        (500, (404, 409), "retry", NOW + 5.0),  # not listed: the schedule as usual
        (None, (404,), "retry", NOW + 5.0),  # no answer is never a listed status
        (200, (404,), "succeeded", None),  # 2xx still succeeds
        (410, (404,), "gone", None),  # 410 still means gone
        (404, (), "retry", NOW + 5.0),  # nothing listed: 404 is retried
    ],
)
def test_judge_final_statuses(
    status: int | None, final_statuses: tuple[int, ...], outcome: str, next_at: float | None
) -> None:
    """A status the endpoint lists as final fails the delivery without further attempts."""
    verdict = judge(status, None, 1, SETTINGS, NOW, rand=0.5, final_statuses=final_statuses)
    assert (verdict.outcome, verdict.next_attempt_at) == (outcome, next_at)


SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
DELIVERY = Delivery(
    id="msg_p5jXN8AQM9LWM0D4loKWxJek",
    watch_id="wch_1",
    event_type="job.succeeded",
    body=b'{"test": 2432232314}',
    final=True,
    attempts=0,
    lease_token=1,
    callback_url="https://example.com/hook",
    callback_method="POST",
    callback_headers={},
    secret=SECRET,
)


def test_sign_known_answer() -> None:
    """The signature matches the Standard Webhooks specification's published test vector."""
    headers = sign(DELIVERY.id, DELIVERY.body, 1614265330, [SECRET])
    assert headers == {
        "webhook-id": "msg_p5jXN8AQM9LWM0D4loKWxJek",
        "webhook-timestamp": "1614265330",
        "webhook-signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
    }


def test_signature_verifies_with_the_library() -> None:
    """A receiver using the standardwebhooks library accepts what the bridge sends."""
    now = datetime.now(UTC).timestamp()
    headers = sign(DELIVERY.id, DELIVERY.body, now, [SECRET])
    assert standardwebhooks.Webhook(SECRET).verify(DELIVERY.body, headers) == {"test": 2432232314}


def test_signature_fails_for_a_tampered_body() -> None:
    """Changing one byte of the body breaks the signature."""
    headers = sign(DELIVERY.id, DELIVERY.body, datetime.now(UTC).timestamp(), [SECRET])
    with pytest.raises(standardwebhooks.webhooks.WebhookVerificationError):
        standardwebhooks.Webhook(SECRET).verify(b'{"test": 2432232315}', headers)


@pytest.mark.parametrize(
    ("url", "bare", "authorization"),
    [
        ("https://h.example/x?y=1", "https://h.example/x?y=1", None),  # nothing to split
        ("https://alice:s3cret@h.example/x", "https://h.example/x", "Basic YWxpY2U6czNjcmV0"),
        ("https://a%40b:p%3Aw@h.example:8443/", "https://h.example:8443/",
         "Basic YUBiOnA6dw=="),  # percent-encoded userinfo is decoded first
        ("https://token@h.example/", "https://h.example/", "Basic dG9rZW46"),  # user only
    ],
)  # fmt: skip
def test_split_credentials(url: str, bare: str, authorization: str | None) -> None:
    """Userinfo in a callback URL becomes a Basic Authorization header, off the URL."""
    assert split_credentials(url) == (bare, authorization)


def test_rotation_signs_with_every_secret() -> None:
    """With two secrets, the header carries two signatures and each verifies on its own."""
    new = "whsec_" + "bmV3LXNlY3JldC1mb3Itcm90YXRpb24tdGVzdHMh"
    headers = sign(DELIVERY.id, DELIVERY.body, datetime.now(UTC).timestamp(), [new, SECRET])
    assert len(headers["webhook-signature"].split(" ")) == 2
    for secret in (new, SECRET):
        assert standardwebhooks.Webhook(secret).verify(DELIVERY.body, headers) is not None
