"""The upstream client: polls, one shared request per job and key, and starting a job."""

from __future__ import annotations

import asyncio
import gzip
import zlib
from collections.abc import AsyncIterator

import httpx
import orjson
import pytest

from service import __version__
from service.answers import JOB_ID_RULE, Secrets, network_failure, read_answer, read_creation
from service.observation import Observation
from service.upstream import UpstreamClient


def test_queue_position_must_be_an_integer() -> None:
    """A queue_position that is not an integer is ignored rather than trusted."""
    seen = read_answer(200, {}, b'{"status": "queued", "queue_position": "3"}')
    assert (seen.kind, seen.queue_position) == ("progress", None)
    seen = read_answer(200, {}, b'{"status": "queued", "queue_position": true}')
    assert seen.queue_position is None


def test_refusal_keeps_the_upstream_message() -> None:
    """A 401 becomes `unauthorized` and quotes the upstream's own words."""
    seen = read_answer(401, {}, b'{"error": "Invalid or missing API key"}')
    assert (seen.kind, seen.error_code) == ("refused", "unauthorized")
    assert seen.error is not None
    assert seen.error.endswith("Invalid or missing API key")


async def test_sends_the_key_and_quotes_the_job_id() -> None:
    """The GET goes to /api/v1/generate/{id} with the Bearer key."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"id": "j", "status": "processing"})

    async with httpx.MockTransport(handler) as transport:
        upstream = UpstreamClient(transport, "https://up.example/", timeout_s=5)
        observation = await upstream.fetch("job:1", "bw_key")
    assert observation.kind == "progress"
    assert str(seen[0].url) == "https://up.example/api/v1/generate/job%3A1"
    assert seen[0].headers["authorization"] == "Bearer bw_key"


async def fetch_queued(job_id: str) -> tuple[Observation, list[httpx.Request]]:
    """What polling `job_id` observes from an upstream answering "queued", and the requests
    that reached it."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"status": "queued"})

    async with httpx.MockTransport(handler) as transport:
        observation = await UpstreamClient(transport, "https://up.example", 5).fetch(job_id, "k")
    return observation, seen


@pytest.mark.parametrize("job_id", ["job.1", "a..", "a..b", "x.", "_.."])
async def test_dots_in_a_job_id_stay_in_its_segment(job_id: str) -> None:
    """An id with dots after its first character is polled at /api/v1/generate/<id>, exactly."""
    observation, seen = await fetch_queued(job_id)
    assert observation.kind == "progress"
    assert [r.url.raw_path for r in seen] == [f"/api/v1/generate/{job_id}".encode()]


@pytest.mark.parametrize("job_id", [".", "..", ".hidden", "../admin", "", "a/b", "x" * 129])
async def test_a_job_id_that_could_change_the_path_is_never_requested(job_id: str) -> None:
    """An id the registration refuses (a watch stored before it did) is refused by the client
    too, without a request: "." and ".." would poll the upstream's API root with the key."""
    observation, seen = await fetch_queued(job_id)
    assert (observation.kind, observation.error_code) == ("refused", "bad_request")
    assert observation.error is not None
    assert observation.error.endswith(f": a job id is {JOB_ID_RULE}")
    assert seen == []


async def test_concurrent_fetches_of_one_job_share_a_request() -> None:
    """Several watches of the same job and key cost one upstream request."""
    calls = 0
    release = asyncio.Event()

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        await release.wait()
        return httpx.Response(200, json={"id": "j", "status": "queued", "queue_position": 2})

    async with httpx.MockTransport(handler) as transport:
        upstream = UpstreamClient(transport, "https://up.example", timeout_s=5)
        tasks = [asyncio.create_task(upstream.fetch("job_1", "bw_key")) for _ in range(5)]
        other_key = asyncio.create_task(upstream.fetch("job_1", "bw_other"))
        await asyncio.sleep(0)
        release.set()
        results = await asyncio.gather(*tasks, other_key)
    assert calls == 2  # one for bw_key, one for bw_other
    assert all(r.queue_position == 2 for r in results)


