"""Judging receiver answers, and signing per Standard Webhooks."""

from __future__ import annotations

import errno
import socket
import ssl
from dataclasses import replace
from datetime import UTC, datetime

import pytest
import standardwebhooks

from service.config import DeliverySettings, SigningSecret
from service.delivery import judge, response_start
from service.endpoints import Endpoints, endpoint_of, split_credentials
from service.sender import Answer, describe
from service.signing import sign
from service.store.base import Delivery, ResponseStart
from service.vault import Vault

SETTINGS = DeliverySettings(retry_schedule_s=(5.0, 300.0), jitter=0.2, max_retry_after_s=600.0)
NOW = 1_767_225_600.0


@pytest.mark.parametrize(
    ("status", "retry_after", "attempts", "outcome", "next_at", "why"),
    [
        (200, None, 1, "succeeded", None, "succeeded"),  # 2xx succeeds
        (204, None, 3, "succeeded", None, "succeeded"),  # any 2xx
        (410, None, 1, "gone", None, "gone"),  # the receiver says it is gone for good
        (500, None, 1, "retry", NOW + 5.0, "retry"),  # server error: the first wait
        (None, None, 1, "retry", NOW + 5.0, "retry"),  # no answer at all: retried the same way
        (302, None, 1, "retry", NOW + 5.0, "retry"),  # a redirect is a failure, never followed
        (404, None, 2, "retry", NOW + 300.0, "retry"),  # second failure: the second wait
        (500, None, 3, "failed", None, "exhausted"),  # the schedule has run out
        (503, "60", 1, "retry", NOW + 60.0, "retry"),  # a longer Retry-After wins
        (503, "1", 1, "retry", NOW + 5.0, "retry"),  # but never earlier than the schedule
        (503, "99999", 1, "retry", NOW + 600.0, "retry"),  # and it is capped
    ],
)
def test_judge(
    status: int | None,
    retry_after: str | None,
    attempts: int,
    outcome: str,
    next_at: float | None,
    why: str,
) -> None:
    """Each kind of answer leads to the documented outcome, verdict and next attempt time."""
    verdict = judge(status, retry_after, attempts, SETTINGS, NOW, rand=0.5)
    assert (verdict.outcome, verdict.next_attempt_at, verdict.verdict) == (outcome, next_at, why)


@pytest.mark.parametrize(
    ("status", "final_statuses", "outcome", "next_at", "why"),
    [
        (404, (404, 409), "failed", None, "final_status"),  # listed: ends at the first attempt
        (409, (404, 409), "failed", None, "final_status"),  # any listed status
        (500, (404, 409), "retry", NOW + 5.0, "retry"),  # not listed: the schedule as usual
        (None, (404,), "retry", NOW + 5.0, "retry"),  # no answer is never a listed status
        (200, (404,), "succeeded", None, "succeeded"),  # 2xx still succeeds
        (410, (404,), "gone", None, "gone"),  # 410 still means gone
        (404, (), "retry", NOW + 5.0, "retry"),  # nothing listed: 404 is retried
    ],
)
def test_judge_final_statuses(
    status: int | None,
    final_statuses: tuple[int, ...],
    outcome: str,
    next_at: float | None,
    why: str,
) -> None:
    """A status the endpoint lists as final fails the delivery without further attempts, and
    the verdict says that is why."""
    verdict = judge(status, None, 1, SETTINGS, NOW, rand=0.5, final_statuses=final_statuses)
    assert (verdict.outcome, verdict.next_attempt_at, verdict.verdict) == (outcome, next_at, why)


