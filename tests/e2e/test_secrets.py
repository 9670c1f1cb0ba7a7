"""Secrets stay secret: encrypted at rest, never answered back, never logged."""

from __future__ import annotations

from pathlib import Path

import pytest
from standardwebhooks.webhooks import WebhookVerificationError

from tests.e2e import harness
from tests.e2e.harness import API_KEY, ENCRYPTION_KEY, Receiver, StartBridge, Upstream, unique

SIGNING_SECRET = "whsec_c2lnbmluZy1zZWNyZXQtZm9yLXRoZS1zZWNyZXRzLXRlc3Q="
HEADER_VALUE = "hdr-value-7f3a9c"
WRONG_KEY = "bw_wrong_key_5d1e2b"
URL_PASSWORD = "url-pw-4b8e1a"


@pytest.mark.e2e
def test_no_secret_is_logged_stored_in_clear_or_answered(
    start_bridge: StartBridge, upstream: Upstream, receiver: Receiver, tmp_path: Path
) -> None:
    """A full run at debug level: no secret appears in any log line, the database or an answer."""
    db = tmp_path / "secrets.db"
    bridge = start_bridge(db=db, BRIDGE_LOG__LEVEL="debug")
    succeeded = upstream.create_job(queue_positions=1, seconds_per_position=0.3, processing_s=0.3)
    refused = upstream.create_job(queue_positions=1, seconds_per_position=0.3, processing_s=0.3)
    name, other = unique("secrets"), unique("secrets-generated")
    callback = receiver.callback(name).replace("http://", f"http://user:{URL_PASSWORD}@")
    given = bridge.register(
        job_id=succeeded,
        callback_url=callback,
        secret=SIGNING_SECRET,
        callback_headers={"X-Token": HEADER_VALUE},
        upstream_api_key=API_KEY,
    )
    generated = bridge.register(
        job_id=refused, callback_url=receiver.callback(other), upstream_api_key=WRONG_KEY
    )
    bridge.wait_all([given["id"], generated["id"]], "delivered")

    [hook] = receiver.hooks(name)
    assert hook.verify(SIGNING_SECRET)["type"] == "job.succeeded"
    assert hook.headers["x-token"] == HEADER_VALUE
    assert hook.headers["authorization"].startswith("Basic ")
    [failed] = receiver.hooks(other)
    assert failed.verify(generated["secret"])["error_code"] == "unauthorized"

    secrets = {
        "signing secret": SIGNING_SECRET,
        "generated signing secret": generated["secret"],
        "callback header value": HEADER_VALUE,
        "upstream key": API_KEY,
        "refused upstream key": WRONG_KEY,
        "encryption key": ENCRYPTION_KEY,
        "callback URL password": URL_PASSWORD,
    }
    answers = "".join(
        bridge.client.get(path).text
        for path in (
            f"/v1/watches/{given['id']}",
            f"/v1/watches/{generated['id']}",
            "/v1/watches",
            f"/v1/watches/{given['id']}/deliveries",
        )
    )
    for label, secret in secrets.items():
        assert secret not in answers, f"the {label} was answered back"

    assert bridge.process.stop() == 0
    logs = bridge.process.stdout() + bridge.process.stderr()
    assert '"event": "delivery.attempted"' in logs  # the run did log, at debug level
    for label, secret in secrets.items():
        assert secret not in logs, f"the {label} was logged"

    stored = b"".join(path.read_bytes() for path in tmp_path.glob("secrets.db*") if path.is_file())
    assert b"job.succeeded" in stored  # the database does hold the run's data
    at_rest = {k: v for k, v in secrets.items() if k != "callback URL password"}
    for label, secret in at_rest.items():
        assert secret.encode() not in stored, f"the {label} is stored in clear"


@pytest.mark.e2e
def test_per_watch_keys_need_an_encryption_key(start_bridge: StartBridge) -> None:
    """Without security.encryption_key a per-watch upstream key is refused with a clear 422."""
    bridge = start_bridge(BRIDGE_SECURITY__ENCRYPTION_KEY="")
    response = bridge.client.post(
        "/v1/watches",
        json={
            "job_id": "job_x",
            "callback_url": "http://127.0.0.1:9/x",
            "upstream_api_key": "bw_other",
        },
    )
    assert response.status_code == 422
    [error] = response.json()["errors"]
    assert error["field"] == "upstream_api_key"
    assert "security.encryption_key" in error["message"]


@pytest.mark.e2e
def test_rotated_key_still_reads_what_the_old_one_sealed(
    start_bridge: StartBridge, upstream: Upstream, receiver: Receiver, tmp_path: Path
) -> None:
    """Restarted with a new key first and the old one kept, pending work is still delivered."""
    db = tmp_path / "rotation.db"
    first = start_bridge(db=db)
    job = upstream.create_job(queue_positions=2, seconds_per_position=1.0, processing_s=0.5)
    name = unique("rotation")
    watch = first.register(job_id=job, callback_url=receiver.callback(name))
    assert first.process.stop() == 0
    new_key = "N2bNn5iqJxK0yJ6N6uWHtMlDzq1m6gWmOv-4U0PDNWU="
    second = start_bridge(db=db, BRIDGE_SECURITY__ENCRYPTION_KEY=f"{new_key},{ENCRYPTION_KEY}")
    assert second.wait_for_status(watch["id"], "delivered")["job_status"] == "succeeded"
    [hook] = receiver.hooks(name)
    assert hook.verify(watch["secret"])["job_id"] == job


def test_harness_key_is_valid() -> None:
    """The harness's fixed key is a usable Fernet key (a typo would break every e2e test)."""
    from service.vault import parse_keys

    assert parse_keys(harness.ENCRYPTION_KEY) == [harness.ENCRYPTION_KEY]


@pytest.mark.e2e
def test_configured_signing_secrets_sign_during_a_rotation(
    start_bridge: StartBridge, upstream: Upstream, receiver: Receiver
) -> None:
    """Watches without a secret are signed with every unexpired configured secret."""
    new = "whsec_bmV3LXNlY3JldC1mb3Itcm90YXRpb24tdGVzdHMh"
    old = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    gone = "whsec_ZXhwaXJlZC1zZWNyZXQtZm9yLXJvdGF0aW9uIQ=="
    bridge = start_bridge(
        BRIDGE_DELIVERY__SIGNING_SECRETS=(
            f'[{{"secret": "{new}"}}, {{"secret": "{old}", "expires_at": "2999-01-01T00:00:00Z"}},'
            f' {{"secret": "{gone}", "expires_at": "2000-01-01T00:00:00Z"}}]'
        )
    )
    job = upstream.create_job(queue_positions=1, seconds_per_position=0.3, processing_s=0.3)
    name = unique("rotation-global")
    watch = bridge.register(job_id=job, callback_url=receiver.callback(name))
    assert watch["secret"] is None
    bridge.wait_for_status(watch["id"], "delivered")
    [hook] = receiver.hooks(name)
    assert len(hook.headers["webhook-signature"].split(" ")) == 2
    assert hook.verify(new)["job_id"] == job
    assert hook.verify(old)["job_id"] == job
    with pytest.raises(WebhookVerificationError, match="signature"):
        hook.verify(gone)