@pytest.mark.parametrize(
    "failure",
    [httpx.ConnectError("refused"), httpx.ReadTimeout("slow"), httpx.RemoteProtocolError("eof")],
)
async def test_network_failures_are_transient(failure: Exception) -> None:
    """A request that gets no answer is a transient failure with a readable error."""

    def handler(request: httpx.Request) -> httpx.Response:
        raise failure

    async with httpx.MockTransport(handler) as transport:
        observation = await UpstreamClient(transport, "https://up.example", 5).fetch("j", None)
    assert observation.kind == "transient"
    assert observation.error is not None
    assert observation.error.startswith("upstream")


async def test_requests_ask_for_identity_and_never_carry_a_cookie() -> None:
    """Each GET names the bridge, asks for an uncompressed answer, and never sends back a
    cookie the upstream set."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(
            200, json={"id": "j", "status": "queued"}, headers={"Set-Cookie": "session=up"}
        )

    async with httpx.MockTransport(handler) as transport:
        upstream = UpstreamClient(transport, "https://up.example", timeout_s=5)
        await upstream.fetch("job_1", "bw_key")
        await upstream.fetch("job_1", None)
    assert [r.headers.get("cookie") for r in seen] == [None, None]
    # Uncompressed answers: nothing to inflate.
    assert [r.headers.get("accept-encoding") for r in seen] == ["identity", "identity"]
    assert "authorization" not in seen[1].headers  # no key, no header
    assert {r.headers.get("user-agent") for r in seen} == {f"webhook-bridge/{__version__}"}


@pytest.mark.parametrize(
    ("size", "error"),
    [
        # Exactly the cap: read, then judged on what it says ("{}" and spaces).
        (10, "upstream answered no status"),
        # One byte past it: not read.
        (11, "upstream answered more than 10 bytes (HTTP 200); the rest was not read"),
    ],
)
@pytest.mark.parametrize("announced", [True, False])
async def test_the_body_cap_is_exact(size: int, error: str, announced: bool) -> None:
    """A body of the cap's size is read; one byte more is a transient failure, whether its
    length was announced or it was streamed in chunks."""
    body = b"{}".ljust(size)

    async def chunks() -> AsyncIterator[bytes]:
        yield body[:4]
        yield body[4:]

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=body if announced else chunks())

    async with httpx.MockTransport(handler) as transport:
        upstream = UpstreamClient(transport, "https://up.example", 5, max_body_bytes=10)
        seen = await upstream.fetch("j", None)
    assert (seen.kind, seen.error) == ("transient", error)


@pytest.mark.parametrize(
    ("size", "error"),
    [
        (1000, "upstream answered no status"),  # decoded, exactly the cap: read
        (1001, "upstream answered more than 1000 bytes (HTTP 200); the rest was not read"),
    ],
)
@pytest.mark.parametrize("coding", ["gzip", "deflate", "GZip, identity"])
async def test_the_body_cap_applies_to_the_decoded_body(size: int, error: str, coding: str) -> None:
    """A compressed body that decodes to the cap's size is read; one byte more is a transient
    failure, however few bytes it took on the wire."""
    body = b"{}".ljust(size)
    wire = gzip.compress(body) if "gzip" in coding.lower() else zlib.compress(body)

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=wire, headers={"Content-Encoding": coding})

    async with httpx.MockTransport(handler) as transport:
        upstream = UpstreamClient(transport, "https://up.example", 5, max_body_bytes=1000)
        seen = await upstream.fetch("j", None)
    assert (seen.kind, seen.error) == ("transient", error)


@pytest.mark.parametrize("status", ["queued", "processing", "succeeded", "failed"])
def test_known_statuses_are_one_string_each(status: str) -> None:
    """Every held watch keeps the last status it saw: a known status is the same string
    object from one answer to the next, not a new one per answer."""
    body = b'{"status": "%s", "output": {}}' % status.encode()
    first, second = read_answer(200, {}, body), read_answer(200, {}, body)
    assert first.job_status == status
    assert first.job_status is second.job_status


@pytest.mark.parametrize(
    ("inner", "kind"),
    [
        (63, "progress"),  # 64 levels in all: the most passed on
        (64, "transient"),  # 65 levels: refused
    ],
)
@pytest.mark.parametrize(("opening", "closing"), [(b'{"a":', b"}"), (b"[", b"]")])
def test_depth_limit_is_exact(inner: int, kind: str, opening: bytes, closing: bytes) -> None:
    """An answer nesting up to 64 levels is read; one level more is refused, for objects and
    lists alike."""
    body = b'{"status": "queued", "x": ' + opening * inner + b"1" + closing * inner + b"}"
    seen = read_answer(200, {}, body)
    assert seen.kind == kind
    if kind == "transient":
        assert seen.error == "upstream answered JSON nested more than 64 levels deep"


# Starting a job (POST /v1/generate).


@pytest.mark.parametrize(
    ("status", "body", "kind", "error"),
    [
        # The simulator's own answer: a job started.
        (200, b'{"id": "job_1", "status": "queued"}', "created", None),
        (201, b'{"id": "job_1"}', "created", None),  # any 2xx with an id
        # A refusal quotes the upstream's `error`...
        (400, b'{"error": "prompt is required"}', "refused", "prompt is required"),
        (402, b'{"error": "Insufficient credits"}', "refused", "Insufficient credits"),
        # ... else the start of its body, on one line...
        (403, b"<h1>Forbidden</h1>\n\tby policy", "refused", "<h1>Forbidden</h1> by policy"),
        # ... else its status.
        (404, b"", "refused", "HTTP 404"),
        (429, b'{"error": "Too many requests"}', "refused", "Too many requests"),
        # Whether a job started is unknown: failures.
        (500, b'{"error": "boom"}', "failed", "upstream answered HTTP 500"),
        (503, b"", "failed", "upstream answered HTTP 503"),
        # A redirect is not followed: the key would go wherever it points.
        (307, b"", "failed", "upstream answered HTTP 307"),
        (200, b"<html>", "failed", "upstream answered a body that is not JSON"),
        (200, b'["job_1"]', "failed", "upstream answered JSON that is not an object but list"),
        (200, b'{"status": "queued"}', "failed", "upstream answered no job id"),
        (200, b'{"id": 7}', "failed", "upstream answered a job id of type int: 7"),
        (200, b'{"id": ""}', "failed", "upstream answered an empty job id"),
    ],
)
def test_creation_answers(status: int, body: bytes, kind: str, error: str | None) -> None:
    """A 2xx object with a string id starts a job; a 4xx refuses with the upstream's words;
    anything else is a failure that says why."""
    seen = read_creation(status, {}, body)
    assert (seen.kind, seen.http_status) == (kind, status)
    if error is None:
        assert seen.error is None
        assert seen.job_id == "job_1"
        assert seen.document == orjson.loads(body)
    else:
        assert (seen.error or "").startswith(error), seen.error
        assert seen.job_id is None


def test_a_refusal_keeps_retry_after_and_a_long_message_is_cut() -> None:
    """A 429's Retry-After is kept for the client; a long message is cut to 200 characters."""
    seen = read_creation(429, {"retry-after": "30"}, b'{"error": "%s"}' % (b"x" * 500))
    assert seen.retry_after == "30"
    assert seen.error == "x" * 200