@pytest.mark.parametrize(
    ("answer", "kept"),
    [
        # no answer: nothing kept
        (Answer(None, None, "connection refused"), None),
        # an empty body: its size and type, no text
        (Answer(204, None, None, b"", False, None), ResponseStart(None, 0, False, None)),
        # UTF-8 text, whole
        (
            Answer(500, None, "HTTP 500", b'{"e": "\xc3\xa9"}', False, "application/json"),
            ResponseStart('{"e": "é"}', 11, False, "application/json"),
        ),
        # cut by the cap in the middle of a character: the character is left out
        (
            Answer(500, None, "HTTP 500", b"ab\xe2\x82", True, "text/plain"),
            ResponseStart("ab", 4, True, "text/plain"),
        ),
        # the same bytes, said to be whole: not UTF-8, so not text
        (
            Answer(500, None, "HTTP 500", b"ab\xe2\x82", False, "text/plain"),
            ResponseStart(None, 4, False, "text/plain"),
        ),
        # binary: its size only
        (
            Answer(200, None, None, b"\x89PNG\xff\xfe", False, "image/png"),
            ResponseStart(None, 6, False, "image/png"),
        ),
        # NUL characters: no store keeps them as text
        (
            Answer(500, None, "HTTP 500", b"a\x00b", False, None),
            ResponseStart(None, 3, False, None),
        ),
    ],
)
def test_response_start(answer: Answer, kept: ResponseStart | None) -> None:
    assert response_start(answer) == kept


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


NEW = "whsec_" + "bmV3LXNlY3JldC1mb3Itcm90YXRpb24tdGVzdHMh"
SHARED = "whsec_c2hhcmVkLXNpZ25pbmctc2VjcmV0LWZvci10ZXN0cw=="


@pytest.mark.parametrize(
    ("previous", "until", "signers"),
    [
        ("", None, [NEW]),  # never rotated: its own secret only
        (SECRET, NOW + 1, [NEW, SECRET]),  # within the overlap: the one before signs too
        (SECRET, NOW, [NEW]),  # the overlap is over at its end
        ("", NOW + 1, [NEW, SHARED]),  # it was signed by the shared secrets before
    ],
)
def test_a_rotated_subscription_signs_with_the_secret_before_until_it_expires(
    previous: str, until: float | None, signers: list[str]
) -> None:
    """The signatures of an attempt of a rotated subscription: its secret's, then, until
    `previous_secret_until`, those of the secret before (or of the shared ones it stood for)."""
    settings = SETTINGS.model_copy(update={"signing_secrets": (SigningSecret(secret=SHARED),)})
    endpoints = Endpoints(settings, Vault([]))
    delivery = replace(
        DELIVERY, secret=NEW, previous_secret=previous, previous_secret_until=until,
        subscription_id="sub_1",
    )  # fmt: skip

    headers = endpoints.headers(delivery, endpoint_of(delivery.callback_url), NOW)

    assert isinstance(headers, dict)
    assert (
        headers["webhook-signature"]
        == sign(delivery.id, delivery.body, NOW, signers)["webhook-signature"]
    )


class _Unreadable(ssl.SSLError):
    """An error whose attributes cannot be read: `describe` must answer all the same."""

    @property
    def reason(self) -> str:  # type: ignore[override]
        raise RuntimeError("unreadable")


@pytest.mark.parametrize(
    ("failure", "words"),
    [
        (TimeoutError(), "timed out after 15 s"),
        (OSError(errno.EHOSTUNREACH, "No route to host"), "no route to host"),
        (ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"), "connection refused"),
        (
            socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution"),
            "DNS: lookup failed (Temporary failure in name resolution)",
        ),
        (socket.gaierror(socket.EAI_NONAME, "Name or service not known"), "DNS: no such host"),
        # what is not foreseen: its type and text
        (ValueError("odd"), "ValueError: odd"),
        (_Unreadable(1, "broken"), "_Unreadable: broken"),
    ],
)
def test_describe_words_what_happened(failure: BaseException, words: str) -> None:
    """Failures without a connection to name (the loopback tests name theirs) are worded all
    the same, and an error of an unforeseen shape comes out as it is."""
    assert describe(failure, 15.0) == words