async def test_create_posts_the_body_unchanged_with_key_and_idempotency_key() -> None:
    """One POST to /api/v1/generate: the body as given, JSON, the Bearer key and the
    Idempotency-Key; without a key, no Authorization header."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"id": f"job_{len(seen)}", "status": "queued"})

    body = b'{"prompt": "a cat", "n": 2, "nested": {"k": [1, 2]}}'
    async with httpx.MockTransport(handler) as transport:
        upstream = UpstreamClient(transport, "https://up.example/", timeout_s=5)
        first = await upstream.create(body, "bw_key", "idem-1")
        second = await upstream.create(body, None, None)
    assert (first.kind, first.job_id, second.job_id) == ("created", "job_1", "job_2")
    assert [(r.method, str(r.url)) for r in seen] == [
        ("POST", "https://up.example/api/v1/generate")
    ] * 2
    assert seen[0].content == body
    assert seen[0].headers["content-type"] == "application/json"
    assert seen[0].headers["authorization"] == "Bearer bw_key"
    assert seen[0].headers["idempotency-key"] == "idem-1"
    assert "authorization" not in seen[1].headers
    assert "idempotency-key" not in seen[1].headers
    assert upstream.requests == 0  # polls only: the poll metrics are not skewed


@pytest.mark.parametrize(
    ("failure", "error"),
    [
        (httpx.ConnectError("refused"), "upstream request failed: refused"),
        (httpx.ReadTimeout("slow"), "upstream did not answer in time"),
    ],
)
async def test_create_without_an_answer_fails(failure: Exception, error: str) -> None:
    """A POST that gets no answer is a failure saying why, never an exception."""

    def handler(request: httpx.Request) -> httpx.Response:
        raise failure

    async with httpx.MockTransport(handler) as transport:
        seen = await UpstreamClient(transport, "https://up.example", 5).create(b"{}", "k", None)
    assert (seen.kind, seen.error, seen.http_status) == ("failed", error, None)


async def test_create_times_out_on_a_slow_answer() -> None:
    """The whole POST is under the upstream timeout."""

    async def handler(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(10)
        raise AssertionError("not reached")

    async with httpx.MockTransport(handler) as transport:
        seen = await UpstreamClient(transport, "https://up.example", 0.05).create(b"{}", "k", None)
    assert (seen.kind, seen.error) == ("failed", "upstream did not answer in time")


async def test_create_reads_at_most_the_cap() -> None:
    """An answer past the body cap is a failure, not read whole."""

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=b'{"id": "job_1", "pad": "' + b"x" * 100 + b'"}')

    async with httpx.MockTransport(handler) as transport:
        upstream = UpstreamClient(transport, "https://up.example", 5, max_body_bytes=50)
        seen = await upstream.create(b"{}", "k", None)
    assert (seen.kind, seen.error) == ("failed", "upstream answered more than 50 bytes (HTTP 200)")


# Keys in what the upstream says: masked, and the bridge's own key's refusal not relayed.

BRIDGE_KEY = "bw_bridge_0123456789abcdef"
OWN_KEY = "bw_own_fedcba9876543210"
# The bridge's key sent: both masked. A watch's own key sent: both masked, refusals relayed.
AS_BRIDGE = Secrets((BRIDGE_KEY, OWN_KEY), bridge_key=True)
AS_OWN = Secrets((BRIDGE_KEY, OWN_KEY), bridge_key=False)
ECHO = b'{"error": "invalid key %s (also tried %s)"}' % (OWN_KEY.encode(), BRIDGE_KEY.encode())


@pytest.mark.parametrize(
    ("status", "secrets", "error", "document"),
    [
        # The bridge's own key refused: the upstream's words stay out, whatever they were.
        (401, AS_BRIDGE, "the upstream refused the bridge's key (401)", None),
        (403, AS_BRIDGE, "the upstream refused the bridge's key (403)", None),
        # A watch's own key refused: the upstream's words, keys masked.
        (
            401, AS_OWN, "the upstream refused the API key (401): invalid key ******** "
            "(also tried ********)", {"error": "invalid key ******** (also tried ********)"},
        ),
        # Other refusals of either key: relayed, keys masked.
        (
            404, AS_BRIDGE, "the upstream does not know this job (404): invalid key ******** "
            "(also tried ********)", {"error": "invalid key ******** (also tried ********)"},
        ),
    ],
)  # fmt: skip
def test_a_refusal_never_relays_a_key(
    status: int, secrets: Secrets, error: str, document: object
) -> None:
    """What a refusal relays (its error, its document) shows no key; the bridge's own key's
    refusal says only that."""
    seen = read_answer(status, {}, ECHO, secrets)
    assert (seen.kind, seen.error, seen.document, seen.body) == ("refused", error, document, None)


def test_a_key_spelt_with_json_escapes_is_masked_too() -> None:
    """The document relayed is masked once its escapes are read, in names and values alike."""
    escaped = "".join(f"\\u{ord(ch):04x}" for ch in OWN_KEY)
    body = b'{"detail": {"%s": ["%s"]}}' % (escaped.encode(), escaped.encode())
    seen = read_answer(400, {}, body, AS_OWN)
    assert seen.document == {"detail": {"********": ["********"]}}
    creation = read_creation(422, {}, body, AS_OWN)
    assert creation.error == '{"detail":{"********":["********"]}}'


def test_a_key_at_the_cut_leaves_no_start_of_it() -> None:
    """A key straddling the 200-character cut is masked before the cut, not after."""
    message = "x" * 190 + OWN_KEY
    seen = read_answer(400, {}, orjson.dumps({"error": message}), AS_OWN)
    creation = read_creation(400, {}, message.encode(), AS_OWN)
    for error in (seen.error, creation.error):
        assert error is not None
        assert OWN_KEY[:4] not in error
        assert error.endswith("x" * 10 + "********")


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b'{"status": "%s"}' % BRIDGE_KEY.encode(), "upstream answered an unknown status '****"),
        (b'{"status": "%s"}' % OWN_KEY.encode(), "upstream answered an unknown status '****"),
    ],
)
def test_an_unknown_status_quotes_no_key(body: bytes, error: str) -> None:
    """A status the bridge does not know is quoted, keys masked."""
    seen = read_answer(200, {}, body, AS_OWN)
    assert (seen.error or "").startswith(error), seen.error


@pytest.mark.parametrize(
    ("status", "body", "secrets", "kind", "error"),
    [
        # The bridge's own key refused is no fault of the caller's: the creation failed.
        (401, ECHO, AS_BRIDGE, "failed", "the upstream refused the bridge's key (401)"),
        (403, b"<p>Forbidden: %s</p>" % BRIDGE_KEY.encode(), AS_BRIDGE, "failed",
         "the upstream refused the bridge's key (403)"),
        (401, ECHO, AS_OWN, "refused", "invalid key ******** (also tried ********)"),
        (402, ECHO, AS_BRIDGE, "refused", "invalid key ******** (also tried ********)"),
        (400, b"<p>Bad request from %s</p>" % OWN_KEY.encode(), AS_OWN, "refused",
         "<p>Bad request from ********</p>"),
    ],
)  # fmt: skip
def test_a_refused_generation_never_relays_a_key(
    status: int, body: bytes, secrets: Secrets, kind: str, error: str
) -> None:
    """The message of a refused POST shows no key; the bridge's own key's refusal only says so."""
    seen = read_creation(status, {}, body, secrets)
    assert (seen.kind, seen.error) == (kind, error)


def test_a_network_failure_quotes_no_key() -> None:
    """The text of an exception (which may quote the request) is relayed with keys masked."""
    failure = httpx.ConnectError(f"cannot reach https://u:{BRIDGE_KEY}@up.example/ for {OWN_KEY}")
    seen = network_failure(failure, AS_OWN)
    assert (
        seen.error
        == "upstream request failed: cannot reach https://u:********@up.example/ for ********"
    )


@pytest.mark.parametrize("own", [False, True])
async def test_the_client_masks_the_keys_it_holds_and_sends(own: bool) -> None:
    """Through the client: the key sent, the bridge's key and a password in the base URL are
    masked in what a 401 relays; the bridge's key refused relays nothing of the answer."""
    sent: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request.headers["authorization"])
        words = f"no access for {request.headers['authorization']}, {BRIDGE_KEY} or s3cret-pw"
        return httpx.Response(401, json={"error": words})

    async with httpx.MockTransport(handler) as transport:
        upstream = UpstreamClient(
            transport, "https://u:s3cret-pw@up.example", 5, bridge_key=BRIDGE_KEY
        )
        seen = await upstream.fetch("job_1", OWN_KEY if own else BRIDGE_KEY)
        created = await upstream.create(b"{}", OWN_KEY if own else BRIDGE_KEY, None)
    assert sent == [f"Bearer {OWN_KEY if own else BRIDGE_KEY}"] * 2
    if own:
        words = "no access for Bearer ********, ******** or ********"
        assert seen.error == f"the upstream refused the API key (401): {words}"
        assert seen.document == {"error": words}
        assert created.error == words
    else:
        assert seen.error == created.error == "the upstream refused the bridge's key (401)"
        assert seen.document is None
